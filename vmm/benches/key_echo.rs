//! Key event sent by a VNC client → the changed pixels back at that client, with the
//! real-mode program `tests/guests/keyecho.S` (it echoes each key through the BIOS
//! teletype) booted from an option ROM: median and p99 over 200 keys, vmdesk-vmm beside
//! QEMU with the same program and SeaBIOS in the same run.
//!
//! For each key the client has an incremental update request pending, sends the key
//! (down, up) and reads updates until the glyph pixels of the text cell where that key's
//! echo lands change (a late part of the previous key's echo does not count). Only the
//! top 13 scan lines of each 16-line cell count: the VGA BIOS's cursor lives in lines
//! 13–15, so a cursor blink is never taken for the echo.
//!
//! `cargo bench -p vmm --bench key_echo` (needs binutils; QEMU is skipped when missing).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use display::client::{Client, ClientOptions, Framebuffer};
use display::encoding::number;
use display::pixel::PixelFormat;
use display::rfb::protocol::ClientMessage;

const KEYS: usize = 200;
const PROMPT: &str = "vmdesk-guest keyecho: type> ";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Text cells are 16 lines high; the cursor uses lines 13-15.
const CELL_HEIGHT: usize = 16;
const GLYPH_LINES: usize = 13;

/// Text cells are 9 pixels wide.
const CELL_WIDTH: usize = 9;
const COLUMNS: usize = 80;

/// The text cells whose glyph lines differ between two frames, as (row, column).
fn changed_cells(a: &Framebuffer, b: &Framebuffer) -> Vec<(usize, usize)> {
    if (a.width, a.height) != (b.width, b.height) {
        return vec![(usize::MAX, usize::MAX)];
    }
    let mut cells = Vec::new();
    for y in (0..a.height).filter(|y| y % CELL_HEIGHT < GLYPH_LINES) {
        for x in 0..a.width {
            let i = y * a.width + x;
            let cell = (y / CELL_HEIGHT, x / CELL_WIDTH);
            if a.pixels[i] != b.pixels[i] && !cells.contains(&cell) {
                cells.push(cell);
            }
        }
    }
    cells
}

