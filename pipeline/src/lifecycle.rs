//! The pipelines of a server and their lifecycle: create or update (apply),
//! pause, resume, delete, status; specs kept on disk so they run again
//! after a restart.
//!
//! Applying a spec checks it completely before anything changes: shape,
//! topics, modules (resolved to versions and compiled) and every stage's
//! configuration (each operator is instantiated once). An update stops the
//! old tasks after their current commit and starts new ones, which resume
//! from the committed position with the committed state (state is keyed
//! by module name, so a new version of a module keeps it).
//!
//! Each pipeline record is the catalog document `pipelines/<name>.json`:
//! the spec, the module versions it resolved to, and whether it is paused.
//!
//! **Locks.** A change to one pipeline may wait: for its modules to
//! compile, its operators to initialize, its tasks to finish their current
//! round (each bounded by the operator's limits). Such waits hold only
//! that pipeline's own lock, so they never hold up another pipeline's
//! management or status. The shared `admin` lock is held only for quick
//! checks and bookkeeping: which topics and modules pipelines use, so that
//! deleting a topic or module cannot race with a pipeline starting to use
//! it.

mod running;
mod sharing;

pub use sharing::{SharedWork, WorkerTasks};

pub use super::record::{PipelineRecord, TaskLimits};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::record::RECORD_FORMAT;
use super::scheduler::CpuScheduler;
use super::spec::{ModuleRef, PipelineSettings, PipelineSpec};
use super::stats::{TaskState, TaskStats};
use super::status::{InputEnds, PipelineStatus};
use super::task::{Control, StagePlan, commit_log_name};
use crate::modules::{ModuleError, ModuleStore};
use running::{Running, TaskHandle, join, signal_stop};
use weir_core::names::check_stored_name;
use weir_core::now_ms;
use weir_host::{InstanceOptions, OperatorInstance};
use weir_log::{Catalog, StreamLog, check_commit_log_name};

/// Where pipeline records are in the catalog.
const RECORDS: &str = "pipelines/";

/// The catalog key of pipeline `name`'s record.
fn record_key(name: &str) -> String {
    format!("{RECORDS}{name}.json")
}

/// What can go wrong managing pipelines.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown pipeline {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

/// Every pipeline of the server.
pub struct Pipelines {
    log: Arc<dyn StreamLog>,
    modules: Arc<ModuleStore>,
    catalog: Arc<dyn Catalog>,
    settings: PipelineSettings,
    scheduler: Arc<CpuScheduler>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Serializes what pipelines use (topics, modules) with changes to it;
    /// held briefly, never across a wait for tasks, compiles or operators.
    admin: Arc<tokio::sync::Mutex<()>>,
    /// One lock per pipeline name, serializing changes to that pipeline.
    changing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When workers share a cluster: this worker's part. Its tasks then
    /// start and stop only in `sharing`'s passes; apply, pause, resume and
    /// delete change the records in the catalog and run a pass.
    sharing: Option<SharedWork>,
    /// The partitions' ends as the log last told them.
    last_ends: Mutex<InputEnds>,
}

/// How long a pause waits for tasks to finish their rounds before
/// answering `pausing`.
pub const PAUSE_WAIT: Duration = Duration::from_secs(5);

/// How long a shutdown waits for tasks to finish their current round;
/// rounds cut short are redone after the restart (nothing is lost).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

