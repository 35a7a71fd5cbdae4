//! Benchmark of the WebAssembly operator host (`runtime/src/operator`).
//!
//! Every measurement runs beside a baseline in the same run and is reported
//! as a ratio to it:
//!
//! 1. Filter throughput: the `well-behaved` test guest (keeps records whose
//!    value does not start with `x`, built with the SDK's `filter` shape)
//!    through `OperatorInstance::process`, one call per batch, vs the same
//!    filter as native Rust: the logic the SDK runs inside the guest
//!    (`Batches::assume_valid`, `BatchWriter::push_view`, `finish_unsealed`)
//!    followed by what the host does with each emitted batch
//!    (`Batch::from_new`: validate, set the host's header fields, seal). Records: 8-byte key, 100-byte value, no
//!    headers; every 10th value starts with `x`. Batch sizes 1, 16, 256 and
//!    4096 records; both paths' outputs are checked byte-identical first.
//!    Reported in records/s (and MB/s of input at batch 256).
//! 2. Instantiation: `OperatorInstance::new` (store, WASI context,
//!    instantiation and the guest's `init`) from a module already compiled,
//!    median and p99, with the on-demand allocator (`OperatorEngine::new`)
//!    vs bare wasmtime (a `Store` and `instantiate` of the same component
//!    with the same engine settings, imports stubbed, no `init`), and with
//!    the pooling allocator (`with_pooling`, 64 slots) vs the on-demand one.
//! 3. Loading each example module in `guest-examples`: from the disk cache
//!    (a new engine on the same cache directory) vs a cold cache (validate,
//!    compile, write the cache entry).
//!
//! Run it with
//!
//! ```text
//! cargo bench -p weir-bench --bench operators
//! cargo bench -p weir-bench --bench operators -- --quick
//! ```
//!
//! `--secs` (or `WEIR_BENCH_SECS`, default 1) is the length of one timed
//! throughput run; each case alternates 5 WASM and 5 native runs and
//! reports the medians. `--quick` means 0.1 s, 3 runs and fewer samples.
//! Other arguments name the cases to run (default all): `filter` or one
//! batch size (`filter-256`), `instantiate`, `load`; handy under `perf`.
//! The defaults take under a minute on 2 cores (after the build).
//!
//! The guests must be built first (`cargo test -p weir-tests --no-run`
//! builds them); they are read from `target/guests/wasm32-wasip2/release`,
//! or from `WEIR_GUESTS_DIR` when set. The output ends with a markdown table
//! for `BENCHMARKS.md`.

use weir_bench::guests::guests_dir;

use weir_bench::report::{Row, median, print_table};

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};
use weir_format::{Batch, BatchBuilder, Record};
use weir_format::{BatchWriter, Batches};
use weir_host::{Limits, OperatorEngine, OperatorInstance, OperatorModule};

const BATCH_SIZES: [usize; 4] = [1, 16, 256, 4096];
/// Batch size whose WASM throughput is also reported in MB/s.
const MB_BATCH: usize = 256;
/// Records in the set of batches each throughput run cycles through.
const RECORDS_PER_SET: usize = 16_384;
const KEY_LEN: usize = 8;
const VALUE_LEN: usize = 100;
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;
const FILTER_GUEST: &str = "well_behaved";
const EXAMPLES: [&str; 5] = ["filter", "receipt", "page_visits", "error_alert", "dedupe"];
const POOL_SLOTS: u32 = 64;
/// Instantiations before the timed ones.
const WARM_UP_INSTANCES: usize = 10;

fn main() {
    let settings = Settings::parse();
    println!("# Operator host benchmark");
    println!();
    println!(
        "{:.2} s per throughput run, {} runs per case, {} instantiations per allocator, \
         {} loads per module, {} cores, guests from {}",
        settings.secs,
        settings.rounds,
        settings.instantiations,
        settings.loads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        guests_dir().display()
    );
    let mut table = Vec::new();
    if !settings.filter_sizes().is_empty() {
        table.extend(bench_filter(&settings));
    }
    if settings.runs("instantiate") {
        table.extend(bench_instantiate(&settings));
    }
    if settings.runs("load") {
        table.extend(bench_load(&settings));
    }
    print_table(&table);
}

