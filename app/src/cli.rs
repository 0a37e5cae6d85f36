//! The command line: `vmdesk create|list|start|shutdown|reinstall|destroy|reset|pause|resume|
//! set|delete|eject|insert|vncdisplay|screenshot|send-key|console|serial|doctor|disk|demo …`, virsh's
//! names where virsh has one. A thin layer: each command is parsed here, done by the VM
//! service ([`crate::service::VmService`]), and what it returns is printed here. Errors
//! name the VM and the cause; [`Usage`] errors (bad input) exit 2, the rest 1.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::disk::{self, terminal_progress};
use crate::library::{self, Firmware, Forward, MacAddr, NetMode, VmDef};
use crate::runtime::{self, VmState};
pub use crate::service::Usage;
use crate::service::{Control, NewVm, VmChange, VmService, absolute};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Define a new VM (and create its new disk).
    Create(CreateArgs),
    /// List the VMs with their state, memory, vCPUs, firmware and VNC address.
    List,
    /// Start a VM in the background.
    Start { name: String },
    /// Press the VM's ACPI power button (the guest shuts down if it listens).
    Shutdown {
        name: String,
        /// Wait up to this many seconds for the guest to power off.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Reinstall a stopped VM, as `virt-install --reinstall`: replace the disks vmdesk created
    /// (--disk size=…) with fresh, empty ones of the same size and format, and start it
    /// booting from its installer ISO (or kernel) again. Everything on those disks is lost.
    ///
    /// Disk images the VM was given with --disk path=… were not created by vmdesk and are not
    /// wiped: reinstall refuses while the VM has one, unless --keep-existing (leave them as
    /// they are, e.g. a data disk) or --force (wipe them too) says what to do with them.
    Reinstall {
        name: String,
        /// Also wipe the images given with --disk path=… (fresh images of their current
        /// virtual size and format).
        #[arg(long, conflicts_with = "keep_existing")]
        force: bool,
        /// Leave the images given with --disk path=… as they are.
        #[arg(long)]
        keep_existing: bool,
    },
    /// Force the VM off: quit, then kill the VMM if it has not gone after the timeout.
    Destroy {
        name: String,
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
    },
    /// Reset the VM (the reset button).
    Reset { name: String },
    /// Pause the VM's vCPUs.
    Pause { name: String },
    /// Resume a paused VM.
    Resume { name: String },
    /// Change a stopped VM's network (its mode, port forwards and MAC address) or its
    /// firmware, as `create` takes them (the VM gets them at its next start).
    Set(SetArgs),
    /// Copy a stopped VM to a new one (virt-clone): its disks copied whole into the images
    /// folder (sparse images stay sparse), its UEFI variables to a store of its own, its
    /// settings, a new MAC address.
    Clone {
        name: String,
        new_name: String,
        /// A linked clone: no copy; the source's disks become read-only bases, and each VM
        /// gets a qcow2 overlay on them for its own writes (instant, and little space).
        #[arg(long)]
        linked: bool,
    },
    /// Give a stopped VM another name; the disk images and UEFI variable store vmdesk made
    /// for it (named after it), its log and its serial output follow.
    Rename { name: String, new_name: String },
    /// Delete a stopped VM's definition, and its UEFI variable store if it has one.
    Delete {
        name: String,
        /// Also delete its disk images.
        #[arg(long)]
        delete_disks: bool,
    },
    /// Take the ISO out of the VM's CD drive: at once when it runs, and from its
    /// definition, so it starts without it (e.g. after an install).
    Eject { name: String },
    /// Put an ISO in the VM's CD drive, in place of any: at once when it runs, and in its
    /// definition.
    Insert { name: String, iso: PathBuf },
    /// Print the VM's VNC display, e.g. 127.0.0.1:1 (connect with `vncviewer 127.0.0.1:1`).
    Vncdisplay { name: String },
    /// Open a window with the VM's screen (the console alone).
    Console { name: String },
    /// Attach this terminal to the VM's serial console (COM1), as `virsh console`: the
    /// recent output, then the guest's as it comes; what you type goes to the guest.
    /// Ctrl+] detaches. Several viewers may be attached at once.
    Serial { name: String },
    /// Save the VM's screen as a PNG.
    Screenshot { name: String, out: PathBuf },
    /// Type keys on the VM's keyboard, e.g. `send-key NAME ctrl-alt-Delete` or
    /// `send-key NAME H i exclam Return`.
    ///
    /// Each KEY is a chord: X keysym names joined by '-', pressed in order, held, released
    /// in reverse; the chords go one after another. Names: letters, digits and characters
    /// as themselves (a, A, 1, !), X names (Return, Escape, Tab, BackSpace, space, Delete,
    /// Up, Page_Down, F1, exclam, minus ...; case does not matter beyond one character),
    /// and ctrl, alt, shift, super, meta for the modifiers. A character on the shifted
    /// level (A, !) brings its own Shift. Unlike virsh, the keys of one chord share one
    /// argument (virsh presses all its arguments together).
    SendKey {
        name: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// How long each chord is held down, and the pause before the next.
        #[arg(long, value_name = "MS", default_value_t = vmm::control::DEFAULT_HOLD_TIME_MS)]
        hold_time: u64,
    },
    /// Check that this host can run VMs, and say how to fix what is missing.
    Doctor,
    /// Disk images.
    #[command(subcommand)]
    Disk(disk::DiskCommand),
    /// Put vmdesk in the desktop's application menu: a launcher entry (running this
    /// vmdesk) and its icon, for this user ($XDG_DATA_HOME, else ~/.local/share).
    InstallDesktop,
    /// Create (or reuse) and start the demo VM: a small interactive boot program, no ISO
    /// needed.
    Demo,
    /// Internal: the process that stays with one running VMM (started by `start`).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        dir: PathBuf,
        name: String,
        vmm: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The VM's name. With --cdrom it may be left out: the name of the OS found on the ISO
    /// (osinfo-db's short id, e.g. debian11) is used.
    #[arg(long)]
    pub name: Option<String>,
    /// Guest RAM: a number with K, M or G (plain numbers are MiB); 512M by default. With
    /// --cdrom and none of --memory, --cpus and --disk, the memory, vCPUs and disk the OS on
    /// the ISO recommends (osinfo-db) are used instead of the defaults.
    #[arg(long, value_parser = vmm::config::parse_memory)]
    pub memory: Option<u64>,
    /// vCPUs; 1 by default.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// A new disk `size=10G[,path=P][,format=qcow2|raw][,preallocation=off|full]` or an
    /// existing image `path=P[,format=…]`; repeatable. A new disk goes in vmdesk's images
    /// folder, or at `path=` with the format its name says (.qcow2; .raw or .img). A new
    /// raw disk is sparse unless
    /// `preallocation=full` reserves all its space now. `bus=ide` puts it on the IDE
    /// controller (for guests without virtio drivers; at most 3) instead of virtio.
    #[arg(
        long = "disk",
        value_name = "size=S[,path=P][,format=F][,preallocation=P][,bus=B] | path=P[,format=F][,bus=B]"
    )]
    pub disks: Vec<String>,
    /// An installer ISO for the CD-ROM drive.
    #[arg(long)]
    pub cdrom: Option<PathBuf>,
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    #[arg(long)]
    pub cmdline: Option<String>,
    /// VNC: ADDR:N (port 5900+N), ADDR:auto, auto, or none.
    #[arg(long, default_value = "127.0.0.1:auto")]
    pub vnc: String,
    #[arg(long, value_name = "FILE")]
    pub vnc_password_file: Option<PathBuf>,
    /// The network: user (NAT through passt: no root, the default; `nat` says the same),
    /// tap:NAME (an existing TAP device, e.g. on a bridge to the LAN) or none.
    #[arg(long, value_name = "MODE", default_value = "user", value_parser = parse_network)]
    pub network: NetMode,
    /// Forward a host port to the guest (user network only), QEMU's hostfwd form:
    /// PROTO:[HOSTADDR]:HOSTPORT-:GUESTPORT, e.g. tcp::2222-:22 (the host address defaults to
    /// 127.0.0.1: only this machine may connect); repeatable.
    #[arg(long = "forward", value_name = "SPEC", value_parser = parse_forward)]
    pub forwards: Vec<Forward>,
    /// The network card's MAC address (default: a new one in 52:54:00:xx:xx:xx).
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<MacAddr>,
    /// bios (SeaBIOS) or uefi (OVMF, with a variable store of the VM's own in
    /// $XDG_DATA_HOME/vmdesk/nvram). By default UEFI when the ovmf package is installed and
    /// the OS on the --cdrom ISO supports it (osinfo-db), else BIOS.
    #[arg(long, value_name = "bios|uefi", value_parser = parse_firmware)]
    pub firmware: Option<Firmware>,
}