impl Pipelines {
    /// Opens the pipelines stored in `catalog` and starts those not paused;
    /// with `sharing`, starts nothing: tasks start in the passes of
    /// [`share_work`](Self::share_work).
    pub async fn open(
        log: Arc<dyn StreamLog>,
        catalog: Arc<dyn Catalog>,
        modules: Arc<ModuleStore>,
        settings: PipelineSettings,
        scheduler: Arc<CpuScheduler>,
        sharing: Option<SharedWork>,
    ) -> anyhow::Result<Pipelines> {
        let pipelines = Pipelines {
            log,
            modules,
            catalog,
            settings,
            scheduler,
            running: Mutex::new(BTreeMap::new()),
            admin: Arc::new(tokio::sync::Mutex::new(())),
            changing: Mutex::new(HashMap::new()),
            sharing,
            last_ends: Mutex::new(InputEnds::new()),
        };
        if pipelines.sharing.is_some() {
            // The first pass reads the records and starts this worker's
            // tasks (retrying, should the cluster be slow to answer now).
            return Ok(pipelines);
        }
        let keys = pipelines
            .catalog
            .documents(RECORDS)
            .await
            .context("while listing the pipelines")?;
        for key in keys {
            let Some(text) = pipelines
                .catalog
                .document(&key)
                .await
                .with_context(|| format!("while reading {key}"))?
            else {
                continue; // deleted meanwhile
            };
            let record: PipelineRecord = RECORD_FORMAT
                .from_json(&text)
                .with_context(|| format!("while reading {key}"))?;
            let name = record.name.clone();
            let started = match pipelines.plan(&record).await {
                Ok(plans) => pipelines.start(&record, plans, None).await,
                Err(e) => Err(e.to_string()),
            };
            pipelines.lock().insert(name, Running::new(record, started));
        }
        Ok(pipelines)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the right to change pipeline `name`.
    async fn change(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the locks nobody holds or waits for.
            changing.retain(|_, lock| Arc::strong_count(lock) > 1);
            changing.entry(name.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Creates or updates a pipeline. Returns its status and whether it is new.
    pub async fn apply(
        &self,
        name: &str,
        mut spec: PipelineSpec,
        limits: TaskLimits,
    ) -> Result<(PipelineStatus, bool), PipelineError> {
        let _change = self.change(name).await;
        check_stored_name("pipeline", name).map_err(PipelineError::Invalid)?;
        if let Some(named) = &spec.name
            && named != name
        {
            return Err(PipelineError::Invalid(format!(
                "the spec names pipeline {named:?} but the request is for {name:?}"
            )));
        }
        spec.name = Some(name.to_string());
        spec.check().map_err(PipelineError::Invalid)?;
        self.check_topics(name, &spec).await?;
        let mut modules = Vec::new();
        for stage in &spec.stages {
            let reference = ModuleRef::parse(&stage.module).map_err(PipelineError::Invalid)?;
            let version = self.modules.resolve(&reference).await?;
            modules.push(format!("{}@{}", reference.name, version.version));
        }
        let existing = self.lock().get(name).map(|r| r.record.clone());
        let now = now_ms();
        let record = PipelineRecord {
            name: name.to_string(),
            spec,
            modules,
            paused: existing.as_ref().is_some_and(|r| r.paused),
            created_ms: existing.as_ref().map_or(now, |r| r.created_ms),
            updated_ms: now,
            limits,
        };
        let plans = self.plan(&record).await?;
        self.check_configs(&plans).await?;
        if self.sharing.is_some() {
            {
                let _admin = self.admin.lock().await;
                self.check_topics(name, &record.spec).await?;
                self.save(&record).await?;
            }
            self.pass_now().await;
            let status = self.status(name).await?;
            return Ok((status, existing.is_none()));
        }
        {
            // Registered before anything waits, so topic and module
            // deletions see this pipeline as a user from now on.
            let _admin = self.admin.lock().await;
            self.check_topics(name, &record.spec).await?;
            self.save(&record).await?;
            let mut running = self.lock();
            match running.get_mut(name) {
                Some(entry) => entry.record = record.clone(),
                None => {
                    running.insert(
                        name.to_string(),
                        Running::new(record.clone(), Ok(Vec::new())),
                    );
                }
            }
        }
        self.stop(name).await;
        let started = self.start(&record, plans, None).await;
        // Once recovered, every task has fixed its start position (so
        // `latest` means records after this call) and reports real lag.
        for task in started.iter().flatten() {
            task.stats.started().await;
        }
        self.lock()
            .insert(name.to_string(), Running::new(record.clone(), started));
        let status = self.status(name).await?;
        Ok((status, existing.is_none()))
    }

    async fn check_topics(&self, name: &str, spec: &PipelineSpec) -> Result<(), PipelineError> {
        for input in &spec.inputs {
            self.log
                .topic(input)
                .await
                .map_err(|e| PipelineError::Invalid(format!("input topic: {e}")))?;
            check_commit_log_name(&commit_log_name(name, input)).map_err(|e| {
                PipelineError::Invalid(format!(
                    "pipeline name {name:?} and input topic {input:?} together name its \
                     commit log: {e}"
                ))
            })?;
        }
        for output in spec.output_topics() {
            self.log
                .topic(output)
                .await
                .map_err(|e| PipelineError::Invalid(format!("output topic: {e}")))?;
            if spec.inputs.iter().any(|i| i == output) {
                return Err(PipelineError::Invalid(format!(
                    "topic {output:?} is both an input and an output (a loop)"
                )));
            }
        }
        Ok(())
    }

    /// Loads the modules of a record and plans its stages.
    async fn plan(&self, record: &PipelineRecord) -> Result<Vec<StagePlan>, PipelineError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut plans = Vec::new();
        for (stage, label) in record.spec.stages.iter().zip(&record.modules) {
            let (name, version) = label
                .split_once('@')
                .and_then(|(n, v)| Some((n, v.parse::<u32>().ok()?)))
                .ok_or_else(|| PipelineError::Invalid(format!("bad module {label:?}")))?;
            let module = self.modules.load(name, version).await?;
            let occurrence = seen.entry(name.to_string()).or_default();
            *occurrence += 1;
            plans.push(StagePlan {
                module,
                label: label.clone(),
                state_key: format!("{name}#{occurrence}"),
                config: stage
                    .config
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_text()))
                    .collect(),
                routes: stage.outputs.clone(),
                max_memory_bytes: record.limits.max_memory_bytes,
            });
        }
        Ok(plans)
    }

