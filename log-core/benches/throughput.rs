//! Throughput benchmark of `log-core` against plain file I/O on the same disk.
//!
//! Every measurement runs side by side with a baseline in the same run and
//! is reported as a ratio to it (higher is better for weir):
//!
//! 1. Appends with `never` durability, 256 records of 100 B and of 1 KiB per
//!    batch, vs `write()` of the same encoded batches to a plain file, one
//!    write per batch. Only the append (or write) itself is timed; batches
//!    are built outside the timer, the way a producer hands them over.
//! 2. Appends with `always` durability from 1, 4 and 16 threads (16 × 100 B
//!    per batch, time-bounded runs) vs `write()` + `fdatasync()` per batch
//!    from one thread (run just before each weir run), and how many appends
//!    each fsync covered (group commit): estimated as appends/s ÷ the
//!    baseline's fsyncs/s, and counted through a `Storage` wrapper that
//!    counts the log's `sync_data` calls.
//! 3. A sequential read of a ~1 GB partition through `Partition::read` in
//!    1 MiB steps, touching every record's key and value, vs `read()` of its
//!    segment files in 1 MiB chunks. Caches cannot be dropped without root,
//!    so both read a warm page cache. The log skips the CRC check for
//!    batches it already knows are valid (written or checked by this
//!    process), so a first read after a restart, which checks every batch,
//!    is measured separately.
//! 4. Recovery: `Log::open` after a crash (the log dropped without `close`)
//!    of that partition, with and without a torn batch at the end of the
//!    active segment, vs `read()` of the active segment that recovery scans.
//!
//! Run it with
//!
//! ```text
//! cargo bench -p log-core --bench throughput
//! cargo bench -p log-core --bench throughput -- --scale 0.25 --secs 1
//! ```
//!
//! `--scale` (or `WEIR_BENCH_SCALE`, default 1) multiplies the data sizes:
//! 512 MiB per `never` append run and a 1 GiB partition for reads and
//! recovery. `--secs` (or `WEIR_BENCH_SECS`, default 3) is the length of
//! each `always` run. The defaults take under a minute on 2 cores. Files
//! live in a temporary directory under the target directory, removed at the
//! end. The output ends with a markdown table for `BENCHMARKS.md`.
//!
//! One file on purpose: a benchmark read top to bottom, each measurement
//! beside its baseline.

#[path = "../../bench/src/report.rs"]
mod report;

use report::{Row, median, print_table};

use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use log_core::storage::{DirLock, FsStorage, Storage, StorageFile};
use log_core::{
    Batch, BatchBuilder, Durability, Log, LogConfig, LogError, Partition, Record, SystemClock,
    TopicConfig,
};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Read size for both weir and the baseline.
const READ_CHUNK: usize = 1 << 20;
const TOPIC: &str = "bench";
/// Alternating rounds per comparison; the median is reported.
const ROUNDS: usize = 3;
/// Segments in the partition read and recovered (8 x 128 MiB = 1 GiB at scale 1).
const SEGMENTS: u64 = 8;
/// Record timestamps start here and rise by 1 ms per batch.
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

