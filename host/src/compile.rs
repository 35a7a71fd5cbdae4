//! Compiling modules: where it runs, within which limits, and how many
//! compiles run at once.
//!
//! Compiling is the one thing a module can make the host do before any
//! limit of the sandbox applies, and Cranelift's cost grows faster than the
//! module's size: a megabyte can be built to take minutes and gigabytes.
//! So a [`Compiler`] for untrusted modules (the server's) compiles each one
//! in a child process, the same binary run as `weir __compile` ([`child_main`]):
//!
//! - the module's bytes go to its stdin; a sealed artifact (`artifact.rs`)
//!   comes back on its stdout, and is verified like a cache entry before it
//!   is loaded;
//! - before it runs, the child gets a CPU-time limit (`RLIMIT_CPU`, whole
//!   seconds: the kernel stops it with `SIGXCPU`), an address-space limit
//!   (`RLIMIT_AS`: allocations fail), no core files, and on Linux it is
//!   killed if the server dies;
//! - the wall-clock limit (`Limits::max_compile_ms`) kills it.
//!
//! A compile over a limit is refused with an error naming the limit, and
//! costs nothing afterwards: the process is gone.
//!
//! Compiles wait in a queue: at most `max_concurrent` at once server-wide,
//! and at most `max_concurrent_per_tenant` of one tenant, each first come
//! first served. A tenant's compile bombs thus occupy its own slots; another
//! tenant waits at most for the compiles ahead of it in the global queue,
//! of which each tenant has at most its own share.
//!
//! The in-process form ([`Compiler::in_process`], what
//! `OperatorEngine::load` uses) is for modules the caller trusts (tests,
//! benchmarks, `weir run` on a developer's own module): it compiles on a
//! thread, which a wall-clock timeout abandons but cannot stop.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::artifact::{self, ModuleDigest};
use super::{Limits, OperatorError, engine};

/// The hidden subcommand that runs [`child_main`].
pub const CHILD_COMMAND: &str = "__compile";

/// Exit codes of the child besides success: the module does not compile;
/// it ran out of memory.
const EXIT_INVALID: u8 = 65;
const EXIT_OUT_OF_MEMORY: u8 = 66;

/// How much of the child's stderr is kept for the error message (the rest
/// is read and dropped).
const MAX_STDERR: u64 = 64 << 10;

/// How often a running child is checked on.
const POLL: Duration = Duration::from_millis(20);

/// Where and within which limits modules are compiled, and how many at
/// once. The wall-clock limit is the engine's `Limits::max_compile_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompileSettings {
    /// Compile in a child process with the limits below (true), or on a
    /// thread of this process (false: trusted modules only; only the
    /// wall-clock limit applies, and an abandoned compile runs on).
    /// Default true.
    pub isolated: bool,
    /// CPU time of one compile, in milliseconds, rounded up to whole
    /// seconds (the kernel's unit). Cranelift compiles on several threads,
    /// so this can run out before the wall-clock limit. Default 60 s.
    pub max_cpu_ms: u64,
    /// Address space of one compiling process, in bytes. Default 4 GiB.
    pub max_memory_bytes: u64,
    /// Compiles at once, server-wide. Default: the number of cores, at
    /// least 2.
    pub max_concurrent: usize,
    /// Compiles at once per tenant (with tenancy on). Default 1.
    pub max_concurrent_per_tenant: usize,
}

impl Default for CompileSettings {
    fn default() -> Self {
        CompileSettings {
            isolated: true,
            max_cpu_ms: 60_000,
            max_memory_bytes: 4 << 30,
            max_concurrent: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            max_concurrent_per_tenant: 1,
        }
    }
}

/// Compiles modules into sealed artifacts, within the limits of its
/// settings. Shared by every upload of a server.
pub struct Compiler {
    settings: CompileSettings,
    /// The program run as `<program> __compile`; `None` compiles in this process.
    program: Option<PathBuf>,
    queue: CompileQueue,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("settings", &self.settings)
            .field("program", &self.program)
            .finish()
    }
}

