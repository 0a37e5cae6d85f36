//! One run of the machine on KVM: build it, start its vCPUs, serve control requests and
//! device timers until something ends the run (a reset, a poweroff, a stop request, a
//! failure), stop the vCPUs. A guest reset ends the run too; the caller builds a fresh
//! machine and runs again, which is how a PC restarts through its firmware.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use kvm_ioctls::Kvm;
use serde_json::{Value, json};
use thiserror::Error;

use crate::control::{self, Command};
use crate::devices::boot_watch::{BootState, BootStatus};
use crate::devices::serial::Serial16550;
use crate::devices::vga::Vga;
use crate::input::GuestInput;
use crate::irq::MachineRequest;
use crate::kvm::coalesced::CoalescedRing;
use crate::kvm::slots::KvmRamMapper;
use crate::kvm::vcpu::{self, RunControl, VcpuEvent, VcpuState, VcpuThread};
use crate::kvm::{KvmError, KvmVm};
use crate::machine::{Boot, Machine, MachineConfig, MachineError, Outputs, Wiring};

/// Why a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Reset,
    PowerOff,
    /// The host asked us to stop (SIGINT, SIGTERM, a `quit` request).
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

/// Where a run's outside requests come from.
pub struct Inputs<'a> {
    /// SIGINT/SIGTERM.
    pub stop: &'a Receiver<()>,
    /// The control socket (a channel that never delivers when there is none).
    pub control: &'a Receiver<control::Request>,
    pub serial_slot: &'a SerialSlot,
    /// Where VNC input goes; attached to this machine's devices while it runs.
    pub input: &'a Arc<GuestInput>,
}

