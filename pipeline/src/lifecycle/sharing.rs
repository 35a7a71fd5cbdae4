//! Several workers sharing one cluster's pipelines. Each worker, once per
//! [`SharedWork::interval`], in [`Pipelines::share_work`]:
//!
//! 1. says it is alive, with a report of the tasks it runs (any worker
//!    answers a pipeline's status from the reports), and reads who else is;
//! 2. reads the pipeline records from the catalog: a record another
//!    worker changed (or deleted) restarts (or stops) the tasks it runs here;
//! 3. deals every task over the live workers (`placement::assign`): it
//!    stops the tasks no longer dealt to it, each after its current
//!    commit, and gives their leases up; it renews the leases of the
//!    others, stopping at once any it lost; and it starts the tasks dealt
//!    to it whose lease it can take.
//!
//! A task therefore runs on one worker at a time as far as leases go, and
//! a worker that lost a lease without knowing (paused past the TTL) is
//! fenced by its task's commit log: its next commit is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use weir_log::Workers;

use super::running::{TaskHandle, join, signal_stop};
use super::{Pipelines, RECORDS};
use crate::placement::{TaskReport, WorkerReport, assign, lease_key};
use crate::record::{PipelineRecord, RECORD_FORMAT};
use crate::task::TaskKey;

/// This worker's part in a cluster: its id, the cluster's membership and
/// leases, and the other workers' last reports.
pub struct SharedWork {
    workers: Arc<dyn Workers>,
    id: String,
    /// The live workers, as of the last heartbeat.
    live: Mutex<Vec<String>>,
    /// The other workers' tasks, as `(worker, report)`.
    elsewhere: Mutex<Vec<(String, TaskReport)>>,
    /// Every live worker's Kafka address, by worker (this one's included).
    kafka: Mutex<BTreeMap<String, String>>,
    /// This worker's Kafka address, told in its heartbeats.
    own_kafka: Mutex<Option<String>>,
    /// One pass at a time (and no pass while a pipeline is deleted here).
    pub(super) passing: tokio::sync::Mutex<()>,
    /// Set at shutdown: no pass starts anything any more.
    closed: AtomicBool,
}

impl SharedWork {
    /// Worker `id` of the cluster whose membership is `workers`.
    pub fn new(workers: Arc<dyn Workers>, id: String) -> SharedWork {
        SharedWork {
            workers,
            id,
            live: Mutex::new(Vec::new()),
            elsewhere: Mutex::new(Vec::new()),
            kafka: Mutex::new(BTreeMap::new()),
            own_kafka: Mutex::new(None),
            passing: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
        }
    }