impl Compiler {
    /// A compiler as `settings` say; isolated compiles run this very
    /// program (the `weir` binary) as the child.
    pub fn new(settings: CompileSettings) -> anyhow::Result<Compiler> {
        let program = match settings.isolated {
            true => Some(this_program()?),
            false => None,
        };
        Ok(Self::build(settings, program))
    }

    /// A compiler whose children are `program __compile` (a `weir` binary
    /// of this very build: its artifacts must load here).
    pub fn with_program(settings: CompileSettings, program: PathBuf) -> Compiler {
        Self::build(settings, Some(program))
    }

    /// Compiles on a thread of this process, for trusted modules.
    pub fn in_process() -> Compiler {
        let settings = CompileSettings {
            isolated: false,
            ..CompileSettings::default()
        };
        Self::build(settings, None)
    }

    fn build(settings: CompileSettings, program: Option<PathBuf>) -> Compiler {
        let queue = CompileQueue::new(settings.max_concurrent, settings.max_concurrent_per_tenant);
        Compiler {
            settings,
            program,
            queue,
        }
    }

    /// Compiles `bytes` (whose SHA-256 is `module`) for `engine` once the
    /// queue admits it, with `wall` as the wall-clock limit; returns the
    /// sealed artifact, still to be verified by `artifact::load`. `tenant`
    /// is whose queue the compile waits in (`None`: the global one only).
    pub(crate) fn compile(
        &self,
        engine: &wasmtime::Engine,
        tenant: Option<&str>,
        module: &ModuleDigest,
        bytes: &[u8],
        wall: Duration,
    ) -> Result<Vec<u8>, OperatorError> {
        let _admitted = self.queue.enter(tenant);
        let result = match &self.program {
            Some(program) => self.in_child(program, bytes, wall),
            None => in_thread(engine, module, bytes, wall),
        };
        if let Err(e @ OperatorError::CompileLimit { .. }) = &result {
            tracing::warn!(tenant, module = %hex::encode(module), error = %e, "compile refused");
        }
        result
    }

