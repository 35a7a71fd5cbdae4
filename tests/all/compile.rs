//! Compiled modules on disk: damaged cache entries are refused and
//! recompiled, by the library and by the real `weir` server.

use serde_json::json;
use weir::operator::{Limits, OperatorEngine};

use crate::support::server::{WeirServer, guest_path};
use crate::support::{input, outputs};

/// The filter pipeline `in` → `out` keeps records with `level` ERROR.
fn filter_pipeline(server: &WeirServer) {
    server.create_topic("in", 1);
    server.create_topic("out", 1);
    let spec = json!({
        "inputs": ["in"],
        "stages": [{ "module": "filter", "config": { "field": "level", "equals": "ERROR" },
                     "outputs": { "main": "out" } }],
    });
    server.expect(201, server.put("/v1/pipelines/errors", &spec));
}

/// Produces an ERROR and an INFO record and waits for the ERROR in `out`.
fn filter_works(server: &WeirServer, round: usize) {
    server.produce(
        "in",
        vec![
            json!({ "value": { "level": "ERROR", "round": round } }),
            json!({ "value": { "level": "INFO", "round": round } }),
        ],
    );
    server.wait_until("the ERROR record is kept", |s| {
        s.values("out").len() == round + 1
    });
    let kept = server.values("out");
    assert_eq!(kept[round], json!({ "level": "ERROR", "round": round }));
}

#[test]
fn damaged_cache_entries_are_refused_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = WeirServer::start(&data);
    let bytes = std::fs::read(guest_path("filter")).unwrap();
    let pushed = server.expect(201, server.put_bytes("/v1/modules/filter", &bytes));
    filter_pipeline(&server);
    filter_works(&server, 0);
    server.stop();
    let entry = data
        .join("cache")
        .join(format!("{}.cwasm", pushed["digest"].as_str().unwrap()));
    let sound = std::fs::read(&entry).expect("the compiled module is cached");

    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 2] = [
        ("4 KiB of zeros in the middle", |bytes| {
            let middle = bytes.len() / 2;
            bytes[middle..middle + 4096].fill(0);
        }),
        ("truncated", |bytes| bytes.truncate(bytes.len() / 2)),
    ];
    for (round, (what, damage)) in damages.into_iter().enumerate() {
        let mut damaged = sound.clone();
        damage(&mut damaged);
        assert_ne!(damaged, sound, "{what} changes the entry");
        std::fs::write(&entry, &damaged).unwrap();
        let server = WeirServer::start(&data);
        filter_works(&server, round + 1);
        assert_eq!(server.get("/healthz").0, 200, "{what}");
        let rewritten = std::fs::read(&entry).unwrap();
        assert_ne!(rewritten, damaged, "{what}: the entry is compiled anew");
        assert_eq!(rewritten.len(), sound.len(), "{what}");
        server.stop();
        let log = std::fs::read_to_string(data.with_extension("server.log")).unwrap();
        assert_eq!(
            log.matches("refusing a cached module").count(),
            round + 1,
            "{what}: the refusal is logged"
        );
    }
}

#[test]
fn damaged_cache_entries_are_refused_by_the_library_too() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest_path("filter")).unwrap();
    let engine =
        || OperatorEngine::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    let digest = engine().load("filter", &bytes).unwrap().digest.clone();
    let entry = cache.path().join(format!("{digest}.cwasm"));
    let mut damaged = std::fs::read(&entry).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle..middle + 4096].fill(0);
    assert_ne!(damaged, std::fs::read(&entry).unwrap());
    std::fs::write(&entry, &damaged).unwrap();
    let module = engine().load("filter", &bytes).expect("recompiled");
    let config = vec![("field".into(), "a".into()), ("equals".into(), "1".into())];
    let mut op = weir::operator::OperatorInstance::new(module, config).unwrap();
    let out = op.process(&[input(0, &[(None, r#"{"a":1}"#, 0)])]).unwrap();
    assert_eq!(outputs(&out).len(), 1);
    assert_ne!(std::fs::read(&entry).unwrap(), damaged);
}
