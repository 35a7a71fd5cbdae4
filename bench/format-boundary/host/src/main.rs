//! Host benchmark: how fast can record batches be handed across the wasmtime
//! component-model boundary, per encoding, versus the same filter run natively?
//!
//! Usage: weir-bench-host [GUEST_WASM] [SECONDS_PER_RUN]
//!   GUEST_WASM       default: $WEIR_GUEST_WASM or
//!                    target/wasm32-wasip2/release/weir_bench_guest.wasm
//!   SECONDS_PER_RUN  default 1.0; each case is run 3 times and the median kept.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use weir_bench_filter as filter;

wasmtime::component::bindgen!({
    world: "filters",
    path: "../wit",
});

struct State {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

const BATCH_SIZES: [usize; 4] = [1, 16, 256, 4096];
const KEY_LEN: usize = 8;
const VALUE_LEN: usize = 100;
const BASE_TS: i64 = 1_700_000_000_000;

/// Value of record `i`: 100 bytes; every 10th value (i % 10 == 9) starts with
/// 'x' and is dropped. (Using 9 rather than 0 keeps the single record of a
/// batch of size 1, so that case exercises the output path too.)
fn value(i: usize) -> [u8; VALUE_LEN] {
    let mut v = [b'a' + (i % 26) as u8; VALUE_LEN];
    v[0] = if i % 10 == 9 { b'x' } else { b'v' };
    v
}

fn key(i: usize) -> [u8; KEY_LEN] {
    (i as u64).to_be_bytes()
}

fn build_kafka(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        filter::push_kafka_record(&mut out, i as i64, i as i32, Some(&key(i)), Some(&value(i)), &[]);
    }
    out
}

fn build_framed(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        filter::push_framed_record(&mut out, BASE_TS + i as i64, Some(&key(i)), Some(&value(i)), &[]);
    }
    out
}