    /// Runs `<program> __compile` under the limits and waits for its artifact.
    fn in_child(
        &self,
        program: &Path,
        bytes: &[u8],
        wall: Duration,
    ) -> Result<Vec<u8>, OperatorError> {
        let cpu_secs = self.settings.max_cpu_ms.div_ceil(1000).max(1);
        let memory = self.settings.max_memory_bytes;
        let mut command = Command::new(program);
        command
            .arg(CHILD_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Errors only on stderr: it becomes the refusal's message.
            .env("RUST_LOG", "error")
            // Few malloc arenas, so the address-space limit measures what
            // the compiler uses rather than per-thread reservations.
            .env("MALLOC_ARENA_MAX", "2");
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe calls are allowed: it makes plain
        // syscalls (setrlimit, prctl, getppid) and allocates nothing.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                limit_this_process(cpu_secs, memory, parent)
            });
        }
        let child = command.spawn().map_err(|e| {
            OperatorError::Host(format!(
                "cannot start the compiler process {}: {e}",
                program.display()
            ))
        })?;
        let mut child = KillOnDrop(child);
        let stdin = child.0.stdin.take().expect("stdin is piped");
        let stdout = child.0.stdout.take().expect("stdout is piped");
        let stderr = child.0.stderr.take().expect("stderr is piped");
        // The artifact cannot be larger than the child's address space.
        let max_output = memory;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut stdin = stdin;
                // A child stopped by a limit closes its end: its status says why.
                let _ = stdin.write_all(bytes);
            });
            let output = scope.spawn(move || read_capped(stdout, max_output));
            let errors = scope.spawn(move || read_capped(stderr, MAX_STDERR));
            let ended = wait_until(&mut child.0, Instant::now() + wall);
            let output = output.join().expect("the reader does not panic");
            let errors = errors.join().expect("the reader does not panic");
            let status = match ended {
                Ok(Some(status)) => status,
                Ok(None) => {
                    return Err(OperatorError::CompileLimit {
                        limit: "wall-clock time",
                        max: format!("{} ms", wall.as_millis()),
                    });
                }
                Err(e) => {
                    return Err(OperatorError::Host(format!(
                        "cannot wait for the compiler process: {e}"
                    )));
                }
            };
            let (errors, _) = errors.unwrap_or_default();
            self.judge(status, String::from_utf8_lossy(&errors).trim().to_string())?;
            match output {
                Ok((artifact, true)) => Ok(artifact),
                Ok((_, false)) => Err(OperatorError::Host(format!(
                    "the compiler's output is larger than {max_output} bytes"
                ))),
                Err(e) => Err(OperatorError::Host(format!(
                    "cannot read the compiler's output: {e}"
                ))),
            }
        })
    }

    /// What a finished child's exit status says about the compile.
    fn judge(&self, status: ExitStatus, stderr: String) -> Result<(), OperatorError> {
        use std::os::unix::process::ExitStatusExt;
        if status.success() {
            return Ok(());
        }
        let out_of_memory = status.code() == Some(EXIT_OUT_OF_MEMORY.into())
            // Rust's allocation failure handler aborts with this message.
            || stderr.contains("memory allocation of");
        if out_of_memory {
            return Err(OperatorError::CompileLimit {
                limit: "memory",
                max: format!("{} bytes", self.settings.max_memory_bytes),
            });
        }
        if status.signal() == Some(libc::SIGXCPU) {
            return Err(OperatorError::CompileLimit {
                limit: "CPU time",
                max: format!("{} s", self.settings.max_cpu_ms.div_ceil(1000).max(1)),
            });
        }
        if status.code() == Some(EXIT_INVALID.into()) {
            return Err(OperatorError::InvalidModule(stderr));
        }
        Err(OperatorError::Host(format!(
            "the compiler process failed ({status}): {stderr}"
        )))
    }
}

/// The program itself, for children that must be this very build. On
/// Linux `/proc/self/exe` is the running binary even after an upgrade
/// replaced the file.
fn this_program() -> anyhow::Result<PathBuf> {
    let running = Path::new("/proc/self/exe");
    if running.exists() {
        return Ok(running.to_path_buf());
    }
    std::env::current_exe().context("while finding the weir binary to compile modules with")
}

/// In the forked child: limits on CPU time and address space, no core
/// files, and death with the parent.
fn limit_this_process(cpu_secs: u64, memory: u64, parent: u32) -> std::io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives
        // across the call.
        match unsafe { libc::setrlimit(resource, &limit) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    // SIGXCPU at the soft limit; SIGKILL a second later if it is ignored.
    set(libc::RLIMIT_CPU, cpu_secs, cpu_secs + 1)?;
    set(libc::RLIMIT_AS, memory, memory)?;
    set(libc::RLIMIT_CORE, 0, 0)?;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and
        // touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The parent may have died before the line above took effect.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != parent {
            return Err(std::io::Error::other("the server exited"));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    Ok(())
}

/// A child process that is killed and reaped if it is still there when
/// this is dropped (a timeout, or an unwinding panic).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `child` to exit until `deadline`; past it, kills it and
/// returns `None`.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                return Err(e);
            }
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// Reads `from` to its end (so the child never blocks writing), keeping
/// the first `max` bytes; also says whether that was all.
fn read_capped(mut from: impl Read, max: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    (&mut from).take(max).read_to_end(&mut bytes)?;
    let rest = std::io::copy(&mut from, &mut std::io::sink())?;
    Ok((bytes, rest == 0))
}

