//! UEFI boot as a person watching VNC sees it (issue 16's figures): vmdesk-vmm beside
//! QEMU (`-accel kvm -cpu host,-arch-capabilities -vga std`), the same OVMF files (the ovmf
//! package's OVMF_CODE_4M.fd, and a fresh copy of OVMF_VARS_4M.fd for every boot), the
//! same EFI CD (test-assets.sh's grub-efi.iso, grub-mkrescue, whose menu waits for a key),
//! 512 MiB and 1 vCPU; QEMU also gets the two PCI devices every vmdesk-vmm machine has (the
//! virtio tablet and the agent's virtio-serial, as `common::qemu_reference`), so both
//! firmware runs see the same machine. `RUNS` boots each, alternating; medians and the
//! ratios vmdesk/QEMU (goal <= 0.8 for both times).
//!
//! Each boot is watched by our own RFB client (`display::client`), connected from the
//! VMM's start (it retries until the port listens) and always holding an update request:
//! every frame is timed when it has arrived whole, in a thread of its own, whatever the
//! benchmark does meanwhile. Raw encoding only (the cheapest for both servers).
//! - OVMF's first screen: the first frame that is not all black, at the resolution GRUB's
//!   menu later shows in (1280x800, the mode OVMF's video driver sets): the TianoCore
//!   logo, or the first part of it a frame caught. Frames before that mode are not OVMF's
//!   picture: QEMU's VNC server shows its own placeholder text ("Guest has not initialized
//!   the display (yet).", 640x480) until the guest programs the VGA; ours shows the VGA's
//!   black text mode, then OVMF's first 640x480 mode, black too.
//! - GRUB's menu: by its pixels. GRUB draws the menu's box and the highlight bar over the
//!   chosen entry in one colour (the EFI console's light grey); the bar is a text row high
//!   (19 pixel rows in OVMF's font) and each row of it holds a run of that colour nearly
//!   half the screen wide, as do the box's top and bottom edges. `MENU_ROWS` pixel rows
//!   with a run of one non-black colour at least `MENU_RUN` of the screen's width are the
//!   menu; nothing OVMF shows has such runs (its logo is a picture a sixth of the screen
//!   wide, its text is letters on black; GRUB's grey "Welcome to GRUB!" is 128 pixels).
//!   After the VMM is stopped, tesseract reads the frame that met this and must find the
//!   entry in it (`ENTRY`), or the boot does not count: the OCR is a check, and never runs
//!   beside a VMM being timed.
//! - Both screens are what each VMM's VNC server sends: ours looks at the VGA about 60
//!   times a second; QEMU's on a timer that backs off from 30 ms by 50 ms a look, up to
//!   3 s, while nothing changes (so a change after a still stretch may reach its clients
//!   late). That is part of what a person watching either sees, so of these figures.
//! - Memory: the VMM's resident memory beyond guest RAM, from /proc/PID/smaps: Rss of the
//!   whole process less the Rss of the guest RAM mappings, sampled every `SAMPLE` and at
//!   the menu; the peak is printed. The mappings at least half the RAM's size are guest
//!   RAM (their sizes go to stderr): QEMU's pc.ram is one 512 MiB block; ours maps RAM in
//!   two pieces, 640 KiB below the VGA window and the rest above it, and only the big one
//!   counts, so the small one (at most 640 KiB resident) counts against us, while a small
//!   neighbour the kernel merged into a RAM mapping (132 KiB in ours) counts as RAM;
//!   glibc's arenas, stacks, VRAM and flash are far smaller than 256 MiB. Not VmHWM less
//!   the RAM's size: neither OVMF nor GRUB touches all 512 MiB (about 54 MiB of it is
//!   resident at the menu under either VMM), so that difference is mostly untouched RAM
//!   and far below zero; VmHWM is printed beside it.
//!
//! `cargo bench -p vmm --bench uefi_boot` (after resources/scripts/install-deps.sh bench
//! and test-assets.sh). On a kvm_pvm host (which cannot run OVMF's long mode) the
//! measuring runs inside the nested test host (resources/scripts/nested-host.sh), where
//! TCG sets the pace: only the ratios mean anything there. `-- --runs N` boots each VMM N
//! times; `-- --frames DIR` also writes every frame each client received as a PNG named
//! after the VMM, the boot and its time (to see what the criteria saw; inside the nested
//! host DIR must be under $VMDESK_NESTED_SHARE to come back, e.g. with nested-host.sh
//! --keep).

#[path = "../tests/common/mod.rs"]
mod common;

