//! The glue behind [`export!`](crate::export): keeps the operator between
//! calls, walks input batches, collects outcomes, and reports panics.

use std::cell::{Cell, RefCell};

use weir_format::Batches;

use crate::bindings::{Emitted, Failure, Outcome, Rejection, Timer};
use crate::{Config, Emitter, Error, Input, Operator};

thread_local! {
    static OPERATOR: RefCell<Option<Box<dyn Operator>>> = RefCell::new(None);
    /// Offset of the record being processed, for panic reports.
    static CURRENT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Builds the operator from its configuration and installs the panic hook.
pub fn init<O, F>(config: Vec<(String, String)>, build: F) -> Result<(), String>
where
    O: Operator + 'static,
    F: FnOnce(&Config) -> Result<O, String>,
{
    std::panic::set_hook(Box::new(|info| {
        let offset = CURRENT.with(Cell::get);
        crate::bindings::weir::operator::log::fatal(offset, &format!("panic: {info}"));
    }));
    let operator = build(&Config::new(config))?;
    OPERATOR.with(|slot| *slot.borrow_mut() = Some(Box::new(operator)));
    Ok(())
}

fn with_operator<T>(f: impl FnOnce(&mut dyn Operator) -> Result<T, Failure>) -> Result<T, Failure> {
    OPERATOR.with(|slot| match slot.borrow_mut().as_deref_mut() {
        Some(operator) => f(operator),
        None => Err(Failure {
            offset: None,
            reason: "the operator was called before init".into(),
        }),
    })
}

/// Runs every record of `input` (concatenated batches) through the operator.
pub fn process(input: &[u8]) -> Result<Outcome, Failure> {
    with_operator(|operator| {
        let mut out = Emitter::default();
        let mut rejected = Vec::new();
        // The host validated these batches (CRC included) before sending them.
        for batch in Batches::assume_valid(input) {
            let batch = batch.map_err(|e| Failure {
                offset: None,
                reason: format!("the host sent an invalid batch: {e}"),
            })?;
            for view in batch.records() {
                let record = Input { view };
                CURRENT.with(|c| c.set(Some(view.offset)));
                match operator.process(&record, &mut out) {
                    Ok(()) => {}
                    Err(Error::Reject(reason)) => rejected.push(Rejection {
                        offset: view.offset,
                        reason,
                    }),
                    Err(Error::Fail(reason)) => {
                        return Err(Failure {
                            offset: Some(view.offset),
                            reason,
                        });
                    }
                }
            }
        }
        CURRENT.with(|c| c.set(None));
        Ok(outcome(out, rejected))
    })
}

/// Runs fired timers through the operator.
pub fn on_timer(fired: Vec<Timer>) -> Result<Outcome, Failure> {
    with_operator(|operator| {
        let mut out = Emitter::default();
        for timer in &fired {
            operator
                .on_timer(&timer.key, timer.at, &mut out)
                .map_err(|e| Failure {
                    offset: None,
                    reason: match e {
                        Error::Reject(r) | Error::Fail(r) => format!("timer at {}: {r}", timer.at),
                    },
                })?;
        }
        Ok(outcome(out, Vec::new()))
    })
}

fn outcome(out: Emitter, rejected: Vec<Rejection>) -> Outcome {
    let emitted = out
        .finish()
        .into_iter()
        .map(|(output, batch)| Emitted { output, batch })
        .collect();
    Outcome { emitted, rejected }
}
