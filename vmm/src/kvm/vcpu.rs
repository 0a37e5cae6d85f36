//! vCPU threads: run the guest and hand its port and MMIO exits to the buses. A vCPU
//! reports what ends its run (reset, poweroff, a failure) on a channel; the run loop
//! decides what the machine does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use super::coalesced::CoalescedRing;
use super::{KvmError, KvmVm, cpuid, ioctl};
use crate::bus::Bus;

/// Why a vCPU stopped running the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuEvent {
    /// Triple fault or a KVM reset event: the machine restarts.
    Reset,
    /// KVM reported a guest shutdown event (PSCI-style; ACPI poweroff arrives from the PM device).
    PowerOff,
    /// The guest cannot go on (KVM could not emulate an instruction, entry failed …).
    Failed(String),
}

/// Creates vCPU `id` of `count` with CPUID from KVM and our topology. The in-kernel
/// LAPIC holds every vCPU but 0 in wait-for-SIPI, as firmware expects.
pub fn create(kvm: &Kvm, vm: &KvmVm, id: u32, count: u32) -> Result<VcpuFd, KvmError> {
    let fd = vm
        .fd
        .create_vcpu(u64::from(id))
        .map_err(ioctl("create a vCPU"))?;
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("report supported CPUID"))?;
    let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
    cpuid::complete(&mut cpuid, tsc_deadline, cpuid::host_leaf);
    cpuid::set_topology(&mut cpuid, id, count);
    fd.set_cpuid2(&cpuid).map_err(ioctl("set CPUID"))?;
    Ok(fd)
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that knocks a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if let Err(e) = register_signal_handler(SIGRTMIN(), kick_handler) {
            tracing::error!("cannot register the vCPU kick signal handler: {e}");
        }
    });
    SIGRTMIN()
}

/// What the run loop tells vCPU threads: stop, or hold still (pause) between exits.
#[derive(Default)]
pub struct RunControl {
    stop: AtomicBool,
    state: Mutex<PauseState>,
    changed: Condvar,
}

#[derive(Default)]
struct PauseState {
    paused: bool,
    parked: usize,
    /// What each vCPU that parked since the last pause began was doing, by vCPU id.
    states: std::collections::BTreeMap<u32, VcpuState>,
}

/// A parked vCPU's registers and run state: for finding out where a guest hangs.
#[derive(Clone, Debug)]
pub struct VcpuState {
    pub id: u32,
    /// KVM_RUN exits this vCPU has handled since it started.
    pub exits: u64,
    pub mp_state: u32,
    pub regs: kvm_bindings::kvm_regs,
    pub sregs: kvm_bindings::kvm_sregs,
}

impl VcpuState {
    fn read(id: u32, exits: u64, fd: &VcpuFd) -> VcpuState {
        VcpuState {
            id,
            exits,
            mp_state: fd.get_mp_state().map(|m| m.mp_state).unwrap_or(u32::MAX),
            regs: fd.get_regs().unwrap_or_default(),
            sregs: fd.get_sregs().unwrap_or_default(),
        }
    }

    /// KVM's name for the run state (halted in HLT, waiting for SIPI …).
    pub fn mp_state_name(&self) -> &'static str {
        match self.mp_state {
            kvm_bindings::KVM_MP_STATE_RUNNABLE => "runnable",
            kvm_bindings::KVM_MP_STATE_UNINITIALIZED => "uninitialized (waiting for INIT)",
            kvm_bindings::KVM_MP_STATE_INIT_RECEIVED => "init received (waiting for SIPI)",
            kvm_bindings::KVM_MP_STATE_HALTED => "halted",
            kvm_bindings::KVM_MP_STATE_SIPI_RECEIVED => "sipi received",
            u32::MAX => "unknown (KVM did not say)",
            _ => "other",
        }
    }
}

