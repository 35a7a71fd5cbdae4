//! The pipeline spec: what a user writes (TOML for the CLI, the same
//! structure as JSON over HTTP) and the checks it must pass before it runs.
//!
//! ```toml
//! inputs = ["purchases"]
//! start = "earliest"          # or "latest", or a timestamp in ms
//! on_error = "dead-letter"    # or "skip", "halt" (the default)
//! dead_letter = "purchases-dlq"
//!
//! [[stages]]
//! module = "filter"           # the newest version; "filter@2" pins one
//! config = { prefix = "test-" }
//!
//! [[stages]]
//! module = "receipt"
//! outputs = { main = "receipts" }
//! ```
//!
//! Each stage's `main` output flows to the next stage; the last stage's
//! outputs, and any other named output of any stage, go to the topics its
//! `outputs` table names. Outputs that are not routed are dropped (and
//! counted).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A pipeline as the user describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's name; optional in a request whose path names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Input topics; each partition of each is processed by its own task.
    pub inputs: Vec<String>,
    /// The operators, in order.
    pub stages: Vec<StageSpec>,
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// Topic receiving records that failed or were rejected, with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Where a new pipeline starts reading. Default `earliest`.
    #[serde(default)]
    pub start: StartAt,
}

/// One operator of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// A module name (its newest version) or `name@version`.
    pub module: String,
    /// Settings passed to the operator's `init`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, Setting>,
    /// Output name → topic.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// A setting's value: any scalar, passed to the operator as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    Text(String),
    Integer(i64),
    Float(f64),
    Flag(bool),
}

impl Setting {
    pub fn as_text(&self) -> String {
        match self {
            Setting::Text(s) => s.clone(),
            Setting::Integer(i) => i.to_string(),
            Setting::Float(f) => f.to_string(),
            Setting::Flag(b) => b.to_string(),
        }
    }
}

/// What happens to a record whose processing fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// The record goes to the dead-letter topic with the reason; the rest go on.
    DeadLetter,
    /// The record is dropped (and counted); the rest go on.
    Skip,
    /// The pipeline stops, marked failed with the reason, before the record.
    #[default]
    Halt,
}

/// Where a new pipeline starts reading its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StartAt {
    Named(StartName),
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartName {
    /// Everything still stored.
    #[default]
    Earliest,
    /// Only records appended after the pipeline starts.
    Latest,
}

impl Default for StartAt {
    fn default() -> Self {
        StartAt::Named(StartName::default())
    }
}

/// Server-wide settings of pipeline tasks (the `[pipelines]` table of
/// the server's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// A task writes a snapshot of its state (and forgets older commits)
    /// once its commits since the last one exceed this many bytes, or four
    /// times the last snapshot's size if that is more. Default 16 MiB.
    pub snapshot_after_bytes: u64,
    /// Input read per round, in bytes. Default 1 MiB.
    pub max_read_bytes: usize,
    /// A task the log failed as unavailable (a cluster out of reach)
    /// starts again by itself after this long, twice as long each time it
    /// fails so again (up to 30 s). Default: 1000 with a NATS JetStream
    /// log; never with the embedded log, whose storage failures do not
    /// pass by themselves (`weir pipeline resume` restarts a failed task).
    pub restart_after_unavailable_ms: Option<u64>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            snapshot_after_bytes: 16 << 20,
            max_read_bytes: 1 << 20,
            restart_after_unavailable_ms: None,
        }
    }
}

/// A stage's module reference, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    pub name: String,
    /// `None`: the newest version.
    pub version: Option<u32>,
}

impl ModuleRef {
    pub fn parse(text: &str) -> Result<ModuleRef, String> {
        let (name, version) = match text.split_once('@') {
            None => (text, None),
            Some((name, v)) => {
                let version = v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                    format!("module {text:?}: the version after '@' must be a number from 1")
                })?;
                (name, Some(version))
            }
        };
        weir_core::names::check_stored_name("module", name)?;
        Ok(ModuleRef {
            name: name.to_string(),
            version,
        })
    }
}

impl PipelineSpec {
    /// Calls `f` on every name the spec holds (its own, topics, modules):
    /// the one list of them, used to namespace a spec. A new name-bearing
    /// field must be added here.
    pub fn for_each_name(&mut self, mut f: impl FnMut(&mut String)) {
        let PipelineSpec {
            name,
            inputs,
            stages,
            on_error: _,
            dead_letter,
            start: _,
        } = self;
        name.iter_mut().for_each(&mut f);
        inputs.iter_mut().for_each(&mut f);
        dead_letter.iter_mut().for_each(&mut f);
        for StageSpec {
            module,
            config: _,
            outputs,
        } in stages
        {
            f(module);
            outputs.values_mut().for_each(&mut f);
        }
    }