fn main() -> BenchResult<()> {
    let settings = Settings::parse()?;
    let root = tempfile::Builder::new()
        .prefix("weir-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("# log-core throughput");
    println!();
    println!(
        "scale {} (x 512 MiB per append run, x 1 GiB partition), {} s per `always` run, {} cores, files in {}",
        settings.scale,
        settings.secs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        root.path().display()
    );
    let mut table = Vec::new();
    table.extend(bench_append_never(root.path(), &settings)?);
    table.extend(bench_append_always(root.path(), &settings)?);
    table.extend(bench_read_and_recovery(root.path(), &settings)?);
    print_table(&table);
    Ok(())
}

// ---------------------------------------------------------------------------
// Settings and workloads

/// Size knobs from the command line or the environment.
struct Settings {
    scale: f64,
    secs: f64,
}

impl Settings {
    fn parse() -> BenchResult<Settings> {
        let mut settings = Settings {
            scale: env_number("WEIR_BENCH_SCALE")?.unwrap_or(1.0),
            secs: env_number("WEIR_BENCH_SECS")?.unwrap_or(3.0),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--scale" => settings.scale = parse_number("--scale", args.next())?,
                "--secs" => settings.secs = parse_number("--secs", args.next())?,
                "--bench" => {} // added by `cargo bench`
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; expected --scale X and/or --secs X"
                    )
                    .into());
                }
            }
        }
        if !(settings.scale > 0.0 && settings.secs > 0.0) {
            return Err("scale and secs must be positive".into());
        }
        Ok(settings)
    }

    fn bytes(&self, base: u64) -> u64 {
        (base as f64 * self.scale) as u64
    }

    fn run_time(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

fn env_number(name: &str) -> BenchResult<Option<f64>> {
    std::env::var(name)
        .ok()
        .map(|v| parse_number(name, Some(v)))
        .transpose()
}

fn parse_number(name: &str, value: Option<String>) -> BenchResult<f64> {
    let value = value.ok_or_else(|| format!("{name} needs a value"))?;
    value
        .parse()
        .map_err(|e| format!("{name}: {value:?} is not a number: {e}").into())
}

/// A workload: batches of `records` records, each an 8-byte key and a value
/// that together make `record_bytes` of payload.
struct Shape {
    record_bytes: usize,
    records: usize,
    value: Vec<u8>,
}

impl Shape {
    fn new(record_bytes: usize, records: usize) -> Shape {
        let value = (0..record_bytes - 8).map(|i| (i % 251) as u8).collect();
        Shape {
            record_bytes,
            records,
            value,
        }
    }

    /// "100 B", "1 KiB".
    fn record_label(&self) -> String {
        match self.record_bytes {
            n if n % 1024 == 0 => format!("{} KiB", n / 1024),
            n => format!("{n} B"),
        }
    }

    /// "256 x 100 B".
    fn label(&self) -> String {
        format!("{} x {}", self.records, self.record_label())
    }

    /// The `seq`th batch: keys count up across batches and the timestamp
    /// rises by 1 ms per batch, like a live producer's.
    fn batch(&self, seq: u64) -> Batch {
        let mut builder = BatchBuilder::with_capacity(self.records * (self.record_bytes + 16));
        for i in 0..self.records {
            let key = (seq * self.records as u64 + i as u64).to_be_bytes();
            builder.push(&Record {
                key: Some(&key),
                value: Some(&self.value),
                headers: &[],
                timestamp: BASE_TIMESTAMP + seq as i64,
            });
        }
        builder.finish().expect("the batch has records")
    }
}

/// Bytes and records moved, and the time spent moving them.
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    bytes: u64,
    records: u64,
    busy: Duration,
}

impl Run {
    fn add(&mut self, bytes: usize, records: usize, took: Duration) {
        self.bytes += bytes as u64;
        self.records += records as u64;
        self.busy += took;
    }

    fn bytes_per_s(&self) -> f64 {
        self.bytes as f64 / self.busy.as_secs_f64()
    }

    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.busy.as_secs_f64()
    }
}

fn open_topic(dir: &Path, config: TopicConfig) -> BenchResult<(Log, Partition)> {
    let log = Log::open(dir)?;
    let topic = log.create_topic(TOPIC, config)?;
    let partition = topic.partition(0)?.clone();
    Ok((log, partition))
}

fn topic_config(durability: Durability) -> TopicConfig {
    TopicConfig {
        durability,
        ..TopicConfig::default()
    }
}

// ---------------------------------------------------------------------------
// 1. Appends with `never` durability vs write()