/// Runs `f` (one call = one batch) and returns calls per second: median of
/// `runs` timed runs of at least `dur` each, after a short warm-up. Calls are
/// timed in chunks sized so that reading the clock is negligible.
fn measure(dur: Duration, runs: usize, mut f: impl FnMut()) -> f64 {
    // Calibrate chunk size to ~5 ms; doubles as warm-up.
    let mut chunk = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..chunk {
            f();
        }
        if t.elapsed() >= Duration::from_millis(5) {
            break;
        }
        chunk *= 2;
    }
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        for _ in 0..chunk {
            f();
        }
    }
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let mut calls = 0u64;
        while t.elapsed() < dur {
            for _ in 0..chunk {
                f();
            }
            calls += chunk;
        }
        rates.push(calls as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

type NativeFn = fn(&[u8]) -> Vec<u8>;
type WasmFn = fn(&Filters, &mut Store<State>, &[u8]) -> wasmtime::Result<Vec<u8>>;

struct Case {
    name: &'static str,
    kafka_input: bool,
    native: NativeFn,
    wasm: WasmFn,
}

fn echo_native(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let wasm_path = args
        .next()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("WEIR_GUEST_WASM").ok())
        .unwrap_or_else(|| "target/wasm32-wasip2/release/weir_bench_guest.wasm".into());
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let dur = Duration::from_secs_f64(secs);
    let runs = 3;

    let engine = Engine::new(&Config::new())?;
    let t = Instant::now();
    let component =
        Component::from_file(&engine, &wasm_path).map_err(anyhow::Error::from).with_context(|| format!("loading {wasm_path}"))?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let mut store = Store::new(&engine, State { ctx: WasiCtx::builder().build(), table: ResourceTable::new() });
    let t = Instant::now();
    let guest = Filters::instantiate(&mut store, &component, &linker)?;
    let inst_us = t.elapsed().as_secs_f64() * 1e6;

    let wasm_size = std::fs::metadata(&wasm_path)?.len();
    println!("guest: {wasm_path} ({wasm_size} bytes), compile {compile_ms:.0} ms, instantiate {inst_us:.0} us");
    println!("each case: median of {runs} runs of >= {secs} s; record = 8-byte key, 100-byte value, no headers; 1 in 10 dropped");

    let cases = [
        Case { name: "kafka", kafka_input: true, native: filter::filter_kafka, wasm: |g, s, b| g.call_filter_kafka(s, b) },
        Case { name: "kafka-copy", kafka_input: true, native: filter::filter_kafka_copy, wasm: |g, s, b| g.call_filter_kafka_copy(s, b) },
        Case { name: "framed", kafka_input: false, native: filter::filter_framed, wasm: |g, s, b| g.call_filter_framed(s, b) },
        Case { name: "framed-copy", kafka_input: false, native: filter::filter_framed_copy, wasm: |g, s, b| g.call_filter_framed_copy(s, b) },
        Case { name: "echo(kafka)", kafka_input: true, native: echo_native, wasm: |g, s, b| g.call_echo(s, b) },
        Case { name: "echo(framed)", kafka_input: false, native: echo_native, wasm: |g, s, b| g.call_echo(s, b) },
    ];

    // Malformed input must come back empty, not trap.
    for bad in [&[0x01u8][..], &[0xff; 7], &build_kafka(3)[..50]] {
        ensure!(guest.call_filter_kafka(&mut store, bad)?.is_empty());
        ensure!(guest.call_filter_kafka_copy(&mut store, bad)?.is_empty());
        ensure!(guest.call_filter_framed(&mut store, bad)?.is_empty());
    }

    println!();
    println!(
        "{:<13} {:>6} {:>9} | {:>12} {:>10} | {:>12} {:>10} | {:>7}",
        "format", "batch", "bytes", "native Mr/s", "ns/call", "wasm Mr/s", "ns/call", "wasm/nat"
    );
    println!("{}", "-".repeat(98));
    let mut results = Vec::new();
    for case in &cases {
        for &n in &BATCH_SIZES {
            let input = if case.kafka_input { build_kafka(n) } else { build_framed(n) };

            // Correctness: wasm and native agree, and the right records survive.
            let native_out = (case.native)(&input);
            let wasm_out = (case.wasm)(&guest, &mut store, &input)?;
            ensure!(native_out == wasm_out, "{} n={n}: wasm and native outputs differ", case.name);
            if !case.name.starts_with("echo") {
                let expect_kept = (0..n).filter(|i| i % 10 != 9).count();
                let expect = if case.kafka_input {
                    let mut e = Vec::new();
                    let mut k = 0;
                    for i in (0..n).filter(|i| i % 10 != 9) {
                        let od = if case.name == "kafka" { k } else { i as i32 };
                        filter::push_kafka_record(&mut e, i as i64, od, Some(&key(i)), Some(&value(i)), &[]);
                        k += 1;
                    }
                    e
                } else {
                    let mut e = Vec::new();
                    for i in (0..n).filter(|i| i % 10 != 9) {
                        filter::push_framed_record(&mut e, BASE_TS + i as i64, Some(&key(i)), Some(&value(i)), &[]);
                    }
                    e
                };
                ensure!(native_out == expect, "{} n={n}: wrong output ({expect_kept} kept expected)", case.name);
            }

            let native_cps = measure(dur, runs, || {
                black_box((case.native)(black_box(&input)));
            });
            let wasm_cps = measure(dur, runs, || {
                black_box((case.wasm)(&guest, &mut store, black_box(&input)).unwrap());
            });
            let (nr, wr) = (native_cps * n as f64 / 1e6, wasm_cps * n as f64 / 1e6);
            println!(
                "{:<13} {:>6} {:>9} | {:>12.3} {:>10.0} | {:>12.3} {:>10.0} | {:>7.3}",
                case.name,
                n,
                input.len(),
                nr,
                1e9 / native_cps,
                wr,
                1e9 / wasm_cps,
                wr / nr
            );
            results.push((case.name, n, nr, wr));
        }
    }

    println!();
    println!("wasm throughput, framed vs kafka (>1 = framed faster across the boundary):");
    for &n in &BATCH_SIZES {
        let get = |name: &str| results.iter().find(|r| r.0 == name && r.1 == n).unwrap();
        let (k, kc, f, fc) = (get("kafka"), get("kafka-copy"), get("framed"), get("framed-copy"));
        println!(
            "  batch {:>5}: re-encode framed/kafka wasm {:.2}x (native {:.2}x); copy framed/kafka wasm {:.2}x (native {:.2}x)",
            n,
            f.3 / k.3,
            f.2 / k.2,
            fc.3 / kc.3,
            fc.2 / kc.2
        );
    }
    Ok(())
}
