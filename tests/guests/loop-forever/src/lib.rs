//! `loop-forever`: hostile fixture. Models an operator that never returns:
//! `process` spins in an endless loop on the first record it gets, without
//! calling the host, so only the host's instruction budget can stop it.
//! Settings: none. Output: none, ever.

use std::hint::black_box;

use weir_operator::{Config, Emitter, Error, Input, Operator, export};

struct LoopForever;

impl Operator for LoopForever {
    fn process(&mut self, record: &Input<'_>, _out: &mut Emitter) -> Result<(), Error> {
        let mut spins = record.offset();
        loop {
            spins = black_box(spins.wrapping_add(1));
        }
    }
}

fn build(_config: &Config) -> Result<LoopForever, String> {
    Ok(LoopForever)
}

export!(build);