/// Types KEYS keys at the server and returns each key's latency in milliseconds.
/// Also returns how many echoes were first seen incomplete.
fn measure(addr: SocketAddr) -> Result<(Vec<f64>, usize), String> {
    // The prompt reaches the debug console as the program writes it; let the display
    // catch up (a refresh settles for a few ms and draws at most every 16 ms) so the
    // first full update holds all of it, or key 0 would take the prompt's tail for its
    // echo and every later key would be looked for in the wrong cell.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Client::connect(addr, &ClientOptions::default()).map_err(|e| e.to_string())?;
    c.set_pixel_format(PixelFormat::NATIVE)
        .map_err(|e| e.to_string())?;
    c.set_encodings(&[number::RAW, number::DESKTOP_SIZE])
        .map_err(|e| e.to_string())?;
    c.update(false).map_err(|e| e.to_string())?;
    let mut latencies = Vec::with_capacity(KEYS);
    let mut start: Option<(usize, usize)> = None;
    let mut first_seen = Vec::with_capacity(KEYS);
    // One key first, not measured: the first echo may pay for a mode or size change.
    for i in 0..=KEYS {
        let keysym = u32::from(b'a' + (i % 26) as u8);
        let before = c.fb.clone();
        c.request(true).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        for down in [true, false] {
            c.send(&ClientMessage::KeyEvent { down, keysym })
                .map_err(|e| e.to_string())?;
        }
        // The echo of key i lands in the cell after key i-1's (the program starts at the
        // prompt's end; key 0 finds where that is).
        let want = start.map(|(row, col): (usize, usize)| {
            let n = col + i;
            ((row + n / COLUMNS).min(24), n % COLUMNS)
        });
        loop {
            c.next_update().map_err(|e| e.to_string())?;
            let cells = changed_cells(&before, &c.fb);
            let hit = match want {
                Some(cell) => cells.contains(&cell),
                None => !cells.is_empty(),
            };
            if hit {
                if start.is_none() {
                    start = cells.iter().copied().min();
                }
                break;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(format!(
                    "no echo of key {i} within 5 s (want cell {want:?})"
                ));
            }
            c.request(true).map_err(|e| e.to_string())?;
        }
        if i > 0 {
            latencies.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        if let Some(cell) = want {
            first_seen.push((cell, cell_pixels(&c.fb, cell)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Was each echo whole when it was first seen? A cell that changed again later was
    // sent in parts (the client saw a half-drawn glyph).
    std::thread::sleep(Duration::from_millis(300));
    c.update(false).map_err(|e| e.to_string())?;
    let torn = first_seen
        .iter()
        .filter(|(cell, px)| cell_pixels(&c.fb, *cell) != *px)
        .count();
    Ok((latencies, torn))
}

/// The glyph lines of one text cell.
fn cell_pixels(fb: &Framebuffer, (row, col): (usize, usize)) -> Vec<u32> {
    let mut v = Vec::new();
    for y in row * CELL_HEIGHT..row * CELL_HEIGHT + GLYPH_LINES {
        for x in col * CELL_WIDTH..(col + 1) * CELL_WIDTH {
            v.push(fb.pixels.get(y * fb.width + x).copied().unwrap_or(0));
        }
    }
    v
}

fn report(name: &str, (mut ms, torn): (Vec<f64>, usize)) -> f64 {
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let p99 = ms[(ms.len() * 99 / 100).min(ms.len() - 1)];
    println!(
        "{name:<12} key -> pixels over {} keys: median {median:6.2} ms  p99 {p99:6.2} ms  min {:6.2} ms  (echoes first seen half-drawn: {torn})",
        ms.len(),
        ms[0]
    );
    median
}

fn wait_prompt(child: &mut Child, log: &Path) -> bool {
    common::wait_for_log(child, log, PROMPT, BOOT_TIMEOUT).contains(PROMPT)
}

fn run_ours(rom: &Path, dir: &Path) -> Option<f64> {
    let (mut child, log) = common::spawn_vmm(
        dir,
        "keyecho",
        &[
            "--vnc",
            "127.0.0.1:auto",
            "--serial",
            "none",
            "--option-rom",
            rom.to_str()?,
        ],
    );
    // Keep reading stderr for the VMM's whole life: a closed pipe would fail its writes.
    let stderr = child.stderr.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("vnc: listening on ") {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .and_then(|a| a.parse::<SocketAddr>().ok());
    let result = match addr {
        Some(addr) if wait_prompt(&mut child, &log) => measure(addr),
        Some(_) => Err("the program did not start".into()),
        None => Err("no 'vnc: listening on' line".into()),
    };
    common::stop(&mut child);
    match result {
        Ok(ms) => Some(report("vmdesk-vmm", ms)),
        Err(e) => {
            eprintln!("vmdesk-vmm: {e}");
            None
        }
    }
}

fn run_qemu(rom: &Path, dir: &Path) -> Option<f64> {
    // A free VNC display for QEMU.
    let n = (60..100).find(|n| TcpListener::bind(("127.0.0.1", 5900 + n)).is_ok())?;
    let log = dir.join("qemu-keyecho.log");
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-M", "pc", "-enable-kvm", "-cpu", "host,-arch-capabilities"])
        .args([
            "-m", "512", "-display", "none", "-net", "none", "-serial", "null",
        ])
        .args(["-vnc", &format!("127.0.0.1:{n}")])
        .arg("-debugcon")
        .arg(format!("file:{}", log.display()))
        .args(["-global", "isa-debugcon.iobase=0x402", "-option-rom"])
        .arg(rom)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let result = if wait_prompt(&mut child, &log) {
        measure(SocketAddr::from(([127, 0, 0, 1], 5900 + n)))
    } else {
        Err("the program did not start".into())
    };
    common::stop(&mut child);
    match result {
        Ok(ms) => Some(report("qemu", ms)),
        Err(e) => {
            eprintln!("qemu: {e}");
            None
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us too: only measure
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let name = "key_echo bench";
    if !common::kvm_or_skip(name) {
        return;
    }
    let Some(rom) = common::guests::option_rom(name, "keyecho", &[]) else {
        return;
    };
    let dir = common::temp_dir("bench-keyecho");
    let ours = run_ours(&rom, &dir);
    let qemu = if common::tool_or_skip(name, "qemu-system-x86_64").is_some() {
        run_qemu(&rom, &dir)
    } else {
        None
    };
    if let (Some(o), Some(q)) = (ours, qemu) {
        println!("median ratio vmdesk-vmm / qemu: {:.2}", o / q);
    }
    let _ = std::fs::remove_dir_all(dir);
}
