//! One run of the machine on KVM: build it, start its vCPUs, wait for what ends the
//! run (a reset, a poweroff, a stop request, a failure), stop the vCPUs. A guest reset
//! ends the run too; the caller builds a fresh machine and runs again, which is how a
//! PC restarts through its firmware.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use kvm_ioctls::Kvm;
use thiserror::Error;

use crate::devices::serial::Serial16550;
use crate::devices::vga::Vga;
use crate::irq::MachineRequest;
use crate::kvm::slots::KvmRamMapper;
use crate::kvm::vcpu::{self, VcpuEvent};
use crate::kvm::{KvmError, KvmVm};
use crate::machine::{Boot, Machine, MachineConfig, MachineError, Outputs};

/// Why a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Reset,
    PowerOff,
    /// The host asked us to stop (SIGINT, SIGTERM, a control request).
    Stopped,
    Failed(String),
}

#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error("cannot start a vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Boot(String),
}

/// The serial port of the machine that is running now, for the host's input thread.
pub type SerialSlot = Arc<Mutex<Option<Arc<Mutex<Serial16550>>>>>;

pub fn run_once(
    kvm: &Kvm,
    cfg: &MachineConfig,
    outputs: &Outputs,
    stop: &Receiver<()>,
    serial_slot: &SerialSlot,
) -> Result<Outcome, VmError> {
    let vm = KvmVm::new(kvm)?;
    let irq_vm = vm.fd.clone();
    let machine = Machine::new(
        cfg,
        Arc::new(move |gsi| crate::kvm::irq_line(&irq_vm, gsi)),
        outputs,
    )?;
    vm.map_memory(&machine.mem, |addr| machine.is_rom(addr))?;
    if let Some(vga) = &machine.vga {
        // The linear framebuffer becomes a dirty-logged KVM slot once firmware places it.
        vga.set_ram_mapper(Arc::new(KvmRamMapper::new(vm.fd.clone())));
    }

    let mut fds = Vec::new();
    for id in 0..cfg.cpus {
        fds.push(vcpu::create(kvm, &vm, id, cfg.cpus)?);
    }
    if let Boot::Linux {
        kernel,
        initrd,
        cmdline,
    } = &cfg.boot
    {
        let open = |p: &std::path::Path| {
            std::fs::File::open(p).map_err(|e| VmError::Boot(format!("{}: {e}", p.display())))
        };
        let mut kernel = open(kernel)?;
        let mut initrd = initrd.as_deref().map(open).transpose()?;
        let acpi = crate::machine::acpi_config(cfg, &machine.layout);
        let boot = crate::boot::linux::load(
            &machine.mem,
            &machine.layout,
            &mut kernel,
            initrd.as_mut(),
            cmdline,
            Some(&acpi),
        )
        .map_err(|e| VmError::Boot(e.to_string()))?;
        crate::boot::regs::setup_long_mode(&fds[0], &machine.mem, &boot)
            .map_err(|e| VmError::Boot(e.to_string()))?;
    }

    *serial_slot.lock().unwrap() = Some(machine.serial.clone());
    let stop_flag = Arc::new(AtomicBool::new(false));
    let (ev_tx, events) = crossbeam_channel::unbounded();
    let mut threads = Vec::new();
    for (id, fd) in fds.into_iter().enumerate() {
        let t = vcpu::spawn(
            id as u32,
            fd,
            machine.pio.clone(),
            machine.mmio.clone(),
            stop_flag.clone(),
            ev_tx.clone(),
        )
        .map_err(VmError::Thread)?;
        threads.push(t);
    }

    let refresher = match &machine.vga {
        Some(vga) => {
            Some(spawn_display_refresh(vga.clone(), stop_flag.clone()).map_err(VmError::Thread)?)
        }
        None => None,
    };

    let outcome = select! {
        recv(events) -> e => match e {
            Ok(VcpuEvent::Reset) => Outcome::Reset,
            Ok(VcpuEvent::PowerOff) => Outcome::PowerOff,
            Ok(VcpuEvent::Failed(why)) => Outcome::Failed(why),
            Err(_) => Outcome::Failed("every vCPU thread ended".into()),
        },
        recv(machine.requests) -> r => match r {
            Ok(MachineRequest::Reset) => Outcome::Reset,
            Ok(MachineRequest::PowerOff) => Outcome::PowerOff,
            Err(_) => Outcome::Failed("the device request channel closed".into()),
        },
        recv(stop) -> _ => Outcome::Stopped,
    };

    stop_flag.store(true, Ordering::Release);
    for t in threads {
        t.join();
    }
    if let Some(r) = refresher {
        let _ = r.join();
    }
    *serial_slot.lock().unwrap() = None;
    Ok(outcome)
}

/// The display's steady refresh: about 60 Hz, which is what reads the framebuffer's dirty
/// log (guest writes there cause no exits).
pub const REFRESH_PERIOD: Duration = Duration::from_millis(16);
/// After the guest first touches VGA registers or the legacy window, how long to let it
/// finish the update (a character, its attribute, the cursor) before drawing.
pub const REFRESH_SETTLE: Duration = Duration::from_millis(2);
/// The shortest gap between two refreshes while the guest keeps writing, so a guest that
/// animates a legacy mode costs at most 125 redraws a second.
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(8);

/// Draws the VGA into its surface every [`REFRESH_PERIOD`], and soon after the guest
/// touches VGA state (the device's notifier), until `stop` is set. A key echoed on a text
/// screen after a quiet spell is drawn [`REFRESH_SETTLE`] after the guest wrote it.
pub fn spawn_display_refresh(vga: Vga, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    vga.set_notifier(Arc::new(move || {
        let _ = tx.try_send(());
    }));
    std::thread::Builder::new()
        .name("vga-refresh".into())
        .spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Acquire) {
                if rx.recv_timeout(REFRESH_PERIOD).is_ok() {
                    let at = (Instant::now() + REFRESH_SETTLE).max(last + MIN_REFRESH_GAP);
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                vga.refresh();
                last = Instant::now();
            }
        })
}