use common::Vmm;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use display::client::{Client, ClientOptions, Framebuffer};
use display::encoding::number;
use display::pixel::PixelFormat;

const RUNS: usize = 3;
const MEMORY_MIB: u64 = 512;
/// OVMF to its screen takes 20-40 s in the nested host; GRUB a few more.
const TIMEOUT: Duration = Duration::from_secs(300);
const GOAL: f64 = 0.8;
const ISO: &str = "grub-efi.iso";
/// The menu entry "vmdesk UEFI GRUB test" as the OCR check must read it: tesseract reads
/// the highlighted "vmdesk" (black on grey) as "umdesk", the rest right.
const ENTRY: &str = "UEFI GRUB test";
/// Pixel rows with a long run of the menu's colour that make GRUB's menu (its highlight
/// bar alone has 19).
const MENU_ROWS: usize = 12;
/// A long run: this fraction of the screen's width (GRUB's bar and box edges are 60%;
/// a bar row with the entry's letters still has a run of 46%).
const MENU_RUN: f64 = 0.4;
/// How often the VMM's memory is sampled while it boots.
const SAMPLE: Duration = Duration::from_secs(2);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs = value("--runs")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RUNS);
    let frames = value("--frames").map(PathBuf::from);
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    if args.iter().any(|a| a == "--inside") || !kvm_pvm {
        inside(runs, frames.as_deref());
        return;
    }
    // Here only what is missing is said; the nested host would only say it later.
    if prerequisites().is_none() {
        return;
    }
    let script = common::nested_host_script();
    let mut inner = vec!["--inside".to_string(), "--runs".into(), runs.to_string()];
    if let Some(dir) = &frames {
        inner.extend(["--frames".into(), dir.display().to_string()]);
    }
    let status = Command::new(&script)
        .args(["--timeout", "3000", "--"])
        .arg(std::env::current_exe().expect("this benchmark's path"))
        .args(&inner)
        .status()
        .expect("run the benchmark in the nested host");
    if !status.success() {
        println!("  the measurement in the nested host failed ({status})");
    }
}

/// The CD and tesseract, or `None` after one line saying what is missing (OVMF, QEMU,
/// the CD, tesseract).
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let test = "uefi_boot";
    if !vmm::firmware::uefi::available() {
        println!(
            "SKIP {test}: the ovmf package is not installed (resources/scripts/install-deps.sh bench installs it)"
        );
        return None;
    }
    common::tool_or_skip(test, "qemu-system-x86_64")?;
    let iso = common::asset_or_skip(test, ISO)?;
    let tesseract = common::tool_or_skip(test, "tesseract")?;
    Some((iso, tesseract))
}

/// What one boot gave: seconds from the VMM's start, and MiB.
struct Boot {
    screen: f64,
    menu: f64,
    /// Peak Rss beyond guest RAM, from the start to the menu.
    beyond_ram: f64,
}

/// What the watching thread saw, each timed (seconds from the VMM's start) when the
/// frame had arrived whole.
enum Event {
    /// The screen's size, at the first update and whenever it changed.
    Size { at: f64, w: usize, h: usize },
    /// The first frame at this size with a pixel that is not black.
    Lit { at: f64, w: usize, h: usize },
    /// GRUB's menu by its pixels: the frame, and the menu's area in it (x, y, w, h).
    Menu {
        at: f64,
        frame: Framebuffer,
        area: (usize, usize, usize, usize),
    },
    /// The connection could not be made or ended.
    Ended(String),
}

/// Resident memory of a process, bytes.
struct Memory {
    rss: u64,
    /// Of which guest RAM (see the module's comment).
    guest_ram: u64,
    hwm: u64,
    /// The sizes of the mappings counted as guest RAM.
    ram_maps: Vec<u64>,
}

