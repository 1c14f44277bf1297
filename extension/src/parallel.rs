//! Computing independent pieces of one call on several threads (`enkf.threads`).
//!
//! Worker threads run only pure Rust code from enkf-core: no PostgreSQL call, no palloc, no
//! error raised (they return `Result`s that the backend's thread turns into errors, in input
//! order so that the first failing location is reported as in a sequential run). Workers are
//! started with every signal blocked, so that cancel and timeouts keep reaching the backend's
//! thread, and are kept for the life of the backend: starting a thread costs about 0.05 ms,
//! as much as the work a second core saves on a 1,000 x 100 ETKF; handing a job to a parked
//! worker costs a few microseconds. `pipeline` lets the backend's thread read and write one
//! batch through SPI while the workers compute the previous one.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};

use enkf_core::workers::Job;

use crate::guc;

type Task = Box<dyn FnOnce() + Send + 'static>;

/// The backend's parked workers, one channel each; started on first use, grown when
/// `enkf.threads` grows. Threads end with the backend process.
static WORKERS: Mutex<Vec<Sender<Task>>> = Mutex::new(Vec::new());

/// Up to `count` workers' channels, starting workers that are missing. Fewer (possibly none)
/// if the system refuses new threads: their jobs then run on the calling thread.
fn workers(count: usize) -> Vec<Sender<Task>> {
    let mut pool = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
    while pool.len() < count {
        match start_worker() {
            Some(tx) => pool.push(tx),
            None => break,
        }
    }
    pool.iter().take(count).cloned().collect()
}

fn start_worker() -> Option<Sender<Task>> {
    let (tx, rx) = channel::<Task>();
    // A new thread inherits its creator's signal mask: block everything around the spawn so
    // that no signal can land on the worker, even before its first instruction.
    // SAFETY: pthread_sigmask only changes the calling thread's mask; the old mask is restored.
    let spawned = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let spawned = std::thread::Builder::new()
            .name("pg_enkf worker".into())
            .spawn(move || {
                for task in rx {
                    task();
                }
            });
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    };
    spawned.ok().map(|_| tx)
}

/// Counts the jobs handed to workers until all have finished, keeping the first panic.
struct Latch {
    state: Mutex<(usize, Option<Box<dyn Any + Send>>)>,
    done: Condvar,
}

impl Latch {
    fn new() -> Arc<Latch> {
        Arc::new(Latch {
            state: Mutex::new((0, None)),
            done: Condvar::new(),
        })
    }

    fn finished(&self, panic: Option<Box<dyn Any + Send>>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if state.1.is_none() {
            state.1 = panic;
        }
        if state.0 == 0 {
            self.done.notify_one();
        }
    }

    fn wait(&self) -> Option<Box<dyn Any + Send>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.0 > 0 {
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.1.take()
    }
}

/// Runs every job on up to `threads` threads (this one included) and returns when all have
/// finished. A panic in any job is re-raised here, on the backend's thread, once every job
/// is done (pgrx turns it into an ERROR).
fn run_all(jobs: Vec<Job<'_>>, threads: usize) {
    let slots = threads.min(jobs.len());
    if slots <= 1 {
        jobs.into_iter().for_each(|job| job());
        return;
    }
    let senders = workers(slots - 1);
    let latch = Latch::new();
    let mut mine = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        // Job i goes to slot i mod slots; slot 0, and any slot without a worker, is ours.
        let Some(tx) = (i % slots).checked_sub(1).and_then(|w| senders.get(w)) else {
            mine.push(job);
            continue;
        };
        latch.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        let counted = latch.clone();
        let task: Job<'_> = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(job));
            counted.finished(outcome.err());
        });
        // SAFETY: the task borrows data that outlives this call, and this function does not
        // return, nor unwind, before the latch has counted the task as finished: the worker
        // has then dropped everything the task borrowed.
        let task: Task = unsafe { std::mem::transmute::<Job<'_>, Task>(task) };
        if let Err(returned) = tx.send(task) {
            // The worker is gone (never seen): run the task here; it counts itself.
            (returned.0)();
        }
    }
    let ours = catch_unwind(AssertUnwindSafe(|| mine.into_iter().for_each(|job| job())));
    let theirs = latch.wait();
    if let Err(panic) = ours {
        resume_unwind(panic);
    }
    if let Some(panic) = theirs {
        resume_unwind(panic);
    }
}

/// `f` applied to every item, in order, on up to `enkf.threads` threads.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = (guc::THREADS.get().max(1) as usize).min(items.len().max(1));
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    let mut parts: Vec<Vec<R>> = (0..items.len().div_ceil(chunk))
        .map(|_| Vec::new())
        .collect();
    let jobs: Vec<Job<'_>> = items
        .chunks(chunk)
        .zip(parts.iter_mut())
        .map(|(part, out)| Box::new(move || *out = part.iter().map(f).collect()) as Job<'_>)
        .collect();
    run_all(jobs, threads);
    parts.into_iter().flatten().collect()
}

/// Locations claimed at a time by a thread computing a pipelined batch: small enough to share
/// a batch evenly, large enough that claiming costs nothing next to the work.
const CLAIM: usize = 8;

