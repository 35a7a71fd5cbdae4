//! `memory-bomb`: hostile fixture. Models a memory leak run wild: on every
//! record, `process` allocates 1 MiB chunks forever, writing to every page
//! of each so the memory is really used, and keeps them all, until the
//! host's memory limit refuses to grow the instance's memory (the
//! allocation failure aborts, which traps). Settings: none. Output: none.

use std::hint::black_box;

use weir_operator::{Config, Emitter, Error, Input, Operator, export};

const CHUNK: usize = 1 << 20;
const PAGE: usize = 64 << 10;

struct MemoryBomb;

impl Operator for MemoryBomb {
    fn process(&mut self, record: &Input<'_>, _out: &mut Emitter) -> Result<(), Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = vec![0u8; CHUNK];
            chunk
                .iter_mut()
                .step_by(PAGE)
                .for_each(|byte| *byte = record.offset() as u8 | 1);
            hoard.push(black_box(chunk));
            black_box(&hoard);
        }
    }
}

fn build(_config: &Config) -> Result<MemoryBomb, String> {
    Ok(MemoryBomb)
}

export!(build);
