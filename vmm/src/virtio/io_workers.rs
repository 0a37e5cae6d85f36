//! A device's I/O threads: blocking work (a `preadv`, a `fdatasync`) handed off by the
//! thread that took the request from the ring, so several requests are in flight at once
//! and neither a vCPU nor the doorbell thread waits for the disk. QEMU's block layer does
//! the same with its thread pool (`aio=threads`, its default).
//!
//! Threads start on demand, one more whenever more jobs are outstanding than there are
//! threads, up to a limit; they stay until the pool is dropped, which lets the jobs still
//! queued finish and joins every thread. An idle thread sleeps on a condition variable
//! (no spinning: on a small host the cores are the guest's). [`IoWorkers::wait_idle`]
//! returns once nothing is outstanding: what a device reset needs before it forgets its
//! rings.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

pub struct IoWorkers {
    name: String,
    max_threads: usize,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool closes.
    work: Condvar,
    /// Signalled when the last outstanding job finishes.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Jobs submitted and not yet finished (queued or running).
    outstanding: usize,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finished_one(&self) {
        let mut st = self.lock();
        st.outstanding -= 1;
        if st.outstanding == 0 {
            self.idle.notify_all();
        }
    }
}

impl IoWorkers {
    /// A pool whose threads are named `name` (at most 15 bytes show in `ps`), at most
    /// `max_threads` of them (at least one).
    pub fn new(name: &str, max_threads: usize) -> IoWorkers {
        IoWorkers {
            name: name.to_owned(),
            max_threads: max_threads.max(1),
            shared: Arc::default(),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Runs `job` on one of the threads. When no thread can be started at all, it runs
    /// here, on the caller's thread (slower, never lost).
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let outstanding = {
            let mut st = self.shared.lock();
            st.outstanding += 1;
            st.outstanding
        };
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if outstanding > threads.len() && threads.len() < self.max_threads {
            let shared = self.shared.clone();
            match std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || serve(&shared))
            {
                Ok(t) => threads.push(t),
                Err(e) if threads.is_empty() => {
                    drop(threads);
                    tracing::warn!(
                        "{}: cannot start an I/O thread ({e}); running here",
                        self.name
                    );
                    job();
                    self.shared.finished_one();
                    return;
                }
                Err(e) => tracing::debug!("{}: no extra I/O thread ({e})", self.name),
            }
        }
        drop(threads);
        self.shared.lock().queue.push_back(Box::new(job));
        self.shared.work.notify_one();
    }

    /// Waits until every job submitted so far has finished.
    pub fn wait_idle(&self) {
        let mut st = self.shared.lock();
        while st.outstanding > 0 {
            st = self.shared.idle.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Jobs submitted and not finished.
    pub fn outstanding(&self) -> usize {
        self.shared.lock().outstanding
    }

    /// Threads started so far.
    pub fn threads(&self) -> usize {
        self.threads.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for IoWorkers {
    fn drop(&mut self) {
        // Each thread ends once the queue is empty.
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        for t in self
            .threads
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
    }
}

fn serve(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            job();
            shared.finished_one();
            st = shared.lock();
        } else if st.closed {
            return;
        } else {
            st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn jobs_run_at_once_up_to_the_limit() {
        let pool = IoWorkers::new("test-io", 4);
        // Four jobs that each wait for all four: they only finish if they run together.
        let barrier = Arc::new(Barrier::new(4));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            let (b, d) = (barrier.clone(), done.clone());
            pool.submit(move || {
                b.wait();
                d.fetch_add(1, Ordering::SeqCst);
            });
        }
        pool.wait_idle();
        assert_eq!(done.load(Ordering::SeqCst), 4);
        assert_eq!(pool.threads(), 4);
        assert_eq!(pool.outstanding(), 0);
        // More jobs than the limit queue up on the threads there are.
        for _ in 0..20 {
            let d = done.clone();
            pool.submit(move || {
                std::thread::sleep(Duration::from_millis(1));
                d.fetch_add(1, Ordering::SeqCst);
            });
        }
        pool.wait_idle();
        assert_eq!(done.load(Ordering::SeqCst), 24);
        assert_eq!(pool.threads(), 4);
    }

    #[test]
    fn one_job_at_a_time_needs_one_thread() {
        let pool = IoWorkers::new("test-io", 16);
        for _ in 0..50 {
            pool.submit(|| {});
            pool.wait_idle();
        }
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn dropping_the_pool_finishes_queued_jobs_and_joins_its_threads() {
        let done = Arc::new(AtomicUsize::new(0));
        let pool = IoWorkers::new("test-io", 2);
        for _ in 0..10 {
            let d = done.clone();
            pool.submit(move || {
                std::thread::sleep(Duration::from_millis(2));
                d.fetch_add(1, Ordering::SeqCst);
            });
        }
        drop(pool);
        assert_eq!(done.load(Ordering::SeqCst), 10);
        // Only this test's own reference is left: the threads are gone.
        assert_eq!(Arc::strong_count(&done), 1);
    }
}
