//! noVNC in headless Chromium against TigerVNC's `vncviewer` on the same changing screen,
//! from the same server (issue 18: "updates shown per second, ratio").
//!
//! The server is this crate's `VncServer` on loopback, fed by a thread that repaints the
//! whole 1920x1080 surface in a new colour continuously (as `app/benches/console.rs`
//! does); it sends at most 60 updates a second. The viewers take turns, alternating which
//! goes first in each round, and each run is a fresh viewer:
//!
//! - noVNC: the npm package (`resources/scripts/novnc-assets.sh`) in Debian's chromium,
//!   driven as `display/tests/novnc.rs` drives it (`tests/novnc/driver.cjs`, `page.html`),
//!   with a 1920x1080 page so the whole canvas is on screen. It speaks RFB over WebSocket.
//! - TigerVNC's `vncviewer` under Xvfb, plain RFB.
//!
//! Counting: a proxy in front of the server counts, for both, the framebuffer updates with
//! pixels that the viewer has taken off the wire in full, per second over the measured
//! window (the same count at the same place for both). For noVNC it first takes the
//! WebSocket frames apart (its HTTP upgrade passes through; server frames are unmasked,
//! client frames masked). A viewer reads its socket only as fast as it decodes (TigerVNC's
//! decode queue and Chromium's WebSocket flow control push back), so what is taken is what
//! gets drawn, give or take a socket buffer. noVNC's page also counts what it drew (updates
//! finished onto its canvas) and the animation frames that showed a new one; the two
//! counts beside the proxy's check that the proxy's count is not bytes parked in a buffer.
//!
//! Encoding: Raw for both. TigerVNC with `-PreferredEncoding=raw -AutoSelect=0`; noVNC has
//! no such setting (it asks for Tight first, which here would send one solid rectangle per
//! update), so the bench page drops every pixel encoding but Raw from the list it sends.
//! Both keep CopyRect and the pseudo-encodings; both ask for 32-bit pixels. The proxy
//! follows Raw and CopyRect only, so a run in any other encoding fails, never counts.
//!
//! CPU: utime+stime over the window, in % of one core: vncviewer's process (and, apart,
//! the Xvfb it draws through), Chromium's whole process tree (browser, renderer, GPU
//! process, utilities); the Node driver and this process (server, proxy) are not counted.
//!
//! `cargo bench -p display --bench novnc` (NOVNC_BENCH_RUNS=N for N runs each, default 5);
//! needs Xvfb, vncviewer, node and chromium (resources/scripts/install-deps.sh bench) and
//! target/assets/novnc (novnc-assets.sh). Prints each run, the medians and the ratio.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The tests' Xvfb (it picks a free display itself).
#[path = "../../vmm/tests/common/x11.rs"]
#[allow(dead_code)]
mod x11;

use display::encoding::Rect;
use display::rfb::protocol::{ClientMessage, Limits, ProtocolError, read_client_message};
use display::rfb::{NullInput, VncConfig, VncServer};
use display::surface::Surface;

