//! An operator instance: one configured operator, called batch by batch.
//!
//! Each call runs with a fresh fuel budget (CPU) and a wall-clock
//! backstop; its output is checked against the output limits and every
//! emitted batch is sealed and validated before anyone sees it. A call is
//! all or nothing: keyed state, timers and the watermark changed during a
//! call that fails are rolled back. After a trap the component instance can
//! never be entered again, so it is dropped; the next call instantiates a
//! fresh one (about a millisecond) with the same configuration and the
//! state kept by the host.
//!
//! After each `process` call the watermark moves to the largest input
//! timestamp minus the allowed lateness (setting `weir.lateness-ms`), and
//! timers it passed are fired through `on-timer` in the same unit of work.

use std::sync::Arc;

use wasmtime::{Store, Trap};
use weir_format::Batch;

use super::OperatorError;
use super::engine::EPOCH_TICK;
use super::guest_text::{MAX_GUEST_TEXT, clean};
use super::host::{
    Carried, Failure, HostState, KeyedState, LogBudget, Operator, Outcome, StateDelta, Timer,
    charge_host_time,
};
use super::limits::Limits;
use super::module::OperatorModule;

/// Setting (read by the host, also passed to the operator) for how late,
/// in event-time milliseconds, records may arrive before timers fire.
pub const LATENESS_SETTING: &str = "weir.lateness-ms";

/// How many rounds of timers (timers set by timers) one call may fire.
const MAX_TIMER_ROUNDS: usize = 1_000;

/// Longest rejection reason kept, in bytes (it becomes a dead letter's header).
const MAX_REJECTION_REASON: usize = 1024;

/// An input record the operator refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub offset: u64,
    pub reason: String,
}

/// What a successful call produced.
#[derive(Debug, Default)]
pub struct CallOutput {
    /// (output name, batch) in the order they were produced. Batches are
    /// validated; their offsets are relative (0, 1, 2, ...).
    pub emitted: Vec<(String, Batch)>,
    pub rejected: Vec<Rejection>,
}

impl CallOutput {
    /// Number of emitted records.
    pub fn record_count(&self) -> usize {
        self.emitted.iter().map(|(_, b)| b.record_count()).sum()
    }

    /// Bytes of emitted batches.
    pub fn byte_count(&self) -> usize {
        self.emitted.iter().map(|(_, b)| b.size()).sum()
    }

    /// Appends `other`'s outputs and rejections after these.
    pub fn extend(&mut self, other: CallOutput) {
        self.emitted.extend(other.emitted);
        self.rejected.extend(other.rejected);
    }
}

struct Live {
    store: Store<HostState>,
    bindings: Operator,
}

/// Output a round may still emit: it starts at the per-call limits with
/// each `process` call and is drawn down by that call and by what the host
/// runs for the same input afterwards (retries record by record, timers),
/// so no sequence of calls over one input emits more than one call may.
#[derive(Debug, Clone, Copy)]
struct RoundBudget {
    records: usize,
    bytes: usize,
}

/// How to start an instance beyond its module and configuration.
#[derive(Debug, Default)]
pub struct InstanceOptions {
    /// Keyed state to rebuild before `init`: a snapshot, then deltas.
    pub checkpoints: Vec<StateDelta>,
    /// Linear memory cap below the engine's limit (a tenant's quota).
    pub max_memory_bytes: Option<usize>,
}