fn bench_append_never(root: &Path, settings: &Settings) -> BenchResult<Vec<Row>> {
    let target = settings.bytes(512 * MIB);
    println!();
    println!("## 1. append, durability never, vs write() per batch");
    println!();
    println!(
        "{:.0} MiB per run, median of {ROUNDS} alternating rounds; only the append/write call is timed",
        target as f64 / MIB as f64
    );
    let mut rows = Vec::new();
    for shape in [Shape::new(100, 256), Shape::new(1024, 256)] {
        let mut weir = Vec::new();
        let mut rolls = Vec::new();
        let mut base = Vec::new();
        for round in 0..ROUNDS {
            let dir = root.join(format!("never-{}-{round}", shape.record_bytes));
            let file = root.join(format!("never-{}-{round}.baseline", shape.record_bytes));
            if round % 2 == 1 {
                base.push(file_append(&file, &shape, target)?);
            }
            let (run, roll_time) = weir_append_never(&dir, &shape, target)?;
            weir.push(run);
            rolls.push(roll_time);
            if round % 2 == 0 {
                base.push(file_append(&file, &shape, target)?);
            }
        }
        let weir = median_run(&weir);
        let base = median_run(&base);
        let roll_time = median(rolls.iter().map(Duration::as_secs_f64).collect());
        let batch_bytes = shape.batch(0).size();
        println!();
        println!(
            "{} records ({batch_bytes} B per encoded batch):",
            shape.label()
        );
        println!(
            "  weir      {:>6.0} MB/s  {:>6.2} M records/s  ({:.0} ms of {:.0} ms in segment rolls, which fsync)",
            weir.bytes_per_s() / 1e6,
            weir.records_per_s() / 1e6,
            roll_time * 1e3,
            weir.busy.as_secs_f64() * 1e3
        );
        println!(
            "  write()   {:>6.0} MB/s  {:>6.2} M records/s",
            base.bytes_per_s() / 1e6,
            base.records_per_s() / 1e6
        );
        let without_rolls = weir.bytes as f64 / (weir.busy.as_secs_f64() - roll_time);
        println!("  weir without the rolls: {:.0} MB/s", without_rolls / 1e6);
        rows.push(Row {
            measurement: format!("append `never`, {} per batch", shape.label()),
            weir: format!(
                "{:.0} MB/s ({:.2} M rec/s; {:.0} MB/s excl. segment rolls)",
                weir.bytes_per_s() / 1e6,
                weir.records_per_s() / 1e6,
                without_rolls / 1e6
            ),
            baseline: format!("{:.0} MB/s (write() per batch)", base.bytes_per_s() / 1e6),
            ratio: weir.bytes_per_s() / base.bytes_per_s(),
            goal: ">= 0.8".into(),
        });
    }
    Ok(rows)
}

/// Appends `target` bytes of batches to a fresh `never` topic. Returns the
/// run and the part of its time spent in appends that rolled a segment.
fn weir_append_never(dir: &Path, shape: &Shape, target: u64) -> BenchResult<(Run, Duration)> {
    let (log, partition) = open_topic(dir, topic_config(Durability::Never))?;
    let mut run = Run::default();
    let mut rolls = Duration::ZERO;
    let mut seq = 0;
    while run.bytes < target {
        let batch = shape.batch(seq);
        let (size, records) = (batch.size(), batch.record_count());
        let segments = partition.segment_count();
        let started = Instant::now();
        partition.append(batch)?;
        let took = started.elapsed();
        if partition.segment_count() != segments {
            rolls += took;
        }
        run.add(size, records, took);
        seq += 1;
    }
    drop(partition);
    drop(log);
    fs::remove_dir_all(dir)?;
    Ok((run, rolls))
}

/// Writes `target` bytes of the same encoded batches to a plain file, one
/// `write_all` per batch.
fn file_append(path: &Path, shape: &Shape, target: u64) -> BenchResult<Run> {
    let mut file = File::create(path)?;
    let mut run = Run::default();
    let mut seq = 0;
    while run.bytes < target {
        let batch = shape.batch(seq);
        let started = Instant::now();
        file.write_all(batch.as_bytes())?;
        run.add(batch.size(), batch.record_count(), started.elapsed());
        seq += 1;
    }
    drop(file);
    fs::remove_file(path)?;
    Ok(run)
}

