//! Key event sent by a VNC client → the changed pixels back at that client, for a
//! real-mode program that echoes keys through the BIOS (tests/guests/keyecho.S, built at
//! run time), median and p99 over 200 keys; vmdesk-vmm beside QEMU 7.2 running the same
//! program from the same option ROM. Then each VMM's CPU over 30 s with a static screen.
//!
//! `cargo bench -p vmm --bench key_latency` (resources/scripts/bench.sh installs QEMU).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use display::client::{Client, ClientOptions};
use display::rfb::protocol::ClientMessage;

const KEYS: usize = 200;
const STATIC_SECONDS: u64 = 30;
const PROMPT: &str = "keyecho: type>";

/// Pixels that differ between two frames, leaving out each text cell's two bottom scan
/// lines, where the blinking cursor lives (so a blink is never taken for the echo).
fn glyph_pixels_changed(a: &[u32], b: &[u32], width: usize) -> bool {
    a.iter()
        .zip(b)
        .enumerate()
        .any(|(i, (x, y))| x != y && (i / width) % 16 < 13)
}

fn measure(name: &str, addr: SocketAddr, lost: &mut usize) -> Option<Vec<f64>> {
    let mut c = match Client::connect(addr, &ClientOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            println!("  {name}: cannot connect: {e}");
            return None;
        }
    };
    c.set_encodings(&[0]).ok()?; // Raw: both servers, no decoder cost to speak of
    c.update(false).ok()?;
    let mut lat = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        // Letters a..z (a space would change no glyph pixels, only move the cursor).
        let keysym = u32::from(b'a') + (i % 26) as u32;
        // A typist's pace, and the guest is back waiting in int 16h.
        std::thread::sleep(Duration::from_millis(50));
        let before = c.fb.pixels.clone();
        let mut t = Instant::now();
        let mut tries = 0;
        for down in [true, false] {
            c.send(&ClientMessage::KeyEvent { down, keysym }).ok()?;
        }
        loop {
            if c.update(true).is_err() {
                println!("  {name}: the connection broke after {i} keys");
                return None;
            }
            if glyph_pixels_changed(&before, &c.fb.pixels, c.fb.width) {
                break;
            }
            if t.elapsed() > Duration::from_secs(2) {
                // The guest never showed the key: count it lost, press it again.
                tries += 1;
                *lost += 1;
                if tries == 5 {
                    println!("  {name}: key {i} never showed after {tries} presses");
                    return None;
                }
                t = Instant::now();
                for down in [true, false] {
                    c.send(&ClientMessage::KeyEvent { down, keysym }).ok()?;
                }
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Some(lat)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// User + system CPU seconds of a process, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

fn wait_for(log: &Path, needle: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

fn run(
    name: &str,
    mut cmd: Command,
    log: &Path,
    addr: SocketAddr,
) -> Option<(Vec<f64>, f64, usize)> {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let result = (|| {
        if !wait_for(log, PROMPT, Duration::from_secs(120)) {
            println!("  {name}: the program never printed its prompt");
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut lost = 0;
        let lat = measure(name, addr, &mut lost)?;
        // Static screen: a client stays connected with an update request pending.
        let mut idle = Client::connect(addr, &ClientOptions::default()).ok()?;
        idle.update(false).ok()?;
        idle.request(true).ok()?;
        let before = cpu_seconds(child.id())?;
        std::thread::sleep(Duration::from_secs(STATIC_SECONDS));
        let cpu = (cpu_seconds(child.id())? - before) / STATIC_SECONDS as f64 * 100.0;
        Some((lat, cpu, lost))
    })();
    if result.is_none() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = text
            .chars()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        println!("  {name}: the guest's log ends with {tail:?}");
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn free_display() -> u16 {
    (40..99)
        .find(|n| std::net::TcpListener::bind(("127.0.0.1", 5900 + n)).is_ok())
        .expect("a free VNC display")
}

fn main() {
    let Some(rom) = common::guests::option_rom("key_latency", "keyecho", &[]) else {
        println!("key_latency: skipped (binutils missing)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("vmdesk-key-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "VNC key -> echoed pixels at the client, {KEYS} keys (keyecho.S via int 16h/int 10h):"
    );

    let n = free_display();
    let log = dir.join("ours.log");
    let mut ours = Command::new(common::vmm_bin());
    ours.args([
        "--memory",
        "128M",
        "--serial",
        "none",
        "--vnc",
        &format!("127.0.0.1:{n}"),
    ])
    .arg("--option-rom")
    .arg(&rom)
    .arg("--debugcon")
    .arg(format!("file:{}", log.display()));
    let addr: SocketAddr = format!("127.0.0.1:{}", 5900 + n).parse().unwrap();
    let ours = run("vmdesk-vmm", ours, &log, addr);

    let n = free_display();
    let log = dir.join("qemu.log");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-M",
        "pc",
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-m",
        "128",
        "-net",
        "none",
    ])
    .args(["-display", "none", "-vnc", &format!("127.0.0.1:{n}")])
    .arg("-option-rom")
    .arg(&rom)
    .args([
        "-debugcon",
        &format!("file:{}", log.display()),
        "-global",
        "isa-debugcon.iobase=0x402",
    ]);
    let addr: SocketAddr = format!("127.0.0.1:{}", 5900 + n).parse().unwrap();
    let qemu = run("qemu 7.2", qemu, &log, addr);

    let mut medians = Vec::new();
    for (name, r) in [("vmdesk-vmm", ours), ("qemu 7.2  ", qemu)] {
        if let Some((mut lat, cpu, lost)) = r {
            let (med, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
            println!(
                "  {name}  median {med:6.2} ms   p99 {p99:6.2} ms   presses lost {lost}   static screen {cpu:5.2}% of a core over {STATIC_SECONDS} s"
            );
            medians.push(med);
        }
    }
    if let [a, b] = medians[..] {
        println!(
            "  ratio vmdesk/qemu (median latency): {:.3}x   (target: under 10 ms)",
            a / b
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