#[derive(clap::Args, Debug, Default)]
pub struct SetArgs {
    pub name: String,
    /// user (NAT, also `nat`), tap:NAME or none.
    #[arg(long, value_name = "MODE", value_parser = parse_network)]
    pub network: Option<NetMode>,
    /// Add a port forward, PROTO:[HOSTADDR]:HOSTPORT-:GUESTPORT; repeatable.
    #[arg(long = "forward", value_name = "SPEC", value_parser = parse_forward)]
    pub forwards: Vec<Forward>,
    /// Remove every port forward first (with --forward: replace them).
    #[arg(long)]
    pub no_forwards: bool,
    /// The network card's MAC address.
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<MacAddr>,
    /// bios or uefi. UEFI makes the VM's variable store if it has none (or it has gone
    /// missing); BIOS keeps the store, so switching back finds its boot entries.
    #[arg(long, value_name = "bios|uefi", value_parser = parse_firmware)]
    pub firmware: Option<Firmware>,
}

impl From<CreateArgs> for NewVm {
    fn from(a: CreateArgs) -> NewVm {
        NewVm {
            name: a.name,
            memory: a.memory,
            cpus: a.cpus,
            disks: a.disks,
            cdrom: a.cdrom,
            kernel: a.kernel,
            initrd: a.initrd,
            cmdline: a.cmdline,
            vnc: a.vnc,
            vnc_password_file: a.vnc_password_file,
            network: a.network,
            forwards: a.forwards,
            mac: a.mac,
            firmware: a.firmware,
        }
    }
}

