//! Computing independent locations on several threads (`enkf.threads`).
//!
//! Worker threads run only pure Rust code from enkf-core: no PostgreSQL call, no palloc, no
//! error raised (they return `Result`s that the backend's thread turns into errors, in input
//! order so that the first failing location is reported as in a sequential run). Signals are
//! blocked in the workers so that cancel and timeouts keep reaching the backend's thread.

use crate::guc;

fn block_signals() {
    // SAFETY: pthread_sigmask only changes the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
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
    let mut parts: Vec<Vec<R>> = std::thread::scope(|scope| {
        let mut chunks = items.chunks(chunk);
        let first = chunks.next().unwrap_or(&[]);
        let handles: Vec<_> = chunks
            .map(|part| {
                scope.spawn(move || {
                    block_signals();
                    part.iter().map(f).collect::<Vec<R>>()
                })
            })
            .collect();
        let mut out = vec![first.iter().map(f).collect::<Vec<R>>()];
        for h in handles {
            match h.join() {
                Ok(v) => out.push(v),
                // A worker panicked: re-panic on this thread, where pgrx turns it into an ERROR.
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        out
    });
    let mut all = Vec::with_capacity(items.len());
    for p in parts.drain(..) {
        all.extend(p);
    }
    all
}

/// Threads for the dense products inside one large analysis (`enkf.threads` of them), with
/// signals blocked in the workers as above.
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

    fn run<'a>(&self, jobs: Vec<enkf_core::workers::Job<'a>>) {
        if self.0 <= 1 || jobs.len() <= 1 {
            jobs.into_iter().for_each(|job| job());
            return;
        }
        std::thread::scope(|scope| {
            let mut jobs = jobs.into_iter();
            let first = jobs.next();
            let handles: Vec<_> = jobs
                .map(|job| {
                    scope.spawn(move || {
                        block_signals();
                        job()
                    })
                })
                .collect();
            if let Some(job) = first {
                job();
            }
            for h in handles {
                if let Err(e) = h.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
    }
}