impl Memory {
    fn beyond_ram(&self) -> u64 {
        self.rss - self.guest_ram
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn memory(pid: u32, ram: u64) -> Option<Memory> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let kib = |v: &str| {
        v.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            * 1024
    };
    let (mut rss, mut guest_ram, mut size, mut ram_maps) = (0, 0, 0, Vec::new());
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Size:") {
            size = kib(v);
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let r = kib(v);
            rss += r;
            if size >= ram / 2 {
                guest_ram += r;
                ram_maps.push(size);
            }
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(kib)?;
    Some(Memory {
        rss,
        guest_ram,
        hwm,
        ram_maps,
    })
}

/// The longest run of one colour other than black in a row: (colour, start, length).
fn longest_run(row: &[u32]) -> Option<(u32, usize, usize)> {
    let mut best: Option<(u32, usize, usize)> = None;
    let mut start = 0;
    for x in 1..=row.len() {
        if x == row.len() || row[x] != row[start] {
            let len = x - start;
            let colour = row[start] & 0xff_ffff;
            if colour != 0 && best.is_none_or(|b| len > b.2) {
                best = Some((colour, start, len));
            }
            start = x;
        }
    }
    best
}

/// GRUB's menu by the pixel criterion (module comment) on a screen `width` wide whose
/// rows' longest runs are `runs`: the area (x, y, w, h) its long runs span.
fn menu_area(
    runs: &[Option<(u32, usize, usize)>],
    width: usize,
) -> Option<(usize, usize, usize, usize)> {
    let min = (width as f64 * MENU_RUN) as usize;
    let long = || {
        runs.iter()
            .enumerate()
            .filter_map(|(y, r)| Some((y, (*r)?)))
    };
    let long = || long().filter(|(_, r)| r.2 >= min);
    let mut counts: Vec<(u32, usize)> = Vec::new();
    for (_, (colour, _, _)) in long() {
        match counts.iter_mut().find(|c| c.0 == colour) {
            Some(c) => c.1 += 1,
            None => counts.push((colour, 1)),
        }
    }
    let (colour, n) = counts.into_iter().max_by_key(|c| c.1)?;
    if n < MENU_ROWS {
        return None;
    }
    let rows: Vec<(usize, usize, usize)> = long()
        .filter(|(_, r)| r.0 == colour)
        .map(|(y, r)| (y, r.1, r.1 + r.2))
        .collect();
    let (top, bottom) = (rows.first()?.0, rows.last()?.0);
    let left = rows.iter().map(|r| r.1).min()?;
    let right = rows.iter().map(|r| r.2).max()?;
    Some((left, top, right - left, bottom - top + 1))
}

/// Watches the VNC server on `port` from `t0` (the VMM's start) until GRUB's menu shows,
/// the connection ends or `TIMEOUT` passes, telling `tx` what it sees; with `frames`, every
/// frame goes there as `LABEL-MILLISECONDS-WxH.png`.
fn watch(port: u16, t0: Instant, tx: mpsc::Sender<Event>, frames: Option<(PathBuf, String)>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let at = || t0.elapsed().as_secs_f64();
    // Reads wait for the next change as long as a boot may take.
    let opts = ClientOptions {
        timeout: TIMEOUT,
        ..ClientOptions::default()
    };
    let mut client = loop {
        match Client::connect(addr, &opts) {
            Ok(c) => break c,
            Err(e) if t0.elapsed() > TIMEOUT => {
                let _ = tx.send(Event::Ended(format!("connect to {addr}: {e}")));
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let setup = client
        .set_pixel_format(PixelFormat::NATIVE)
        .and_then(|()| client.set_encodings(&[number::RAW, number::DESKTOP_SIZE]));
    if let Err(e) = setup {
        let _ = tx.send(Event::Ended(format!("VNC set-up: {e}")));
        return;
    }
    // Each pixel row's longest run (kept up to date row by row), the size, and whether
    // a pixel at this size was not black yet.
    let mut runs: Vec<Option<(u32, usize, usize)>> = Vec::new();
    let mut size = (0, 0);
    let mut lit = false;
    let mut incremental = false;
    loop {
        let rects = match client.update(incremental) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Event::Ended(format!("VNC: {e}")));
                return;
            }
        };
        let now = at();
        incremental = true;
        let fb = &client.fb;
        let (w, h) = (fb.width, fb.height);
        if (w, h) != size {
            size = (w, h);
            let _ = tx.send(Event::Size { at: now, w, h });
        }
        for (r, enc) in &rects {
            match *enc {
                number::DESKTOP_SIZE | number::EXTENDED_DESKTOP_SIZE => {
                    // The client's framebuffer starts over, black.
                    runs = vec![None; h];
                    lit = false;
                }
                number::RAW => {
                    let rows =
                        usize::from(r.y).min(h)..(usize::from(r.y) + usize::from(r.h)).min(h);
                    runs.resize(h, None);
                    for y in rows.clone() {
                        runs[y] = longest_run(&fb.pixels[y * w..(y + 1) * w]);
                    }
                    if !lit
                        && rows.clone().any(|y| {
                            let x = usize::from(r.x).min(w);
                            let end = (x + usize::from(r.w)).min(w);
                            fb.pixels[y * w + x..y * w + end]
                                .iter()
                                .any(|p| p & 0xff_ffff != 0)
                        })
                    {
                        lit = true;
                        let _ = tx.send(Event::Lit { at: now, w, h });
                    }
                }
                _ => {}
            }
        }
        if let Some((dir, label)) = &frames {
            let png = dir.join(format!("{label}-{:07}-{w}x{h}.png", (now * 1000.0) as u64));
            common::installer::write_png(&fb.pixels, w, (0, 0, w, h), &png);
        }
        if let Some(area) = menu_area(&runs, w) {
            let _ = tx.send(Event::Menu {
                at: now,
                frame: fb.clone(),
                area,
            });
            return;
        }
    }
}

fn ours(vars: &Path, iso: &Path, display: u16) -> Command {
    let mut c = Command::new(common::vmm_bin());
    c.args(["--firmware", "uefi", "--efi-vars"])
        .arg(vars)
        .args(["--memory", &format!("{MEMORY_MIB}M"), "--cpus", "1"])
        .arg("--cdrom")
        .arg(iso)
        .args(["--vnc", &format!("127.0.0.1:{display}"), "--serial", "none"]);
    c
}

fn qemu(vars: &Path, iso: &Path, display: u16) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-M",
        "pc",
        "-accel",
        "kvm",
        "-cpu",
        "host,-arch-capabilities",
    ])
    .args(["-m", &MEMORY_MIB.to_string(), "-smp", "1"])
    .arg("-drive")
    .arg(format!(
        "if=pflash,format=raw,readonly=on,file={}",
        vmm::firmware::uefi::OVMF_CODE
    ))
    .arg("-drive")
    .arg(format!("if=pflash,format=raw,file={}", vars.display()))
    .arg("-cdrom")
    .arg(iso)
    .args(["-vga", "std", "-vnc", &format!("127.0.0.1:{display}")])
    .args(["-display", "none", "-net", "none", "-serial", "none"])
    // The devices every vmdesk-vmm machine has besides (common::qemu_reference).
    .args(["-device", "virtio-tablet-pci,addr=04.0"])
    .args(["-device", "virtio-serial-pci,addr=05.0,disable-legacy=on"]);
    c
}

