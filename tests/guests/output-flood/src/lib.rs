//! `output-flood`: hostile fixture. Models an operator whose output
//! explodes: for each input record, `process` emits `count` records
//! (setting, default 1000000) to `main`, each with the input's key and
//! timestamp and as value the decimal index (`0`, `1`, ...). The host's
//! limits on records and bytes per call should fail the call.

use weir_operator::{Config, Emitter, Error, Input, Operator, export};

struct OutputFlood {
    count: u64,
}

impl Operator for OutputFlood {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        for index in 0..self.count {
            out.emit(record, index.to_string().as_bytes());
        }
        Ok(())
    }
}

fn build(config: &Config) -> Result<OutputFlood, String> {
    Ok(OutputFlood {
        count: config.parse_or("count", 1_000_000)?,
    })
}

export!(build);