impl RunControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _g = self.state.lock().unwrap();
        self.changed.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn set_paused(&self, paused: bool) {
        let mut st = self.state.lock().unwrap();
        if paused && !st.paused {
            st.states.clear();
        }
        st.paused = paused;
        drop(st);
        self.changed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.state.lock().unwrap().paused
    }

    /// How many vCPU threads are holding still now.
    pub fn parked(&self) -> usize {
        self.state.lock().unwrap().parked
    }

    /// The states the vCPUs left as they parked since this pause began, by vCPU id.
    pub fn parked_states(&self) -> Vec<VcpuState> {
        self.state
            .lock()
            .unwrap()
            .states
            .values()
            .cloned()
            .collect()
    }

    /// Between two KVM_RUNs: waits while paused, leaving `state()` (called only then) for
    /// [`parked_states`](Self::parked_states). False when the thread must stop.
    fn checkpoint(&self, state: impl FnOnce() -> VcpuState) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.paused && !self.is_stopping() {
            let state = state();
            st.states.insert(state.id, state);
            st.parked += 1;
            while st.paused && !self.is_stopping() {
                st = self.changed.wait(st).unwrap();
            }
            st.parked -= 1;
        }
        !self.is_stopping()
    }
}

/// A running vCPU thread.
pub struct VcpuThread {
    handle: Option<JoinHandle<()>>,
}

/// Starts vCPU `id` on its own thread. It runs until `control` says stop (and it is
/// kicked), or it has something to report.
pub fn spawn(
    id: u32,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    control: Arc<RunControl>,
    events: Sender<VcpuEvent>,
) -> std::io::Result<VcpuThread> {
    spawn_with_ring(id, fd, pio, mmio, None, control, events)
}

/// [`spawn`], draining the VM's coalesced-MMIO `ring` into `mmio` after every exit.
pub fn spawn_with_ring(
    id: u32,
    mut fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    ring: Option<Arc<CoalescedRing>>,
    control: Arc<RunControl>,
    events: Sender<VcpuEvent>,
) -> std::io::Result<VcpuThread> {
    kick_signal();
    let handle = std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || {
            let mut exits = 0u64;
            while control.checkpoint(|| VcpuState::read(id, exits, &fd)) {
                match run_once_with_ring(&mut fd, &pio, &mmio, ring.as_deref()) {
                    Ok(None) => exits += 1,
                    Ok(Some(event)) => {
                        let _ = events.send(event);
                        return;
                    }
                    Err(e) => {
                        let _ = events.send(VcpuEvent::Failed(format!("vCPU {id}: {e}")));
                        return;
                    }
                }
            }
        })?;
    Ok(VcpuThread {
        handle: Some(handle),
    })
}

/// `rep ins`/`rep outs`: the CPU makes `count` accesses of `size` bytes to one port (an
/// IDE data port, fw_cfg's data port); the device must see each as its own access.
fn string_io(fd: &mut VcpuFd, pio: &Bus, port: u16, len: usize, out: bool) {
    let run = fd.get_kvm_run();
    // SAFETY: the exit reason was KVM_EXIT_IO, so KVM filled the `io` member of the union.
    let io = unsafe { run.__bindgen_anon_1.io };
    let size = usize::from(io.size).clamp(1, 4);
    let base = std::ptr::from_mut(run).cast::<u8>();
    // SAFETY: KVM placed the elements `data_offset` bytes into the kvm_run mapping, which
    // is mapped whole; `len` (count * size) is the length kvm-ioctls gave the same slice in
    // VcpuExit::IoIn/IoOut, and no other reference to it is alive.
    let data = unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
    for element in data.chunks_mut(size) {
        if out {
            pio.write(u64::from(port), element);
        } else {
            pio.read(u64::from(port), element);
        }
    }
}

/// One KVM_RUN and the dispatch of its exit (public for the exit-cost benchmark).
pub fn run_once(fd: &mut VcpuFd, pio: &Bus, mmio: &Bus) -> Result<Option<VcpuEvent>, String> {
    run_once_with_ring(fd, pio, mmio, None)
}