/// Compiles on a thread so that a compile over `wall` can be abandoned (it
/// finishes in the background, unused).
fn in_thread(
    engine: &wasmtime::Engine,
    module: &ModuleDigest,
    bytes: &[u8],
    wall: Duration,
) -> Result<Vec<u8>, OperatorError> {
    let (done, result) = mpsc::channel();
    let (engine, bytes) = (engine.clone(), bytes.to_vec());
    std::thread::Builder::new()
        .name("weir-compile".into())
        .spawn(move || {
            let _ = done.send(engine.precompile_component(&bytes));
        })
        .map_err(|e| OperatorError::Host(format!("cannot start a compile thread: {e}")))?;
    match result.recv_timeout(wall) {
        Ok(Ok(serialized)) => Ok(artifact::seal(module, &serialized)),
        Ok(Err(e)) => Err(OperatorError::InvalidModule(format!("{e:#}"))),
        Err(_) => Err(OperatorError::CompileLimit {
            limit: "wall-clock time",
            max: format!("{} ms", wall.as_millis()),
        }),
    }
}

/// `weir __compile`: reads a module on stdin, writes its sealed artifact
/// to stdout. Exits with [`EXIT_INVALID`] and the reason on stderr when
/// the module does not compile, [`EXIT_OUT_OF_MEMORY`] when memory ran out.
pub fn child_main() -> ExitCode {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("cannot read the module from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let engine = match wasmtime::Engine::new(&engine::wasmtime_config(&Limits::default(), None)) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot create the wasmtime engine: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let serialized = match engine.precompile_component(&bytes) {
        Ok(serialized) => serialized,
        Err(e) if is_out_of_memory(&e) => {
            eprintln!("{e:#}");
            return ExitCode::from(EXIT_OUT_OF_MEMORY);
        }
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let module: ModuleDigest = Sha256::digest(&bytes).into();
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(&artifact::seal(&module, &serialized))
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the artifact to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether an error comes from memory that could not be had (mmap of code
/// or of a large buffer failing under `RLIMIT_AS`).
fn is_out_of_memory(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.raw_os_error() == Some(libc::ENOMEM))
    })
}

/// Admission to compiling: `global` slots server-wide and `per_tenant`
/// slots per tenant, each a first-come-first-served semaphore. A tenant's
/// slot is taken first, so each tenant has at most `per_tenant` compiles
/// waiting in the global queue.
struct CompileQueue {
    global: Arc<Semaphore>,
    per_tenant: usize,
    tenants: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// A place in the compile queue; the slots go back when it is dropped.
struct Admission {
    _global: OwnedSemaphorePermit,
    _tenant: Option<TenantSlot>,
}

/// A tenant's slot; the tenant's semaphore is forgotten with its last user.
struct TenantSlot {
    permit: Option<OwnedSemaphorePermit>,
    tenant: String,
    tenants: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl CompileQueue {
    fn new(global: usize, per_tenant: usize) -> CompileQueue {
        CompileQueue {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_tenant: per_tenant.max(1),
            tenants: Arc::default(),
        }
    }

    /// Blocks until a compile for `tenant` may start.
    fn enter(&self, tenant: Option<&str>) -> Admission {
        let tenant = tenant.map(|tenant| {
            let semaphore = self
                .tenants
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone();
            TenantSlot {
                permit: Some(acquire(semaphore)),
                tenant: tenant.to_string(),
                tenants: self.tenants.clone(),
            }
        });
        Admission {
            _global: acquire(self.global.clone()),
            _tenant: tenant,
        }
    }
}

fn acquire(semaphore: Arc<Semaphore>) -> OwnedSemaphorePermit {
    futures::executor::block_on(semaphore.acquire_owned()).expect("compile queues are never closed")
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.permit.take();
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: nobody waits or compiles for this tenant.
        if tenants
            .get(&self.tenant)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            tenants.remove(&self.tenant);
        }
    }
}

#[cfg(test)]
mod tests;