/// One boot of `vmm` from its start to GRUB's menu; `None` after saying why when it did
/// not get there (or the OCR check did not read the menu's entry).
fn boot(
    vmm: Vmm,
    n: usize,
    iso: &Path,
    tesseract: &Path,
    dir: &Path,
    frames: Option<&Path>,
) -> Option<Boot> {
    let name = vmm.name();
    let label = format!("{name}-{n}");
    let vars = dir.join(format!("{label}-VARS.fd"));
    vmm::firmware::uefi::create_vars(&vars).expect("a fresh copy of OVMF's variable store");
    let log = dir.join(format!("{label}.log"));
    let display = common::free_vnc_display();
    let mut cmd = match vmm {
        Vmm::Ours => ours(&vars, iso, display),
        Vmm::Qemu => qemu(&vars, iso, display),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the VMM's log file"));
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let mut kids = common::Children::default();
    let pid = kids.add(name, &mut cmd).id();
    let frames = frames.map(|d| (d.to_path_buf(), label.clone()));
    let watcher = std::thread::spawn(move || watch(5900 + display, t0, tx, frames));

    let ram = MEMORY_MIB << 20;
    let mut peak = 0u64;
    let mut sampled = Instant::now();
    let mut lit: Vec<(usize, usize, f64)> = Vec::new();
    let mut failed = None;
    let menu = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Size { at, w, h }) => eprintln!("    {label}: {at:7.2} s  {w}x{h}"),
            Ok(Event::Lit { at, w, h }) => {
                eprintln!("    {label}: {at:7.2} s  {w}x{h} not all black");
                lit.push((w, h, at));
            }
            Ok(Event::Menu { at, frame, area }) => break Some((at, frame, area)),
            Ok(Event::Ended(why)) => {
                failed = Some(why);
                break None;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
        if sampled.elapsed() >= SAMPLE {
            sampled = Instant::now();
            if let Some(m) = memory(pid, ram) {
                peak = peak.max(m.beyond_ram());
            }
        }
        if let Ok(Some(status)) = kids.0[0].try_wait() {
            failed = Some(format!("the VMM exited ({status})"));
            break None;
        }
        if t0.elapsed() > TIMEOUT {
            failed = Some(format!("no GRUB menu within {TIMEOUT:?}"));
            break None;
        }
    };
    let at_menu = menu.as_ref().and_then(|_| memory(pid, ram));
    drop(kids);
    let _ = watcher.join();

    let Some((menu, frame, area)) = menu else {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        println!(
            "  {label}: {}; its log ends: {:?}",
            failed.unwrap_or_else(|| "the watcher ended".into()),
            tail.into_iter().rev().collect::<Vec<_>>()
        );
        return None;
    };
    // The check, with the VMM gone: the menu's area, or the whole screen if that is not
    // enough for tesseract.
    let scratch = dir.join(format!("{label}-menu.png"));
    let (w, h) = (frame.width, frame.height);
    let (x, y, aw, ah) = area;
    let margin = (y.saturating_sub(20), (y + ah + 20).min(h));
    let text = common::installer::read_text(
        tesseract,
        &frame.pixels,
        w,
        (x, margin.0, aw, margin.1 - margin.0),
        &scratch,
    );
    let text = if text.contains(ENTRY) {
        text
    } else {
        common::installer::read_text(tesseract, &frame.pixels, w, (0, 0, w, h), &scratch)
    };
    if !text.contains(ENTRY) {
        println!(
            "  {label}: the frame at {menu:.2} s met the menu's pixel criterion, but OCR does not read {ENTRY:?} in it: {text:?} (not counted; {} kept)",
            scratch.display()
        );
        return None;
    }
    let Some(&(_, _, screen)) = lit.iter().find(|l| (l.0, l.1) == (w, h)) else {
        println!("  {label}: no frame at {w}x{h} was lit before the menu (not counted)");
        return None;
    };
    let Some(m) = at_menu else {
        println!("  {label}: its memory could not be read at the menu (not counted)");
        return None;
    };
    let peak = peak.max(m.beyond_ram());
    eprintln!(
        "    {label}: guest RAM mappings (KiB): {:?}",
        m.ram_maps.iter().map(|s| s / 1024).collect::<Vec<_>>()
    );
    println!(
        "  {label:12} first screen {screen:6.2} s   GRUB's menu {menu:6.2} s   beyond guest RAM: peak {:6.1} MiB, at the menu {:6.1} (Rss {:.1} less guest RAM resident {:.1}; VmHWM {:.1})",
        peak as f64 / MIB,
        m.beyond_ram() as f64 / MIB,
        m.rss as f64 / MIB,
        m.guest_ram as f64 / MIB,
        m.hwm as f64 / MIB,
    );
    Some(Boot {
        screen,
        menu,
        beyond_ram: peak as f64 / MIB,
    })
}