const W: u16 = 1920;
const H: u16 = 1080;
const WARM_UP: Duration = Duration::from_secs(3);
const WINDOW: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench -- --list` and the like: nothing to list.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("NOVNC_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut tools = Vec::new();
    for tool in ["Xvfb", "vncviewer", "node", "chromium"] {
        match which(tool) {
            Some(p) => tools.push(p),
            None => {
                println!("novnc bench: skipped: {tool} not found (install-deps.sh bench)");
                return;
            }
        }
    }
    let (node, chromium) = (tools[2].clone(), tools[3].clone());
    let novnc_version = package_version("@novnc/novnc");
    if novnc_version.is_none() || package_version("puppeteer-core").is_none() {
        println!(
            "novnc bench: skipped: noVNC or puppeteer-core not in {} (resources/scripts/novnc-assets.sh)",
            node_modules().display()
        );
        return;
    }
    let xvfb = x11::Xvfb::with_screen("1920x1200x24").expect("Xvfb did not start");
    let xvfb_pid = child_named(std::process::id(), "Xvfb");

    let surface = Surface::new(W, H);
    let stop = Arc::new(AtomicBool::new(false));
    let painter = {
        let (surface, stop) = (surface.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                // A new colour over the whole screen, as a guest redrawing continuously.
                surface.fill_rect(
                    Rect::new(0, 0, W, H),
                    i.wrapping_mul(0x0003_0507) & 0xff_ffff,
                );
                std::thread::sleep(Duration::from_millis(8));
            }
        })
    };
    let server = VncServer::start(
        VncConfig::new("127.0.0.1:0".parse().unwrap()),
        surface.clone(),
        Arc::new(NullInput),
    )
    .expect("server");

    println!(
        "novnc bench: noVNC {} in {} (headless) vs {} vncviewer under Xvfb {}",
        novnc_version.unwrap_or_default(),
        version_line(&chromium, "--version"),
        version_line(Path::new("vncviewer"), "-h"),
        xvfb.display,
    );
    println!(
        "  whole {W}x{H} screen changing, Raw for both, server cap 60 updates/s; {runs} runs each \
         ({} s warm-up, {} s measured), alternating; {} CPUs, load average {}",
        WARM_UP.as_secs(),
        WINDOW.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    // What the server and the proxy can carry over WebSocket to a client that decodes
    // nothing: the ceiling for noVNC's figure on this machine.
    match run_reader(server.local_addr()) {
        Ok(rate) => println!(
            "  ceiling: a client that only reads (RFB over WebSocket, Raw) {rate:6.1} updates/s"
        ),
        Err(e) => println!("  ceiling: failed: {e}"),
    }
    let mut got: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..runs {
        let order = if round % 2 == 0 {
            [Viewer::NoVnc, Viewer::Tiger]
        } else {
            [Viewer::Tiger, Viewer::NoVnc]
        };
        for v in order {
            let run = match v {
                Viewer::NoVnc => run_novnc(server.local_addr(), &node, &chromium, round),
                Viewer::Tiger => run_tiger(server.local_addr(), &xvfb.display, xvfb_pid),
            };
            match run {
                Ok(r) => {
                    println!("  run {}: {:<9} {}", round + 1, v.name(), r.describe());
                    got[v as usize].push(r);
                }
                Err(e) => println!("  run {}: {:<9} failed: {e}", round + 1, v.name()),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = painter.join();

    println!("  medians over the runs:");
    let mut rates = [f64::NAN; 2];
    for v in [Viewer::NoVnc, Viewer::Tiger] {
        let runs = &got[v as usize];
        let med = |f: &dyn Fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        rates[v as usize] = med(&|r| r.rate);
        let extra = match v {
            Viewer::NoVnc => format!(
                "; drawn by noVNC {:.1}/s, animation frames with a new one {:.1}/s",
                med(&|r| r.drawn.unwrap_or(f64::NAN)),
                med(&|r| r.painted.unwrap_or(f64::NAN)),
            ),
            Viewer::Tiger => format!(
                "; Xvfb {:.0}% of a core",
                med(&|r| r.xvfb_cpu.unwrap_or(f64::NAN))
            ),
        };
        println!(
            "    {:<9} {:6.1} updates/s ({} runs), CPU {:.0}% of a core{extra}",
            v.name(),
            rates[v as usize],
            runs.len(),
            med(&|r| r.cpu)
        );
    }
    // vncviewer reaches the server's cap, where the rate stops telling the viewers apart;
    // the CPU each spends on an update still does.
    let per_update = |v: Viewer, f: &dyn Fn(&Run) -> Option<f64>| {
        let ms: Vec<f64> = got[v as usize]
            .iter()
            .map(|r| f(r).unwrap_or(f64::NAN) * 10.0 / r.rate)
            .collect();
        median(&ms)
    };
    println!(
        "  CPU per update: noVNC {:.1} ms (Chromium's processes), vncviewer {:.1} ms (+ Xvfb {:.1} ms)",
        per_update(Viewer::NoVnc, &|r| Some(r.cpu)),
        per_update(Viewer::Tiger, &|r| Some(r.cpu)),
        per_update(Viewer::Tiger, &|r| r.xvfb_cpu),
    );
    println!(
        "  updates per second, ratio noVNC/vncviewer: {:.2} (load average after: {})",
        rates[0] / rates[1],
        load_average()
    );
}

#[derive(Clone, Copy)]
enum Viewer {
    NoVnc = 0,
    Tiger = 1,
}

impl Viewer {
    fn name(self) -> &'static str {
        match self {
            Viewer::NoVnc => "noVNC",
            Viewer::Tiger => "vncviewer",
        }
    }
}

/// One viewer's run, over the measured window.
struct Run {
    /// Updates with pixels taken in full, at the proxy, per second.
    rate: f64,
    /// The viewer's CPU, % of one core.
    cpu: f64,
    /// noVNC: Chromium's CPU by process type (renderer, GPU, utility, browser).
    kinds: Option<[f64; 4]>,
    /// noVNC: updates it finished onto its canvas, per second.
    drawn: Option<f64>,
    /// noVNC: animation frames that showed a new update, per second.
    painted: Option<f64>,
    /// vncviewer: Xvfb's CPU, % of one core.
    xvfb_cpu: Option<f64>,
}

impl Run {
    fn describe(&self) -> String {
        let mut s = format!("{:6.1} updates/s, CPU {:4.0}%", self.rate, self.cpu);
        if let (Some(d), Some(p)) = (self.drawn, self.painted) {
            s += &format!(" (drawn {d:.1}/s, frames with a new one {p:.1}/s)");
        }
        if let Some([r, g, u, b]) = self.kinds {
            s += &format!(
                " [Chromium: renderer {r:.0}%, GPU {g:.0}%, utility {u:.0}%, browser {b:.0}%]"
            );
        }
        if let Some(x) = self.xvfb_cpu {
            s += &format!(" (+ Xvfb {x:.0}%)");
        }
        s
    }
}

fn run_novnc(
    server: SocketAddr,
    node: &Path,
    chromium: &Path,
    round: usize,
) -> Result<Run, String> {
    let proxy = Proxy::start(server, true);
    let dir =
        std::env::temp_dir().join(format!("vmdesk-novnc-bench-{}-{round}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = (|| {
        let mut driver = Driver::start(node, chromium, proxy.addr.port(), &dir)?;
        proxy.wait_updates(1, Duration::from_secs(30))?;
        std::thread::sleep(WARM_UP);
        let browser = driver.browser_pid()?;
        let (u0, c0, t0) = (proxy.updates(), driver.count()?, tree_ticks(browser));
        let start = Instant::now();
        std::thread::sleep(WINDOW);
        let (u1, c1, t1) = (proxy.updates(), driver.count()?, tree_ticks(browser));
        let secs = start.elapsed().as_secs_f64();
        proxy.check()?;
        let pct = |t: u64| t as f64 / ticks_per_second() / secs * 100.0;
        let kinds = ["renderer", "gpu-process", "utility", "browser"]
            .map(|k| pct(ticks_delta(&of_kind(&t0, k), &of_kind(&t1, k))));
        Ok(Run {
            rate: (u1 - u0) as f64 / secs,
            cpu: pct(ticks_delta(&t0, &t1)),
            kinds: Some(kinds),
            drawn: Some(c1.0.saturating_sub(c0.0) as f64 / secs),
            painted: Some(c1.1.saturating_sub(c0.1) as f64 / secs),
            xvfb_cpu: None,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A client of our own over WebSocket that asks for Raw and continuous updates and reads
/// and drops what comes: updates per second at the proxy over the window.
fn run_reader(server: SocketAddr) -> Result<f64, String> {
    let proxy = Proxy::start(server, true);
    let s = TcpStream::connect(proxy.addr).map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let talk = (|| -> io::Result<()> {
        w.write_all(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )?;
        http_head(&mut r)?;
        let mut r = Unframe::new(r);
        let version = read_n(&mut r, 12)?;
        w.write_all(&client_frame(&version))?;
        let n = read_n(&mut r, 1)?[0];
        read_n(&mut r, usize::from(n))?;
        w.write_all(&client_frame(&[1]))?; // None
        read_n(&mut r, 4)?;
        w.write_all(&client_frame(&[1]))?; // shared
        let init = read_n(&mut r, 24)?;
        skip(&mut r, u64::from(u32_at(&init, 20)))?;
        // SetEncodings: Raw, ContinuousUpdates; then EnableContinuousUpdates for the
        // whole screen and one full update request.
        let mut m = vec![2, 0, 0, 2];
        for e in [0i32, -313] {
            m.extend_from_slice(&e.to_be_bytes());
        }
        m.extend_from_slice(&[150, 1, 0, 0, 0, 0]);
        m.extend_from_slice(&W.to_be_bytes());
        m.extend_from_slice(&H.to_be_bytes());
        m.extend_from_slice(&[3, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&W.to_be_bytes());
        m.extend_from_slice(&H.to_be_bytes());
        w.write_all(&client_frame(&m))?;
        std::thread::spawn(move || io::copy(&mut r, &mut io::sink()));
        Ok(())
    })();
    talk.map_err(|e| format!("handshake: {e}"))?;
    proxy.wait_updates(1, Duration::from_secs(30))?;
    std::thread::sleep(WARM_UP);
    let u0 = proxy.updates();
    let start = Instant::now();
    std::thread::sleep(WINDOW);
    let rate = (proxy.updates() - u0) as f64 / start.elapsed().as_secs_f64();
    proxy.check()?;
    let _ = w.shutdown(Shutdown::Both);
    Ok(rate)
}

/// A masked binary frame, as a client sends.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x82];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn run_tiger(server: SocketAddr, display: &str, xvfb: Option<u32>) -> Result<Run, String> {
    let proxy = Proxy::start(server, false);
    let mut child = Command::new("vncviewer")
        .args([
            "-PreferredEncoding=raw",
            "-AutoSelect=0",
            "-FullColor=1",
            "-Shared=1",
            "-SecurityTypes=None",
            "-AlertOnFatalError=0",
            "-ReconnectOnError=0",
        ])
        .arg(format!("127.0.0.1::{}", proxy.addr.port()))
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("vncviewer: {e}"))?;
    let pid = child.id();
    let result = (|| {
        proxy.wait_updates(1, Duration::from_secs(30))?;
        std::thread::sleep(WARM_UP);
        let x_ticks = || xvfb.map_or(0, cpu_ticks);
        let (u0, t0, x0) = (proxy.updates(), cpu_ticks(pid), x_ticks());
        let start = Instant::now();
        std::thread::sleep(WINDOW);
        let (u1, t1, x1) = (proxy.updates(), cpu_ticks(pid), x_ticks());
        let secs = start.elapsed().as_secs_f64();
        if let Ok(Some(status)) = child.try_wait() {
            // Its /proc entry is gone: its CPU would read as nothing.
            return Err(format!("vncviewer exited during the run ({status})"));
        }
        proxy.check()?;
        let pct = |t: u64| t as f64 / ticks_per_second() / secs * 100.0;
        Ok(Run {
            rate: (u1 - u0) as f64 / secs,
            cpu: pct(t1.saturating_sub(t0)),
            kinds: None,
            drawn: None,
            painted: None,
            xvfb_cpu: xvfb.map(|_| pct(x1.saturating_sub(x0))),
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The node_modules folder novnc-assets.sh fills.
fn node_modules() -> PathBuf {
    std::env::var_os("VMDESK_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/assets"))
        .join("novnc/node_modules")
}

/// The version in an installed npm package's package.json.
fn package_version(package: &str) -> Option<String> {
    let manifest =
        std::fs::read_to_string(node_modules().join(package).join("package.json")).ok()?;
    let at = manifest.find("\"version\"")?;
    let rest = &manifest[at + "\"version\"".len()..];
    let start = rest.find('"')? + 1;
    let len = rest[start..].find('"')?;
    Some(rest[start..start + len].to_string())
}

/// `NAME VERSION` from a tool's version output: "Chromium 156.0.8078.129 built on…" and
/// "TigerVNC Viewer 64-bit v1.12.0" give "Chromium 156.0.8078.129" and "TigerVNC 1.12.0".
fn version_line(tool: &Path, flag: &str) -> String {
    let text = Command::new(tool)
        .arg(flag)
        .output()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t += &String::from_utf8_lossy(&o.stderr);
            t
        })
        .unwrap_or_default();
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let words: Vec<&str> = line.unwrap_or("").split_whitespace().collect();
    let version = words.iter().find_map(|w| {
        let v = w.strip_prefix('v').unwrap_or(w);
        (v.starts_with(|c: char| c.is_ascii_digit()) && v.contains('.')).then_some(v)
    });
    match (words.first(), version) {
        (Some(name), Some(v)) => format!("{name} {v}"),
        _ => format!("{} (version unknown)", tool.display()),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn load_average() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The Node driver (display/tests/novnc/driver.cjs): one command a line in, one answer a
/// line out; Chromium goes when it does.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    log: PathBuf,
    /// Where the driver writes Chromium's pid.
    pid_file: PathBuf,
}

impl Driver {
    fn start(node: &Path, chromium: &Path, port: u16, dir: &Path) -> Result<Driver, String> {
        let log = dir.join("driver.log");
        let pid_file = dir.join("browser.pid");
        let mut child = Command::new(node)
            .arg(workspace_root().join("display/tests/novnc/driver.cjs"))
            .arg(node_modules())
            .arg(chromium)
            .arg(port.to_string())
            .arg(dir.join("profile"))
            .arg(&pid_file)
            .arg(format!("encoding=raw&count=1&viewport={W}x{H}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("node: {e}"))?;
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Driver {
            child,
            stdin,
            answers,
            log,
            pid_file,
        };
        // Chromium's start on a busy 2-core machine takes seconds.
        let first = d.answer(Duration::from_secs(120))?;
        if !first.starts_with("connected ") {
            return Err(format!("noVNC did not connect: {first:?}"));
        }
        Ok(d)
    }

    fn answer(&mut self, limit: Duration) -> Result<String, String> {
        self.answers.recv_timeout(limit).map_err(|e| {
            format!(
                "no answer from the noVNC driver ({e}); its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// The page's counts: updates noVNC finished, animation frames with a new one.
    fn count(&mut self) -> Result<(u64, u64), String> {
        writeln!(self.stdin, "count").map_err(|e| e.to_string())?;
        let a = self.answer(Duration::from_secs(60))?;
        let n: Vec<u64> = a
            .strip_prefix("count ")
            .map(|r| r.split(' ').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        match n[..] {
            [u, p] => Ok((u, p)),
            _ => Err(format!("driver answered {a:?} to count")),
        }
    }

    fn browser_pid(&self) -> Result<u32, String> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| "no Chromium pid from the driver".to_string())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Chromium leads a process group of its own (puppeteer starts it so): end that
        // group, then node.
        if let Ok(pid) = self.browser_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fields of /proc/PID/stat after the command name: (ppid, utime + stime).
fn stat_of(stat: &str) -> Option<(u32, u64)> {
    // The name is in parentheses and may hold spaces: count the fields after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the full line, ppid 4, utime 14, stime 15.
    let get = |i: usize| f.get(i - 3).and_then(|s| s.parse::<u64>().ok());
    Some((get(4)? as u32, get(14)? + get(15)?))
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_of(&s))
        .map_or(0, |(_, t)| t)
}

/// Every process: pid -> (ppid, ticks, name).
fn processes() -> HashMap<u32, (u32, u64, String)> {
    let mut all = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map_or("", |(n, _)| n)
            .to_string();
        if let Some((ppid, ticks)) = stat_of(&stat) {
            all.insert(pid, (ppid, ticks, name));
        }
    }
    all
}

/// A child of `parent` called `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    processes()
        .into_iter()
        .find(|(_, (ppid, _, n))| *ppid == parent && n == name)
        .map(|(pid, _)| pid)
}