    /// Instantiates each stage once, so a bad configuration is refused
    /// before anything changes.
    async fn check_configs(&self, plans: &[StagePlan]) -> Result<(), PipelineError> {
        let plans = plans.to_vec();
        tokio::task::spawn_blocking(move || {
            for (i, plan) in plans.into_iter().enumerate() {
                let options = InstanceOptions {
                    max_memory_bytes: plan.max_memory_bytes,
                    ..InstanceOptions::default()
                };
                OperatorInstance::with_options(plan.module, plan.config, options).map_err(|e| {
                    PipelineError::Invalid(format!("stage {} ({}): {e}", i + 1, plan.label))
                })?;
            }
            Ok(())
        })
        .await
        .expect("checking configurations does not panic")
    }

    async fn save(&self, record: &PipelineRecord) -> Result<(), PipelineError> {
        let bytes = RECORD_FORMAT.to_json(record);
        self.catalog
            .put_document(&record_key(&record.name), bytes.into())
            .await
            .with_context(|| format!("while storing pipeline {:?}", record.name))?;
        Ok(())
    }

    /// Stops a pipeline's tasks (each after its current commit) and waits.
    async fn stop(&self, name: &str) {
        let tasks = match self.lock().get_mut(name) {
            Some(running) => std::mem::take(&mut running.tasks),
            None => return,
        };
        signal_stop(&tasks);
        join(tasks).await;
    }

    /// Pauses a pipeline: its tasks finish their current commit and wait.
    pub async fn pause(&self, name: &str) -> Result<PipelineStatus, PipelineError> {
        self.set_paused(name, true).await
    }