fn inside(runs: usize, frames: Option<&Path>) {
    let Some((iso, tesseract)) = prerequisites() else {
        return;
    };
    if let Some(d) = frames {
        std::fs::create_dir_all(d).expect("the frames directory");
    }
    let dir = common::temp_dir("uefi-boot");
    eprintln!("  (each boot's screen as it changes: seconds from the VMM's start, size)");
    println!(
        "UEFI boot on VNC: OVMF (OVMF_CODE_4M.fd, a fresh OVMF_VARS_4M.fd each boot), {ISO}, {MEMORY_MIB} MiB, 1 vCPU; median of {runs} (alternating):"
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for n in 1..=runs {
        a.extend(boot(Vmm::Ours, n, &iso, &tesseract, &dir, frames));
        b.extend(boot(Vmm::Qemu, n, &iso, &tesseract, &dir, frames));
    }
    let summary = |name: &str, v: &[Boot]| {
        let m = |f: fn(&Boot) -> f64| common::median(v.iter().map(f).collect());
        let (Some(screen), Some(menu), Some(mem)) =
            (m(|b| b.screen), m(|b| b.menu), m(|b| b.beyond_ram))
        else {
            println!("  {name:10}  no complete boots");
            return None;
        };
        println!(
            "  {name:10}  start -> OVMF's first screen {screen:7.2} s   start -> GRUB's menu {menu:7.2} s   peak RSS beyond guest RAM {mem:6.1} MiB   ({} boots)",
            v.len()
        );
        Some((screen, menu, mem))
    };
    let ours = summary(Vmm::Ours.name(), &a);
    let theirs = summary(Vmm::Qemu.name(), &b);
    if let (Some(o), Some(q)) = (ours, theirs) {
        let goal = |r: f64| if r <= GOAL { "met" } else { "not met" };
        let (screen, menu, mem) = (o.0 / q.0, o.1 / q.1, o.2 / q.2);
        println!(
            "  ratio vmdesk/qemu: first screen {screen:.3} (goal <= {GOAL}: {})   GRUB's menu {menu:.3} (goal <= {GOAL}: {})   memory beyond guest RAM {mem:.3}",
            goal(screen),
            goal(menu)
        );
    }
}
