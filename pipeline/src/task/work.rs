//! The part of a task that runs on the blocking pool: the chain of
//! operator instances, and turning a round's results into a commit record
//! and stamped output batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use weir_format::{Batch, ProducerStamp};

use super::committer::Sealed;
use super::{StagePlan, TaskError};
use crate::chain::{Chain, ChainOutput, Stage};
use crate::checkpoint::{Commit, EncodedCommit, Pending, next_sequence};
use crate::routing::{OutputTopic, route};
use crate::scheduler::CpuScheduler;
use crate::spec::ErrorPolicy;
use crate::stats::{TaskStats, bump};
use weir_host::{InstanceOptions, OperatorInstance};
use weir_log::MAX_COMMIT_BYTES;

/// Input processed but not yet handed to the committer. While the
/// committer is busy, a round grows by whole reads, so a slow log gets
/// fewer, larger commits (group commit) while a fast one gets a commit
/// per read.
#[derive(Default)]
pub(super) struct OpenRound {
    outputs: Vec<Pending>,
    /// The input position after the last read in the round.
    end: Option<u64>,
    input_bytes: usize,
    output_bytes: usize,
}

/// A round takes no more input once it has this many bytes of it...
const MAX_ROUND_INPUT_BYTES: usize = 8 << 20;
/// ...or this many bytes of outputs (far below a commit's limit).
const MAX_ROUND_OUTPUT_BYTES: usize = 16 << 20;

/// The part of a task that runs on the blocking pool.
pub(super) struct Work {
    pub(super) open: OpenRound,
    pub(super) chain: Chain,
    pub(super) producer_id: i64,
    pub(super) sequences: BTreeMap<(String, u32), i32>,
    pub(super) outputs: HashMap<String, OutputTopic>,
    pub(super) policy: ErrorPolicy,
    pub(super) dead_letter: Option<String>,
    pub(super) partition: u32,
    pub(super) source: String,
    pub(super) stats: Arc<TaskStats>,
    pub(super) scheduler: Arc<CpuScheduler>,
    pub(super) tenant: String,
    pub(super) cpu_share: u32,
}

pub(super) fn build_chain(
    stages: Vec<StagePlan>,
    mut states: BTreeMap<String, Vec<weir_host::StateDelta>>,
    policy: ErrorPolicy,
    stats: Arc<TaskStats>,
    stopping: Arc<AtomicBool>,
) -> Result<Chain, TaskError> {
    let stages = stages
        .into_iter()
        .map(|plan| {
            let checkpoints = states.remove(&plan.state_key).unwrap_or_default();
            let options = InstanceOptions {
                checkpoints,
                max_memory_bytes: plan.max_memory_bytes,
            };
            let instance = OperatorInstance::with_options(plan.module, plan.config, options)
                .map_err(|source| TaskError::StageStart {
                    stage: plan.label.clone(),
                    source,
                })?;
            Ok(Stage {
                module: plan.state_key,
                label: plan.label,
                instance,
                routes: plan.routes,
            })
        })
        .collect::<Result<Vec<_>, TaskError>>()?;
    Ok(Chain::new(stages, policy, stats, stopping))
}

impl OpenRound {
    pub(super) fn is_empty(&self) -> bool {
        self.end.is_none()
    }

    /// Whether the round may take more input.
    pub(super) fn may_grow(&self) -> bool {
        self.input_bytes < MAX_ROUND_INPUT_BYTES && self.output_bytes < MAX_ROUND_OUTPUT_BYTES
    }
}

impl Work {
    /// Runs input (up to `end`) through the chain and adds its outputs to
    /// the open round.
    pub(super) fn process(&mut self, batches: Vec<Batch>, end: u64) -> Result<(), TaskError> {
        let input_bytes: usize = batches.iter().map(Batch::size).sum();
        let output = self.chain.process(batches, &self.source)?;
        let outputs = self.route(output)?;
        self.open.input_bytes += input_bytes;
        self.open.output_bytes += outputs.iter().map(|p| p.batch.size()).sum::<usize>();
        self.open.outputs.extend(outputs);
        self.open.end = Some(end);
        Ok(())
    }

    /// Closes the open round, if any: its commit record (the state changes
    /// since the last commit, the position and the outputs) and the
    /// outputs to publish after it.
    pub(super) fn seal(&mut self) -> Result<Option<Sealed>, TaskError> {
        let Some(end) = self.open.end else {
            return Ok(None);
        };
        let OpenRound { outputs, .. } = std::mem::take(&mut self.open);
        let states = self.chain.take_state_deltas();
        let targets = outputs
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let commit = Commit::new(end, self.producer_id, states, targets);
        let batches: Vec<Batch> = outputs.iter().map(|p| p.batch.clone()).collect();
        let values = commit.encode(&batches);
        // Each stage's output and state are bounded by its limits; a chain
        // of many stages can still add up to more than a commit holds.
        let size = values.size() + 16 * (batches.len() + 2);
        if size > MAX_COMMIT_BYTES {
            return Err(TaskError::CommitTooLarge { end, size });
        }
        Ok(Some(Sealed {
            values,
            outputs,
            end,
        }))
    }

    /// Sorts outputs into topic partitions (see `routing`) and stamps each
    /// batch with the producer id and the next sequences. Undeliverable
    /// records halt the task under `halt` and are dropped otherwise.
    fn route(&mut self, output: ChainOutput) -> Result<Vec<Pending>, TaskError> {
        let mut all = output.routed;
        if let Some(topic) = &self.dead_letter {
            let dead: usize = output.dead_letters.iter().map(Batch::record_count).sum();
            bump(&self.stats.dead_lettered, dead as u64);
            all.extend(output.dead_letters.into_iter().map(|b| (topic.clone(), b)));
        }
        let routed = route(&self.outputs, self.partition, all).map_err(TaskError::Undeliverable)?;
        if let Some(first) = routed.undeliverable.first() {
            if self.policy == ErrorPolicy::Halt {
                return Err(TaskError::Undeliverable(first.to_string()));
            }
            tracing::warn!(input = %self.source, count = routed.undeliverable.len(),
                reason = %first, "undeliverable outputs dropped");
            bump(&self.stats.undeliverable, routed.undeliverable.len() as u64);
        }
        Ok(routed
            .batches
            .into_iter()
            .map(|(topic, partition, batch)| {
                let stamp = self.next_stamp(&topic, partition, batch.record_count());
                Pending {
                    topic,
                    partition,
                    batch: batch.with_producer(stamp),
                }
            })
            .collect())
    }

    /// The snapshot commit for position `end`.
    pub(super) fn snapshot(&self, end: u64) -> EncodedCommit {
        let states = self.chain.state_snapshots();
        Commit::snapshot(end, self.producer_id, states, &self.sequences).encode(&[])
    }

    fn next_stamp(&mut self, topic: &str, partition: u32, records: usize) -> ProducerStamp {
        let slot = self
            .sequences
            .entry((topic.to_string(), partition))
            .or_insert(0);
        let base_sequence = *slot;
        *slot = next_sequence(base_sequence, records);
        ProducerStamp {
            id: self.producer_id,
            epoch: 0,
            base_sequence,
        }
    }
}
