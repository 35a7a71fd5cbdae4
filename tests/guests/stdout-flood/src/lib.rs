//! `stdout-flood`: hostile fixture. Models an operator that floods its
//! standard output: on every record, `process` prints
//! `stdout-flood: record N line M` with `println!` in an endless loop. The
//! host must neither store nor forward all that, and its instruction budget
//! must end the call (if writing fails instead, `println!` panics, which
//! traps). Settings: none. Output: no records.

use weir_operator::{Config, Emitter, Error, Input, Operator, export};

struct StdoutFlood;

impl Operator for StdoutFlood {
    fn process(&mut self, record: &Input<'_>, _out: &mut Emitter) -> Result<(), Error> {
        let mut line = 0u64;
        loop {
            println!("stdout-flood: record {} line {line}", record.offset());
            line = line.wrapping_add(1);
        }
    }
}

fn build(_config: &Config) -> Result<StdoutFlood, String> {
    Ok(StdoutFlood)
}

export!(build);