impl From<SetArgs> for VmChange {
    fn from(a: SetArgs) -> VmChange {
        VmChange {
            name: a.name,
            network: a.network,
            forwards: a.forwards,
            no_forwards: a.no_forwards,
            mac: a.mac,
            firmware: a.firmware,
        }
    }
}

/// `--network`: the spec's own words on error, so clap's one line says what is wrong.
pub fn parse_network(s: &str) -> Result<NetMode, String> {
    s.parse().map_err(|e: vmm::net::SpecError| e.to_string())
}

/// `--forward`.
pub fn parse_forward(s: &str) -> Result<Forward, String> {
    s.parse().map_err(|e: vmm::net::SpecError| e.to_string())
}

/// `--mac`.
pub fn parse_mac(s: &str) -> Result<MacAddr, String> {
    s.parse().map_err(|e: vmm::net::SpecError| e.to_string())
}

/// `--firmware`.
pub fn parse_firmware(s: &str) -> Result<Firmware, String> {
    s.parse()
}

fn install_desktop() -> anyhow::Result<()> {
    let Some(home) = crate::desktop::data_home() else {
        bail!("neither XDG_DATA_HOME nor HOME is set: no place for the launcher entry");
    };
    let exe = std::env::current_exe().context("cannot tell where this vmdesk is")?;
    let done = crate::desktop::install(&home, &exe)
        .with_context(|| format!("cannot install the launcher entry under {}", home.display()))?;
    println!("installed {}", done.entry.display());
    println!("installed {}", done.icon.display());
    Ok(())
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    if let Command::Disk(c) = cmd {
        return disk::run(c);
    }
    if let Command::Doctor = cmd {
        return doctor();
    }
    if let Command::InstallDesktop = cmd {
        return install_desktop();
    }
    if let Command::Supervise {
        dir,
        name,
        vmm,
        args,
    } = cmd
    {
        std::process::exit(runtime::supervise(&dir, &name, &vmm, &args));
    }
    let vms = VmService::open_default()?;
    match cmd {
        Command::Create(args) => create(&vms, args.into()),
        Command::Clone {
            name,
            new_name,
            linked,
        } => {
            let mut progress = terminal_progress("copying disks");
            let (def, warnings) = vms.clone_vm(&name, &new_name, linked, &mut progress)?;
            warn_all(&new_name, warnings);
            println!(
                "cloned '{name}' to '{new_name}' ({})",
                network_summary(&def)
            );
            for d in &def.disks {
                println!("  disk {} ({})", d.path.display(), d.format.as_str());
            }
            print_store(&def);
            Ok(())
        }
        Command::Rename { name, new_name } => {
            let def = vms.rename(&name, &new_name)?;
            println!("renamed '{name}' to '{new_name}'");
            for d in &def.disks {
                println!("  disk {}", d.path.display());
            }
            print_store(&def);
            Ok(())
        }
        Command::Demo => demo(&vms),
        Command::List => list(&vms),
        Command::Start { name } => {
            let started = vms.start(&name)?;
            warn_all(&name, started.warnings);
            match started.vnc {
                Some(addr) => {
                    println!("started '{name}': vncviewer {}", runtime::vnc_display(addr))
                }
                None => println!("started '{name}'"),
            }
            Ok(())
        }
        Command::Shutdown { name, wait } => {
            vms.control(&name, Control::PowerButton)?;
            match wait {
                None => println!("pressed the power button of '{name}'"),
                Some(secs) => {
                    if !vms.wait_powered_off(&name, Duration::from_secs(secs)) {
                        bail!(
                            "'{name}' did not power off within {secs} s (vmdesk destroy {name} forces it off)"
                        );
                    }
                    println!("'{name}' powered off");
                }
            }
            Ok(())
        }
        Command::Reinstall {
            name,
            force,
            keep_existing,
        } => {
            let existing = match (force, keep_existing) {
                (true, _) => runtime::ExistingImages::Wipe,
                (_, true) => runtime::ExistingImages::Keep,
                _ => runtime::ExistingImages::Refuse,
            };
            let (plan, addr) = vms.reinstall(&name, existing)?;
            for d in &plan.wipe {
                println!(
                    "fresh disk {} ({}, {} bytes)",
                    d.path.display(),
                    d.format,
                    d.size
                );
            }
            for p in &plan.keep {
                println!("kept {}", p.display());
            }
            match addr {
                Some(a) => println!(
                    "reinstalling '{name}': vncviewer {}",
                    runtime::vnc_display(a)
                ),
                None => println!("reinstalling '{name}'"),
            }
            Ok(())
        }
        Command::Set(args) => {
            let firmware = args.firmware.is_some();
            let (def, warnings) = vms.set(args.into())?;
            warn_all(&def.name, warnings);
            println!("'{}': {}", def.name, network_summary(&def));
            if firmware {
                println!("  firmware {}", def.firmware.label());
                print_store(&def);
            }
            Ok(())
        }
        Command::Destroy { name, timeout } => {
            vms.destroy(&name, Duration::from_secs(timeout))?;
            println!("'{name}' is off");
            Ok(())
        }
        Command::Reset { name } => simple(&vms, &name, Control::Reset, "reset"),
        Command::Pause { name } => simple(&vms, &name, Control::Pause, "pause"),
        Command::Resume { name } => simple(&vms, &name, Control::Resume, "resume"),
        Command::Delete { name, delete_disks } => {
            for p in vms.delete(&name, delete_disks)? {
                println!("deleted {}", p.display());
            }
            println!("deleted '{name}'");
            Ok(())
        }
        Command::Eject { name } => {
            println!("{}", vms.set_media(&name, None)?);
            Ok(())
        }
        Command::Insert { name, iso } => {
            println!("{}", vms.set_media(&name, Some(iso))?);
            Ok(())
        }
        Command::Vncdisplay { name } => {
            println!("{}", runtime::vnc_display(vms.vnc_addr(&name)?));
            Ok(())
        }
        Command::Console { name } => {
            let addr = vms.vnc_addr(&name)?;
            let def = vms.get(&name)?;
            let opts = crate::console::ConsoleOptions {
                password_file: def.vnc_password_file,
                // Asked again before every reconnection: the window follows a VM that is
                // restarted on another display.
                target: Some(vms.vnc_follower(&name)),
                standalone: true,
                frames_shown: None,
                boot_note: Some(vms.boot_note(&name)),
            };
            crate::console::run_window(&name, addr, opts)
        }
        Command::Serial { name } => crate::serial::terminal::run(&vms, &name),
        Command::Screenshot { name, out } => {
            // The VMM writes the file, from its own working directory: give it a full path.
            let out = absolute(&out)?;
            vms.screenshot(&name, &out)?;
            println!("saved the screen of '{name}' to {}", out.display());
            Ok(())
        }
        Command::SendKey {
            name,
            keys,
            hold_time,
        } => {
            vms.send_key(&name, &keys, hold_time)?;
            println!("sent {} to '{name}'", keys.join(" "));
            Ok(())
        }
        Command::Disk(_)
        | Command::Doctor
        | Command::InstallDesktop
        | Command::Supervise { .. } => {
            unreachable!("handled above")
        }
    }
}