fn median_run(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.bytes_per_s().total_cmp(&b.bytes_per_s()));
    sorted[sorted.len() / 2]
}

// ---------------------------------------------------------------------------
// 2. Appends with `always` durability vs write() + fdatasync()

fn bench_append_always(root: &Path, settings: &Settings) -> BenchResult<Vec<Row>> {
    let shape = Shape::new(100, 16);
    let run_time = settings.run_time();
    println!();
    println!("## 2. append, durability always, vs write() + fdatasync() per batch from one thread");
    println!();
    println!(
        "{} records per append ({} B per batch), {:.1} s per run, each weir run right after its own baseline run",
        shape.label(),
        shape.batch(0).size(),
        run_time.as_secs_f64()
    );
    println!(
        "appends per fsync: estimated = appends/s / baseline fsyncs/s; counted = appends / sync_data calls"
    );
    println!();
    let mut rows = Vec::new();
    for threads in [1, 4, 16] {
        let fsyncs_per_s = file_append_fsync(&root.join("always.baseline"), &shape, run_time)?;
        let dir = root.join(format!("always-{threads}"));
        let weir = weir_append_always(&dir, &shape, threads, run_time)?;
        let appends_per_s = weir.appends as f64 / weir.elapsed.as_secs_f64();
        let estimated = appends_per_s / fsyncs_per_s;
        let counted = weir.appends as f64 / weir.syncs.max(1) as f64;
        println!(
            "  {threads:>2} thread(s): weir {appends_per_s:>6.0} appends/s ({:.2} M records/s, {:.0} fsyncs/s), \
             baseline {fsyncs_per_s:>5.0} appends/s; appends per fsync: estimated {estimated:.1}, counted {counted:.1}",
            appends_per_s * shape.records as f64 / 1e6,
            weir.syncs as f64 / weir.elapsed.as_secs_f64(),
        );
        rows.push(Row {
            measurement: format!("append `always`, {}, {threads} thread(s)", shape.label()),
            weir: format!(
                "{appends_per_s:.0} appends/s ({estimated:.1} per fsync est., {counted:.1} counted)"
            ),
            baseline: format!("{fsyncs_per_s:.0} appends/s (write+fdatasync, 1 thread)"),
            ratio: estimated,
            goal: if threads == 1 {
                ">= 0.8".into()
            } else {
                "> 1 (group commit)".into()
            },
        });
    }
    Ok(rows)
}

/// What a time-bounded `always` run did.
struct AlwaysRun {
    appends: u64,
    /// `sync_data` calls on the log's files during the run.
    syncs: u64,
    elapsed: Duration,
}

/// Appends from `threads` threads to a fresh `always` topic for `run_time`,
/// counting the log's fsyncs through [`CountingStorage`].
fn weir_append_always(
    dir: &Path,
    shape: &Shape,
    threads: usize,
    run_time: Duration,
) -> BenchResult<AlwaysRun> {
    let storage = Arc::new(CountingStorage::default());
    let log = Log::open_with(LogConfig::new(dir), storage.clone(), Arc::new(SystemClock))?;
    let partition = log
        .create_topic(TOPIC, topic_config(Durability::Always))?
        .partition(0)?
        .clone();
    let stop = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    let syncs_before = storage.syncs();
    let (appends, elapsed) = std::thread::scope(|scope| -> Result<(u64, Duration), LogError> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (partition, stop, start) = (&partition, &stop, &start);
                scope.spawn(move || -> Result<u64, LogError> {
                    start.wait();
                    let mut appends = 0;
                    while !stop.load(Ordering::Relaxed) {
                        partition.append(shape.batch(appends))?;
                        appends += 1;
                    }
                    Ok(appends)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        std::thread::sleep(run_time);
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for worker in workers {
            total += worker.join().expect("appender thread panicked")?;
        }
        Ok((total, started.elapsed()))
    })?;
    let syncs = storage.syncs() - syncs_before;
    drop(partition);
    drop(log);
    fs::remove_dir_all(dir)?;
    Ok(AlwaysRun {
        appends,
        syncs,
        elapsed,
    })
}

/// The real file system, counting `sync_data` calls on its files.
#[derive(Debug, Default)]
struct CountingStorage {
    syncs: Arc<AtomicU64>,
}

impl CountingStorage {
    fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct CountingFile {
    file: Arc<dyn StorageFile>,
    syncs: Arc<AtomicU64>,
}

impl StorageFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data()
    }
}

