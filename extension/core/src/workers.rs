//! Running independent pieces of one computation on several threads, when the caller allows it.
//!
//! enkf-core does not start threads by itself: inside PostgreSQL a thread must block signals and
//! must never call back into the server, which only the extension knows how to arrange. The
//! caller passes a `Workers`; `Sequential` runs everything on the calling thread.

/// A job: pure computation on data it owns or borrows exclusively.
pub type Job<'a> = Box<dyn FnOnce() + Send + 'a>;

pub trait Workers: Sync {
    /// How many jobs are worth making (threads available, >= 1).
    fn threads(&self) -> usize;
    /// Runs every job, returning when all have finished.
    fn run<'a>(&self, jobs: Vec<Job<'a>>);
}

/// Everything on the calling thread, in order.
pub struct Sequential;

impl Workers for Sequential {
    fn threads(&self) -> usize {
        1
    }
    fn run<'a>(&self, jobs: Vec<Job<'a>>) {
        for job in jobs {
            job();
        }
    }
}

/// Plain scoped threads, as the extension's workers are (minus the signal mask): for tests.
#[cfg(test)]
pub(crate) struct ScopedThreads(pub usize);

#[cfg(test)]
impl Workers for ScopedThreads {
    fn threads(&self) -> usize {
        self.0
    }
    fn run<'a>(&self, jobs: Vec<Job<'a>>) {
        std::thread::scope(|scope| {
            for job in jobs {
                scope.spawn(job);
            }
        });
    }
}
