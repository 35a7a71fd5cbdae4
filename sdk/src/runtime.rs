//! The glue behind [`export!`](crate::export): keeps the operator between
//! calls, walks input batches, collects outcomes, and reports panics.
//!
//! Every entry point is generic over the operator type `O`, inferred from
//! the build function the macro passes along, so the per-record loop is
//! compiled for the concrete operator: no dynamic call per record, and the
//! operator's code inlines into the loop.

use std::any::Any;
use std::cell::{Cell, RefCell};

use weir_format::Batches;

use crate::bindings::{Emitted, Failure, Outcome, Rejection, Timer};
use crate::{Config, Emitter, Error, Input, Operator};

thread_local! {
    static OPERATOR: RefCell<Option<Box<dyn Any>>> = RefCell::new(None);
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

fn with_operator<O: Operator + 'static, T>(
    f: impl FnOnce(&mut O) -> Result<T, Failure>,
) -> Result<T, Failure> {
    OPERATOR.with(|slot| {
        match slot
            .borrow_mut()
            .as_deref_mut()
            .and_then(|op| op.downcast_mut::<O>())
        {
            Some(operator) => f(operator),
            None => Err(Failure {
                offset: None,
                reason: "the operator was called before init".into(),
            }),
        }
    })
}

/// Runs every record of `input` (concatenated batches) through the operator.
/// `_build` only names the operator type.
pub fn process<O, F>(input: &[u8], _build: F) -> Result<Outcome, Failure>
where
    O: Operator + 'static,
    F: FnOnce(&Config) -> Result<O, String>,
{
    with_operator(|operator: &mut O| {
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

/// Runs fired timers through the operator. `_build` only names the operator type.
pub fn on_timer<O, F>(fired: Vec<Timer>, _build: F) -> Result<Outcome, Failure>
where
    O: Operator + 'static,
    F: FnOnce(&Config) -> Result<O, String>,
{
    with_operator(|operator: &mut O| {
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