/// Each of a VM's warnings on its own line.
fn warn_all(name: &str, warnings: Vec<library::Warning>) {
    for w in warnings {
        eprintln!("vmdesk: warning: '{name}': {w}");
    }
}

/// `vmdesk demo`: defines the demo VM if needed, starts it unless it runs, and says how to
/// see it.
fn demo(vms: &VmService) -> anyhow::Result<()> {
    use crate::demo::NAME;
    let addr = if vms.prepare_demo()? {
        let started = vms.start(NAME)?;
        warn_all(NAME, started.warnings);
        print!("started '{NAME}'");
        started.vnc
    } else {
        print!("'{NAME}' is already running");
        vms.vnc_addr(NAME).ok()
    };
    match addr {
        Some(a) => println!(": vncviewer {}", runtime::vnc_display(a)),
        None => println!(),
    }
    println!("see it in a window: vmdesk console {NAME}  (vmdesk shutdown {NAME} powers it off)");
    Ok(())
}

fn simple(vms: &VmService, name: &str, control: Control, said: &str) -> anyhow::Result<()> {
    vms.control(name, control)?;
    println!("{said}: done for '{name}'");
    Ok(())
}

fn create(vms: &VmService, mut a: NewVm) -> anyhow::Result<()> {
    let found = vms.fill_from_iso(&mut a)?;
    // Settled before the summary, which says what the VM gets.
    a.firmware = Some(vms.resolve_firmware(&a)?);
    if let (Some(found), Some(firmware)) = (found, a.firmware) {
        println!("{}", found.summary(firmware));
    }
    let (def, warnings) = vms.create(a, &mut terminal_progress("reserving disk space"))?;
    let name = &def.name;
    warn_all(name, warnings);
    println!(
        "created '{name}' ({} MiB, {} vCPUs, {})",
        def.memory_mib,
        def.cpus,
        def.firmware.label()
    );
    for d in &def.disks {
        println!("  disk {} ({})", d.path.display(), d.format.as_str());
    }
    print_store(&def);
    println!("  {}", network_summary(&def));
    Ok(())
}

