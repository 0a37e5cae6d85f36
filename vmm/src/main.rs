//! `vmdesk-vmm`: one virtual PC per process, every option on the command line, like
//! `qemu-system-x86_64`. Exit codes: 0 when the guest powers off or we are told to stop
//! (SIGINT, SIGTERM), 1 when the guest cannot go on, 2 for bad input.

use std::fs::File;
use std::io::Read;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use display::rfb::input::InputSink;
use display::rfb::server::{VncConfig, VncError, VncServer};
use display::surface::Surface;
use signal_hook::consts::{SIGINT, SIGTERM};
use vmm::config::{Cli, DiskBus, OutputSpec, VncSpec};
use vmm::firmware::Firmware;
use vmm::host::KvmFlavor;
use vmm::input::GuestInput;
use vmm::machine::{Boot, MachineConfig, Outputs, Sink};
use vmm::option_rom::OptionRom;
use vmm::serial_console::{self, SerialFanout, SerialSocket};
use vmm::vm::{self, Outcome, SerialSlot};

/// Bad input: what is wrong, in one line.
struct Usage(String);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMDESK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vmdesk-vmm: {}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };

    if cli.check_host {
        let (report, ok) = vmm::host::report();
        print!("{report}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    match run(cli) {
        Ok(code) => code,
        Err(Usage(msg)) => {
            eprintln!("vmdesk-vmm: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Clap's message without its usage block, folded onto one line.
fn one_line(clap_text: &str) -> String {
    clap_text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_string()
}

fn open_sink(spec: &OutputSpec, what: &str) -> Result<Sink, Usage> {
    Ok(match spec {
        OutputSpec::None => Sink::None,
        OutputSpec::Stdio => Sink::Stdout,
        OutputSpec::File(p) => Sink::File(Arc::new(
            File::create(p).map_err(|e| Usage(format!("{what} file {}: {e}", p.display())))?,
        )),
    })
}

fn readable(path: &std::path::Path, what: &str) -> Result<(), Usage> {
    File::open(path)
        .map(drop)
        .map_err(|e| Usage(format!("{what} {}: {e}", path.display())))
}

/// A bzImage has "HdrS" at 0x202; an ELF vmlinux starts with its magic.
fn looks_like_kernel(path: &std::path::Path) -> Result<(), Usage> {
    let mut head = [0u8; 0x206];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Usage(format!("kernel {}: {e}", path.display())))?;
    if (n >= 4 && head[..4] == *b"\x7fELF") || (n == head.len() && head[0x202..0x206] == *b"HdrS") {
        return Ok(());
    }
    Err(Usage(format!(
        "kernel {} is not a Linux kernel (want a bzImage or an ELF vmlinux)",
        path.display()
    )))
}

fn run(cli: Cli) -> Result<ExitCode, Usage> {
    let kvm = vmm::kvm::open().map_err(|e| Usage(e.to_string()))?;
    vmm::kvm::check_required(&kvm).map_err(|e| Usage(e.to_string()))?;
    // APIC ids, the CMOS CPU byte and our MADT stop at 255 CPUs.
    let max_cpus = (vmm::kvm::max_vcpus(&kvm) as u32).min(255);
    cli.check(vmm::host::total_ram(), max_cpus)
        .map_err(|e| Usage(e.to_string()))?;

    let boot = match &cli.kernel {
        Some(kernel) => {
            readable(kernel, "kernel")?;
            if let Some(initrd) = &cli.initrd {
                readable(initrd, "initrd")?;
            }
            looks_like_kernel(kernel)?;
            Boot::Linux {
                kernel: kernel.clone(),
                initrd: cli.initrd.clone(),
                cmdline: cli.cmdline.clone().unwrap_or_default(),
            }
        }
        None => {
            let fw = Firmware::choose(&cli.firmware, cli.efi_vars.as_deref())
                .map_err(|e| Usage(e.to_string()))?;
            if fw.vars.as_ref().is_some_and(|v| v.path().is_none()) {
                eprintln!(
                    "note: EFI variables start from {} and are not kept: give --efi-vars FILE (a copy of it) to keep them",
                    vmm::firmware::uefi::OVMF_VARS_TEMPLATE
                );
            }
            Boot::Firmware(fw)
        }
    };
    // Held for the process's life: no second VM or qemu-img writes these images under us.
    let mut _image_locks = Vec::new();
    let on = |bus| cli.disks.iter().filter(|d| d.bus == bus).count();
    let (virtio, ide) = (on(DiskBus::Virtio), on(DiskBus::Ide));
    if virtio > vmm::machine::MAX_DISKS {
        return Err(Usage(format!(
            "--disk: {virtio} virtio disks given; a machine takes at most {}",
            vmm::machine::MAX_DISKS
        )));
    }
    if ide > vmm::machine::IDE_DISK_PLACES.len() {
        return Err(Usage(format!(
            "--disk: {ide} disks with if=ide given; the IDE controller takes at most {} \
             (the CD-ROM has the fourth place)",
            vmm::machine::IDE_DISK_PLACES.len()
        )));
    }
    for d in &cli.disks {
        _image_locks.push(
            vmm::disk::ImageLock::acquire(&d.path, !d.read_only)
                .map_err(|e| Usage(format!("--disk {e}")))?,
        );
        // Open once now so a bad image is bad input, not a failed start.
        vmm::disk::probe::open_image(&d.path, d.format, d.read_only)
            .map_err(|e| Usage(format!("--disk {e}")))?;
    }
    if let Some(iso) = &cli.cdrom {
        readable(iso, "cdrom")?;
    }
    // The network's backend (a passt of its own, or the TAP device) lives as long as this
    // process; each build of the machine gets a card attached to it.
    let network = vmm::net::Network::start(
        &cli.net,
        cli.mac.unwrap_or(vmm::net::MacAddr::DEFAULT),
        &cli.forwards,
    )
    .map_err(|e| Usage(e.to_string()))?
    .map(Arc::new);
    // The guest's screen: the VGA draws it, the VNC server serves it, for the VM's life;
    // and the VNC clients' input, which reaches each machine's devices in turn.
    let screen = Surface::new(720, 400);
    let guest_input = GuestInput::new(screen.clone());
    // COM1's viewers, with a socket; they and the UART slot outlive guest resets.
    let serial_clients = cli.serial_socket.as_ref().map(|_| {
        SerialFanout::new(
            serial_console::SCROLLBACK_BYTES,
            serial_console::CLIENT_QUEUE_BYTES,
            serial_console::MAX_CLIENTS,
        )
    });
    let serial_slot: SerialSlot = Arc::new(Mutex::new(None));
    let outputs = Outputs {
        serial: open_sink(&cli.serial, "serial")?,
        serial_clients: serial_clients.clone(),
        debugcon: open_sink(&cli.debugcon, "debugcon")?,
        // The guest agent's clipboard only has somewhere to go with a VNC server.
        clipboard: (cli.vnc != VncSpec::None).then(|| guest_input.guest_clipboard().clone()),
        disk_io: cli.disks.iter().map(|_| Arc::default()).collect(),
        network,
    };
    let mut cfg = MachineConfig {
        memory: cli.memory,
        cpus: cli.cpus,
        boot,
        reboot_timeout: cli.reboot_timeout,
        option_roms: OptionRom::load_all(&cli.option_roms).map_err(|e| Usage(e.to_string()))?,
        cdrom: cli.cdrom.clone(),
        cdrom_drive: cli.cdrom.is_some(),
        disks: cli.disks.clone(),
        boot_order: cli.boot.clone().map(|b| b.0).unwrap_or_default(),
        boot_once: cli.boot_once.clone().map(|b| b.0).unwrap_or_default(),
        display: Some(screen.clone()),
        boot_menu: cli.boot_menu,
    };

    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Usage(format!("cannot install signal handlers: {e}")))?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            tracing::info!("signal {sig}: stopping");
            let _ = stop_tx.try_send(());
        }
    });

    // Requests from the control socket; with no socket the sender lives on unused, so
    // the run loop's receiver simply never fires.
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let _control = match &cli.control {
        Some(path) => Some(
            vmm::control::ControlServer::start(path, control_tx.clone())
                .map_err(|e| Usage(e.to_string()))?,
        ),
        None => None,
    };

    let _serial_socket = match (&cli.serial_socket, serial_clients) {
        (Some(path), Some(clients)) => Some(
            SerialSocket::start(path, clients, serial_slot.clone())
                .map_err(|e| Usage(format!("--serial-socket: {e}")))?,
        ),
        _ => None,
    };

    let vnc = start_vnc(&cli, &screen, &guest_input)?.map(Arc::new);
    if let Some(server) = &vnc {
        // Weak: the server holds the input, which holds the clipboard.
        let server = Arc::downgrade(server);
        guest_input.guest_clipboard().set_clients(move |text| {
            if let Some(s) = server.upgrade() {
                s.set_clipboard(text);
            }
        });
    }

    // All input checked: from here on, only the guest can fail.
    if let Some(w) = KvmFlavor::detect().warning() {
        eprintln!("vmdesk-vmm: {w}");
    }

    if cli.serial == OutputSpec::Stdio {
        spawn_stdin_reader(serial_slot.clone());
    }

    loop {
        let inputs = vm::Inputs {
            stop: &stop_rx,
            control: &control_rx,
            serial_slot: &serial_slot,
            input: &guest_input,
        };
        let outcome = vm::run_once(&kvm, &mut cfg, &outputs, &inputs);
        if !matches!(outcome, Ok(Outcome::Reset)) {
            report_disk_io(&cfg, &outputs);
        }
        match outcome {
            Ok(Outcome::Reset) => {
                tracing::info!("guest reset: restarting the machine");
                // --boot-once was for the first boot.
                cfg.boot_once.clear();
                continue;
            }
            Ok(Outcome::PowerOff) | Ok(Outcome::Stopped) => return Ok(ExitCode::SUCCESS),
            Ok(Outcome::Failed(why)) => {
                eprintln!("vmdesk-vmm: the guest stopped: {why}");
                if !KvmFlavor::detect().runs_guest_kernels() {
                    eprintln!(
                        "vmdesk-vmm: (this host's KVM is kvm_pvm, which cannot run protected-mode guest kernels; see --check-host)"
                    );
                }
                return Ok(ExitCode::FAILURE);
            }
            // A kernel, initrd or command line the loader refuses is bad input.
            Err(vm::VmError::Boot(why)) => return Err(Usage(why)),
            Err(e) => {
                eprintln!("vmdesk-vmm: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

/// What each disk did over the whole run, one line each on stderr (the app keeps it in the
/// VM's log): the numbers behind an install's figures, and a first clue when a guest
/// says its disk failed.
fn report_disk_io(cfg: &MachineConfig, outputs: &Outputs) {
    for (i, (disk, io)) in cfg.disks.iter().zip(&outputs.disk_io).enumerate() {
        eprintln!(
            "vmdesk-vmm: disk {i} {}: {}",
            disk.path.display(),
            io.counts()
        );
    }
}

/// Starts the VNC server the options ask for and prints where it listens, in one line a
/// script can parse.
fn start_vnc(
    cli: &Cli,
    screen: &Arc<Surface>,
    input: &Arc<GuestInput>,
) -> Result<Option<VncServer>, Usage> {
    let listen = match cli.vnc {
        VncSpec::None => return Ok(None),
        VncSpec::Auto(ip) => std::net::SocketAddr::new(ip, 5900),
        VncSpec::Display(addr) => addr,
    };
    let mut config = VncConfig::new(listen);
    config.allow_insecure = cli.vnc_allow_insecure;
    if let Some(path) = &cli.vnc_password_file {
        config = config
            .with_password_file(path)
            .map_err(|e| Usage(format!("--vnc-password-file: {e}")))?;
    }
    let sink: Arc<dyn InputSink> = input.clone();
    let server = match cli.vnc {
        VncSpec::Auto(_) => VncServer::start_auto(config, screen.clone(), sink).map(|(s, _)| s),
        _ => VncServer::start(config, screen.clone(), sink),
    }
    .map_err(|e| match e {
        VncError::InsecureListen(addr) => Usage(format!(
            "--vnc {addr}: refusing a non-loopback address without a password: give --vnc-password-file FILE (or --vnc-allow-insecure)"
        )),
        e => Usage(format!("--vnc: {e}")),
    })?;
    eprintln!("vnc: listening on {}", server.local_addr());
    Ok(Some(server))
}

/// Feeds stdin to COM1 of whichever machine is running, waiting while its FIFO is full.
fn spawn_stdin_reader(slot: SerialSlot) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            serial_console::input::feed(&*slot, &buf[..n], || false);
        }
    });
}