/// Ticks of `root` and every process below it, by pid.
fn tree_ticks(root: u32) -> HashMap<u32, u64> {
    let all = processes();
    let mut tree = HashMap::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if let Some((_, ticks, _)) = all.get(&p)
            && tree.insert(p, *ticks).is_none()
        {
            todo.extend(
                all.iter()
                    .filter(|(_, (ppid, _, _))| *ppid == p)
                    .map(|(pid, _)| *pid),
            );
        }
    }
    tree
}

/// Ticks spent between two looks at a tree (a process new in the second counts whole;
/// one gone by then is lost, and Chromium's stay for the page's life).
fn ticks_delta(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// The part of a Chromium tree whose processes are of `kind` (their --type=, or
/// "browser" for the one without; Chromium rewrites its children's command lines as one
/// string with spaces).
fn of_kind(tree: &HashMap<u32, u64>, kind: &str) -> HashMap<u32, u64> {
    tree.iter()
        .filter(|(pid, _)| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args = String::from_utf8_lossy(&cmdline);
            let t = args
                .split(['\0', ' '])
                .find_map(|a| a.strip_prefix("--type="))
                .unwrap_or("browser");
            t == kind
        })
        .map(|(p, t)| (*p, *t))
        .collect()
}

fn ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A TCP proxy in front of the server, for one client, that counts the framebuffer
/// updates with pixels the client has taken in full. Every byte passes through unchanged;
/// the parser only watches (`Forward`), so a stream it cannot follow still flows, and
/// the run reports the parser's error.
struct Proxy {
    addr: SocketAddr,
    updates: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
}