impl Storage for CountingStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = FsStorage.open(path, create)?;
        Ok(Arc::new(CountingFile {
            file,
            syncs: self.syncs.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(path)
    }
    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        FsStorage.list(path)
    }
    fn exists(&self, path: &Path) -> bool {
        FsStorage.exists(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        FsStorage.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        FsStorage.lock(path)
    }
}

/// Writes and fdatasyncs one batch at a time for `run_time`; returns appends
/// (= fsyncs) per second.
fn file_append_fsync(path: &Path, shape: &Shape, run_time: Duration) -> BenchResult<f64> {
    let mut file = File::create(path)?;
    let started = Instant::now();
    let mut appends = 0;
    while started.elapsed() < run_time {
        file.write_all(shape.batch(appends).as_bytes())?;
        file.sync_data()?;
        appends += 1;
    }
    let rate = appends as f64 / started.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(path)?;
    Ok(rate)
}

// ---------------------------------------------------------------------------
// 3. Sequential reads vs read(), and 4. recovery vs read() of the active segment

fn bench_read_and_recovery(root: &Path, settings: &Settings) -> BenchResult<Vec<Row>> {
    let shape = Shape::new(1024, 256);
    // 128 MiB segments at full scale; smaller partitions keep 8 segments.
    let segment_bytes = (settings.bytes(GIB) / SEGMENTS).clamp(MIB, 128 * MIB);
    let dir = root.join("big");
    println!();
    println!(
        "## 3. sequential read, Partition::read(offset, 1 MiB) vs read() of the segment files in 1 MiB chunks"
    );
    println!();
    let (log, partition, fill) = fill_partition(&dir, &shape, segment_bytes)?;
    let files = segment_files(&dir)?;
    println!(
        "partition of {:.2} GB ({} records of {}, {} segments of <= {} MiB), filled at {:.0} MB/s with `never`",
        fill.bytes as f64 / 1e9,
        fill.records,
        shape.record_label(),
        files.len(),
        segment_bytes / MIB,
        fill.bytes_per_s() / 1e6
    );
    println!("page cache warm for both (one plain read first; dropping caches needs root)");
    plain_read(&files)?;
    let mut weir = Vec::new();
    let mut base = Vec::new();
    for round in 0..ROUNDS {
        if round % 2 == 1 {
            base.push(plain_read(&files)?);
        }
        weir.push(weir_read(&partition, fill)?);
        if round % 2 == 0 {
            base.push(plain_read(&files)?);
        }
    }
    let (weir, base) = (median_run(&weir), median_run(&base));
    println!();
    println!(
        "  weir     {:>6.0} MB/s  {:>6.2} M records/s  (median of {ROUNDS})",
        weir.bytes_per_s() / 1e6,
        weir.records_per_s() / 1e6
    );
    println!("  read()   {:>6.0} MB/s", base.bytes_per_s() / 1e6);
    let mut rows = vec![read_row(
        format!("sequential read, {} per batch, warm cache", shape.label()),
        &weir,
        &base,
        ">= 0.8",
    )];
    // The runs above read batches this process wrote, which the log knows
    // are valid. After a restart the first read of each batch checks its
    // CRC and framing: measure that once too.
    drop(partition);
    log.close()?;
    let log = Log::open(&dir)?;
    let partition = log.topic(TOPIC)?.partition(0)?.clone();
    let base = plain_read(&files)?;
    let weir = weir_read(&partition, fill)?;
    println!(
        "  after a restart, first read (every batch checked): weir {:>6.0} MB/s, read() {:>6.0} MB/s",
        weir.bytes_per_s() / 1e6,
        base.bytes_per_s() / 1e6
    );
    rows.push(read_row(
        format!(
            "sequential read after a restart, first read checks every CRC, {} per batch",
            shape.label()
        ),
        &weir,
        &base,
        "-",
    ));
    let end_offset = partition.end_offset();
    // The crash: drop the log without `close`.
    drop(partition);
    drop(log);
    rows.extend(bench_recovery(&dir, &shape, fill.bytes, end_offset)?);
    fs::remove_dir_all(&dir)?;
    Ok(rows)
}

/// A table row for a sequential read by the log against `read()`.
fn read_row(measurement: String, weir: &Run, base: &Run, goal: &str) -> Row {
    Row {
        measurement,
        weir: format!(
            "{:.0} MB/s ({:.2} M rec/s)",
            weir.bytes_per_s() / 1e6,
            weir.records_per_s() / 1e6
        ),
        baseline: format!("{:.0} MB/s (read() 1 MiB chunks)", base.bytes_per_s() / 1e6),
        ratio: weir.bytes_per_s() / base.bytes_per_s(),
        goal: goal.into(),
    }
}

/// Creates a `never` topic and fills [`SEGMENTS`] segments of
/// `segment_bytes`, the last (active) one as full as the others: the worst
/// case for recovery, which scans the active segment.
fn fill_partition(
    dir: &Path,
    shape: &Shape,
    segment_bytes: u64,
) -> BenchResult<(Log, Partition, Run)> {
    let config = TopicConfig {
        segment_bytes,
        ..topic_config(Durability::Never)
    };
    let (log, partition) = open_topic(dir, config)?;
    // Every batch of a shape has the same size, so each segment holds as many.
    let batches = SEGMENTS * (segment_bytes / shape.batch(0).size() as u64);
    let mut run = Run::default();
    let started = Instant::now();
    for seq in 0..batches {
        let batch = shape.batch(seq);
        let (size, records) = (batch.size(), batch.record_count());
        partition.append(batch)?;
        run.add(size, records, Duration::ZERO);
    }
    run.busy = started.elapsed();
    Ok((log, partition, run))
}

/// The partition's segment files (`<dir>/topics/<topic>/0/*.log`) in offset order.
fn segment_files(dir: &Path) -> BenchResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir.join("topics").join(TOPIC).join("0"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every record from offset 0 to the end, touching key and value.
fn weir_read(partition: &Partition, expected: Run) -> BenchResult<Run> {
    let mut run = Run::default();
    let mut touched = 0usize;
    let mut offset = partition.start_offset();
    let started = Instant::now();
    loop {
        let batches = partition.read(offset, READ_CHUNK)?;
        let Some(next) = batches.last().map(Batch::next_offset) else {
            break;
        };
        for batch in &batches {
            for record in batch.records().filter(|r| r.offset >= offset) {
                touched += record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len);
                run.records += 1;
            }
            run.bytes += batch.size() as u64;
        }
        offset = next;
    }
    run.busy = started.elapsed();
    black_box(touched);
    if (run.bytes, run.records) != (expected.bytes, expected.records) {
        return Err(format!(
            "read {} B / {} records, wrote {} B / {}",
            run.bytes, run.records, expected.bytes, expected.records
        )
        .into());
    }
    Ok(run)
}

/// Reads the files front to back in 1 MiB chunks.
fn plain_read(files: &[PathBuf]) -> BenchResult<Run> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut run = Run::default();
    let started = Instant::now();
    for path in files {
        let mut file = File::open(path)?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            black_box(&buf[..n]);
            run.bytes += n as u64;
        }
    }
    run.busy = started.elapsed();
    Ok(run)
}

