//! Holding device threads still while the VM is paused: a paused guest's memory must not
//! change under it, yet the threads that serve virtio queues (doorbell threads, the
//! network's reader) run on their own. Each takes a [`Pass`] from the machine's
//! [`DeviceGate`] around the work that touches guest memory; [`DeviceGate::pause`] waits
//! for the passes out and lets no new one in until [`DeviceGate::resume`].
//!
//! Not held: host input (VNC pointer events into the virtio tablet, the clipboard agent's
//! messages into virtio-serial) still fills receive buffers the guest posted, while paused
//! too; those threads belong to the VNC server and must not block.

use std::cell::RefCell;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

thread_local! {
    /// The gates (by address) whose passes this thread holds, once per pass.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

#[derive(Default)]
pub struct DeviceGate {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    paused: bool,
    busy: usize,
}

/// Permission to touch guest memory, until dropped.
/// Not `Send`: the thread that took it gives it back (the gate counts passes per thread).
pub struct Pass<'a>(&'a DeviceGate, std::marker::PhantomData<*const ()>);

impl DeviceGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn holds_one(&self) -> bool {
        HELD.with(|h| h.borrow().contains(&self.id()))
    }

    fn give(&self, st: &mut State) -> Pass<'_> {
        st.busy += 1;
        HELD.with(|h| h.borrow_mut().push(self.id()));
        Pass(self, std::marker::PhantomData)
    }

    /// Waits while the VM is paused. A thread that already holds a pass of this gate gets
    /// another at once: [`DeviceGate::pause`] is waiting for its first one to come back,
    /// and waiting here would never let it (the doorbell thread holds one while a device
    /// runs a request on it that takes its own).
    pub fn enter(&self) -> Pass<'_> {
        let mut st = self.lock();
        if !self.holds_one() {
            while st.paused {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        self.give(&mut st)
    }

    /// As [`DeviceGate::enter`], but gives up after `timeout` (for threads that must also
    /// watch for their own end).
    pub fn enter_within(&self, timeout: Duration) -> Option<Pass<'_>> {
        let st = self.lock();
        let (mut st, _) = self
            .changed
            .wait_timeout_while(st, timeout, |s| s.paused)
            .unwrap_or_else(|e| e.into_inner());
        if st.paused {
            return None;
        }
        Some(self.give(&mut st))
    }

    /// No new pass from now on; returns once every pass given out is back.
    pub fn pause(&self) {
        let mut st = self.lock();
        st.paused = true;
        while st.busy > 0 {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Passes again, for everyone waiting.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.changed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let id = self.0.id();
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|&g| g == id) {
                h.swap_remove(i);
            }
        });
        self.0.lock().busy -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    #[test]
    fn pause_waits_for_passes_and_holds_new_ones_until_resume() {
        let gate = Arc::new(DeviceGate::default());
        let done = Arc::new(AtomicUsize::new(0));
        // A worker inside its pass while the VM is paused: pause waits for it.
        let pass = gate.enter();
        let pauser = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                gate.pause();
                t.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        drop(pass);
        assert!(pauser.join().unwrap() >= Duration::from_millis(150));
        assert!(gate.is_paused());
        // A worker arriving now waits.
        let worker = {
            let (gate, done) = (gate.clone(), done.clone());
            std::thread::spawn(move || {
                let _pass = gate.enter();
                done.fetch_add(1, Ordering::SeqCst);
            })
        };
        assert!(gate.enter_within(Duration::from_millis(50)).is_none());
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(done.load(Ordering::SeqCst), 0, "a pass while paused");
        gate.resume();
        worker.join().unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert!(gate.enter_within(Duration::from_millis(50)).is_some());
    }

    #[test]
    fn a_thread_holding_a_pass_gets_another_while_a_pause_waits() {
        let gate = Arc::new(DeviceGate::default());
        let outer = gate.enter();
        let pauser = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.pause())
        };
        while !gate.is_paused() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Paused (waiting for `outer`): this thread still gets its inner pass at once.
        let inner = gate.enter_within(Duration::from_millis(1));
        assert!(inner.is_none(), "enter_within never nests");
        let inner = gate.enter();
        drop(inner);
        drop(outer);
        pauser.join().unwrap();
        assert!(gate.is_paused());
        // Another thread does wait.
        let other = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.enter_within(Duration::from_millis(50)).is_some())
        };
        assert!(!other.join().unwrap());
        gate.resume();
    }
}
