//! A pipeline's stages fused: one input batch runs through every operator
//! in memory, and what comes out is sorted into routed outputs and dead
//! letters. This is the blocking part of a task (guest calls); the task
//! runs it off the async threads.
//!
//! Each stage's `main` output is the next stage's input (re-numbered
//! 0, 1, 2... so rejections name one record), and after its own input a
//! stage's watermark moves up to the previous stage's, so windows
//! downstream close even when nothing flows to them.
//!
//! A failed call is all or nothing (the operator's state rolls back), so
//! under `skip` and `dead-letter` the batch is run again record by record
//! to find the records that fail; under `halt` the chain stops and nothing
//! of the batch counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use weir_format::{Batch, BatchBuilder, Header, Record, RecordView};

use super::spec::ErrorPolicy;
use super::stats::{TaskStats, bump};
use weir_host::{CallOutput, MAIN_OUTPUT, OperatorError, OperatorInstance, Rejection, StateDelta};

/// Record headers added to dead letters.
pub const ERROR_HEADER: &str = "weir.error";
pub const STAGE_HEADER: &str = "weir.stage";
pub const SOURCE_HEADER: &str = "weir.source";

/// One operator of the chain and where its outputs go.
pub struct Stage {
    /// The module name, which checkpoints key the state by.
    pub module: String,
    /// `name@version`, for messages.
    pub label: String,
    pub instance: OperatorInstance,
    /// Output name → topic.
    pub routes: BTreeMap<String, String>,
}

/// The fused stages of one task.
pub struct Chain {
    stages: Vec<Stage>,
    policy: ErrorPolicy,
    stats: Arc<TaskStats>,
    /// Set when the task is asked to stop: a record-by-record retry (which
    /// may take one full CPU budget per record) gives up between records.
    stopping: Arc<AtomicBool>,
}

/// What one input batch produced.
#[derive(Default)]
pub struct ChainOutput {
    /// (topic, batch) in the order produced; offsets are relative.
    pub routed: Vec<(String, Batch)>,
    /// Failed and rejected records, with the reason in their headers.
    pub dead_letters: Vec<Batch>,
}

/// Why the chain gave no result for a round.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Halt {
    /// The task is stopping: the round is redone after the restart.
    #[error("interrupted: the task is stopping")]
    Interrupted,
    /// A stage failed under the `halt` policy.
    #[error("stage {stage}: {reason}")]
    Failed { stage: String, reason: String },
}

impl Chain {
    pub fn new(
        stages: Vec<Stage>,
        policy: ErrorPolicy,
        stats: Arc<TaskStats>,
        stopping: Arc<AtomicBool>,
    ) -> Chain {
        Chain {
            stages,
            policy,
            stats,
            stopping,
        }
    }

    /// State changes of every stage since the last call, keyed by module.
    pub fn take_state_deltas(&mut self) -> Vec<(String, StateDelta)> {
        self.stages
            .iter_mut()
            .map(|s| (s.module.clone(), s.instance.take_state_delta()))
            .collect()
    }

    /// Complete state of every stage, keyed by module.
    pub fn state_snapshots(&self) -> Vec<(String, StateDelta)> {
        self.stages
            .iter()
            .map(|s| (s.module.clone(), s.instance.state_snapshot()))
            .collect()
    }

    /// Runs `input` (records of the input partition `source`, e.g.
    /// `orders/0`) through every stage.
    pub fn process(&mut self, input: Vec<Batch>, source: &str) -> Result<ChainOutput, Halt> {
        let mut output = ChainOutput::default();
        let mut dead = DeadLetters::default();
        let mut current = input;
        let mut upstream_watermark = None;
        let last = self.stages.len() - 1;
        for i in 0..=last {
            let stage = &mut self.stages[i];
            let stats = &self.stats.stages[i];
            let records: usize = current.iter().map(Batch::record_count).sum();
            bump(&stats.records_in, records as u64);
            let started = Instant::now();
            let result = run_stage(
                stage,
                &current,
                upstream_watermark,
                self.policy,
                &self.stopping,
            );
            bump(&stats.busy_ns, started.elapsed().as_nanos() as u64);
            let (call, failures) = result?;
            bump(&stats.errors, failures.len() as u64);
            bump(&stats.records_out, call.record_count() as u64);
            bump(&stats.rejected, call.rejected.len() as u64);
            let origin = (i == 0).then_some(source);
            for failure in &failures {
                if let (ErrorPolicy::DeadLetter, Some(record)) = (self.policy, failure.record()) {
                    dead.add(&record, &failure.reason, &stage.label, origin);
                }
            }
            for (record, reason) in rejected_records(&current, &call.rejected) {
                dead.add(&record, reason, &stage.label, origin);
            }
            upstream_watermark = Some(stage.instance.keyed_state().watermark());
            let mut next = Vec::new();
            let mut next_offset = 0;
            for (name, batch) in call.emitted {
                if i < last && name == MAIN_OUTPUT {
                    let batch = batch.with_base_offset(next_offset);
                    next_offset = batch.next_offset();
                    next.push(batch);
                } else if let Some(topic) = stage.routes.get(&name) {
                    output.routed.push((topic.clone(), batch));
                } else {
                    bump(&self.stats.unrouted, batch.record_count() as u64);
                }
            }
            current = next;
        }
        output.dead_letters = dead.finish();
        Ok(output)
    }
}

