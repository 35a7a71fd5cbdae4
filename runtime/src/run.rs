//! `weir run`: one operator over records from a JSON-lines file, outputs
//! printed as JSON lines. The developer loop for testing an operator before
//! uploading it.
//!
//! Input lines become records with offsets 0, 1, 2... (line number minus
//! one) and go to the operator in batches. Each output record is printed as
//! a JSON object naming its output (see `jsonl`). Rejected records and
//! failed batches are reported on stderr with the record (or records) they
//! belong to, and the run goes on. At the end of the input the watermark
//! moves to the end of time, so windows still open are closed and emitted.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use weir_format::Batch;

use crate::jsonl::{self, JsonRecord};
use weir_host::{CallOutput, OperatorEngine, OperatorError, OperatorInstance};

/// What `weir run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub module: PathBuf,
    pub config: Vec<(String, String)>,
    /// Input file, or `None` for stdin.
    pub input: Option<PathBuf>,
    /// Output file, or `None` for stdout.
    pub output: Option<PathBuf>,
    /// Records per call to the operator.
    pub batch_size: usize,
}

/// Counts reported at the end of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub records_in: u64,
    pub records_out: u64,
    pub rejected: u64,
    pub failed_batches: u64,
}

/// Runs the operator over the input and writes its outputs.
pub fn run(engine: &OperatorEngine, options: &RunOptions) -> Result<RunSummary> {
    let bytes = std::fs::read(&options.module)
        .with_context(|| format!("while reading {}", options.module.display()))?;
    let name = options
        .module
        .file_stem()
        .map_or("operator".into(), |s| s.to_string_lossy().into_owned());
    let module = engine
        .load(&name, &bytes)
        .with_context(|| format!("while loading {}", options.module.display()))?;
    let mut instance = OperatorInstance::new(Arc::clone(&module), options.config.clone())
        .with_context(|| format!("while starting {name}"))?;
    let input: Box<dyn BufRead> = match &options.input {
        None => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .with_context(|| format!("while opening {}", path.display()))?,
        )),
    };
    let mut output: Box<dyn Write> = match &options.output {
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("while creating {}", path.display()))?,
        )),
    };
    let mut runner = Runner {
        instance: &mut instance,
        output: &mut output,
        summary: RunSummary::default(),
        lines: Vec::new(),
        records: Vec::new(),
    };
    let now = weir_core::now_ms();
    for (number, line) in input.lines().enumerate() {
        let line = line.context("while reading the input")?;
        if line.trim().is_empty() {
            continue;
        }
        match jsonl::parse_line(&line, now) {
            Ok(record) => runner.push(number as u64, line, record),
            Err(reason) => {
                eprintln!("error: line {}: {reason}: {line}", number + 1);
                runner.summary.rejected += 1;
            }
        }
        if runner.records.len() >= options.batch_size.max(1) {
            runner.flush()?;
        }
    }
    runner.flush()?;
    let closing = runner.instance.advance_watermark(i64::MAX);
    runner.report(closing, "closing windows at the end of the input")?;
    let summary = runner.summary.clone();
    output.flush().context("while writing the output")?;
    Ok(summary)
}

struct Runner<'a> {
    instance: &'a mut OperatorInstance,
    output: &'a mut Box<dyn Write>,
    summary: RunSummary,
    /// (offset, original line) of the records waiting in `records`.
    lines: Vec<(u64, String)>,
    records: Vec<JsonRecord>,
}

impl Runner<'_> {
    fn push(&mut self, offset: u64, line: String, record: JsonRecord) {
        self.lines.push((offset, line));
        self.records.push(record);
    }

    /// Sends the waiting records to the operator as one batch.
    fn flush(&mut self) -> Result<()> {
        let Some(&(first, _)) = self.lines.first() else {
            return Ok(());
        };
        let batch = encode(&self.records, first);
        self.summary.records_in += self.records.len() as u64;
        let result = self.instance.process(std::slice::from_ref(&batch));
        let last = self.lines.last().map_or(first, |(o, _)| *o);
        self.report(result, &format!("records {first} to {last}"))?;
        self.lines.clear();
        self.records.clear();
        Ok(())
    }

    /// Prints a call's outputs, or its errors with the records they concern.
    fn report(&mut self, result: Result<CallOutput, OperatorError>, what: &str) -> Result<()> {
        match result {
            Ok(output) => {
                for rejection in &output.rejected {
                    eprintln!(
                        "error: record {} rejected: {}: {}",
                        rejection.offset,
                        rejection.reason,
                        self.line(rejection.offset)
                    );
                    self.summary.rejected += 1;
                }
                for (name, batch) in &output.emitted {
                    for record in batch.records() {
                        serde_json::to_writer(&mut *self.output, &jsonl::render(name, &record))?;
                        self.output.write_all(b"\n")?;
                        self.summary.records_out += 1;
                    }
                }
            }
            Err(error) => {
                self.summary.failed_batches += 1;
                let culprit = match &error {
                    OperatorError::Trap {
                        offset: Some(o), ..
                    }
                    | OperatorError::Failed {
                        offset: Some(o), ..
                    } => {
                        format!("record {o}: {}", self.line(*o))
                    }
                    _ => what.to_string(),
                };
                eprintln!(
                    "error: {error} (while processing {culprit}); nothing from this batch was kept"
                );
            }
        }
        Ok(())
    }

    fn line(&self, offset: u64) -> &str {
        self.lines
            .iter()
            .find(|(o, _)| *o == offset)
            .map_or("", |(_, l)| l.as_str())
    }
}

/// Encodes records into one batch whose offsets start at `base_offset`.
fn encode(records: &[JsonRecord], base_offset: u64) -> Batch {
    crate::jsonl::encode(records).with_base_offset(base_offset)
}
