//! The kill -9 crash test: a child process appends with durability `always`
//! from several threads and reports each acknowledged batch; the parent
//! kills it with SIGKILL at a random moment, reopens the log and checks that
//! every acknowledged record is present, intact and in order. Repeated over
//! many cycles on the same data directory, so recovery also runs on logs
//! that earlier crashes left behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use log_core::Log;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::read_all;

const CYCLES: u64 = 25;

struct Ack {
    base_offset: u64,
    count: u64,
    cycle: u64,
    thread: u64,
    seq: u64,
}

fn parse(line: &str) -> Option<Ack> {
    let mut f = line.split(' ').map(|x| x.parse::<u64>());
    let ack = Ack {
        base_offset: f.next()?.ok()?,
        count: f.next()?.ok()?,
        cycle: f.next()?.ok()?,
        thread: f.next()?.ok()?,
        seq: f.next()?.ok()?,
    };
    f.next().is_none().then_some(ack)
}

/// Runs the appender until a random moment, kills it, returns its acknowledgements.
fn run_and_kill(dir: &std::path::Path, cycle: u64, rng: &mut StdRng) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_log-crash-appender"))
        .args([dir.to_str().unwrap(), &cycle.to_string(), "4"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the appender");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    std::thread::sleep(Duration::from_millis(rng.random_range(30..250)));
    child.kill().expect("SIGKILL the appender");
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the appender should have been killed, not exit: {status}"
    );
    // A line cut short by the kill is not an acknowledgement.
    reader
        .join()
        .unwrap()
        .iter()
        .filter_map(|l| parse(l))
        .collect()
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut acked: Vec<Ack> = Vec::new();
    for cycle in 0..CYCLES {
        let new = run_and_kill(dir.path(), cycle, &mut rng);
        assert!(
            !new.is_empty() || cycle > 0,
            "the first cycle acknowledged nothing: the appender may not work"
        );
        acked.extend(new);
        let log = Log::open(dir.path()).expect("recovery after kill -9");
        let p = log
            .topic("crash")
            .expect("topic exists")
            .partition(0)
            .unwrap()
            .clone();
        let records = read_all(&p);
        assert!(
            records.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets strictly increase"
        );
        for ack in &acked {
            for i in 0..ack.count {
                let offset = ack.base_offset + i;
                let expected = format!(
                    "c{}-t{}-s{}-r{i}-{}",
                    ack.cycle,
                    ack.thread,
                    ack.seq,
                    "x".repeat(80)
                );
                let found = records
                    .binary_search_by_key(&offset, |(o, _)| *o)
                    .ok()
                    .map(|idx| &records[idx].1);
                let value = found.and_then(|r| r.value.clone());
                assert_eq!(
                    value.as_deref(),
                    Some(expected.as_bytes()),
                    "cycle {cycle}: acknowledged offset {offset} lost or changed"
                );
            }
        }
    }
    assert!(
        acked.len() > 100,
        "only {} acknowledged batches over {CYCLES} cycles",
        acked.len()
    );
}