    /// Reads a spec from TOML.
    pub fn from_toml(text: &str) -> Result<PipelineSpec, String> {
        toml::from_str(text).map_err(|e| format!("invalid pipeline spec: {e}"))
    }

    /// Checks the spec's shape (topics and modules are checked against
    /// what exists when it is applied).
    pub fn check(&self) -> Result<(), String> {
        if self.inputs.is_empty() {
            return Err("a pipeline needs at least one input topic".into());
        }
        for (i, input) in self.inputs.iter().enumerate() {
            if self.inputs[..i].contains(input) {
                return Err(format!("input topic {input:?} is listed twice"));
            }
        }
        let Some(last) = self.stages.len().checked_sub(1) else {
            return Err("a pipeline needs at least one stage".into());
        };
        for (i, stage) in self.stages.iter().enumerate() {
            ModuleRef::parse(&stage.module).map_err(|e| format!("stage {}: {e}", i + 1))?;
            for output in stage.outputs.keys() {
                weir_host::check_output_name(output)
                    .map_err(|e| format!("stage {}: {e}", i + 1))?;
            }
            if i < last && stage.outputs.contains_key(weir_host::MAIN_OUTPUT) {
                return Err(format!(
                    "stage {}: its main output flows to the next stage and cannot also go to a topic",
                    i + 1
                ));
            }
        }
        if self.stages[last].outputs.is_empty() {
            return Err("the last stage must send at least one output to a topic \
                        (for example outputs = { main = \"results\" })"
                .into());
        }
        match (self.on_error, &self.dead_letter) {
            (ErrorPolicy::DeadLetter, None) => {
                Err("on_error = \"dead-letter\" needs a dead_letter topic".into())
            }
            _ => Ok(()),
        }
    }

    /// Every topic the pipeline writes to.
    pub fn output_topics(&self) -> impl Iterator<Item = &str> {
        self.stages
            .iter()
            .flat_map(|s| s.outputs.values())
            .chain(&self.dead_letter)
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_spec_reads_with_defaults() {
        let spec = PipelineSpec::from_toml(
            r#"
            inputs = ["purchases"]
            [[stages]]
            module = "receipt@2"
            config = { currency = "EUR", limit = 5, strict = true }
            outputs = { main = "receipts" }
            "#,
        )
        .unwrap();
        spec.check().unwrap();
        assert_eq!(spec.on_error, ErrorPolicy::Halt);
        assert_eq!(spec.start, StartAt::Named(StartName::Earliest));
        assert_eq!(spec.stages[0].config["limit"].as_text(), "5");
        assert_eq!(
            ModuleRef::parse(&spec.stages[0].module).unwrap().version,
            Some(2)
        );
    }

    #[test]
    fn start_reads_names_and_timestamps() {
        let json = |s: &str| serde_json::from_str::<StartAt>(s).unwrap();
        assert_eq!(json("\"latest\""), StartAt::Named(StartName::Latest));
        assert_eq!(json("1700000000000"), StartAt::Timestamp(1_700_000_000_000));
        assert!(serde_json::from_str::<StartAt>("\"yesterday\"").is_err());
    }

    #[test]
    fn bad_specs_are_explained() {
        let base = || PipelineSpec {
            name: None,
            inputs: vec!["in".into()],
            stages: vec![StageSpec {
                module: "m".into(),
                config: BTreeMap::new(),
                outputs: [("main".to_string(), "out".to_string())].into(),
            }],
            on_error: ErrorPolicy::Halt,
            dead_letter: None,
            start: StartAt::default(),
        };
        base().check().unwrap();
        let mut no_dlq = base();
        no_dlq.on_error = ErrorPolicy::DeadLetter;
        assert!(no_dlq.check().unwrap_err().contains("dead_letter"));
        let mut unrouted = base();
        unrouted.stages[0].outputs.clear();
        assert!(unrouted.check().unwrap_err().contains("last stage"));
        let mut bad_module = base();
        bad_module.stages[0].module = "m@0".into();
        assert!(bad_module.check().unwrap_err().contains("version"));
        for name in ["", "has space", "ümlaut", &"x".repeat(65)] {
            let mut bad_output = base();
            bad_output.stages[0]
                .outputs
                .insert(name.to_string(), "out".into());
            assert!(
                bad_output.check().unwrap_err().contains("output name"),
                "output {name:?} accepted"
            );
        }
        let mut no_inputs = base();
        no_inputs.inputs.clear();
        assert!(no_inputs.check().unwrap_err().contains("input"));
        assert!(PipelineSpec::from_toml("inputs = [1]").is_err());
    }
}