/// A record whose processing failed on its own (no record: timers).
struct Failure {
    batch: Option<Batch>,
    reason: String,
}

impl Failure {
    fn record(&self) -> Option<RecordView<'_>> {
        self.batch.as_ref().and_then(|b| b.records().next())
    }
}

/// Runs one stage over its input, then moves its watermark up to
/// `upstream_watermark`. Under `skip` and `dead-letter` a failed batch is
/// retried record by record (timers held back, then fired once); the
/// records that still fail are returned, and timers that fail are dropped
/// (counted as failures without a record).
fn run_stage(
    stage: &mut Stage,
    input: &[Batch],
    upstream_watermark: Option<i64>,
    policy: ErrorPolicy,
    stopping: &AtomicBool,
) -> Result<(CallOutput, Vec<Failure>), Halt> {
    let label = stage.label.clone();
    let halt = |error: OperatorError| Halt::Failed {
        stage: label.clone(),
        reason: error.to_string(),
    };
    let mut failures = Vec::new();
    let mut output = match stage.instance.process(input) {
        Ok(output) => output,
        Err(error) if policy == ErrorPolicy::Halt => return Err(halt(error)),
        Err(_) => {
            let mut output = CallOutput::default();
            for record in input.iter().flat_map(Batch::records) {
                if stopping.load(Ordering::Relaxed) {
                    return Err(Halt::Interrupted);
                }
                let single = single_record(&record);
                match stage
                    .instance
                    .process_without_timers(std::slice::from_ref(&single))
                {
                    Ok(one) => output.extend(one),
                    Err(error) => failures.push(Failure {
                        batch: Some(single),
                        reason: error.to_string(),
                    }),
                }
            }
            let now = stage.instance.keyed_state().watermark();
            output.extend(fire_or_drop_timers(stage, now, &mut failures)?);
            output
        }
    };
    if let Some(watermark) = upstream_watermark {
        if policy == ErrorPolicy::Halt {
            output.extend(stage.instance.advance_watermark(watermark).map_err(halt)?);
        } else {
            output.extend(fire_or_drop_timers(stage, watermark, &mut failures)?);
        }
    }
    Ok((output, failures))
}

/// Moves the watermark to `to` and fires due timers; if they fail, drops
/// them (a timer that fails would fail again with every later input).
fn fire_or_drop_timers(
    stage: &mut Stage,
    to: i64,
    failures: &mut Vec<Failure>,
) -> Result<CallOutput, Halt> {
    match stage.instance.advance_watermark(to) {
        Ok(fired) => Ok(fired),
        Err(error) => {
            let dropped = stage.instance.discard_due_timers();
            tracing::warn!(stage = %stage.label, %error, dropped, "timers failed and were dropped");
            failures.push(Failure {
                batch: None,
                reason: format!("{dropped} timer(s) failed and were dropped: {error}"),
            });
            Ok(CallOutput::default())
        }
    }
}

/// A batch holding just `record`, at its offset.
fn single_record(record: &RecordView<'_>) -> Batch {
    let mut builder = BatchBuilder::new();
    builder.push_view(record);
    builder
        .finish()
        .expect("a record read from a valid batch fits a batch")
        .with_base_offset(record.offset)
}

/// The input records the rejections name, with their reasons, in one
/// pass over both (the host hands out rejections sorted by offset, one per
/// record). A rejected offset that compaction left empty has no record.
fn rejected_records<'a>(
    batches: &'a [Batch],
    rejections: &'a [Rejection],
) -> Vec<(RecordView<'a>, &'a str)> {
    let mut found = Vec::with_capacity(rejections.len());
    let mut rejections = rejections.iter().peekable();
    for record in batches.iter().flat_map(Batch::records) {
        while rejections.next_if(|r| r.offset < record.offset).is_some() {}
        match rejections.peek() {
            None => break,
            Some(r) if r.offset == record.offset => {
                found.push((record, r.reason.as_str()));
                rejections.next();
            }
            Some(_) => {}
        }
    }
    found
}

/// Dead letters being collected: the original record with the reason,
/// the stage and (for the first stage) the input position as headers.
#[derive(Default)]
struct DeadLetters {
    batch: Option<BatchBuilder>,
}

impl DeadLetters {
    fn add(&mut self, record: &RecordView<'_>, reason: &str, stage: &str, source: Option<&str>) {
        let position = source.map(|s| format!("{s}@{}", record.offset));
        let mut headers: Vec<Header<'_>> = record.headers().collect();
        headers.push(Header {
            name: ERROR_HEADER,
            value: Some(reason.as_bytes()),
        });
        headers.push(Header {
            name: STAGE_HEADER,
            value: Some(stage.as_bytes()),
        });
        if let Some(position) = &position {
            headers.push(Header {
                name: SOURCE_HEADER,
                value: Some(position.as_bytes()),
            });
        }
        self.batch.get_or_insert_default().push(&Record {
            key: record.key,
            value: record.value,
            headers: &headers,
            timestamp: record.timestamp,
        });
    }

    fn finish(self) -> Vec<Batch> {
        self.batch
            .map(|b| {
                b.finish()
                    .expect("made on the first dead letter, so never empty")
            })
            .into_iter()
            .collect()
    }
}
