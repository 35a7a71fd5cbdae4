//! `well-behaved`: not hostile. The neighbour that must keep working while
//! hostile operators run beside it: a plain filter that forwards, unchanged,
//! every record whose value does not start with `x` (an empty value or a
//! tombstone is kept). Settings: none.

use weir_operator::{Config, Input, Operator, export, filter};

fn build(_config: &Config) -> Result<impl Operator + use<>, String> {
    Ok(filter(|record: &Input<'_>| {
        !record.value().starts_with(b"x")
    }))
}

export!(build);
