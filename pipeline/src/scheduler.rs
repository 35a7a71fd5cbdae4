//! Fair sharing of the CPU between tenants for operator execution.
//!
//! Guest work (a round through a chain) runs in one of a fixed number of
//! slots, one per core. When a slot frees up and work is waiting, the
//! slot goes to the waiting tenant with the least *virtual time*: the
//! CPU time its work has used divided by its share (weighted fair
//! queueing, the continuous form of deficit round robin). A tenant whose
//! module is costly or loops (each call is still bounded by its fuel) so
//! gets its share of the slots and no more, however many tasks it runs; a
//! tenant that was idle re-enters at the current minimum, so it neither
//! starves others with saved-up credit nor waits for a debt.
//!
//! Calls cannot be preempted, and one call may run for up to its fuel
//! budget (a second or two). So that a neighbour's long calls cannot hold
//! every slot while a tenant with nothing running waits, such a tenant
//! may start beyond the slots when another tenant's call has been running
//! for longer than [`LONG_CALL`]; the kernel then time-slices the cores.
//!
//! Time is each call's thread CPU time (`CLOCK_THREAD_CPUTIME_ID`), so
//! waiting for a core does not count as using it. The scheduler also
//! reports each tenant's CPU time, for status and benchmarks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A call running longer than this lets an idle tenant start beside it.
pub const LONG_CALL: Duration = Duration::from_millis(50);

/// Shares of the slots between tenants.
pub struct CpuScheduler {
    slots: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    busy: usize,
    tenants: HashMap<String, Account>,
    waiting: Vec<Waiter>,
    next_id: u64,
}

#[derive(Default, Clone)]
struct Account {
    /// CPU time used divided by the share, in nanoseconds.
    virtual_ns: f64,
    cpu: Duration,
    running: usize,
    /// Start times of its running calls.
    started: Vec<Instant>,
}

struct Waiter {
    id: u64,
    tenant: String,
    wake: oneshot::Sender<()>,
}

