//! Time from start to Debian's graphical installer asking for a language, on VNC: vmdesk
//! (`vmdesk start` of a VM made with `vmdesk create --cdrom`) against QEMU (`-accel kvm
//! -cpu host -vga std`), the same CD (test-assets.sh's debian-installer-gtk.iso), memory,
//! vCPU and disk (issue 14's figure; goal ≤ 0.8). Each is watched the same way: a VNC
//! screenshot (vncdotool) read by OCR (`common::installer`) about once a second; on the
//! installer's boot menu, which waits for a key, Return goes in over VNC at once. Printed:
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

/// Polls the VNC screen on `port` until it shows `screen`; the seconds since `t0`.
fn wait_screen(
    tools: &Tools,
    dir: &Path,
    port: u16,
    screen: Screen,
    before: Option<Screen>,
    t0: Instant,
) -> Option<f64> {
    let png = dir.join("screen.png");
    while t0.elapsed() < TIMEOUT {
        let shot = Command::new(&tools.vncdo)
            .arg("-s")
            .arg(format!("127.0.0.1::{port}"))
            .arg("capture")
            .arg(&png)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if shot.is_ok_and(|s| s.success()) {
            let text = installer::read_screen(&tools.tesseract, &png);
            if installer::shows(&text, screen, before) {
                return Some(t0.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("  no {} screen within {TIMEOUT:?}", screen.name);
    None
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
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run qemu-system-x86_64");
            qemu = Some(common::Children(vec![child]));
        }
    }
    let dir = env.root.clone();
    let result = (|| {
        let menu = wait_screen(tools, &dir, port, BOOT_MENU, None, t0)?;
        common::vncdo(&tools.vncdo, port, &["key", "enter"]);
        let language = wait_screen(tools, &dir, port, LANGUAGE, Some(BOOT_MENU), t0)? - menu;
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
