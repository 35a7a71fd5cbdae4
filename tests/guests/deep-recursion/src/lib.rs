//! `deep-recursion`: hostile fixture. Models unbounded recursion: on every
//! record, `process` calls a function that calls itself with no reachable
//! end, each frame holding a few hundred bytes that `black_box` keeps alive
//! (so it is neither a tail call nor a loop), until the WebAssembly stack
//! overflows and the instance traps. Settings: none. Output: none.

use std::hint::black_box;

use weir_operator::{Config, Emitter, Error, Input, Operator, export};

struct DeepRecursion;

impl Operator for DeepRecursion {
    fn process(&mut self, record: &Input<'_>, _out: &mut Emitter) -> Result<(), Error> {
        black_box(descend(record.offset()));
        Ok(())
    }
}

/// Recurses until the stack runs out: `black_box` hides that the end
/// condition never holds, and the work after the call defeats tail calls.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let below = descend(black_box(depth.wrapping_add(1)));
    black_box(below.wrapping_add(frame[31]))
}

fn build(_config: &Config) -> Result<DeepRecursion, String> {
    Ok(DeepRecursion)
}

export!(build);
