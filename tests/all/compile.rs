//! Compiling untrusted modules: compile bombs stopped at their limits in a
//! child process while the server and other uploads go on, damaged cache
//! entries refused and recompiled, oversize uploads answered with 413.
//! Against the real `weir` binary (its `__compile` child included).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasm_encoder::{
    CodeSection, Function, FunctionSection, Module, ModuleSection, TypeSection, ValType,
};
use weir_host::{CompileSettings, Compiler, Limits, OperatorEngine, OperatorError};

use crate::support::server::{WEIR, WeirServer, guest_path};
use crate::support::{input, outputs};

const ADMIN: &str = "compile-test-admin";

/// A component wrapping a core module built to be slow to compile, like
/// the one outside testing found: two functions, each with 2,000 locals
/// that all stay live through a long body mixing them (register pressure
/// that makes the register allocator crawl), about 1.5 MB in all.
fn compile_bomb() -> Vec<u8> {
    const LOCALS: u32 = 2_000;
    const STEPS: u32 = 60_000;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I64], [ValType::I64]);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2 {
        functions.function(0);
        let mut body = Function::new([(LOCALS, ValType::I64)]);
        let mut sink = body.instructions();
        // Every local from the parameter, so nothing folds to a constant.
        for local in 1..=LOCALS {
            sink.local_get(0)
                .i64_const(local.into())
                .i64_mul()
                .local_set(local);
        }
        for step in 0..STEPS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pick = |bits: u64| 1 + (bits % u64::from(LOCALS)) as u32;
            sink.local_get(pick(seed))
                .local_get(pick(seed >> 21))
                .i64_mul()
                .i64_const(step.into())
                .i64_add()
                .local_set(pick(seed >> 42));
        }
        sink.local_get(1);
        for local in 2..=LOCALS {
            sink.local_get(local).i64_add();
        }
        sink.end();
        code.function(&body);
    }
    let mut module = Module::new();
    module.section(&types).section(&functions).section(&code);
    let mut component = wasm_encoder::Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

/// An HTTP client of its own, so two tenants can upload at once.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(180)))
        .max_idle_connections(0)
        .build()
        .into()
}

fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("read the body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `PUT url` with `bytes`, as `token`.
fn upload(url: &str, token: &str, bytes: &[u8]) -> (u16, Value) {
    answer(
        agent()
            .put(url)
            .header("authorization", format!("Bearer {token}"))
            .send(bytes),
    )
}

/// Creates a tenant and returns a fresh token for it.
fn tenant(server: &WeirServer, name: &str) -> String {
    server.create_tenant(ADMIN, json!({ "name": name }))
}

/// The `weir __compile` processes the server runs now.
fn compile_children(server: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue; // gone meanwhile
        };
        // The parent is the second field after the command, which is in parentheses.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let compiling = cmdline.split(|&b| b == 0).any(|arg| arg == b"__compile");
        if parent == Some(server) && compiling {
            children.push(pid);
        }
    }
    children
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[test]
fn a_compile_bomb_is_stopped_at_its_cpu_limit_while_other_uploads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "tenancy = true\nadmin_token = \"{ADMIN}\"\n\
         [limits]\nmax_compile_ms = 120000\n\
         [compile]\nmax_cpu_ms = 3000\nmax_concurrent = 2\nmax_concurrent_per_tenant = 1\n"
    );
    let server = WeirServer::start_with_config(&dir.path().join("data"), &config);
    let (bomber, neighbour) = (tenant(&server, "bomber"), tenant(&server, "neighbour"));
    let good = std::fs::read(guest_path("filter")).unwrap();

    let url = server.url.clone();
    let bomb_token = bomber.clone();
    let bomb = std::thread::spawn(move || {
        upload(
            &format!("{url}/v1/modules/bomb"),
            &bomb_token,
            &compile_bomb(),
        )
    });
    server.wait_until("the bomb's compiler process runs", |s| {
        !compile_children(s.pid()).is_empty() || bomb.is_finished()
    });
    assert!(!bomb.is_finished(), "the bomb compiled in no time");

    // While it compiles: the server answers, and another tenant's upload
    // is accepted (it does not queue behind the bomb).
    server.use_token(None);
    let asked = Instant::now();
    assert_eq!(server.get("/healthz").0, 200);
    let health = asked.elapsed();
    assert!(health < Duration::from_secs(10), "/healthz took {health:?}");
    let (status, body) = upload(
        &format!("{}/v1/modules/filter", server.url),
        &neighbour,
        &good,
    );
    assert_eq!(status, 201, "the neighbour's upload: {body}");

    let (status, body) = bomb.join().unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        error_of(&body).contains("compilation stopped at its CPU time limit of 3 s"),
        "the refusal names the limit: {body}"
    );
    assert_eq!(
        compile_children(server.pid()),
        Vec::<u32>::new(),
        "the bomb's compile is gone once refused"
    );
    // The bomber's own good module right after is accepted.
    let (status, body) = upload(&format!("{}/v1/modules/filter", server.url), &bomber, &good);
    assert_eq!(status, 201, "a good module after the bomb: {body}");
}