/// `cfg` is updated with what changes at run time and must survive a reset (media).
pub fn run_once(
    kvm: &Kvm,
    cfg: &mut MachineConfig,
    outputs: &Outputs,
    inputs: &Inputs,
) -> Result<Outcome, VmError> {
    let vm = KvmVm::new(kvm)?;
    let irq_vm = vm.fd.clone();
    let wiring = Wiring {
        lines: Arc::new(move |gsi| crate::kvm::irq_line(&irq_vm, gsi)),
        fast: crate::kvm::fast_paths(kvm, &vm.fd),
    };
    let machine = Machine::new(cfg, wiring, outputs)?;
    vm.map_memory(&machine.mem, |addr| machine.is_rom(addr))?;
    let mapper = Arc::new(KvmRamMapper::new(&vm));
    if let Some(vga) = &machine.vga {
        // The linear framebuffer becomes a dirty-logged KVM slot once firmware places it.
        vga.set_ram_mapper(mapper.clone());
    }
    if let Some(flash) = &machine.pflash {
        // OVMF's variables are a read-only slot while the flash is in read-array mode.
        flash.lock().unwrap().set_ram_mapper(mapper.clone());
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
        // The display the VGA was left in (as firmware would), for the kernel's console.
        if let Some(fb) = machine.vga.as_ref().and_then(|v| v.linear_framebuffer()) {
            crate::boot::linux::set_framebuffer(&machine.mem, &boot, &fb)
                .map_err(|e| VmError::Boot(e.to_string()))?;
        }
        crate::boot::regs::setup_long_mode(&fds[0], &machine.mem, &boot)
            .map_err(|e| VmError::Boot(e.to_string()))?;
        for fd in &fds[1..] {
            crate::boot::regs::setup_secondary(fd).map_err(|e| VmError::Boot(e.to_string()))?;
        }
    }

    *inputs.serial_slot.lock().unwrap() = Some(machine.serial.clone());
    inputs.input.attach(
        Some(machine.i8042.clone()),
        Some(machine.tablet.clone() as Arc<dyn crate::input::AbsolutePointer>),
    );
    if let Some(clipboard) = &outputs.clipboard {
        clipboard.attach(machine.agent.clone());
    }
    // The legacy VGA window is written a byte or a word at a time by firmware and boot
    // loaders; coalescing lets those writes skip the exit (reads still exit).
    // VMDESK_NO_COALESCED_MMIO=1 turns it off, to measure what it saves.
    let coalesce = std::env::var_os("VMDESK_NO_COALESCED_MMIO").is_none();
    let ring = match (&machine.vga, fds.first()) {
        (Some(_), Some(fd0)) if coalesce => CoalescedRing::setup(
            kvm,
            &vm.fd,
            fd0,
            crate::devices::vga::VGA_WINDOW_BASE,
            crate::devices::vga::VGA_WINDOW_LEN,
        )
        .map(Arc::new),
        _ => None,
    };
    let control = RunControl::new();
    let (ev_tx, events) = crossbeam_channel::unbounded();
    let mut threads = Vec::new();
    for (id, fd) in fds.into_iter().enumerate() {
        let t = vcpu::spawn_with_ring(
            id as u32,
            fd,
            machine.pio.clone(),
            machine.mmio.clone(),
            ring.clone(),
            control.clone(),
            ev_tx.clone(),
        )
        .map_err(VmError::Thread)?;
        threads.push(t);
    }

    let refresh_stop = Arc::new(AtomicBool::new(false));
    let refresher = match &machine.vga {
        Some(vga) => {
            let (handle, on_input) = spawn_display_refresh(
                vga.clone(),
                ring.clone().map(|r| (r, machine.mmio.clone())),
                refresh_stop.clone(),
            )
            .map_err(VmError::Thread)?;
            inputs.input.set_hook(Some(on_input));
            Some(handle)
        }
        None => None,
    };

    // What the firmware's boot did: a fresh start at every build, so a reset clears it.
    // A direct kernel boot has no firmware to fail.
    let mut boot = BootStatus::default();
    if let Boot::Linux { .. } = cfg.boot {
        boot.state = BootState::Booted;
    }
    // A failure as it was reported, with the media it was about: an ISO inserted since
    // is not the one that failed.
    let mut boot_failure: Option<Value> = None;
    let outcome = loop {
        let tick = machine.poll_interval();
        select! {
            recv(events) -> e => break match e {
                Ok(VcpuEvent::Reset) => Outcome::Reset,
                Ok(VcpuEvent::PowerOff) => Outcome::PowerOff,
                Ok(VcpuEvent::Failed(why)) => Outcome::Failed(why),
                Err(_) => Outcome::Failed("every vCPU thread ended".into()),
            },
            recv(machine.requests) -> r => break match r {
                Ok(MachineRequest::Reset) => Outcome::Reset,
                Ok(MachineRequest::PowerOff) => Outcome::PowerOff,
                Err(_) => Outcome::Failed("the device request channel closed".into()),
            },
            recv(inputs.stop) -> _ => break Outcome::Stopped,
            recv(machine.boot_events) -> e => {
                if let Ok(e) = e {
                    if boot.apply(e) {
                        let report = boot.to_json(&crate::machine::boot_media(cfg));
                        // One line in the VM's log (which the app shows when a VM fails).
                        if let Some(msg) = report["message"].as_str() {
                            tracing::warn!("{msg}");
                        }
                        boot_failure = Some(report);
                    } else if boot.state != BootState::Failed {
                        boot_failure = None;
                    }
                }
            },
            recv(inputs.control) -> r => {
                if let Ok(req) = r
                    && let Some(outcome) = serve(
                        req,
                        cfg,
                        &machine,
                        boot_failure
                            .clone()
                            .unwrap_or_else(|| boot.to_json(&crate::machine::boot_media(cfg))),
                        &control,
                        &threads,
                        inputs.input,
                    )
                {
                    break outcome;
                }
            },
            default(tick) => machine.poll_timers(),
        }
    };

    control.stop();
    for t in threads {
        t.join();
    }
    refresh_stop.store(true, Ordering::Release);
    if let Some(r) = refresher {
        let _ = r.join();
    }
    *inputs.serial_slot.lock().unwrap() = None;
    inputs.input.attach(None, None);
    inputs.input.set_hook(None);
    if let Some(clipboard) = &outputs.clipboard {
        clipboard.attach(None);
    }
    Ok(outcome)
}

