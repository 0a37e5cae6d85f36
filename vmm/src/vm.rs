//! One run of the machine on KVM: build it, start its vCPUs, wait for what ends the
//! run (a reset, a poweroff, a stop request, a failure), stop the vCPUs. A guest reset
//! ends the run too; the caller builds a fresh machine and runs again, which is how a
//! PC restarts through its firmware.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, select};
use kvm_ioctls::Kvm;
use thiserror::Error;

use crate::devices::serial::Serial16550;
use crate::irq::MachineRequest;
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
    *serial_slot.lock().unwrap() = None;
    Ok(outcome)
}