/// Times `Log::open` after a crash, as left, then with a torn batch appended
/// to the active segment; both vs a plain read of the active segment.
fn bench_recovery(
    dir: &Path,
    shape: &Shape,
    log_bytes: u64,
    end_offset: u64,
) -> BenchResult<Vec<Row>> {
    let files = segment_files(dir)?;
    let active = files.last().ok_or("the partition has no segment")?.clone();
    let active_bytes = fs::metadata(&active)?.len();
    // Flush what the fill left dirty so the reopens time the scan, not writeback.
    for path in &files {
        File::open(path)?.sync_all()?;
    }
    let mut clean = Vec::new();
    let mut torn = Vec::new();
    let mut scan = Vec::new();
    for _ in 0..ROUNDS {
        clean.push(reopen(dir, end_offset)?);
        scan.push(
            plain_read(std::slice::from_ref(&active))?
                .busy
                .as_secs_f64(),
        );
        append_torn_batch(&active, shape)?;
        torn.push(reopen(dir, end_offset)?);
        if fs::metadata(&active)?.len() != active_bytes {
            return Err("recovery did not cut the torn tail back to the last whole batch".into());
        }
    }
    let (clean, torn, scan) = (median(clean), median(torn), median(scan));
    println!();
    println!("## 4. recovery: Log::open after a crash (log dropped without close)");
    println!();
    println!(
        "{:.2} GB of log in {} segments; active segment scanned: {:.0} MiB; median of {ROUNDS}; page cache warm, data synced before the crash",
        log_bytes as f64 / 1e9,
        files.len(),
        active_bytes as f64 / MIB as f64
    );
    println!();
    println!(
        "  reopen after crash                  {:>8.1} ms",
        clean * 1e3
    );
    println!(
        "  reopen after crash with torn tail   {:>8.1} ms  (cut + fdatasync of the active segment)",
        torn * 1e3
    );
    println!(
        "  read() of the active segment        {:>8.1} ms",
        scan * 1e3
    );
    let describe = format!(
        "{:.2} GB log, {:.0} MiB active segment",
        log_bytes as f64 / 1e9,
        active_bytes as f64 / MIB as f64
    );
    let baseline = format!("{:.1} ms (read() of active segment)", scan * 1e3);
    Ok(vec![
        Row {
            measurement: format!("recovery after crash, {describe}"),
            weir: format!("{:.1} ms", clean * 1e3),
            baseline: baseline.clone(),
            ratio: scan / clean,
            goal: "- (no goal set)".into(),
        },
        Row {
            measurement: format!("recovery after crash with torn tail, {describe}"),
            weir: format!("{:.1} ms", torn * 1e3),
            baseline,
            ratio: scan / torn,
            goal: "- (no goal set)".into(),
        },
    ])
}

/// Opens the log, checks that it recovered every appended record, and drops
/// it again without `close` (the next crash). Returns the time `open` took.
fn reopen(dir: &Path, end_offset: u64) -> BenchResult<f64> {
    let started = Instant::now();
    let log = Log::open(dir)?;
    let took = started.elapsed().as_secs_f64();
    let recovered = log.topic(TOPIC)?.partition(0)?.end_offset();
    if recovered != end_offset {
        return Err(format!("recovered up to offset {recovered}, expected {end_offset}").into());
    }
    Ok(took)
}

/// Appends the first half of an encoded batch: a write torn by the crash.
fn append_torn_batch(active: &Path, shape: &Shape) -> BenchResult<()> {
    let batch = shape.batch(0);
    let mut file = OpenOptions::new().append(true).open(active)?;
    file.write_all(&batch.as_bytes()[..batch.size() / 2])?;
    file.sync_data()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Output