/// The display's steady refresh: about 60 Hz, which is what reads the framebuffer's dirty
/// log (guest writes there cause no exits).
pub const REFRESH_PERIOD: Duration = Duration::from_millis(16);
/// Without a linear framebuffer guest writes to the screen wake the refresh themselves
/// (through the device's notifier, at the latest when the coalesced-MMIO ring is drained);
/// between them the refresh sleeps until the next cursor or character blink flip (266 and
/// 533 ms phases) or this long, whichever is sooner, so a static screen costs a few wakes
/// a second.
pub const LEGACY_REFRESH_PERIOD: Duration = Duration::from_millis(500);
/// With the coalesced-MMIO ring, writes to the legacy window cause no exit at all: a
/// program that draws and then waits in `hlt` for a key or the mouse (the demo, a game in
/// mode 13h) leaves them in the ring. So the refresh also looks into the ring: every
/// [`RING_POLL_ACTIVE`] while the guest drew or got input within [`RING_ACTIVE_FOR`],
/// every [`RING_POLL_IDLE`] after (how late a draw after a quiet spell with no input can
/// show). Looking is two loads; the cost on a static screen is the wake-ups (each 100–200
/// µs of scheduler time on a busy host), so the idle poll is slow and input, after which
/// a guest most often draws, switches to the fast one at once.
pub const RING_POLL_ACTIVE: Duration = Duration::from_millis(16);
pub const RING_ACTIVE_FOR: Duration = Duration::from_secs(2);
pub const RING_POLL_IDLE: Duration = Duration::from_millis(500);
/// After the guest touches VGA registers or the legacy window, how long it must stay
/// quiet before the refresh draws: each further write re-arms this, so an update the
/// guest makes in several steps (the BIOS teletype writes the character, then moves the
/// cursor through the CRTC) is drawn once, whole.
pub const REFRESH_SETTLE: Duration = Duration::from_micros(1500);
/// How often the settling refresh looks whether the guest wrote again (its error in
/// telling when the guest went quiet).
const SETTLE_POLL: Duration = Duration::from_micros(500);
/// The longest a refresh waits for the guest to pause, from its first write: a guest that
/// never pauses (a scroll, POST output, an animation) is still drawn this promptly.
pub const REFRESH_SETTLE_CAP: Duration = Duration::from_millis(8);
/// The shortest gap between two refreshes while the guest keeps writing, so a guest that
/// animates a legacy mode (or the VGA BIOS during POST) costs at most 60 redraws a second
/// (each holds the device lock for about a millisecond, which the vCPU may wait for).
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(16);