/// Where a VM's UEFI variables are, when it has a store.
fn print_store(def: &VmDef) {
    if let Some(p) = &def.efi_vars {
        println!("  UEFI variables {}", p.display());
    }
}

/// The network in a line: `network nat, MAC 52:54:00:…, forwards 127.0.0.1:2222→22`.
fn network_summary(def: &VmDef) -> String {
    let mut s = match &def.network {
        NetMode::None => return "network none".into(),
        mode => format!("network {}, MAC {}", library::network_label(mode), def.mac),
    };
    if !def.forwards.is_empty() {
        let f: Vec<String> = def.forwards.iter().map(library::forward_label).collect();
        s += &format!(", forwards {}", f.join(", "));
    }
    s
}

/// One VM's line in `vmdesk list`, its cells as shown.
#[derive(Debug, Default)]
struct ListRow {
    name: String,
    state: String,
    memory: String,
    cpus: String,
    /// `bios` or `uefi`.
    firmware: String,
    vnc: String,
    /// `nat`, `tap:NAME` or `-`.
    net: String,
    /// How to reach the guest's services: `127.0.0.1:2222→22, …`, or `-`.
    forwards: String,
    note: String,
}

impl ListRow {
    fn header() -> ListRow {
        ListRow {
            name: "NAME".into(),
            state: "STATE".into(),
            memory: "MEMORY".into(),
            cpus: "CPUS".into(),
            firmware: "FW".into(),
            vnc: "VNC".into(),
            net: "NET".into(),
            forwards: "FORWARDS".into(),
            note: "NOTE".into(),
        }
    }
}