/// [`run_once`] with the VM's coalesced-MMIO ring: the writes the guest made there before
/// this exit reach their device before the exit is handled, so a read of the same range,
/// a register write through a port, or any other access sees them in order.
pub fn run_once_with_ring(
    fd: &mut VcpuFd,
    pio: &Bus,
    mmio: &Bus,
    ring: Option<&CoalescedRing>,
) -> Result<Option<VcpuEvent>, String> {
    let run = fd.run();
    if let Some(ring) = ring {
        ring.drain(mmio);
    }
    let exit = match run {
        Ok(exit) => exit,
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            fd.set_kvm_immediate_exit(0);
            return Ok(None);
        }
        Err(e) => return Err(format!("KVM_RUN failed: {e}")),
    };
    // A single IN/OUT moves at most 4 bytes; more is a string instruction (`rep insw` …)
    // whose elements KVM hands over together. It is handled below, once the exit's borrow
    // of `fd` has ended, because the element size is needed.
    let mut string_io = None;
    match exit {
        VcpuExit::IoIn(port, data) if data.len() > 4 => string_io = Some((port, data.len(), false)),
        VcpuExit::IoOut(port, data) if data.len() > 4 => string_io = Some((port, data.len(), true)),
        VcpuExit::IoIn(port, data) => {
            pio.read(u64::from(port), data);
        }
        VcpuExit::IoOut(port, data) => {
            pio.write(u64::from(port), data);
        }
        VcpuExit::MmioRead(addr, data) => {
            mmio.read(addr, data);
        }
        VcpuExit::MmioWrite(addr, data) => {
            mmio.write(addr, data);
        }
        VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr => {}
        VcpuExit::Shutdown => return Ok(Some(VcpuEvent::Reset)),
        VcpuExit::SystemEvent(kind, _) => {
            return Ok(Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => VcpuEvent::PowerOff,
                KVM_SYSTEM_EVENT_RESET => VcpuEvent::Reset,
                KVM_SYSTEM_EVENT_CRASH => VcpuEvent::Failed("the guest reported a crash".into()),
                other => VcpuEvent::Failed(format!("unknown KVM system event {other}")),
            }));
        }
        VcpuExit::InternalError => {
            // SAFETY: KVM filled the `internal` member of the exit union for this exit reason.
            let suberror = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
            return Err(format!(
                "KVM could not run the guest (internal error, suberror {suberror}{}) at {}",
                if suberror == 1 {
                    ": instruction emulation failed"
                } else {
                    ""
                },
                where_is(fd)
            ));
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Err(format!(
                "KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu}) at {}",
                where_is(fd)
            ));
        }
        other => {
            let what = format!("{other:?}");
            return Err(format!("unexpected KVM exit {what} at {}", where_is(fd)));
        }
    }
    if let Some((port, len, out)) = string_io {
        self::string_io(fd, pio, port, len, out);
    }
    Ok(None)
}

/// `cs:rip` (and the linear address) for error messages.
fn where_is(fd: &VcpuFd) -> String {
    match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "{:04x}:{:x} (linear {:#x}, cr0 {:#x})",
            s.cs.selector,
            r.rip,
            s.cs.base.wrapping_add(r.rip),
            s.cr0
        ),
        _ => "an unknown address".into(),
    }
}

impl VcpuThread {
    /// Knocks the thread out of KVM_RUN once (it may not have entered it yet).
    pub fn kick(&self) {
        if let Some(h) = &self.handle
            && !h.is_finished()
        {
            let _ = h.kill(kick_signal());
        }
    }

    /// Knocks the thread out of KVM_RUN until it notices `stop`, then joins it. The
    /// caller has set `stop`; a kick can land just before the thread enters KVM_RUN,
    /// so keep kicking until it is gone.
    pub fn join(mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let sig = kick_signal();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !handle.is_finished() && Instant::now() < deadline {
            let _ = handle.kill(sig);
            std::thread::sleep(Duration::from_millis(2));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            tracing::error!("a vCPU thread did not stop within 5 s");
        }
    }
}