/// A running operator.
pub struct OperatorInstance {
    module: Arc<OperatorModule>,
    config: Vec<(String, String)>,
    lateness_ms: i64,
    max_memory_bytes: usize,
    live: Option<Live>,
    /// Keyed state and log budget while no instance is live (they live in
    /// the store otherwise).
    parked: Option<Carried>,
    round: RoundBudget,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for OperatorInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorInstance")
            .field("module", &self.module)
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl OperatorInstance {
    /// Instantiates `module` and calls its `init` with `config`.
    pub fn new(
        module: Arc<OperatorModule>,
        config: Vec<(String, String)>,
    ) -> Result<OperatorInstance, OperatorError> {
        Self::with_options(module, config, InstanceOptions::default())
    }

    /// Like [`new`](Self::new), with keyed state, timers and watermark
    /// rebuilt from checkpoints (a snapshot, then deltas) before `init`,
    /// and optionally less memory than the engine's limit.
    pub fn with_options(
        module: Arc<OperatorModule>,
        config: Vec<(String, String)>,
        options: InstanceOptions,
    ) -> Result<OperatorInstance, OperatorError> {
        let lateness_ms = match config.iter().rev().find(|(k, _)| k == LATENESS_SETTING) {
            None => 0,
            Some((_, v)) => v.parse::<i64>().ok().filter(|l| *l >= 0).ok_or_else(|| {
                OperatorError::Config(format!(
                    "{LATENESS_SETTING} must be a whole number of milliseconds >= 0, got {v:?}"
                ))
            })?,
        };
        let limits = module.engine.limits().clone();
        let mut state = KeyedState::new(limits.max_state_bytes, limits.max_timers);
        for checkpoint in options.checkpoints {
            state.apply(checkpoint);
        }
        let max_memory_bytes = options
            .max_memory_bytes
            .map_or(limits.max_memory_bytes, |m| m.min(limits.max_memory_bytes));
        let round = RoundBudget {
            records: limits.max_output_records_per_call,
            bytes: limits.max_output_bytes_per_call,
        };
        let mut instance = OperatorInstance {
            module,
            config,
            lateness_ms,
            max_memory_bytes,
            live: None,
            parked: Some(Carried {
                keyed: state,
                log_rate: LogBudget::new(limits.max_log_bytes_per_sec),
            }),
            round,
            scratch: Vec::new(),
        };
        instance.live()?;
        Ok(instance)
    }

    pub fn module(&self) -> &OperatorModule {
        &self.module
    }

    fn limits(&self) -> &Limits {
        self.module.engine.limits()
    }

    /// The keyed state, timers and watermark (for checkpoints and tests).
    pub fn keyed_state(&self) -> &KeyedState {
        match &self.live {
            Some(live) => &live.store.data().keyed,
            None => {
                &self
                    .parked
                    .as_ref()
                    .expect("state is parked while no instance is live")
                    .keyed
            }
        }
    }

    /// All of the state, for a snapshot checkpoint.
    pub fn state_snapshot(&self) -> StateDelta {
        self.keyed_state().snapshot()
    }

    /// State changes since the last checkpoint, for the next one.
    pub fn take_state_delta(&mut self) -> StateDelta {
        self.keyed_state_mut().take_delta()
    }

    fn keyed_state_mut(&mut self) -> &mut KeyedState {
        match &mut self.live {
            Some(live) => &mut live.store.data_mut().keyed,
            None => {
                &mut self
                    .parked
                    .as_mut()
                    .expect("state is parked while no instance is live")
                    .keyed
            }
        }
    }

    /// The live instance, instantiating (and initialising) one if needed.
    fn live(&mut self) -> Result<&mut Live, OperatorError> {
        if self.live.is_none() {
            let live = self.instantiate()?;
            self.live = Some(live);
        }
        Ok(self.live.as_mut().expect("just made live"))
    }

    fn instantiate(&mut self) -> Result<Live, OperatorError> {
        let limits = self.limits().clone();
        let carried = self
            .parked
            .take()
            .expect("state is parked while no instance is live");
        let data = HostState::new(
            &self.module.name,
            carried,
            self.max_memory_bytes,
            limits.max_stdio_bytes,
        );
        let mut store = Store::new(&self.module.engine.shared.engine, data);
        store.limiter(|state| state);
        store.call_hook(charge_host_time);
        prepare_call(&mut store, &limits)?;
        let outcome = self
            .module
            .pre
            .instantiate(&mut store)
            .and_then(|bindings| {
                bindings
                    .call_init(&mut store, &self.config)
                    .map(|r| (bindings, r))
            });
        store.data_mut().drain_stdio();
        match outcome {
            Ok((bindings, Ok(()))) => Ok(Live { store, bindings }),
            Ok((_, Err(message))) => {
                self.parked = Some(store.into_data().into_carried());
                Err(OperatorError::Config(clean(&message, MAX_GUEST_TEXT)))
            }
            Err(e) => {
                let error = classify_trap(&store, e);
                self.parked = Some(store.into_data().into_carried());
                Err(error)
            }
        }
    }

    /// Runs a batch of input records through the operator, then any timers
    /// the new watermark fires. All or nothing: on error, state is as before.
    /// Starts a round: the output limits apply to this call and to what
    /// follows for the same input until the next `process`.
    pub fn process(&mut self, batches: &[Batch]) -> Result<CallOutput, OperatorError> {
        let limits = self.limits();
        self.round = RoundBudget {
            records: limits.max_output_records_per_call,
            bytes: limits.max_output_bytes_per_call,
        };
        self.process_records(batches, true)
    }

    /// Like [`process`](Self::process), but timers the new watermark makes
    /// due stay pending (for retrying records one by one without running
    /// a failing timer again each time), and within the current round.
    pub fn process_without_timers(
        &mut self,
        batches: &[Batch],
    ) -> Result<CallOutput, OperatorError> {
        self.process_records(batches, false)
    }

    /// Drops the timers that are due without running them; returns how
    /// many (for timers that keep failing).
    pub fn discard_due_timers(&mut self) -> usize {
        let keyed = self.keyed_state_mut();
        let dropped = keyed.take_due_timers().len();
        keyed.commit();
        dropped
    }

    fn process_records(
        &mut self,
        batches: &[Batch],
        fire_timers: bool,
    ) -> Result<CallOutput, OperatorError> {
        let records: usize = batches.iter().map(Batch::record_count).sum();
        let Some(max_timestamp) = batches.iter().map(Batch::max_timestamp).max() else {
            return Ok(CallOutput::default());
        };
        // One batch crosses as it is; several are joined in a reused buffer.
        let mut joined = std::mem::take(&mut self.scratch);
        joined.clear();
        let input: &[u8] = match batches {
            [one] => one.as_bytes(),
            many => {
                for batch in many {
                    joined.extend_from_slice(batch.as_bytes());
                }
                &joined
            }
        };
        let result = self.run(|this| {
            let mut output = this.call(Some(batches), records, |bindings, store| {
                bindings.call_process(store, input)
            })?;
            let watermark = max_timestamp.saturating_sub(this.lateness_ms);
            this.live()?
                .store
                .data_mut()
                .keyed
                .advance_watermark(watermark);
            if fire_timers {
                output.extend(this.fire_timers()?);
            }
            Ok(output)
        });
        self.scratch = joined;
        result
    }

    /// Moves the watermark to `to` (for example `i64::MAX` at the end of a
    /// bounded input, closing every window) and fires the timers it passes.
    pub fn advance_watermark(&mut self, to: i64) -> Result<CallOutput, OperatorError> {
        self.run(|this| {
            this.live()?.store.data_mut().keyed.advance_watermark(to);
            this.fire_timers()
        })
    }

    /// Runs one unit of work, committing state on success and rolling it
    /// back on failure.
    fn run(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<CallOutput, OperatorError>,
    ) -> Result<CallOutput, OperatorError> {
        let result = work(self);
        let keyed = self.keyed_state_mut();
        match &result {
            Ok(_) => keyed.commit(),
            Err(_) => keyed.rollback(),
        }
        result
    }

    fn fire_timers(&mut self) -> Result<CallOutput, OperatorError> {
        let mut output = CallOutput::default();
        for _ in 0..MAX_TIMER_ROUNDS {
            let due = self.live()?.store.data_mut().keyed.take_due_timers();
            if due.is_empty() {
                return Ok(output);
            }
            let fired: Vec<Timer> = due.into_iter().map(|(at, key)| Timer { key, at }).collect();
            let count = fired.len();
            output.extend(self.call(None, count, |bindings, store| {
                bindings.call_on_timer(store, &fired)
            })?);
        }
        Err(OperatorError::Limit {
            limit: "timer rounds per call",
            detail: format!("timers kept setting due timers for {MAX_TIMER_ROUNDS} rounds"),
        })
    }

    /// Makes one guest call with fresh budgets and checks its outcome
    /// against the limits and the round's budget; `input` is what a
    /// `process` call was given (timer calls have none).
    fn call(
        &mut self,
        input: Option<&[Batch]>,
        inputs: usize,
        f: impl FnOnce(&Operator, &mut Store<HostState>) -> wasmtime::Result<Result<Outcome, Failure>>,
    ) -> Result<CallOutput, OperatorError> {
        let limits = self.limits().clone();
        let live = self.live()?;
        prepare_call(&mut live.store, &limits)?;
        let result = f(&live.bindings, &mut live.store);
        live.store.data_mut().drain_stdio();
        match result {
            Ok(Ok(outcome)) => {
                let output = check_outcome(outcome, input, inputs, &limits, self.round)?;
                self.round.records -= output.record_count();
                self.round.bytes -= output.byte_count();
                Ok(output)
            }
            Ok(Err(failure)) => Err(OperatorError::Failed {
                offset: failure.offset,
                reason: clean(&failure.reason, MAX_GUEST_TEXT),
            }),
            Err(e) => {
                let live = self.live.take().expect("the call ran on a live instance");
                let error = classify_trap(&live.store, e);
                self.parked = Some(live.store.into_data().into_carried());
                Err(error)
            }
        }
    }
}

/// Resets the per-call budgets: fuel, wall-clock deadline, log messages.
fn prepare_call(store: &mut Store<HostState>, limits: &Limits) -> Result<(), OperatorError> {
    store
        .set_fuel(limits.fuel_per_call)
        .map_err(|e| OperatorError::Host(format!("cannot set fuel: {e}")))?;
    store.set_epoch_deadline((limits.max_call_ms / EPOCH_TICK.as_millis() as u64).max(1));
    store.epoch_deadline_trap();
    store
        .data_mut()
        .begin_call(limits.max_log_messages_per_call);
    Ok(())
}

/// Names the limit or reason behind a trap.
fn classify_trap(store: &Store<HostState>, error: wasmtime::Error) -> OperatorError {
    let state = store.data();
    if let Some(asked) = state.memory_denied {
        return OperatorError::Limit {
            limit: "memory per instance",
            detail: format!("the operator asked for {asked} bytes of linear memory"),
        };
    }
    if let Some(limit) = &state.limit_hit {
        return OperatorError::Limit {
            limit: limit.0,
            detail: limit.1.clone(),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            return OperatorError::Limit {
                limit: "CPU per call",
                detail: "the call used its whole fuel budget (an endless loop?)".into(),
            };
        }
        Some(Trap::Interrupt) => {
            return OperatorError::Limit {
                limit: "wall-clock time per call",
                detail: "the call ran past its deadline".into(),
            };
        }
        _ => {}
    }
    if state.stdio_full() || format!("{error:#}").contains("beyond capacity") {
        return OperatorError::Limit {
            limit: "stdout/stderr output per instance",
            detail: "the operator wrote more than its limit to stdout or stderr".into(),
        };
    }
    if let Some((offset, reason)) = &state.fatal {
        return OperatorError::Trap {
            offset: *offset,
            reason: reason.clone(),
        };
    }
    tracing::debug!(operator = %state.operator, error = %format!("{error:#}"), "operator trapped");
    let reason = match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => "call stack exhausted (unbounded recursion?)".to_string(),
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    OperatorError::Trap {
        offset: None,
        reason,
    }
}

/// Checks a call's outcome against the output limits and what is left of
/// the round's budget, validates and seals every emitted batch (setting the
/// header fields the guest does not choose), and checks the rejections:
/// each must name a record of `input`, at most once.
fn check_outcome(
    outcome: Outcome,
    input: Option<&[Batch]>,
    inputs: usize,
    limits: &Limits,
    round: RoundBudget,
) -> Result<CallOutput, OperatorError> {
    let bytes: usize = outcome.emitted.iter().map(|e| e.batch.len()).sum();
    if bytes > round.bytes {
        return Err(OperatorError::Limit {
            limit: "output bytes per call",
            detail: format!(
                "emitted {bytes} bytes, {} left of the limit of {} for this input",
                round.bytes, limits.max_output_bytes_per_call
            ),
        });
    }
    let max_records = round
        .records
        .min(limits.max_outputs_per_input.saturating_mul(inputs.max(1)));
    let mut output = CallOutput::default();
    let mut records = 0;
    for emitted in outcome.emitted {
        check_output_name(&emitted.output).map_err(OperatorError::BadOutput)?;
        let batch = Batch::from_new(emitted.batch).map_err(|e| {
            OperatorError::BadOutput(format!("batch for output {:?}: {e}", emitted.output))
        })?;
        records += batch.record_count();
        if records > max_records {
            return Err(OperatorError::Limit {
                limit: "output records per call",
                detail: format!(
                    "emitted more than {max_records} records for {inputs} input(s) \
                     (limits: {} per call and input, {} per input record)",
                    limits.max_output_records_per_call, limits.max_outputs_per_input
                ),
            });
        }
        output.emitted.push((emitted.output, batch));
    }
    output.rejected = check_rejections(outcome.rejected, input)?;
    Ok(output)
}

/// Rejections sorted by offset, one per input record (the first reason
/// given for it), reasons cleaned. Refused when one names an offset
/// outside the input, or when a call without input records (a timer call)
/// rejects anything.
fn check_rejections(
    rejected: Vec<super::host::weir::operator::types::Rejection>,
    input: Option<&[Batch]>,
) -> Result<Vec<Rejection>, OperatorError> {
    if rejected.is_empty() {
        return Ok(Vec::new());
    }
    let Some(input) = input else {
        return Err(OperatorError::BadOutput(
            "a timer call rejected records, but it has no input records".into(),
        ));
    };
    let mut offsets: Vec<(u64, usize)> = rejected
        .iter()
        .enumerate()
        .map(|(i, r)| (r.offset, i))
        .collect();
    // Stable: the first rejection of an offset comes first.
    offsets.sort_by_key(|(offset, _)| *offset);
    offsets.dedup_by_key(|(offset, _)| *offset);
    let in_input = |offset: u64| {
        let batch = input.partition_point(|b| b.last_offset() < offset);
        input.get(batch).is_some_and(|b| b.base_offset() <= offset)
    };
    if let Some((offset, _)) = offsets.iter().find(|(offset, _)| !in_input(*offset)) {
        return Err(OperatorError::BadOutput(format!(
            "rejected offset {offset}, which is not a record of the call's input"
        )));
    }
    Ok(offsets
        .into_iter()
        .map(|(offset, i)| Rejection {
            offset,
            reason: clean(&rejected[i].reason, MAX_REJECTION_REASON),
        })
        .collect())
}

/// Checks an output name as the contract defines it (`wit/operator.wit`):
/// 1 to 64 characters of `[A-Za-z0-9._-]`. Pipeline specs are checked with
/// it too, so a spec cannot route an output no operator can emit.
pub fn check_output_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "output name {:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            name.chars().take(80).collect::<String>()
        ))
    }
}