/// The table: fixed columns up to VNC (FW: `bios` or `uefi`), then NET and FORWARDS as
/// wide as their widest cell
/// (a TAP name, several forwards), then the free-text NOTE; no trailing blanks.
fn list_lines(rows: &[ListRow]) -> Vec<String> {
    let width = |cell: fn(&ListRow) -> &str| {
        rows.iter()
            .map(|r| cell(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let net_w = width(|r| &r.net);
    let fwd_w = width(|r| &r.forwards);
    rows.iter()
        .map(|r| {
            let line = format!(
                "{:<20} {:<9} {:>8} {:>5}  {:<4}  {:<15}  {:<net_w$}  {:<fwd_w$}  {}",
                r.name, r.state, r.memory, r.cpus, r.firmware, r.vnc, r.net, r.forwards, r.note
            );
            line.trim_end().to_string()
        })
        .collect()
}

fn list(vms: &VmService) -> anyhow::Result<()> {
    let mut rows = vec![ListRow::header()];
    let mut problems = Vec::new();
    for e in vms.list()? {
        let state = e.state;
        let vnc = e.vnc.map_or_else(|| "-".into(), runtime::vnc_display);
        // A running VM that sits in the firmware's "No bootable device", or whose network
        // went down, says so.
        let boot = e.boot;
        let net_down = e.net_down;
        let mut notes = Vec::new();
        if boot.is_some() {
            notes.push(runtime::NO_BOOT_NOTE);
        }
        if net_down {
            notes.push(runtime::NET_DOWN_NOTE);
            problems.push(format!(
                "'{}' has lost its network (the card's link is down; its log says why: {})",
                e.name,
                vms.log_path(&e.name).display()
            ));
        }
        let mut row = ListRow {
            name: e.name.clone(),
            vnc,
            note: notes.join(", "),
            ..ListRow::default()
        };
        match &e.def {
            Ok(d) => {
                row.state = state.label().into();
                row.memory = format!("{}M", d.memory_mib);
                row.cpus = d.cpus.to_string();
                row.firmware = d.firmware.as_str().into();
                row.net = library::network_label(&d.network);
                row.forwards = if d.forwards.is_empty() {
                    "-".into()
                } else {
                    let f: Vec<String> = d.forwards.iter().map(library::forward_label).collect();
                    f.join(", ")
                };
            }
            Err(err) => {
                row.state = "error".into();
                for cell in [
                    &mut row.memory,
                    &mut row.cpus,
                    &mut row.firmware,
                    &mut row.net,
                    &mut row.forwards,
                ] {
                    *cell = "-".into();
                }
                problems.push(err.to_string());
            }
        }
        rows.push(row);
        if let Some(f) = &boot {
            problems.push(format!(
                "'{}' found nothing to boot: {}\n  {}",
                e.name,
                f.message,
                f.cli_fix(&e.name)
            ));
        }
        if let VmState::Crashed { why, .. } = &state {
            problems.push(format!(
                "'{}' crashed: {why} (log: {})",
                e.name,
                vms.log_path(&e.name).display()
            ));
        }
    }
    for line in list_lines(&rows) {
        println!("{line}");
    }
    for p in problems {
        eprintln!("vmdesk: {p}");
    }
    Ok(())
}

fn doctor() -> anyhow::Result<()> {
    let check = crate::host_check::HostCheck::detect();
    print!("{}", check.to_text());
    if !check.ok() {
        bail!("this host cannot run VMs yet: see the fixes above");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_columns_fit_their_widest_cell_and_end_without_blanks() {
        let row = |name: &str, net: &str, forwards: &str, note: &str| ListRow {
            name: name.into(),
            state: "stopped".into(),
            memory: "64M".into(),
            cpus: "1".into(),
            firmware: "bios".into(),
            vnc: "-".into(),
            net: net.into(),
            forwards: forwards.into(),
            note: note.into(),
        };
        let lines = list_lines(&[
            ListRow::header(),
            row("web", "nat", "127.0.0.1:2222→22, 0.0.0.0:5353→53/udp", ""),
            row("lan", "tap:vmtap-long0", "-", "no bootable device"),
            row("off", "-", "-", ""),
        ]);
        assert_eq!(
            lines,
            [
                "NAME                 STATE       MEMORY  CPUS  FW    VNC              NET              FORWARDS                                NOTE",
                "web                  stopped        64M     1  bios  -                nat              127.0.0.1:2222→22, 0.0.0.0:5353→53/udp",
                "lan                  stopped        64M     1  bios  -                tap:vmtap-long0  -                                       no bootable device",
                "off                  stopped        64M     1  bios  -                -                -",
            ]
        );
        // Narrow cells: the columns are no wider than their headers.
        let lines = list_lines(&[ListRow::header(), row("a", "-", "-", "")]);
        assert_eq!(
            lines[0],
            "NAME                 STATE       MEMORY  CPUS  FW    VNC              NET  FORWARDS  NOTE"
        );
        assert_eq!(
            lines[1],
            "a                    stopped        64M     1  bios  -                -    -"
        );
    }
}