/// A batch being computed by workers and this thread together: each claims `CLAIM` items at a
/// time and files their results under the first item's index.
struct Shared<T, R> {
    items: Vec<T>,
    next: std::sync::atomic::AtomicUsize,
    results: Mutex<Vec<(usize, Vec<R>)>>,
}

impl<T, R> Shared<T, R> {
    fn work(&self, f: &(impl Fn(&T) -> R + ?Sized)) {
        loop {
            let start = self
                .next
                .fetch_add(CLAIM, std::sync::atomic::Ordering::Relaxed);
            if start >= self.items.len() {
                return;
            }
            let end = (start + CLAIM).min(self.items.len());
            let out: Vec<R> = self.items[start..end].iter().map(f).collect();
            self.results
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((start, out));
        }
    }
}

/// Waits for the workers of a batch when dropped: on every path out of `pipeline`, unwinding
/// included, no worker is left using `f` or the batch.
struct Joined(Option<Arc<Latch>>);

impl Drop for Joined {
    fn drop(&mut self) {
        if let Some(latch) = self.0.take() {
            let _ = latch.wait();
        }
    }
}

/// Computes `f` over batches that `next` fetches (an empty batch ends), handing each batch and
/// its results, in order, to `done`, with this thread's database work overlapping the
/// workers' computing: while the workers compute batch k, this thread runs `done` for batch
/// k - 1 and `next` for batch k + 1, then helps finish batch k. `next` and `done` run on this
/// thread only (they may use SPI). With `enkf.threads = 1` the batches are simply computed in
/// turn. Results are those of `f` on each item, whatever the threads.
pub fn pipeline<T: Send + Sync + 'static, R: Send + 'static>(
    mut next: impl FnMut() -> Vec<T>,
    f: impl Fn(&T) -> R + Sync,
    mut done: impl FnMut(Vec<T>, Vec<R>),
) {
    let threads = guc::THREADS.get().max(1) as usize;
    let senders = if threads > 1 {
        workers(threads - 1)
    } else {
        Vec::new()
    };
    if senders.is_empty() {
        return sequential(next, f, done);
    }
    let f: &(dyn Fn(&T) -> R + Sync) = &f;
    let mut batch = next();
    let mut finished: Option<(Vec<T>, Vec<R>)> = None;
    while !batch.is_empty() {
        let shared = Arc::new(Shared {
            items: batch,
            next: std::sync::atomic::AtomicUsize::new(0),
            results: Mutex::new(Vec::new()),
        });
        let latch = Latch::new();
        let mut joined = Joined(Some(latch.clone()));
        for tx in &senders {
            latch.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
            let (counted, mine) = (latch.clone(), shared.clone());
            let task: Job<'_> = Box::new(move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| mine.work(f)));
                // Let go of the batch before counting out: the backend takes it back whole.
                drop(mine);
                counted.finished(outcome.err());
            });
            // SAFETY: the task borrows `f`, which outlives this function; `joined` waits for
            // the task to finish before this function returns or unwinds past this point.
            let task: Task = unsafe { std::mem::transmute::<Job<'_>, Task>(task) };
            if let Err(returned) = tx.send(task) {
                (returned.0)();
            }
        }
        // This thread's database work, while the workers compute.
        if let Some((items, out)) = finished.take() {
            done(items, out);
        }
        let following = next();
        // Then it helps with what is left of the batch.
        let ours = catch_unwind(AssertUnwindSafe(|| shared.work(f)));
        let theirs = latch.wait();
        joined.0 = None;
        if let Err(panic) = ours {
            resume_unwind(panic);
        }
        if let Some(panic) = theirs {
            resume_unwind(panic);
        }
        finished = Some(in_order(shared));
        batch = following;
    }
    if let Some((items, out)) = finished {
        done(items, out);
    }
}

/// `pipeline` on this thread alone.
fn sequential<T, R>(
    mut next: impl FnMut() -> Vec<T>,
    f: impl Fn(&T) -> R,
    mut done: impl FnMut(Vec<T>, Vec<R>),
) {
    loop {
        let batch = next();
        if batch.is_empty() {
            return;
        }
        let out = batch.iter().map(&f).collect();
        done(batch, out);
    }
}

/// A computed batch's items and their results in the items' order.
fn in_order<T, R>(shared: Arc<Shared<T, R>>) -> (Vec<T>, Vec<R>) {
    let shared = match Arc::try_unwrap(shared) {
        Ok(s) => s,
        Err(_) => unreachable!("every worker has dropped its handle on the batch"),
    };
    let mut parts = shared
        .results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    parts.sort_unstable_by_key(|p| p.0);
    (shared.items, parts.into_iter().flat_map(|p| p.1).collect())
}

/// Threads for the dense products inside one large analysis (`enkf.threads` of them).
pub struct Threads(usize);

impl Threads {
    pub fn from_guc() -> Self {
        Threads(guc::THREADS.get().max(1) as usize)
    }
}

impl enkf_core::workers::Workers for Threads {
    fn threads(&self) -> usize {
        self.0
    }

    fn run<'a>(&self, jobs: Vec<Job<'a>>) {
        run_all(jobs, self.0);
    }
}