#[test]
fn compiles_over_wall_clock_or_memory_limits_are_refused_naming_the_limit() {
    let bomb = compile_bomb();
    let isolated = |max_compile_ms: u64, settings: CompileSettings| {
        let engine = OperatorEngine::new(
            Limits {
                max_compile_ms,
                ..Limits::default()
            },
            None,
        )
        .unwrap();
        (engine, Compiler::with_program(settings, WEIR.into()))
    };

    let (engine, compiler) = isolated(
        1_500,
        CompileSettings {
            max_cpu_ms: 600_000,
            ..CompileSettings::default()
        },
    );
    let started = Instant::now();
    let err = compiler.load(&engine, None, "bomb", &bomb).unwrap_err();
    assert_eq!(
        err.to_string(),
        "module compilation stopped at its wall-clock time limit of 1500 ms"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "killed at its deadline, not compiled to the end: {:?}",
        started.elapsed()
    );

    let (engine, compiler) = isolated(
        600_000,
        CompileSettings {
            max_cpu_ms: 600_000,
            // The bomb needs more than 170 MB; ordinary modules far less.
            max_memory_bytes: 128 << 20,
            ..CompileSettings::default()
        },
    );
    let err = compiler.load(&engine, None, "bomb", &bomb).unwrap_err();
    assert!(
        matches!(
            err,
            OperatorError::CompileLimit {
                limit: "memory",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "module compilation stopped at its memory limit of 134217728 bytes"
    );
    let good = std::fs::read(guest_path("filter")).unwrap();
    assert!(compiler.load(&engine, None, "filter", &good).is_ok());
}

#[test]
fn modules_compiled_in_a_child_process_load_and_run() {
    let engine = OperatorEngine::new(Limits::default(), None).unwrap();
    let compiler = Compiler::with_program(CompileSettings::default(), WEIR.into());
    let bytes = std::fs::read(guest_path("filter")).unwrap();
    let module = compiler.load(&engine, Some("t"), "filter", &bytes).unwrap();
    let config = vec![("field".into(), "a".into()), ("equals".into(), "1".into())];
    let mut op = weir_host::OperatorInstance::new(module, config).unwrap();
    let out = op
        .process(&[input(
            0,
            &[(None, r#"{"a":1}"#, 0), (None, r#"{"a":2}"#, 1)],
        )])
        .unwrap();
    assert_eq!(outputs(&out).len(), 1);
    // What does not compile is refused in the child's words.
    let err = compiler
        .load(&engine, None, "truncated", b"\0asm\x0d\0\x01\0\x07")
        .unwrap_err();
    assert!(matches!(err, OperatorError::InvalidModule(_)), "{err}");
}

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
    let mut op = weir_host::OperatorInstance::new(module, config).unwrap();
    let out = op.process(&[input(0, &[(None, r#"{"a":1}"#, 0)])]).unwrap();
    assert_eq!(outputs(&out).len(), 1);
    assert_ne!(std::fs::read(&entry).unwrap(), damaged);
}

#[test]
fn oversize_uploads_get_413_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    let url = format!("{}/v1/modules/huge", server.url);
    let huge = vec![0u8; 100 << 20];

    // Announced by Content-Length: refused before it is read.
    let (status, body) = answer(agent().put(&url).send(&huge[..]));
    assert_eq!(status, 413, "{body}");
    assert!(
        error_of(&body).contains("over the module size limit of 67108864 bytes"),
        "{body}"
    );
    // Sent in chunks without a length: refused once past the limit.
    let reader = std::io::Cursor::new(huge);
    let (status, body) = answer(
        agent()
            .put(&url)
            .send(ureq::SendBody::from_owned_reader(reader)),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        error_of(&body).contains("more than 67108864 bytes, over the module size limit"),
        "{body}"
    );

    assert_eq!(server.get("/healthz").0, 200);
    server.expect(404, server.get("/v1/modules/huge"));
    server.push_module("filter", "filter");
}