impl Proxy {
    fn start(server: SocketAddr, websocket: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        let addr = listener.local_addr().unwrap();
        let updates = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let (count, err) = (updates.clone(), error.clone());
        std::thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let Ok(upstream) = TcpStream::connect(server) else {
                *err.lock().unwrap() = Some("proxy: no connection to the server".into());
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            // Bytes per pixel: ServerInit's, then the client's SetPixelFormat.
            let bpp = Arc::new(AtomicU8::new(4));
            let (c, u, b, e) = (
                client.try_clone().unwrap(),
                upstream.try_clone().unwrap(),
                bpp.clone(),
                err.clone(),
            );
            std::thread::spawn(move || {
                relay(c, u, &e, |r| {
                    if websocket {
                        http_head(r)?;
                        client_messages(&mut Unframe::new(r), &b)
                    } else {
                        client_messages(r, &b)
                    }
                });
            });
            relay(upstream, client, &err, |r| {
                if websocket {
                    let status = http_head(r)?;
                    if !status.starts_with("HTTP/1.1 101") {
                        return Err(bad(format!("server answered the upgrade {status:?}")));
                    }
                    server_messages(&mut Unframe::new(r), &bpp, &count)
                } else {
                    server_messages(r, &bpp, &count)
                }
            });
        });
        Proxy {
            addr,
            updates,
            error,
        }
    }

    fn updates(&self) -> u64 {
        self.updates.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), String> {
        match self.error.lock().unwrap().as_ref() {
            Some(e) => Err(format!("proxy: {e}")),
            None => Ok(()),
        }
    }

    fn wait_updates(&self, n: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.updates() >= n {
                return Ok(());
            }
            self.check()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(format!("no update within {} s", timeout.as_secs()))
    }
}