// ---------------------------------------------------------------------------
// Settings, guests and workloads

struct Settings {
    /// Length of one timed throughput run, in seconds.
    secs: f64,
    /// Timed runs per throughput case (median reported).
    rounds: usize,
    /// Timed instantiations per allocator.
    instantiations: usize,
    /// Cold and cached loads per module.
    loads: usize,
    /// Cases to run (`filter`, `filter-256`, `instantiate`, `load`); empty: all.
    only: Vec<String>,
}

impl Settings {
    fn parse() -> Settings {
        let mut quick = false;
        let mut secs = std::env::var("WEIR_BENCH_SECS").ok();
        let mut only = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--secs" => secs = Some(args.next().expect("--secs needs a value")),
                "--bench" => {} // added by `cargo bench`
                flag if flag.starts_with('-') => {
                    panic!("unknown option {flag:?}; expected --quick, --secs X or case names")
                }
                case => only.push(case.to_string()),
            }
        }
        let mut settings = if quick {
            Settings {
                secs: 0.1,
                rounds: 3,
                instantiations: 50,
                loads: 2,
                only,
            }
        } else {
            Settings {
                secs: 1.0,
                rounds: 5,
                instantiations: 200,
                loads: 5,
                only,
            }
        };
        if let Some(secs) = secs {
            settings.secs = parse_secs(&secs);
        }
        settings
    }

    /// Whether case `name` (`section` or `section-detail`) was asked for.
    fn runs(&self, name: &str) -> bool {
        let section = name.split('-').next().unwrap_or(name);
        self.only.is_empty() || self.only.iter().any(|o| o == name || o == section)
    }

    /// The filter batch sizes asked for.
    fn filter_sizes(&self) -> Vec<usize> {
        BATCH_SIZES
            .into_iter()
            .filter(|size| self.runs(&format!("filter-{size}")))
            .collect()
    }

    fn run_time(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

fn parse_secs(value: &str) -> f64 {
    let secs: f64 = value
        .parse()
        .expect("the run length must be a number of seconds");
    assert!(secs > 0.0, "the run length must be positive, got {secs}");
    secs
}

/// The bytes of guest `name` (`name.wasm` in the guests directory).
fn read_guest(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the guest {}: {e}\n\
             Build the guests first, with `cargo test -p weir-tests --no-run` or with\n  \
             (cd tests/guests && CARGO_TARGET_DIR=$PWD/../../target/guests cargo build --release --target wasm32-wasip2)\n  \
             (cd guest-examples && CARGO_TARGET_DIR=$PWD/../target/guests cargo build --release --target wasm32-wasip2)\n\
             (the wasm32-wasip2 target is needed: rustup target add wasm32-wasip2)",
            path.display()
        )
    })
}

fn new_engine(cache_dir: Option<PathBuf>) -> OperatorEngine {
    OperatorEngine::new(Limits::default(), cache_dir).expect("the operator engine starts")
}

fn load(engine: &OperatorEngine, name: &str, bytes: &[u8]) -> Arc<OperatorModule> {
    engine.load(name, bytes).expect("the guest module loads")
}

/// Record `i`: 8-byte key, 100-byte value; every 10th value (i % 10 == 9)
/// starts with `x` and is dropped by the filter (9 rather than 0, so that
/// the batch of size 1 made of record 0 has an output).
fn value(i: usize) -> [u8; VALUE_LEN] {
    let mut v = [b'a' + (i % 26) as u8; VALUE_LEN];
    v[0] = if i % 10 == 9 { b'x' } else { b'v' };
    v
}