/// Draws the VGA into its surface every [`REFRESH_PERIOD`], and soon after the guest
/// touches VGA state (the device's notifier), until `stop` is set. A key echoed on a text
/// screen after a quiet spell is drawn once the guest has been quiet for
/// [`REFRESH_SETTLE`] (at most [`REFRESH_SETTLE_CAP`] after its first write).
///
/// With `coalesced` (the VM's coalesced-MMIO ring and the bus the window is on), writes to
/// the legacy window wait in the ring until some vCPU exits; the thread applies them
/// itself before it looks at the device, so a guest that writes the screen and then only
/// halts is still drawn (within a tick).
///
/// Also returns the hook that tells the thread input went to the guest: it then looks
/// into the ring at the fast rate, since the guest is about to draw its answer.
pub fn spawn_display_refresh(
    vga: Vga,
    coalesced: Option<(Arc<CoalescedRing>, Arc<crate::bus::Bus>)>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(JoinHandle<()>, crate::input::InputHook)> {
    let wake = Arc::new(Wake::default());
    let w = wake.clone();
    vga.set_notifier(Arc::new(move || w.notify(Wake::DREW)));
    let w = wake.clone();
    let on_input: crate::input::InputHook = Arc::new(move || w.notify(Wake::INPUT));
    let has_ring = coalesced.is_some();
    let sync = move || match &coalesced {
        Some((ring, bus)) => ring.drain(bus),
        None => 0,
    };
    let handle = std::thread::Builder::new()
        .name("vga-refresh".into())
        .spawn(move || {
            let mut last = Instant::now();
            // The last sign of life on screen: a draw, or input the guest will answer.
            let mut drew = Instant::now();
            while !stop.load(Ordering::Acquire) {
                let period = if vga.linear_framebuffer().is_some() {
                    REFRESH_PERIOD
                } else {
                    // Just past the flip, so the refresh sees the new phase.
                    let blink = vga
                        .until_blink()
                        .map_or(LEGACY_REFRESH_PERIOD, |d| d + Duration::from_millis(1))
                        .min(LEGACY_REFRESH_PERIOD);
                    match (has_ring, drew.elapsed() < RING_ACTIVE_FOR) {
                        (false, _) => blink,
                        (true, true) => blink.min(RING_POLL_ACTIVE),
                        (true, false) => blink.min(RING_POLL_IDLE),
                    }
                };
                let woke = wake.wait(period);
                if woke == Wake::INPUT {
                    // The guest is answering right now (its interrupt came with the
                    // event): let it finish. Its answer reaches the device by an exit
                    // or by the fast polls that start here.
                    drew = Instant::now();
                    continue;
                }
                // Writes found in the ring are a draw too: let it finish before drawing.
                let guest_drew = woke & Wake::DREW != 0 || sync() > 0;
                if guest_drew {
                    drew = Instant::now();
                    settle(&vga, &sync, drew, last);
                }
                vga.refresh();
                // Only the guest's draws are paced by MIN_REFRESH_GAP: a poll or blink
                // tick that found nothing new must not hold back the next echo.
                if guest_drew {
                    last = Instant::now();
                }
            }
        })?;
    Ok((handle, on_input))
}

/// The device's notifier and the input hook → the refresh thread. Plain flags and a
/// condition variable rather than a channel: crossbeam's receive spins and yields before
/// it blocks, which on a static screen cost more than the few redraws a second themselves.
#[derive(Default)]
struct Wake {
    pending: Mutex<u8>,
    cond: Condvar,
}

impl Wake {
    /// The guest touched VGA state.
    const DREW: u8 = 1;
    /// A key or pointer event went to the guest.
    const INPUT: u8 = 2;

    fn notify(&self, what: u8) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) |= what;
        self.cond.notify_one();
    }

    /// Waits up to `timeout` for notifications; takes and returns them (0: none came).
    fn wait(&self, timeout: Duration) -> u8 {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut pending, _) = self
            .cond
            .wait_timeout_while(pending, timeout, |p| *p == 0)
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *pending)
    }
}

/// Waits, after the guest's first write at `first`, until it has written nothing for
/// [`REFRESH_SETTLE`] (and at least [`MIN_REFRESH_GAP`] after the refresh at `last`), or
/// until [`REFRESH_SETTLE_CAP`] has passed since `first`. `sync` applies writes still
/// waiting in the coalesced-MMIO ring.
fn settle(vga: &Vga, sync: &impl Fn() -> usize, first: Instant, last: Instant) {
    let earliest = last + MIN_REFRESH_GAP;
    let cap = (first + REFRESH_SETTLE_CAP).max(earliest);
    sync();
    let mut seen = vga.generation();
    let mut quiet_since = first;
    loop {
        let now = Instant::now();
        let due = (quiet_since + REFRESH_SETTLE).max(earliest).min(cap);
        if now >= due {
            return;
        }
        // Only writes in the last REFRESH_SETTLE before `due` can move it: sleep through
        // the rest (the minimum gap after the previous refresh) in one go.
        let wait = due - now;
        std::thread::sleep(if wait > REFRESH_SETTLE {
            wait - REFRESH_SETTLE
        } else {
            wait.min(SETTLE_POLL)
        });
        sync();
        let generation = vga.generation();
        if generation != seen {
            seen = generation;
            quiet_since = Instant::now();
        }
    }
}

