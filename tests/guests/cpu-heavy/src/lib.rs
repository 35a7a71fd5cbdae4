//! `cpu-heavy`: not hostile, only costly. For every record it mixes the
//! value's bytes through `rounds` rounds of an integer hash (setting
//! `rounds`, default 20000: about a millisecond here), then forwards the
//! record unchanged. The noisy-neighbour benchmark's legal CPU hog.

use std::hint::black_box;

use weir_operator::{Config, Emitter, Error, Input, Operator, export};

struct CpuHeavy {
    rounds: u64,
}

impl Operator for CpuHeavy {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for round in 0..self.rounds {
            for &b in record.value() {
                h = (h ^ u64::from(b) ^ round).wrapping_mul(0x1000_0000_01b3);
            }
        }
        black_box(h);
        out.forward(record);
        Ok(())
    }
}

fn build(config: &Config) -> Result<CpuHeavy, String> {
    let rounds = match config.get("rounds") {
        None => 20_000,
        Some(r) => r
            .parse()
            .map_err(|_| format!("rounds must be a whole number, got {r:?}"))?,
    };
    Ok(CpuHeavy { rounds })
}

export!(build);