/// Reads from one socket and writes what it read to the other before handing it on.
struct Forward {
    from: TcpStream,
    to: TcpStream,
}

impl Read for Forward {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.from.read(buf)?;
        self.to.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// One direction of the proxy: everything `from` sends goes to `to` while `watch` parses
/// it. When `watch` cannot follow the stream, its error is recorded and the rest is
/// forwarded unwatched. At the end both sockets are shut, so the other direction ends too.
fn relay(
    from: TcpStream,
    to: TcpStream,
    error: &Mutex<Option<String>>,
    watch: impl FnOnce(&mut BufReader<Forward>) -> io::Result<()>,
) {
    let (a, b) = (from.try_clone().ok(), to.try_clone().ok());
    let mut r = BufReader::with_capacity(256 * 1024, Forward { from, to });
    if let Err(e) = watch(&mut r)
        && e.kind() == io::ErrorKind::InvalidData
    {
        error.lock().unwrap().get_or_insert(e.to_string());
        let _ = io::copy(&mut r, &mut io::sink());
    }
    for s in [a, b].into_iter().flatten() {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// An HTTP message's head, through the empty line; returns its first line.
fn http_head(r: &mut impl BufRead) -> io::Result<String> {
    let mut first = String::new();
    for i in 0..100 {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            return Ok(first);
        }
        if i == 0 {
            first = line.trim_end().to_string();
        }
    }
    Err(bad("HTTP head of more than 100 lines".into()))
}

/// The payload of a stream of WebSocket frames (RFC 6455): binary and continuation frames'
/// payloads, unmasked, in order; pings and pongs skipped; a close frame ends the stream.
struct Unframe<R> {
    inner: R,
    /// Payload bytes left in the current frame.
    left: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes of the current frame read so far (for the mask's phase).
    at: usize,
}

impl<R: Read> Unframe<R> {
    fn new(inner: R) -> Self {
        Unframe {
            inner,
            left: 0,
            mask: None,
            at: 0,
        }
    }
}

impl<R: Read> Read for Unframe<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.left == 0 {
            let mut h = [0u8; 2];
            self.inner.read_exact(&mut h)?;
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.inner.read_exact(&mut b)?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.inner.read_exact(&mut b)?;
                len = u64::from_be_bytes(b);
            }
            let mask = if h[1] & 0x80 != 0 {
                let mut m = [0u8; 4];
                self.inner.read_exact(&mut m)?;
                Some(m)
            } else {
                None
            };
            match h[0] & 0x0f {
                0 | 2 => {
                    self.left = len;
                    self.mask = mask;
                    self.at = 0;
                }
                8 => return Ok(0),
                9 | 10 => skip(&mut self.inner, len)?,
                op => return Err(bad(format!("WebSocket opcode {op:#x} in an RFB stream"))),
            }
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(m) = self.mask {
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b ^= m[(self.at + i) % 4];
            }
        }
        self.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}

fn read_n(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0; n];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The client's side: its handshake (no authentication here), then messages, of which
/// SetPixelFormat says how big a Raw pixel is from then on.
fn client_messages(r: &mut impl Read, bpp: &AtomicU8) -> io::Result<()> {
    // Version, the chosen security type, ClientInit.
    read_n(r, 12 + 1 + 1)?;
    loop {
        match read_client_message(r, &Limits::default()) {
            Ok(ClientMessage::SetPixelFormat(pf)) => {
                bpp.store((pf.bits_per_pixel / 8).max(1), Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(ProtocolError::Io(e)) => return Err(e),
            Err(e) => return Err(bad(format!("client message: {e}"))),
        }
    }
}

/// The server's side: its handshake, then messages; counts each framebuffer update that
/// carried pixels once its last byte has gone to the client.
fn server_messages(r: &mut impl Read, bpp: &AtomicU8, updates: &AtomicU64) -> io::Result<()> {
    // Version; security types (3.8); SecurityResult; ServerInit.
    read_n(r, 12)?;
    let n = read_n(r, 1)?[0];
    read_n(r, usize::from(n))?;
    read_n(r, 4)?;
    let init = read_n(r, 24)?;
    bpp.store((init[4] / 8).max(1), Ordering::SeqCst);
    skip(r, u64::from(u32_at(&init, 20)))?;
    loop {
        match read_n(r, 1)?[0] {
            0 => {
                let rects = u16_at(&read_n(r, 3)?, 1);
                let mut pixels = false;
                for _ in 0..rects {
                    let h = read_n(r, 12)?;
                    let (w, hh) = (u64::from(u16_at(&h, 4)), u64::from(u16_at(&h, 6)));
                    let px = u64::from(bpp.load(Ordering::SeqCst));
                    match u32_at(&h, 8) as i32 {
                        0 => {
                            pixels = true;
                            skip(r, w * hh * px)?;
                        }
                        1 => {
                            pixels = true;
                            skip(r, 4)?;
                        }
                        -239 => skip(r, w * hh * px + w.div_ceil(8) * hh)?, // cursor
                        -308 => {
                            let screens = read_n(r, 4)?[0];
                            skip(r, 16 * u64::from(screens))?;
                        }
                        -224 => break,                  // LastRect
                        -223 | -258 | -257 | -313 => {} // no body
                        e => return Err(bad(format!("encoding {e} not parsed by the proxy"))),
                    }
                }
                if pixels {
                    updates.fetch_add(1, Ordering::SeqCst);
                }
            }
            2 | 150 => {} // Bell, EndOfContinuousUpdates
            3 => {
                // ServerCutText (a negative length is Extended Clipboard's).
                let h = read_n(r, 7)?;
                skip(r, u64::from((u32_at(&h, 3) as i32).unsigned_abs()))?;
            }
            248 => {
                // Fence.
                let h = read_n(r, 8)?;
                skip(r, u64::from(h[7]))?;
            }
            other => {
                return Err(bad(format!(
                    "server message {other} not parsed by the proxy"
                )));
            }
        }
    }
}
