//! Time from start to Debian's graphical installer asking for a language, on VNC: vmdesk
//! (`vmdesk start` of a VM made with `vmdesk create --cdrom`) against QEMU (`-accel kvm
//! -cpu host -vga std`), the same CD (test-assets.sh's debian-installer-gtk.iso), memory,
//! vCPU and disk (issue 14's figure; goal ≤ 0.8). Each is watched the same way: a
//! screenshot of the VMM's own framebuffer (`vmdesk screenshot`; QEMU's `screendump` over
//! QMP), read by OCR (`common::installer`) when it changed, about once a second; on the
//! installer's boot menu, which waits for a key, Return goes in over VNC at once (what a
//! VNC client shows is that framebuffer: vncdotool's own captures, a Python start each,
//! took several seconds apiece in the nested host and blur the figure). Printed:
//! start to the menu, the key to the language screen, start to the language screen;
//! medians of `RUNS`, alternating, and the ratios.
//!
//! `cargo bench -p vmdesk --bench installer_screen` (after resources/scripts/install-deps.sh
//! bench and test-assets.sh). On a kvm_pvm host the measuring runs inside the nested test
//! host (resources/scripts/nested-host.sh), where TCG sets the pace: only the ratios mean
//! anything there.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::installer::{self, BOOT_MENU, LANGUAGE, Screen};

const RUNS: usize = 3;
const MEMORY_MIB: u64 = 1024;
const TIMEOUT: Duration = Duration::from_secs(900);

