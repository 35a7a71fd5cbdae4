//! Compiles through the queue and the child process: tenants wait for their
//! own compiles and not for others', the global limit holds, idle tenants are
//! forgotten, exit statuses name the limit hit, the child's output is capped,
//! and what is compiled in process is sealed.

use super::*;

/// Enters the queue on another thread; the receiver hears when it got in.
fn enter_later(
    queue: &Arc<CompileQueue>,
    tenant: &'static str,
) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered, heard) = mpsc::channel();
    let (leave, told) = mpsc::channel::<()>();
    let queue = queue.clone();
    std::thread::spawn(move || {
        let _admitted = queue.enter(Some(tenant));
        let _ = entered.send(());
        let _ = told.recv();
    });
    (heard, leave)
}

#[test]
fn a_tenant_waits_for_its_own_compiles_but_not_for_another_tenants() {
    let queue = Arc::new(CompileQueue::new(2, 1));
    let (bomb, leave_bomb) = enter_later(&queue, "a");
    bomb.recv_timeout(Duration::from_secs(30))
        .expect("a compiles");
    let (second_bomb, _leave) = enter_later(&queue, "a");
    let (good, _leave_good) = enter_later(&queue, "b");
    good.recv_timeout(Duration::from_secs(30))
        .expect("b compiles beside a's compile");
    assert!(
        second_bomb
            .recv_timeout(Duration::from_millis(200))
            .is_err(),
        "a's second compile waits for its first"
    );
    drop(leave_bomb);
    second_bomb
        .recv_timeout(Duration::from_secs(30))
        .expect("a's second compile starts once the first is done");
}

#[test]
fn the_global_limit_holds_across_tenants() {
    let queue = Arc::new(CompileQueue::new(1, 1));
    let (first, leave_first) = enter_later(&queue, "a");
    first
        .recv_timeout(Duration::from_secs(30))
        .expect("a compiles");
    let (second, _leave) = enter_later(&queue, "b");
    assert!(second.recv_timeout(Duration::from_millis(200)).is_err());
    drop(leave_first);
    second
        .recv_timeout(Duration::from_secs(30))
        .expect("b compiles once a is done");
}

#[test]
fn idle_tenants_are_forgotten() {
    let queue = CompileQueue::new(2, 1);
    drop(queue.enter(Some("a")));
    assert!(queue.tenants.lock().unwrap().is_empty());
}

#[test]
fn exit_statuses_name_the_limit() {
    use std::os::unix::process::ExitStatusExt;
    let compiler = Compiler::with_program(
        CompileSettings {
            max_cpu_ms: 1500,
            max_memory_bytes: 1 << 30,
            ..CompileSettings::default()
        },
        PathBuf::from("weir"),
    );
    let judged = |raw: i32, stderr: &str| {
        compiler
            .judge(ExitStatus::from_raw(raw), stderr.to_string())
            .map_err(|e| e.to_string())
    };
    let signal = |signal: i32| signal;
    let code = |code: i32| code << 8;
    assert_eq!(judged(code(0), ""), Ok(()));
    assert_eq!(
        judged(signal(libc::SIGXCPU), ""),
        Err("module compilation stopped at its CPU time limit of 2 s".into())
    );
    assert_eq!(
        judged(
            signal(libc::SIGABRT),
            "memory allocation of 1048576 bytes failed"
        ),
        Err("module compilation stopped at its memory limit of 1073741824 bytes".into())
    );
    assert_eq!(
        judged(code(EXIT_OUT_OF_MEMORY.into()), "Cannot allocate memory"),
        Err("module compilation stopped at its memory limit of 1073741824 bytes".into())
    );
    assert_eq!(
        judged(code(EXIT_INVALID.into()), "failed to parse WebAssembly"),
        Err("invalid module: failed to parse WebAssembly".into())
    );
    let crashed = judged(signal(libc::SIGSEGV), "").unwrap_err();
    assert!(crashed.contains("compiler process failed"), "{crashed}");
}

#[test]
fn output_past_the_cap_is_read_to_its_end_but_not_kept() {
    let (kept, whole) = read_capped(&[1u8; 100][..], 10).unwrap();
    assert_eq!((kept, whole), (vec![1; 10], false));
    let (kept, whole) = read_capped(&[1u8; 10][..], 10).unwrap();
    assert_eq!((kept, whole), (vec![1; 10], true));
}

#[test]
fn the_in_process_compiler_seals_what_it_compiles() {
    let engine = wasmtime::Engine::new(&engine::wasmtime_config(&Limits::default(), None)).unwrap();
    let wasm = b"\0asm\x0d\0\x01\0";
    let module: ModuleDigest = Sha256::digest(wasm).into();
    let sealed = Compiler::in_process()
        .compile(&engine, None, &module, wasm, Duration::from_secs(60))
        .unwrap();
    assert!(artifact::load(&engine, &sealed, &module).is_ok());
}