impl CpuScheduler {
    /// A scheduler with `slots` concurrent executions (0: one per core).
    pub fn new(slots: usize) -> Arc<CpuScheduler> {
        let slots = if slots == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            slots
        };
        Arc::new(CpuScheduler {
            slots,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` for `tenant` (with `share`, at least 1) on the blocking
    /// pool once the tenant's turn comes. Returns `None` if the work
    /// panicked.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        tenant: &str,
        share: u32,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        self.acquire(tenant).await;
        let ran = tokio::task::spawn_blocking(move || {
            let started = thread_cpu_time();
            let result = work();
            (result, thread_cpu_time().saturating_sub(started))
        })
        .await;
        let used = ran.as_ref().map_or(Duration::ZERO, |(_, used)| *used);
        self.release(tenant, share, used);
        ran.ok().map(|(result, _)| result)
    }

    async fn acquire(&self, tenant: &str) {
        let (id, mut woken) = {
            let mut state = self.lock();
            let floor = state.floor();
            let account = state.tenants.entry(tenant.to_string()).or_default();
            if account.running == 0 {
                // Back from idle: no saved-up credit.
                account.virtual_ns = account.virtual_ns.max(floor);
            }
            let idle = account.running == 0;
            let free = state.busy < self.slots && state.waiting.is_empty();
            if free || (idle && state.long_call_running(tenant)) {
                state.start(tenant);
                return;
            }
            let (wake, woken) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.waiting.push(Waiter {
                id,
                tenant: tenant.to_string(),
                wake,
            });
            (id, woken)
        };
        loop {
            // Handed a slot (and counted) by `release`...
            if tokio::time::timeout(LONG_CALL, &mut woken).await.is_ok() {
                return;
            }
            // ...or, with nothing of its own running, allowed beside a
            // neighbour's long call.
            let mut state = self.lock();
            let idle = state.tenants.get(tenant).is_none_or(|a| a.running == 0);
            if idle && state.long_call_running(tenant) {
                match woken.try_recv() {
                    // A slot arrived meanwhile: it is ours already.
                    Ok(()) => return,
                    Err(_) => {
                        let mine = state.waiting.iter().position(|w| w.id == id);
                        if let Some(i) = mine {
                            state.waiting.swap_remove(i);
                            state.start(tenant);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn release(&self, tenant: &str, share: u32, used: Duration) {
        let mut state = self.lock();
        let account = state.account(tenant);
        account.virtual_ns += used.as_nanos() as f64 / f64::from(share.max(1));
        account.cpu += used;
        state.finish(tenant);
        while state.busy < self.slots {
            let Some(next) = state.next_waiter() else {
                break;
            };
            let waiter = state.waiting.swap_remove(next);
            state.start(&waiter.tenant);
            if waiter.wake.send(()).is_err() {
                // Its task was dropped while waiting: give the slot back.
                state.finish(&waiter.tenant);
            }
        }
    }

    /// Forgets a deleted tenant's account (its pipelines are gone), so a
    /// tenant created again under the name starts afresh.
    pub fn forget(&self, tenant: &str) {
        let mut state = self.lock();
        if state.tenants.get(tenant).is_some_and(|a| a.running == 0) {
            state.tenants.remove(tenant);
        }
    }

    /// CPU time used so far by each tenant's operators.
    pub fn cpu_time(&self, tenant: &str) -> Duration {
        self.lock()
            .tenants
            .get(tenant)
            .map_or(Duration::ZERO, |a| a.cpu)
    }
}

impl State {
    fn account(&mut self, tenant: &str) -> &mut Account {
        self.tenants.entry(tenant.to_string()).or_default()
    }

    fn start(&mut self, tenant: &str) {
        self.busy += 1;
        let account = self.account(tenant);
        account.running += 1;
        account.started.push(Instant::now());
    }

    fn finish(&mut self, tenant: &str) {
        self.busy -= 1;
        let account = self.account(tenant);
        account.running -= 1;
        if !account.started.is_empty() {
            account.started.remove(0);
        }
    }

    /// Whether another tenant has a call running longer than [`LONG_CALL`].
    fn long_call_running(&self, tenant: &str) -> bool {
        self.tenants
            .iter()
            .any(|(t, a)| t != tenant && a.started.iter().any(|s| s.elapsed() > LONG_CALL))
    }

    /// The least virtual time among tenants with work running or waiting.
    fn floor(&self) -> f64 {
        let waiting = self.waiting.iter().map(|w| &w.tenant);
        let running = self
            .tenants
            .iter()
            .filter(|(_, a)| a.running > 0)
            .map(|(t, _)| t);
        waiting
            .chain(running)
            .filter_map(|t| self.tenants.get(t))
            .map(|a| a.virtual_ns)
            .fold(None, |min: Option<f64>, v| {
                Some(min.map_or(v, |m| m.min(v)))
            })
            .unwrap_or(0.0)
    }

    /// The waiter whose tenant is furthest behind (first come among equals).
    fn next_waiter(&self) -> Option<usize> {
        let behind = |w: &Waiter| self.tenants.get(&w.tenant).map_or(0.0, |a| a.virtual_ns);
        (0..self.waiting.len()).min_by(|&a, &b| {
            behind(&self.waiting[a])
                .total_cmp(&behind(&self.waiting[b]))
                .then(a.cmp(&b))
        })
    }
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a valid pointer
    // to a local; CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn spin(ms: u64) {
        let until = thread_cpu_time() + Duration::from_millis(ms);
        while thread_cpu_time() < until {
            std::hint::spin_loop();
        }
    }

    #[tokio::test]
    async fn a_forgotten_tenant_starts_afresh() {
        let scheduler = CpuScheduler::new(1);
        scheduler.run("gone", 1, || spin(5)).await;
        assert!(scheduler.cpu_time("gone") > Duration::ZERO);
        scheduler.forget("gone");
        assert_eq!(scheduler.cpu_time("gone"), Duration::ZERO);
    }

    /// Two tenants flood one slot with equal work; shares 3:1 give them
    /// slots in about that ratio.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_follow_the_shares() {
        let scheduler = CpuScheduler::new(1);
        let done: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, (tenant, share)) in [("heavy", 3u32), ("light", 1)].into_iter().enumerate() {
            for _ in 0..3 {
                let (scheduler, done, stop) = (scheduler.clone(), done.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        scheduler.run(tenant, share, || spin(2)).await;
                        done[i].fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let (heavy, light) = (
            done[0].load(Ordering::Relaxed),
            done[1].load(Ordering::Relaxed),
        );
        let ratio = heavy as f64 / light.max(1) as f64;
        assert!((2.0..4.5).contains(&ratio), "{heavy} vs {light} calls");
        assert!(scheduler.cpu_time("heavy") > scheduler.cpu_time("light"));
    }

    /// A neighbour's long calls hold every slot; a tenant with nothing
    /// running still starts before they end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_calls_do_not_lock_out_an_idle_tenant() {
        let scheduler = CpuScheduler::new(1);
        let hog = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move {
                scheduler
                    .run("hog", 100, || {
                        std::thread::sleep(Duration::from_millis(800));
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        scheduler.run("quick", 100, || spin(1)).await;
        let waited = started.elapsed();
        assert!(!hog.is_finished(), "the hog still holds its slot");
        assert!(waited < Duration::from_millis(700), "waited {waited:?}");
        hog.await.unwrap();
    }
}