    /// Resumes a paused pipeline, or restarts the failed tasks of one.
    pub async fn resume(&self, name: &str) -> Result<PipelineStatus, PipelineError> {
        self.set_paused(name, false).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<PipelineStatus, PipelineError> {
        let _change = self.change(name).await;
        let mut record = self
            .lock()
            .get(name)
            .map(|r| r.record.clone())
            .ok_or_else(|| PipelineError::NotFound(name.to_string()))?;
        record.paused = paused;
        if self.sharing.is_some() {
            // A new time, so that every worker restarts its tasks (failed
            // ones included) from the record.
            record.updated_ms = now_ms();
            self.save(&record).await?;
            self.pass_now().await;
            return self.status(name).await;
        }
        self.save(&record).await?;
        let restart = !paused && {
            let running = self.lock();
            let entry = &running[name];
            entry.failure.is_some()
                || entry.tasks.is_empty()
                || entry
                    .tasks
                    .iter()
                    .any(|t| matches!(t.stats.state(), TaskState::Failed(_)))
        };
        if restart {
            self.stop(name).await;
            let started = match self.plan(&record).await {
                Ok(plans) => self.start(&record, plans, None).await,
                Err(e) => Err(e.to_string()),
            };
            self.lock()
                .insert(name.to_string(), Running::new(record, started));
        } else {
            let settling: Vec<Arc<TaskStats>> = {
                let mut running = self.lock();
                let entry = running.get_mut(name).expect("checked above");
                entry.record = record;
                let control = if paused { Control::Pause } else { Control::Run };
                for task in &entry.tasks {
                    let _ = task.control.send(control);
                }
                entry.tasks.iter().map(|t| t.stats.clone()).collect()
            };
            if paused {
                // Answer once the tasks have finished their rounds, or say
                // `pausing` if one takes longer.
                let all = futures::future::join_all(settling.iter().map(|s| s.settled()));
                let _ = tokio::time::timeout(PAUSE_WAIT, all).await;
            }
        }
        self.status(name).await
    }

    /// Deletes a pipeline: stops it and removes its spec and commit logs.
    /// Its output topics stay.
    pub async fn delete(&self, name: &str) -> Result<(), PipelineError> {
        let _change = self.change(name).await;
        // No pass may start the pipeline's tasks again meanwhile.
        let _passing = match &self.sharing {
            Some(shared) => Some(shared.passing.lock().await),
            None => None,
        };
        let removed = {
            let _admin = self.admin.lock().await;
            if !self.lock().contains_key(name) {
                return Err(PipelineError::NotFound(name.to_string()));
            }
            self.catalog
                .remove_document(&record_key(name))
                .await
                .with_context(|| format!("while deleting pipeline {name:?}"))?;
            self.lock().remove(name).expect("checked above")
        };
        signal_stop(&removed.tasks);
        let keys = removed.tasks.iter().map(|t| t.key.clone()).collect();
        join(removed.tasks).await;
        self.release(keys).await;
        for input in removed.record.spec.inputs {
            if let Err(e) = self
                .log
                .delete_commit_log(&commit_log_name(name, &input))
                .await
            {
                tracing::warn!(pipeline = name, error = %e, "could not delete a commit log");
            }
        }
        Ok(())
    }

    /// Stops every pipeline (each task after its current commit), waiting
    /// at most [`SHUTDOWN_GRACE`]: a task still in a round then is left to
    /// the process exit, and its round is redone after the restart.
    pub async fn shutdown(&self) {
        if let Some(shared) = &self.sharing {
            shared.close().await;
        }
        let tasks: Vec<TaskHandle> = self
            .lock()
            .values_mut()
            .flat_map(|running| std::mem::take(&mut running.tasks))
            .collect();
        signal_stop(&tasks);
        let count = tasks.len();
        let keys = tasks.iter().map(|t| t.key.clone()).collect();
        if tokio::time::timeout(SHUTDOWN_GRACE, join(tasks))
            .await
            .is_err()
        {
            tracing::warn!(tasks = count, grace = ?SHUTDOWN_GRACE,
                "pipeline tasks still busy at shutdown; their current rounds will be redone");
            return; // their leases lapse by themselves
        }
        self.leave(keys).await;
    }

    /// This worker's part in a cluster, when workers share one.
    pub fn shared_work(&self) -> Option<&SharedWork> {
        self.sharing.as_ref()
    }

    /// Runs a pass of the work sharing now (after a change here, or at
    /// start), so that it takes effect before the answer.
    pub async fn pass_now(&self) {
        if let Err(e) = self.pass().await {
            tracing::warn!(error = %format!("{e:#}"), "sharing pipeline tasks failed; the next pass tries again");
        }
    }

    /// Holds off pipeline changes (apply, delete) until dropped.
    pub(crate) async fn hold_changes(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.admin.clone().lock_owned().await
    }

    /// Runs `change` (deleting or reshaping a topic or module) unless a
    /// pipeline uses the thing (as `users` tells), serialized with pipeline
    /// changes so no apply can start using it in between. Returns the
    /// users instead when there are any.
    pub async fn unless_used<T>(
        &self,
        users: impl FnOnce(&Pipelines) -> Vec<String>,
        change: impl Future<Output = T>,
    ) -> Result<T, Vec<String>> {
        let _admin = self.admin.lock().await;
        let users = users(self);
        if !users.is_empty() {
            return Err(users);
        }
        Ok(change.await)
    }

    /// Names of the pipelines running a module.
    pub fn using_module(&self, module: &str) -> Vec<String> {
        let prefix = format!("{module}@");
        self.lock()
            .values()
            .filter(|r| r.record.modules.iter().any(|m| m.starts_with(&prefix)))
            .map(|r| r.record.name.clone())
            .collect()
    }

    /// Every pipeline's name.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Names of the pipelines reading or writing a topic.
    pub fn using_topic(&self, topic: &str) -> Vec<String> {
        self.lock()
            .values()
            .filter(|r| {
                let spec = &r.record.spec;
                spec.inputs.iter().any(|i| i == topic) || spec.output_topics().any(|o| o == topic)
            })
            .map(|r| r.record.name.clone())
            .collect()
    }

    /// A pipeline's status and counters.
    pub async fn status(&self, name: &str) -> Result<PipelineStatus, PipelineError> {
        if self.sharing.is_some() && !self.lock().contains_key(name) {
            // Perhaps made on another worker since this one's last pass.
            self.pass_now().await;
        }
        let ends = self.input_ends().await;
        let running = self.lock();
        let entry = running
            .get(name)
            .ok_or_else(|| PipelineError::NotFound(name.to_string()))?;
        Ok(self.with_elsewhere(entry.status(&ends), &ends))
    }

    /// `status` with the tasks other workers run, when workers share a
    /// cluster.
    fn with_elsewhere(&self, mut status: PipelineStatus, ends: &InputEnds) -> PipelineStatus {
        if let Some(shared) = &self.sharing {
            status.add_elsewhere(shared.id(), &shared.elsewhere(), ends);
        }
        status
    }

    /// The status of every pipeline.
    pub async fn statuses(&self) -> Vec<PipelineStatus> {
        let ends = self.input_ends().await;
        let statuses: Vec<PipelineStatus> = self.lock().values().map(|r| r.status(&ends)).collect();
        statuses
            .into_iter()
            .map(|s| self.with_elsewhere(s, &ends))
            .collect()
    }

    /// The status of every pipeline as far as this worker's own tasks go
    /// (all of them on a server of its own): for metrics, which a monitor
    /// sums over the workers.
    pub async fn local_statuses(&self) -> Vec<PipelineStatus> {
        let ends = self.input_ends().await;
        self.lock().values().map(|r| r.status(&ends)).collect()
    }

    /// The end offset of every partition, to tell each task's lag; when
    /// the log cannot say (a cluster out of reach), the ends it last said,
    /// so that a lag never reads 0 only because it is unknown.
    async fn input_ends(&self) -> InputEnds {
        let Ok(topics) = self.log.topics().await else {
            return self
                .last_ends
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        };
        let ends: InputEnds = topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions
                    .into_iter()
                    .map(move |p| ((name.clone(), p.partition), p.end_offset))
            })
            .collect();
        *self.last_ends.lock().unwrap_or_else(|e| e.into_inner()) = ends.clone();
        ends
    }
}