/// Saves the guest's screen as a PNG (RGB, 8 bits a channel).
fn screendump(cfg: &MachineConfig, path: &std::path::Path) -> serde_json::Value {
    let Some(screen) = &cfg.display else {
        return control::error("DeviceNotFound", "this VM has no display device");
    };
    let (w, h, pixels) = screen.snapshot();
    let rgb: Vec<u8> = pixels
        .iter()
        .flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8])
        .collect();
    let write = || -> Result<(), String> {
        let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), u32::from(w), u32::from(h));
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgb).map_err(|e| e.to_string())
    };
    match write() {
        Ok(()) => control::ok(json!({ "width": w, "height": h })),
        Err(e) => control::error("GenericError", format!("{}: {e}", path.display())),
    }
}

/// The CD-ROM's place: secondary master, as QEMU's -cdrom.
const CDROM_CHANNEL: usize = 1;

fn eject(cfg: &mut MachineConfig, machine: &Machine) -> serde_json::Value {
    match machine.ide.with_cdrom(CDROM_CHANNEL, 0, |cd| cd.eject()) {
        None => control::error("DeviceNotFound", "this VM has no CD-ROM drive"),
        Some(Err(e)) => control::error("GenericError", format!("cannot eject: {e}")),
        Some(Ok(_)) => {
            cfg.cdrom = None;
            control::ok(json!({}))
        }
    }
}

fn change_media(
    cfg: &mut MachineConfig,
    machine: &Machine,
    path: &std::path::Path,
) -> serde_json::Value {
    let iso = match crate::disk::raw::RawImage::open(path, true) {
        Ok(iso) => iso,
        Err(e) => return control::error("GenericError", format!("{}: {e}", path.display())),
    };
    let done = machine.ide.with_cdrom(CDROM_CHANNEL, 0, |cd| {
        // A medium already in the drive comes out first, as `eject -f` + insert would.
        if cd.has_medium() {
            cd.eject_forced().map(drop)?;
        }
        cd.insert(Box::new(iso));
        Ok::<(), crate::devices::ide::atapi::MediaError>(())
    });
    match done {
        None => control::error("DeviceNotFound", "this VM has no CD-ROM drive"),
        Some(Err(e)) => control::error("GenericError", format!("cannot change media: {e}")),
        Some(Ok(())) => {
            cfg.cdrom = Some(path.to_path_buf());
            control::ok(json!({}))
        }
    }
}

/// Answers one control request; `Some` when it ends the run.
fn serve(
    req: control::Request,
    cfg: &mut MachineConfig,
    machine: &Machine,
    boot: Value,
    run: &RunControl,
    threads: &[VcpuThread],
    input: &Arc<GuestInput>,
) -> Option<Outcome> {
    match &req.command {
        Command::Status => {
            let state = if run.is_paused() { "paused" } else { "running" };
            req.answer(control::ok(json!({
                "status": state,
                "memory": cfg.memory,
                "cpus": cfg.cpus,
                "cdrom": cfg.cdrom,
                "disks": cfg.disks.iter().zip(&machine.disk_io).map(|(d, io)| {
                    json!({ "path": d.path, "io": io.counts() })
                }).collect::<Vec<_>>(),
                "boot": boot,
                "net": machine.net.as_ref().map(|n| n.status()),
            })));
        }
        Command::Quit => {
            req.answer_and_wait(control::ok(json!({})));
            return Some(Outcome::Stopped);
        }
        Command::Reset => {
            req.answer(control::ok(json!({})));
            return Some(Outcome::Reset);
        }
        Command::Powerdown => {
            machine.chipset.press_power_button();
            req.answer(control::ok(json!({})));
        }
        Command::Pause => req.answer(match hold_still(run, threads) {
            Ok(()) => {
                // The vCPUs stopped, so no new notification comes; the device threads
                // finish what they hold and take nothing more.
                machine.gate.pause();
                control::ok(json!({}))
            }
            Err(e) => e,
        }),
        Command::Resume => {
            machine.gate.resume();
            run.set_paused(false);
            req.answer(control::ok(json!({})));
        }
        Command::Eject => req.answer(eject(cfg, machine)),
        Command::ChangeMedia { path } => req.answer(change_media(cfg, machine, path)),
        Command::Screendump { path } => req.answer(screendump(cfg, path)),
        Command::QueryVcpus => {
            let was_paused = run.is_paused();
            let held = hold_still(run, threads);
            let states = run.parked_states();
            if !was_paused {
                run.set_paused(false);
            }
            req.answer(match held {
                Ok(()) => control::ok(states.iter().map(vcpu_json).collect()),
                Err(e) => e,
            });
        }
        Command::SendKey(_) => send_keys(req, input),
    }
    None
}

