//! `trap-every-record`: hostile fixture. Models an operator with a bug hit
//! by every input: `process` panics on each record, with the message
//! `trap-every-record: refusing record at offset N` (N the record's
//! offset). The SDK's panic hook reports the panic to the host (`fatal`),
//! then the instance traps. Settings: none. Output: none.

use weir_operator::{Config, Emitter, Error, Input, Operator, export};

struct TrapEveryRecord;

impl Operator for TrapEveryRecord {
    fn process(&mut self, record: &Input<'_>, _out: &mut Emitter) -> Result<(), Error> {
        panic!(
            "trap-every-record: refusing record at offset {}",
            record.offset()
        );
    }
}

fn build(_config: &Config) -> Result<TrapEveryRecord, String> {
    Ok(TrapEveryRecord)
}

export!(build);