fn main() {
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    if std::env::args().any(|a| a == "--inside") || !kvm_pvm {
        inside();
        return;
    }
    common::ensure_vmm();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/scripts/nested-host.sh");
    let status = Command::new(&script)
        .args(["--timeout", "3000", "--"])
        .arg(std::env::current_exe().expect("this benchmark's path"))
        .arg("--inside")
        .status()
        .expect("run the benchmark in the nested host");
    if !status.success() {
        println!("  the measurement in the nested host failed ({status})");
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Vmm {
    Ours,
    Qemu,
}

/// Seconds from start to the boot menu, and from there (the key) to the language screen.
struct Run {
    menu: f64,
    language: f64,
}

struct Tools {
    vncdo: PathBuf,
    tesseract: PathBuf,
}

/// Polls the screen (`shoot` writes a PNG of it to its argument) until it shows `screen`;
/// the seconds since `t0`. Says what it reads as it changes.
fn wait_screen(
    tools: &Tools,
    dir: &Path,
    shoot: &dyn Fn(&Path) -> bool,
    screen: Screen,
    before: Option<Screen>,
    t0: Instant,
) -> Option<f64> {
    let png = dir.join("screen.png");
    let mut last: Option<Vec<u32>> = None;
    while t0.elapsed() < TIMEOUT {
        if shoot(&png) {
            let (w, h, px) = common::png_pixels(&png);
            if last.as_ref() != Some(&px) {
                let rows = (h as f64 * installer::READ_FRACTION) as usize;
                let text = installer::read_text(
                    &tools.tesseract,
                    &px,
                    w,
                    (0, 0, w, rows),
                    &dir.join("ocr.png"),
                );
                eprintln!(
                    "    {:6.1} s  {w}x{h}  {:?}",
                    t0.elapsed().as_secs_f64(),
                    text.chars().take(60).collect::<String>()
                );
                if installer::shows(&text, screen, before) {
                    return Some(t0.elapsed().as_secs_f64());
                }
                last = Some(px);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("  no {} screen within {TIMEOUT:?}", screen.name);
    None
}

/// QEMU's `screendump` of its display to `png`, through its QMP socket.
fn qmp_screendump(socket: &Path, png: &Path) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    // The greeting, then the answers to the two commands (events may come between).
    let mut answer = |reader: &mut BufReader<_>| loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => {
                if line.contains("\"return\"") {
                    return true;
                }
                if line.contains("\"error\"") {
                    return false;
                }
            }
            _ => return false,
        }
    };
    let mut w = &stream;
    let mut greeting = String::new();
    if reader.read_line(&mut greeting).is_err() {
        return false;
    }
    let cmd = format!(
        "{{\"execute\":\"qmp_capabilities\"}}\n{{\"execute\":\"screendump\",\"arguments\":{{\"filename\":{:?},\"format\":\"png\"}}}}\n",
        png.display().to_string()
    );
    w.write_all(cmd.as_bytes()).is_ok() && answer(&mut reader) && answer(&mut reader)
}

fn run(vmm: Vmm, tools: &Tools, iso: &Path, n: usize) -> Option<Run> {
    let env = common::Env::new(&format!("bench{n}"));
    let name = format!("b{n}");
    let port = 5990;
    let mut qemu = None;
    let t0;
    match vmm {
        Vmm::Ours => {
            let o = env.vmdesk(&[
                "create",
                "--name",
                &name,
                "--memory",
                &format!("{MEMORY_MIB}M"),
                "--cdrom",
                iso.to_str().unwrap(),
                "--disk",
                "size=4G",
                "--vnc",
                "127.0.0.1:90",
                // As QEMU's `-net none` below: the same machine on both sides.
                "--network",
                "none",
            ]);
            assert!(o.status.success(), "vmdesk create: {}", common::text(&o));
            t0 = Instant::now();
            let o = env.vmdesk(&["start", &name]);
            assert!(o.status.success(), "vmdesk start: {}", common::text(&o));
        }
        Vmm::Qemu => {
            let disk = env.root.join("disk.qcow2");
            common::run(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(&disk)
                    .arg("4G"),
            );
            t0 = Instant::now();
            let child = Command::new("qemu-system-x86_64")
                .args(["-M", "pc", "-accel", "kvm", "-cpu", "host"])
                .args(["-m", &MEMORY_MIB.to_string(), "-vga", "std"])
                .args(["-display", "none", "-vnc", "127.0.0.1:90", "-net", "none"])
                .arg("-cdrom")
                .arg(iso)
                .arg("-drive")
                .arg(format!("file={},if=virtio,format=qcow2", disk.display()))
                .args(["-boot", "order=cd"])
                .arg("-qmp")
                .arg(format!(
                    "unix:{},server=on,wait=off",
                    env.root.join("qmp.sock").display()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run qemu-system-x86_64");
            qemu = Some(common::Children(vec![child]));
        }
    }
    let dir = env.root.clone();
    let qmp = env.root.join("qmp.sock");
    let shoot = |png: &Path| -> bool {
        match vmm {
            Vmm::Ours => env
                .command(&["screenshot", &name, png.to_str().unwrap()])
                .output()
                .is_ok_and(|o| o.status.success()),
            Vmm::Qemu => qmp_screendump(&qmp, png),
        }
    };
    let result = (|| {
        let menu = wait_screen(tools, &dir, &shoot, BOOT_MENU, None, t0)?;
        common::vncdo(&tools.vncdo, port, &["key", "enter"]);
        let language = wait_screen(tools, &dir, &shoot, LANGUAGE, Some(BOOT_MENU), t0)? - menu;
        Some(Run { menu, language })
    })();
    if vmm == Vmm::Ours {
        let _ = env.vmdesk(&["destroy", &name]);
    }
    drop(qemu);
    result
}

fn inside() {
    let test = "installer_screen";
    let (Some(iso), Some(vncdo), Some(tesseract)) = (
        common::asset_or_skip(test, installer::ISO),
        common::tool_or_skip(test, "vncdo"),
        common::tool_or_skip(test, "tesseract"),
    ) else {
        return;
    };
    let tools = Tools { vncdo, tesseract };
    eprintln!("  (each run's screens as they change: seconds from start, size, text)");
    println!(
        "start to Debian 12's graphical installer's language screen on VNC: {MEMORY_MIB} MiB, 1 vCPU, median of {RUNS} (alternating):"
    );
    let (mut ours, mut qemu) = (Vec::new(), Vec::new());
    for n in 0..RUNS {
        ours.extend(run(Vmm::Ours, &tools, &iso, n));
        qemu.extend(run(Vmm::Qemu, &tools, &iso, n));
    }
    let summary = |name: &str, v: &[Run]| {
        let m = |f: fn(&Run) -> f64| common::median(v.iter().map(f).collect());
        let (Some(menu), Some(language), Some(whole)) =
            (m(|r| r.menu), m(|r| r.language), m(|r| r.menu + r.language))
        else {
            println!("  {name:10}  no complete runs");
            return None;
        };
        println!(
            "  {name:10}  start to boot menu {menu:7.1} s   key to language screen {language:7.1} s   start to language screen {whole:7.1} s   ({} runs)",
            v.len()
        );
        Some((menu, language, whole))
    };
    let a = summary("vmdesk", &ours);
    let b = summary("qemu", &qemu);
    if let (Some(o), Some(q)) = (a, b) {
        println!(
            "  ratio vmdesk/qemu: to the menu {:.3}x   menu to language {:.3}x   start to language screen {:.3}x",
            o.0 / q.0,
            o.1 / q.1,
            o.2 / q.2
        );
    }
}
