//! `deep-recursion`: hostile fixture. Models unbounded recursion: on every
//! record, `process` calls a function that calls itself with no reachable
//! end (the end condition depends on a value `black_box` hides, and never
//! holds), doing work after each call so it is neither a tail call nor a
//! loop, until the WebAssembly call stack is exhausted and the instance
//! traps. Frames live in WebAssembly locals, not in linear memory, so it is
//! the engine's stack limit that stops it. Settings: none. Output: none.

use std::hint::black_box;

use weir_operator::{Config, Emitter, Error, Input, Operator, export};

struct DeepRecursion;

impl Operator for DeepRecursion {
    fn process(&mut self, record: &Input<'_>, _out: &mut Emitter) -> Result<(), Error> {
        black_box(descend(black_box(record.offset()), black_box(u64::MAX), 1));
        Ok(())
    }
}

/// Recurses until the stack runs out: `depth` starts below `end` and only
/// grows by one per call, far too slowly to ever reach it.
#[inline(never)]
fn descend(depth: u64, end: u64, seed: u64) -> u64 {
    if depth == end {
        return seed;
    }
    let below = descend(
        depth.wrapping_add(1),
        end,
        seed.wrapping_mul(31).wrapping_add(depth),
    );
    // Work after the call, not an accumulation LLVM could turn into a loop.
    below.rotate_left((depth % 63) as u32).wrapping_sub(seed)
}

fn build(_config: &Config) -> Result<DeepRecursion, String> {
    Ok(DeepRecursion)
}

export!(build);