    /// Ends the passes (after the one under way, if any).
    pub(super) async fn close(&self) {
        let _one = self.passing.lock().await;
        self.closed.store(true, Ordering::Relaxed);
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Tells the other workers, from the next heartbeat on, where this
    /// worker's Kafka listener is (`host:port`).
    pub fn set_kafka_address(&self, address: String) {
        *self.own_kafka.lock().unwrap_or_else(|e| e.into_inner()) = Some(address);
    }

    /// How often a worker renews its heartbeat and leases: five times per
    /// TTL, so one late pass costs nothing.
    pub fn interval(&self) -> Duration {
        self.workers.ttl() / 5
    }

    /// The other workers' tasks, as `(worker, report)`.
    pub(super) fn elsewhere(&self) -> Vec<(String, TaskReport)> {
        self.elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A live worker and the tasks it runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerTasks {
    pub worker: String,
    /// Whether it is the worker answering.
    pub this: bool,
    /// Lease keys: `pipeline/input/partition`.
    pub tasks: Vec<String>,
    /// Where its Kafka listener is (`host:port`), if it has one.
    pub kafka: Option<String>,
}

impl Pipelines {
    /// Shares the work with the other workers until the process ends (see
    /// the module docs); does nothing on a server of its own.
    pub async fn share_work(self: Arc<Self>) {
        let Some(shared) = &self.sharing else {
            return;
        };
        while !shared.closed.load(Ordering::Relaxed) {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %format!("{e:#}"), "sharing pipeline tasks failed; trying again");
            }
            tokio::time::sleep(shared.interval()).await;
        }
    }

    /// One pass of [`share_work`](Self::share_work).
    pub(super) async fn pass(&self) -> anyhow::Result<()> {
        let Some(shared) = &self.sharing else {
            return Ok(());
        };
        let _one = shared.passing.lock().await;
        if shared.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let live = self.heartbeat(shared).await?;
        self.follow_records(shared).await?;
        let tasks = self.all_tasks().await;
        let dealt = assign(&tasks, &live);
        let mine: BTreeSet<TaskKey> = dealt
            .into_iter()
            .filter(|(_, worker)| *worker == shared.id)
            .map(|(task, _)| task)
            .collect();
        self.give_up(shared, &mine).await;
        self.take(shared, &mine).await;
        Ok(())
    }

    /// Reports this worker's tasks; returns the live workers' ids and keeps
    /// the others' reports.
    async fn heartbeat(&self, shared: &SharedWork) -> anyhow::Result<Vec<String>> {
        let report = WorkerReport {
            tasks: self.reports(),
            kafka: shared
                .own_kafka
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let info = Bytes::from(serde_json::to_vec(&report).context("encoding a heartbeat")?);
        let live = shared
            .workers
            .heartbeat(&shared.id, info)
            .await
            .context("while sending this worker's heartbeat")?;
        let reports: Vec<(String, WorkerReport)> = live
            .iter()
            .map(|w| {
                (
                    w.id.clone(),
                    serde_json::from_slice(&w.info).unwrap_or_default(),
                )
            })
            .collect();
        *shared.kafka.lock().unwrap_or_else(|e| e.into_inner()) = reports
            .iter()
            .filter_map(|(id, r)| Some((id.clone(), r.kafka.clone()?)))
            .collect();
        let elsewhere = reports
            .into_iter()
            .filter(|(id, _)| *id != shared.id)
            .flat_map(|(id, report)| report.tasks.into_iter().map(move |t| (id.clone(), t)))
            .collect();
        *shared.elsewhere.lock().unwrap_or_else(|e| e.into_inner()) = elsewhere;
        let live: Vec<String> = live.into_iter().map(|w| w.id).collect();
        *shared.live.lock().unwrap_or_else(|e| e.into_inner()) = live.clone();
        Ok(live)
    }

    /// Every live worker (as of the last pass) and the tasks it runs, as
    /// lease keys (`pipeline/input/partition`); `None` on a server of its
    /// own.
    pub fn placement(&self) -> Option<Vec<WorkerTasks>> {
        let shared = self.sharing.as_ref()?;
        let live = shared
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let elsewhere = shared.elsewhere();
        let kafka = shared
            .kafka
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let here: Vec<String> = self
            .reports()
            .iter()
            .map(|r| format!("{}/{}/{}", r.pipeline, r.input, r.partition))
            .collect();
        Some(
            live.into_iter()
                .map(|worker| {
                    let this = worker == shared.id;
                    let tasks = match this {
                        true => here.clone(),
                        false => elsewhere
                            .iter()
                            .filter(|(w, _)| *w == worker)
                            .map(|(_, r)| format!("{}/{}/{}", r.pipeline, r.input, r.partition))
                            .collect(),
                    };
                    WorkerTasks {
                        kafka: kafka.get(&worker).cloned(),
                        worker,
                        this,
                        tasks,
                    }
                })
                .collect(),
        )
    }

    /// What this worker's tasks say about themselves.
    fn reports(&self) -> Vec<TaskReport> {
        let running = self.lock();
        running
            .values()
            .flat_map(|entry| &entry.tasks)
            .map(|task| TaskReport {
                pipeline: task.key.pipeline.clone(),
                input: task.key.input.clone(),
                partition: task.key.partition,
                state: task.stats.state(),
                position: task.stats.position.load(Ordering::Relaxed),
                records_in: task.stats.records_in.load(Ordering::Relaxed),
                records_out: task.stats.records_out.load(Ordering::Relaxed),
                stages: task.stats.stages.iter().map(|s| s.counts()).collect(),
            })
            .collect()
    }

    /// Brings the records this worker knows in line with the catalog:
    /// tasks of a changed record stop (to start again from the new one),
    /// tasks of a deleted one stop for good.
    async fn follow_records(&self, shared: &SharedWork) -> anyhow::Result<()> {
        let mut stored = BTreeMap::new();
        for key in self.catalog.documents(RECORDS).await? {
            let Some(text) = self.catalog.document(&key).await? else {
                continue; // deleted meanwhile
            };
            let record: PipelineRecord = RECORD_FORMAT
                .from_json(&text)
                .with_context(|| format!("while reading {key}"))?;
            stored.insert(record.name.clone(), record);
        }
        let mut stopping = Vec::new();
        {
            let mut running = self.lock();
            running.retain(|name, entry| {
                let kept = stored.contains_key(name);
                if !kept {
                    stopping.append(&mut entry.tasks);
                }
                kept
            });
            for (name, record) in stored {
                match running.get_mut(&name) {
                    Some(entry)
                        if RECORD_FORMAT.to_json(&entry.record)
                            == RECORD_FORMAT.to_json(&record) => {}
                    Some(entry) => {
                        stopping.append(&mut entry.tasks);
                        entry.record = record;
                        entry.failure = None;
                    }
                    None => {
                        running.insert(name, super::Running::new(record, Ok(Vec::new())));
                    }
                }
            }
        }
        stop_and_release(shared, stopping).await;
        Ok(())
    }

    /// Every task of every pipeline that can run (its input topics exist).
    async fn all_tasks(&self) -> Vec<TaskKey> {
        let pipelines: Vec<(String, Vec<String>)> = self
            .lock()
            .values()
            .map(|entry| (entry.record.name.clone(), entry.record.spec.inputs.clone()))
            .collect();
        let mut tasks = Vec::new();
        for (pipeline, inputs) in pipelines {
            for input in inputs {
                let Ok(info) = self.log.topic(&input).await else {
                    continue; // the pipeline fails to start wherever it is dealt
                };
                for partition in 0..info.partitions.len() as u32 {
                    tasks.push(TaskKey {
                        pipeline: pipeline.clone(),
                        input: input.clone(),
                        partition,
                    });
                }
            }
        }
        tasks
    }

    /// Stops the tasks not dealt to this worker (after their current
    /// commit) and gives their leases up; renews the leases of the others
    /// and stops at once those it lost.
    async fn give_up(&self, shared: &SharedWork, mine: &BTreeSet<TaskKey>) {
        let mut moving = Vec::new();
        let kept: Vec<TaskKey> = {
            let mut running = self.lock();
            for entry in running.values_mut() {
                let (stay, go) = std::mem::take(&mut entry.tasks)
                    .into_iter()
                    .partition(|t| mine.contains(&t.key));
                entry.tasks = stay;
                moving.extend(go);
            }
            running
                .values()
                .flat_map(|e| e.tasks.iter().map(|t| t.key.clone()))
                .collect()
        };
        stop_and_release(shared, moving).await;
        let mut lost = BTreeSet::new();
        for key in kept {
            match shared.workers.lease(&lease_key(&key), &shared.id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(task = %lease_key(&key), "another worker holds this task's lease now; stopping it here");
                    lost.insert(key);
                }
                // Unsure: the task goes on; its commit log fences it if
                // another worker took over.
                Err(e) => {
                    tracing::warn!(task = %lease_key(&key), error = %e, "could not renew a task's lease");
                }
            }
        }
        let mut stopping = Vec::new();
        {
            let mut running = self.lock();
            for entry in running.values_mut() {
                let (go, stay) = std::mem::take(&mut entry.tasks)
                    .into_iter()
                    .partition(|t| lost.contains(&t.key));
                entry.tasks = stay;
                stopping.extend(go);
            }
        }
        signal_stop(&stopping);
        join(stopping).await;
    }

    /// Starts the tasks dealt to this worker that it does not run yet and
    /// whose leases it can take.
    async fn take(&self, shared: &SharedWork, mine: &BTreeSet<TaskKey>) {
        let (records, running): (BTreeMap<String, PipelineRecord>, BTreeSet<TaskKey>) = {
            let running = self.lock();
            (
                // Pipelines that could not start are tried again: on a
                // cluster the reason may have been a server out of reach.
                running
                    .values()
                    .map(|e| (e.record.name.clone(), e.record.clone()))
                    .collect(),
                running
                    .values()
                    .flat_map(|e| e.tasks.iter().map(|t| t.key.clone()))
                    .collect(),
            )
        };
        for (name, record) in records {
            let mut wanted = BTreeSet::new();
            for key in mine
                .iter()
                .filter(|k| k.pipeline == name && !running.contains(k))
            {
                match shared.workers.lease(&lease_key(key), &shared.id).await {
                    Ok(true) => {
                        wanted.insert(key.clone());
                    }
                    Ok(false) => {} // its last holder has not let go yet
                    Err(e) => {
                        tracing::warn!(task = %lease_key(key), error = %e, "could not take a task's lease");
                    }
                }
            }
            if wanted.is_empty() {
                continue;
            }
            let started = match self.plan(&record).await {
                Ok(plans) => self.start(&record, plans, Some(&wanted)).await,
                Err(e) => Err(e.to_string()),
            };
            let mut running = self.lock();
            let Some(entry) = running.get_mut(&name) else {
                continue; // deleted meanwhile: the next pass stops what started
            };
            match started {
                Ok(mut tasks) => {
                    entry.tasks.append(&mut tasks);
                    entry.failure = None;
                }
                Err(reason) => {
                    if entry.failure.as_ref() != Some(&reason) {
                        tracing::error!(pipeline = %name, %reason, "pipeline cannot start; trying again at every pass");
                    }
                    entry.failure = Some(reason);
                }
            }
        }
    }

    /// Gives up the leases of tasks that ended here.
    pub(super) async fn release(&self, stopped: Vec<TaskKey>) {
        let Some(shared) = &self.sharing else {
            return;
        };
        for key in stopped {
            if let Err(e) = shared.workers.release(&lease_key(&key), &shared.id).await {
                tracing::warn!(task = %lease_key(&key), error = %e, "could not give a task's lease up; it lapses by itself");
            }
        }
    }

    /// Leaves the cluster once this worker's tasks (`stopped`) ended:
    /// gives their leases up, so that others take them over at once.
    pub(super) async fn leave(&self, stopped: Vec<TaskKey>) {
        let Some(shared) = &self.sharing else {
            return;
        };
        let _one = shared.passing.lock().await;
        self.release(stopped).await;
        if let Err(e) = shared.workers.leave(&shared.id).await {
            tracing::warn!(error = %e, "could not tell the cluster this worker leaves");
        }
    }
}

/// Stops tasks after their current commit, then gives their leases up.
async fn stop_and_release(shared: &SharedWork, tasks: Vec<TaskHandle>) {
    let keys: Vec<TaskKey> = tasks.iter().map(|t| t.key.clone()).collect();
    signal_stop(&tasks);
    join(tasks).await;
    for key in keys {
        if let Err(e) = shared.workers.release(&lease_key(&key), &shared.id).await {
            tracing::warn!(task = %lease_key(&key), error = %e, "could not give a task's lease up; it lapses by itself");
        }
    }
}
