//! Collecting what an operator emits: one output batch per named output.

use serde::Serialize;
use weir_format::{BatchWriter, Record};

use crate::{Error, Input};

/// The default output.
pub const MAIN: &str = "main";

/// Where an operator sends records during a call.
#[derive(Debug, Default)]
pub struct Emitter {
    /// The main output, kept apart: most records go there, without a lookup.
    main: BatchWriter,
    /// Other outputs, in order of first use.
    others: Vec<(String, BatchWriter)>,
}

impl Emitter {
    fn writer(&mut self, output: &str) -> &mut BatchWriter {
        if output == MAIN {
            return &mut self.main;
        }
        let at = match self.others.iter().position(|(name, _)| name == output) {
            Some(at) => at,
            None => {
                self.others.push((output.to_string(), BatchWriter::new()));
                self.others.len() - 1
            }
        };
        &mut self.others[at].1
    }

    /// Sends `record` to the main output unchanged (the fastest path).
    #[inline]
    pub fn forward(&mut self, record: &Input<'_>) {
        self.main.push_view(&record.view);
    }

    /// Sends a new value to the main output, with `record`'s key and timestamp.
    pub fn emit(&mut self, record: &Input<'_>, value: &[u8]) {
        self.send(
            MAIN,
            Record {
                key: record.key(),
                value: Some(value),
                headers: &[],
                timestamp: record.timestamp(),
            },
        );
    }

    /// Sends `value` as JSON to the main output, with `record`'s key and timestamp.
    pub fn emit_json<T: Serialize>(&mut self, record: &Input<'_>, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::fail(format!("cannot encode JSON: {e}")))?;
        self.emit(record, &bytes);
        Ok(())
    }

    /// Sends a record to the named output (`main`, `alerts`, ...).
    pub fn send(&mut self, output: &str, record: Record<'_>) {
        self.writer(output).push(&record);
    }

    /// Sends `value` as JSON to the named output.
    pub fn send_json<T: Serialize>(
        &mut self,
        output: &str,
        key: Option<&[u8]>,
        timestamp: i64,
        value: &T,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::fail(format!("cannot encode JSON: {e}")))?;
        self.send(
            output,
            Record {
                key,
                value: Some(&bytes),
                headers: &[],
                timestamp,
            },
        );
        Ok(())
    }

    /// The finished output batches (CRC left to the host): main first, then
    /// the others in order of first use.
    pub(crate) fn finish(self) -> Vec<(String, Vec<u8>)> {
        std::iter::once((MAIN.to_string(), self.main))
            .chain(self.others)
            .filter(|(_, w)| !w.is_empty())
            .map(|(name, w)| {
                (
                    name,
                    w.finish_unsealed()
                        .expect("only non-empty writers are finished"),
                )
            })
            .collect()
    }
}