/// Batches of `size` records, about [`RECORDS_PER_SET`] records in all.
fn make_batches(size: usize) -> Vec<Batch> {
    let count = (RECORDS_PER_SET / size).max(1);
    (0..count)
        .map(|b| {
            let mut builder = BatchBuilder::with_capacity(size * (KEY_LEN + VALUE_LEN + 8));
            for i in b * size..(b + 1) * size {
                builder.push(&Record {
                    key: Some(&(i as u64).to_be_bytes()),
                    value: Some(&value(i)),
                    headers: &[],
                    timestamp: BASE_TIMESTAMP + i as i64,
                });
            }
            builder.finish().expect("a batch of one record or more")
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Filter throughput, WASM vs native

/// The filter as native code: what the SDK's `filter` shape and `Emitter`
/// do inside the guest, then what the host does with an emitted batch.
fn native_filter(input: &Batch) -> Option<Batch> {
    let mut writer = BatchWriter::new();
    for batch in Batches::assume_valid(input.as_bytes()) {
        let batch = batch.expect("the host sends whole batches");
        for record in batch.records() {
            if !record.value.unwrap_or_default().starts_with(b"x") {
                writer.push_view(&record);
            }
        }
    }
    if writer.is_empty() {
        return None;
    }
    let bytes = writer
        .finish_unsealed()
        .expect("the writer holds at least one record");
    Some(Batch::from_new(bytes).expect("the filter's output is a valid batch"))
}

/// The emitted batches of one `process` call.
fn wasm_filter(instance: &mut OperatorInstance, input: &Batch) -> Vec<Batch> {
    let output = instance
        .process(std::slice::from_ref(input))
        .expect("the filter processes every batch");
    output.emitted.into_iter().map(|(_, batch)| batch).collect()
}

fn check_same_output(instance: &mut OperatorInstance, batches: &[Batch]) {
    for batch in batches.iter().take(20) {
        let wasm = wasm_filter(instance, batch);
        let native: Vec<Batch> = native_filter(batch).into_iter().collect();
        assert!(
            wasm == native,
            "WASM and native outputs differ for a batch of {} records",
            batch.record_count()
        );
    }
}

/// Input records per second of `call` applied to `batches` in turn, over
/// at least `run_time` (the clock is read once per pass over the set).
fn records_per_sec(batches: &[Batch], run_time: Duration, mut call: impl FnMut(&Batch)) -> f64 {
    let per_pass: usize = batches.iter().map(Batch::record_count).sum();
    let start = Instant::now();
    let mut records = 0;
    while start.elapsed() < run_time {
        for batch in batches {
            call(batch);
        }
        records += per_pass;
    }
    records as f64 / start.elapsed().as_secs_f64()
}

struct Throughput {
    wasm: f64,
    native: f64,
    /// Input bytes per record, batch headers included.
    bytes_per_record: f64,
}

/// Alternating WASM and native runs over batches of `size` records, medians.
fn compare_filter(instance: &mut OperatorInstance, size: usize, settings: &Settings) -> Throughput {
    let batches = make_batches(size);
    check_same_output(instance, &batches);
    let mut wasm_call = |b: &Batch| {
        black_box(wasm_filter(instance, b));
    };
    let native_call = |b: &Batch| {
        black_box(native_filter(black_box(b)));
    };
    let warm_up = Duration::from_millis(100);
    records_per_sec(&batches, warm_up, &mut wasm_call);
    records_per_sec(&batches, warm_up, native_call);
    let (mut wasm, mut native) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds {
        wasm.push(records_per_sec(
            &batches,
            settings.run_time(),
            &mut wasm_call,
        ));
        native.push(records_per_sec(&batches, settings.run_time(), native_call));
    }
    let bytes: usize = batches.iter().map(Batch::size).sum();
    let records: usize = batches.iter().map(Batch::record_count).sum();
    Throughput {
        wasm: median(wasm),
        native: median(native),
        bytes_per_record: bytes as f64 / records as f64,
    }
}

fn bench_filter(settings: &Settings) -> Vec<Row> {
    println!();
    println!("## 1. filter `{FILTER_GUEST}.wasm` vs the same filter native, one call per batch");
    println!();
    println!(
        "records: {KEY_LEN}-byte key, {VALUE_LEN}-byte value, 1 in 10 dropped; \
         native = SDK filter logic + host seal and validation of the output"
    );
    println!();
    let engine = new_engine(None);
    let module = load(&engine, FILTER_GUEST, &read_guest(FILTER_GUEST));
    let mut instance =
        OperatorInstance::new(module, Vec::new()).expect("the filter needs no configuration");
    let mut rows = Vec::new();
    for size in settings.filter_sizes() {
        let t = compare_filter(&mut instance, size, settings);
        let ratio = t.wasm / t.native;
        println!(
            "batch {size:>4}: wasm {}, native {}, wasm/native {ratio:.2}, wasm {:.0} MB/s",
            fmt_rate(t.wasm),
            fmt_rate(t.native),
            t.wasm * t.bytes_per_record / 1e6
        );
        rows.push(Row {
            measurement: format!("filter, batch {size}"),
            weir: fmt_rate(t.wasm),
            baseline: format!("{} (native)", fmt_rate(t.native)),
            ratio,
            goal: "≥ 0.5".into(),
        });
        if size == MB_BATCH {
            rows.push(Row {
                measurement: format!("filter, batch {size}, MB/s of input"),
                weir: format!("{:.0} MB/s", t.wasm * t.bytes_per_record / 1e6),
                baseline: format!("{:.0} MB/s (native)", t.native * t.bytes_per_record / 1e6),
                ratio,
                goal: "—".into(),
            });
        }
    }
    rows
}

// ---------------------------------------------------------------------------
// 2. Instantiation

/// Median and 99th percentile of a set of durations.
#[derive(Clone, Copy)]
struct Spread {
    median: Duration,
    p99: Duration,
}

impl Spread {
    fn of(mut samples: Vec<Duration>) -> Spread {
        samples.sort();
        let p99 = (samples.len() * 99).div_ceil(100).max(1) - 1;
        Spread {
            median: samples[samples.len() / 2],
            p99: samples[p99],
        }
    }

    fn label(&self) -> String {
        format!("{}, p99 {}", fmt_time(self.median), fmt_time(self.p99))
    }
}

/// Times `count` calls of `make` after a warm-up; each result is dropped
/// outside the timer.
fn time_each<T>(count: usize, mut make: impl FnMut() -> T) -> Spread {
    for _ in 0..WARM_UP_INSTANCES {
        drop(make());
    }
    let samples = (0..count)
        .map(|_| {
            let start = Instant::now();
            let made = make();
            let elapsed = start.elapsed();
            drop(made);
            elapsed
        })
        .collect();
    Spread::of(samples)
}

fn time_operator_instances(engine: &OperatorEngine, bytes: &[u8], count: usize) -> Spread {
    let module = load(engine, FILTER_GUEST, bytes);
    time_each(count, || {
        OperatorInstance::new(Arc::clone(&module), Vec::new()).expect("the filter instantiates")
    })
}

/// Bare wasmtime: the same component on an engine with the host's settings
/// (component model, fuel, epochs; on-demand allocation), every import a
/// stub that traps, a store with no host state, no `init` call.
fn time_bare_instances(bytes: &[u8], count: usize) -> Spread {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true);
    let engine = Engine::new(&config).expect("a wasmtime engine with the host's settings");
    let component = Component::new(&engine, bytes).expect("the guest compiles");
    let mut linker = Linker::<()>::new(&engine);
    linker
        .define_unknown_imports_as_traps(&component)
        .expect("every import can be stubbed");
    let pre = linker
        .instantiate_pre(&component)
        .expect("the stubbed component links");
    time_each(count, || {
        let mut store = Store::new(&engine, ());
        store.set_fuel(u64::MAX).expect("fuel is enabled");
        store.set_epoch_deadline(u64::MAX);
        let instance = pre.instantiate(&mut store).expect("the guest instantiates");
        (store, instance)
    })
}

fn bench_instantiate(settings: &Settings) -> Vec<Row> {
    println!();
    println!(
        "## 2. instantiation of `{FILTER_GUEST}.wasm`, module already compiled \
         ({} samples after {WARM_UP_INSTANCES} warm-up)",
        settings.instantiations
    );
    println!();
    let bytes = read_guest(FILTER_GUEST);
    let count = settings.instantiations;
    let bare = time_bare_instances(&bytes, count);
    println!("bare wasmtime instantiate (no init):   {}", bare.label());
    let on_demand = time_operator_instances(&new_engine(None), &bytes, count);
    println!(
        "OperatorInstance::new, on-demand:      {}",
        on_demand.label()
    );
    let pooling_engine = OperatorEngine::with_pooling(Limits::default(), None, POOL_SLOTS)
        .expect("the pooling engine starts");
    let pooling = time_operator_instances(&pooling_engine, &bytes, count);
    println!(
        "OperatorInstance::new, pooling ({POOL_SLOTS}):   {}",
        pooling.label()
    );
    vec![
        Row {
            measurement: "instantiate + init, on-demand allocator".into(),
            weir: on_demand.label(),
            baseline: format!("{} (bare wasmtime, no init)", bare.label()),
            ratio: secs(bare.median) / secs(on_demand.median),
            goal: "< 1 ms".into(),
        },
        Row {
            measurement: format!("instantiate + init, pooling allocator ({POOL_SLOTS} slots)"),
            weir: pooling.label(),
            baseline: format!("{} (on-demand)", on_demand.label()),
            ratio: secs(on_demand.median) / secs(pooling.median),
            goal: "< 1 ms".into(),
        },
    ]
}

// ---------------------------------------------------------------------------
// 3. Loading modules: cold vs from the disk cache

/// Time of `engine.load` on a new engine using `cache_dir` (engine start
/// not timed).
fn time_load(cache_dir: &Path, name: &str, bytes: &[u8]) -> Duration {
    let engine = new_engine(Some(cache_dir.to_path_buf()));
    let start = Instant::now();
    let module = load(&engine, name, bytes);
    let elapsed = start.elapsed();
    drop(module);
    elapsed
}

fn assert_cached(cache_dir: &Path) {
    let entries = std::fs::read_dir(cache_dir)
        .expect("the cache directory exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(
        entries,
        1,
        "a cold load leaves one entry in {}",
        cache_dir.display()
    );
}

fn bench_load(settings: &Settings) -> Vec<Row> {
    println!();
    println!(
        "## 3. loading the example modules: disk cache (new engine) vs cold (compile), median of {}",
        settings.loads
    );
    println!();
    let root = tempfile::Builder::new()
        .prefix("weir-bench-operators-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a temporary directory under the target directory");
    let mut rows = Vec::new();
    for name in EXAMPLES {
        let bytes = read_guest(name);
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        for run in 0..settings.loads {
            let dir = root.path().join(format!("{name}-{run}"));
            cold.push(time_load(&dir, name, &bytes));
            assert_cached(&dir);
            cached.push(time_load(&dir, name, &bytes));
        }
        let (cold, cached) = (Spread::of(cold).median, Spread::of(cached).median);
        let ratio = secs(cold) / secs(cached);
        println!(
            "{name:<12} {:>7} B: cached {}, cold {}, cold/cached {ratio:.0}",
            bytes.len(),
            fmt_time(cached),
            fmt_time(cold)
        );
        rows.push(Row {
            measurement: format!("load `{name}` ({} KB)", bytes.len() / 1000),
            weir: format!("{} (disk cache)", fmt_time(cached)),
            baseline: format!("{} (cold: compile)", fmt_time(cold)),
            ratio,
            goal: "—".into(),
        });
    }
    rows
}

// ---------------------------------------------------------------------------
// Reporting

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn fmt_rate(records_per_sec: f64) -> String {
    format!("{:.2} M rec/s", records_per_sec / 1e6)
}

fn fmt_time(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{:.1} ms", micros / 1000.0)
    }
}