/// Pauses the vCPUs: kicks until every one is out of KVM_RUN and holding still.
fn hold_still(run: &RunControl, threads: &[VcpuThread]) -> Result<(), Value> {
    run.set_paused(true);
    let deadline = Instant::now() + Duration::from_secs(2);
    while run.parked() < threads.len() && Instant::now() < deadline {
        threads.iter().for_each(VcpuThread::kick);
        std::thread::sleep(Duration::from_millis(1));
    }
    if run.parked() < threads.len() {
        let parked: Vec<u32> = run.parked_states().iter().map(|s| s.id).collect();
        Err(control::error(
            "GenericError",
            format!(
                "only vCPUs {parked:?} of {} stopped within 2 s; the others are busy in the VMM, outside the guest",
                threads.len()
            ),
        ))
    } else {
        Ok(())
    }
}

/// One vCPU's state for `query-vcpus`, numbers in hex as a debugger shows them.
fn vcpu_json(s: &VcpuState) -> Value {
    let (r, sr) = (&s.regs, &s.sregs);
    let hex = |v: u64| format!("{v:#x}");
    json!({
        "cpu": s.id,
        "exits": s.exits,
        "state": s.mp_state_name(),
        "rip": hex(r.rip), "rsp": hex(r.rsp), "rbp": hex(r.rbp), "rflags": hex(r.rflags),
        "rax": hex(r.rax), "rbx": hex(r.rbx), "rcx": hex(r.rcx), "rdx": hex(r.rdx),
        "rsi": hex(r.rsi), "rdi": hex(r.rdi),
        "cs": hex(sr.cs.selector.into()), "cs_base": hex(sr.cs.base),
        "ss": hex(sr.ss.selector.into()),
        "cr0": hex(sr.cr0), "cr2": hex(sr.cr2), "cr3": hex(sr.cr3), "cr4": hex(sr.cr4),
        "efer": hex(sr.efer),
    })
}

/// Types a `send-key` request's chords through the VNC clients' input path, on a thread
/// of its own: the keys take `hold` each and the run loop must go on meanwhile. The
/// answer comes once the last key is up, so a script's next command sees their effect.
fn send_keys(req: control::Request, input: &Arc<GuestInput>) {
    let req = Arc::new(req);
    let (r, input) = (req.clone(), input.clone());
    let spawned = std::thread::Builder::new()
        .name("send-key".into())
        .spawn(move || {
            if let Command::SendKey(keys) = &r.command {
                input.send_chords(&keys.chords, keys.hold);
                r.answer(control::ok(json!({})));
            }
        });
    if let Err(e) = spawned {
        req.answer(control::error(
            "GenericError",
            format!("cannot start the thread that types: {e}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_carries_one_notification_and_times_out_without_one() {
        let w = Arc::new(Wake::default());
        let t = Instant::now();
        assert_eq!(w.wait(Duration::from_millis(20)), 0);
        assert!(t.elapsed() >= Duration::from_millis(20));
        w.notify(Wake::DREW);
        w.notify(Wake::DREW);
        assert_eq!(
            w.wait(Duration::from_secs(5)),
            Wake::DREW,
            "a notification before the wait"
        );
        assert_eq!(w.wait(Duration::from_millis(1)), 0, "taken once");
        w.notify(Wake::INPUT);
        w.notify(Wake::DREW);
        assert_eq!(w.wait(Duration::from_secs(5)), Wake::DREW | Wake::INPUT);
        let w2 = w.clone();
        let n = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w2.notify(Wake::INPUT);
        });
        assert_eq!(
            w.wait(Duration::from_secs(5)),
            Wake::INPUT,
            "a notification during the wait"
        );
        n.join().unwrap();
    }
}
