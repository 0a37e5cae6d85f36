//! The built-in console against TigerVNC's `vncviewer`, the reference viewer (QEMU has no
//! standalone VNC viewer, so TigerVNC stands in for "what the field ships"). Both run
//! under Xvfb against the same server: the display crate's VNC server, fed by a thread.
//!
//! - Frame rate: the whole 1920x1080 surface changes continuously; a counting proxy in
//!   front of the server counts the framebuffer updates each client has taken in full,
//!   per second (so both are measured the same way, at the server's side of the wire).
//!   Both get Raw pixels (TigerVNC with -PreferredEncoding=raw -AutoSelect=0), so the
//!   comparison is of the viewers, not of encoders. The server's cap is 60 updates/s.
//!   Our console also says how many of those it put on screen (a paint with new
//!   pixels; several updates between two paints count once); vncviewer cannot say.
//! - CPU with a static screen over 30 s (target < 2% of a core): utime+stime from
//!   /proc/PID/stat.
//! - Cold start: process spawn → first framebuffer update taken in full at the proxy; and
//!   for ours, spawn → the first paint with the picture (vncviewer cannot say when it
//!   painted). Both connect before their window is up.
//!
//! Our console runs as this benchmark binary re-executed with `--viewer ADDR`, which calls
//! `vmdesk::console::run_window`, the function behind `vmdesk console N` (so no VM, library
//! or runtime directory is needed). Run with `cargo bench -p vmdesk --bench console`;
//! needs Xvfb and vncviewer (resources/scripts/install-deps.sh bench). Prints medians.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The tests' Xvfb (it picks a free display itself); the bench has no use for the rest.
#[path = "../../vmm/tests/common/x11.rs"]
#[allow(dead_code)]
mod x11;

use display::encoding::Rect;
use display::rfb::protocol::{ClientMessage, Limits, read_client_message};
use display::rfb::{NullInput, VncConfig, VncServer};
use display::surface::Surface;

const W: u16 = 1920;
const H: u16 = 1080;
const FPS_SECONDS: usize = 10;
const CPU_SECONDS: u64 = 30;
const STARTS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--viewer") {
        let addr: SocketAddr = args[i + 1].parse().expect("--viewer ADDR");
        // With --count-frames, says on stdout how many frames the window has shown so
        // far, within 2 ms of each change (the cold start's "shown" time needs them early).
        let shown = Arc::new(AtomicU64::new(0));
        if args.iter().any(|a| a == "--count-frames") {
            let n = shown.clone();
            std::thread::spawn(move || {
                let mut said = u64::MAX;
                loop {
                    std::thread::sleep(Duration::from_millis(2));
                    let now = n.load(Ordering::Relaxed);
                    if now != said {
                        said = now;
                        println!("shown {now}");
                    }
                }
            });
        }
        let opts = vmdesk::console::ConsoleOptions {
            standalone: true,
            frames_shown: Some(shown),
            ..Default::default()
        };
        if let Err(e) = vmdesk::console::run_window("bench", addr, opts) {
            eprintln!("console: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench -- --list` and the like: nothing to list.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    for tool in ["Xvfb", "vncviewer"] {
        if which(tool).is_none() {
            println!("console bench: skipped: {tool} not found (install-deps.sh bench)");
            return;
        }
    }
    let xvfb = x11::Xvfb::with_screen("1920x1200x24").expect("Xvfb did not start");
    println!(
        "console bench (vmdesk console vs TigerVNC vncviewer, Xvfb {}, medians)",
        xvfb.display
    );
    let viewers = [Viewer::Ours, Viewer::Tiger];

    // Frame rate with the whole screen changing.
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
    let mut fps = Vec::new();
    for v in viewers {
        let proxy = Proxy::start(server.local_addr());
        let (mut child, shown) = v.spawn(proxy.addr, &xvfb.display, true);
        let ok = proxy.wait_updates(1, Duration::from_secs(30));
        if !ok {
            println!("  {}: no frame within 30 s", v.name());
            kill(&mut child);
            fps.push(f64::NAN);
            continue;
        }
        std::thread::sleep(Duration::from_secs(3)); // warm up
        let mut per_second = Vec::new();
        let mut shown_per_second = Vec::new();
        let mut last = proxy.updates();
        let mut last_shown = shown.load(Ordering::Relaxed);
        let (t0, start) = (cpu_ticks(child.id()), Instant::now());
        let threads0 = thread_ticks(child.id());
        for _ in 0..FPS_SECONDS {
            std::thread::sleep(Duration::from_secs(1));
            let now = proxy.updates();
            per_second.push((now - last) as f64);
            last = now;
            let now = shown.load(Ordering::Relaxed);
            shown_per_second.push(now.saturating_sub(last_shown) as f64);
            last_shown = now;
        }
        let busy = (cpu_ticks(child.id()) - t0) as f64
            / ticks_per_second()
            / start.elapsed().as_secs_f64()
            * 100.0;
        if std::env::var_os("CONSOLE_BENCH_THREADS").is_some() {
            for (name, t) in thread_ticks(child.id()) {
                let before = threads0.iter().find(|(n, _)| *n == name).map_or(0, |x| x.1);
                println!("    thread {name}: {} ticks", t - before);
            }
        }
        kill(&mut child);
        let m = median(&mut per_second);
        // vncviewer does not say what it painted; ours counts its paints with new pixels.
        let painted = match v {
            Viewer::Ours => format!(", {:.1} of them shown/s", median(&mut shown_per_second)),
            Viewer::Tiger => String::new(),
        };
        println!(
            "  frame rate, whole {W}x{H} screen changing: {:<9} {m:6.1} updates/s{painted} (viewer CPU {busy:.0}% of a core)",
            v.name()
        );
        fps.push(m);
    }
    println!(
        "  frame rate ratio vmdesk/vncviewer: {:.2}",
        fps[0] / fps[1]
    );
    stop.store(true, Ordering::Relaxed);
    let _ = painter.join();
    if std::env::var_os("CONSOLE_BENCH_FPS_ONLY").is_some() {
        return;
    }

    // CPU with a static screen, and cold start (the same static server).
    surface.fill_rect(Rect::new(0, 0, W, H), 0x0020_4080);
    surface.fill_rect(Rect::new(100, 100, 600, 300), 0x00ff_ff00);
    for v in viewers {
        let proxy = Proxy::start(server.local_addr());
        let (mut child, _) = v.spawn(proxy.addr, &xvfb.display, false);
        if !proxy.wait_updates(1, Duration::from_secs(30)) {
            println!("  {}: no frame within 30 s", v.name());
            kill(&mut child);
            continue;
        }
        std::thread::sleep(Duration::from_secs(3));
        let t0 = cpu_ticks(child.id());
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(CPU_SECONDS));
        let t1 = cpu_ticks(child.id());
        let secs = start.elapsed().as_secs_f64();
        if let Ok(Some(status)) = child.try_wait() {
            // A dead viewer would read as 0% (its /proc entry is gone).
            println!("  {}: exited during the CPU run ({status})", v.name());
            continue;
        }
        kill(&mut child);
        let pct = (t1 - t0) as f64 / ticks_per_second() / secs * 100.0;
        println!(
            "  CPU over {CPU_SECONDS} s with a static screen: {:<9} {pct:5.2}% of a core (target < 2%)",
            v.name()
        );
    }
    for v in viewers {
        let mut ms = Vec::new();
        // Ours also says when it first put the picture on screen (vncviewer cannot say):
        // it connects while its window is being made, so it may take the first update
        // before it can show it.
        let mut shown_ms = Vec::new();
        for _ in 0..STARTS {
            let proxy = Proxy::start(server.local_addr());
            let t = Instant::now();
            let (mut child, shown) = v.spawn(proxy.addr, &xvfb.display, matches!(v, Viewer::Ours));
            if proxy.wait_updates(1, Duration::from_secs(30)) {
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                if matches!(v, Viewer::Ours) {
                    while shown.load(Ordering::Relaxed) == 0
                        && t.elapsed() < Duration::from_secs(30)
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    shown_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            } else {
                println!(
                    "  {}: no frame within 30 s (exited: {:?})",
                    v.name(),
                    child.try_wait()
                );
            }
            kill(&mut child);
        }
        println!(
            "  cold start to the first frame ({} runs): {:<9} {:7.1} ms",
            ms.len(),
            v.name(),
            median(&mut ms)
        );
        if !shown_ms.is_empty() {
            println!(
                "  cold start to the first frame on screen:   {:<9} {:7.1} ms",
                v.name(),
                median(&mut shown_ms)
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Viewer {
    Ours,
    Tiger,
}

impl Viewer {
    fn name(self) -> &'static str {
        match self {
            Viewer::Ours => "vmdesk",
            Viewer::Tiger => "vncviewer",
        }
    }

    /// The viewer, and (with `count`, ours only) the count of frames it has shown, see
    /// [`frames_shown`]; without, nothing extra runs in the viewer.
    fn spawn(self, addr: SocketAddr, display: &str, count: bool) -> (Child, Arc<AtomicU64>) {
        let runtime = std::env::temp_dir().join(format!("vmdesk-bench-xdg-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&runtime);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700));
        }
        let mut cmd = match self {
            Viewer::Ours => {
                let mut c = Command::new(std::env::current_exe().expect("own path"));
                c.arg("--viewer").arg(addr.to_string());
                if count {
                    c.arg("--count-frames");
                }
                c
            }
            Viewer::Tiger => {
                let mut c = Command::new("vncviewer");
                c.args([
                    "-PreferredEncoding=raw",
                    "-AutoSelect=0",
                    "-FullColor=1",
                    "-Shared=1",
                    "-SecurityTypes=None",
                    "-AlertOnFatalError=0",
                    "-ReconnectOnError=0",
                ])
                .arg(format!("127.0.0.1::{}", addr.port()));
                c
            }
        };
        // Ours says on stdout how many frames it has shown.
        let stdout = match self {
            Viewer::Ours => Stdio::piped(),
            Viewer::Tiger => Stdio::null(),
        };
        cmd.env("DISPLAY", display)
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.name()));
        let shown = frames_shown(&mut child);
        (child, shown)
    }
}

/// The frame count our console prints on stdout (the `--viewer` mode), kept current by a
/// thread; stays 0 for a viewer that prints none.
fn frames_shown(child: &mut Child) -> Arc<AtomicU64> {
    let n = Arc::new(AtomicU64::new(0));
    if let Some(out) = child.stdout.take() {
        let n = n.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(v) = line.strip_prefix("shown ").and_then(|v| v.parse().ok()) {
                    n.store(v, Ordering::Relaxed);
                }
            }
        });
    }
    n
}

fn kill(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

fn median(v: &mut [f64]) -> f64 {
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

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    cpu_ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

fn cpu_ticks_of(stat: &str) -> u64 {
    // The command name is in parentheses and may hold spaces: count fields after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the full line, utime 14, stime 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// utime + stime per thread of `pid` (thread name with its id).
fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_string();
            Some((format!("{name}/{tid}"), cpu_ticks_of(&stat)))
        })
        .collect()
}

fn ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A TCP proxy in front of the server that counts the framebuffer updates a client has
/// taken in full (the server-to-client stream is parsed as far as message boundaries).
struct Proxy {
    addr: SocketAddr,
    updates: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
}

impl Proxy {
    fn start(server: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        let addr = listener.local_addr().unwrap();
        let updates = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let (u, e) = (updates.clone(), error.clone());
        std::thread::spawn(move || {
            // One client per proxy; the proxy ends with it.
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let Ok(upstream) = TcpStream::connect(server) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let bpp = Arc::new(AtomicU8::new(4));
            let (c2, u2, b2) = (
                client.try_clone().unwrap(),
                upstream.try_clone().unwrap(),
                bpp.clone(),
            );
            std::thread::spawn(move || {
                let _ = client_to_server(c2, u2, &b2);
            });
            if let Err(err) = server_to_client(upstream, client, &bpp, &u)
                && err.kind() == io::ErrorKind::InvalidData
            {
                *e.lock().unwrap() = Some(err.to_string());
            }
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

    fn wait_updates(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.updates() >= n {
                return true;
            }
            if let Some(e) = self.error.lock().unwrap().as_ref() {
                panic!("proxy: {e}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

/// Reads exactly `buf.len()` bytes from `r` and forwards them to `w`, recording them.
struct Tee<R, W> {
    r: R,
    w: W,
}

impl<R: Read, W: Write> Tee<R, W> {
    fn fwd(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0; n];
        self.r.read_exact(&mut b)?;
        self.w.write_all(&b)?;
        Ok(b)
    }

    /// Forwards `n` bytes without keeping them.
    fn pass(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.r.read_exact(&mut buf[..k])?;
            self.w.write_all(&buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Client messages go through whole; SetPixelFormat tells us the bytes per pixel.
fn client_to_server(client: TcpStream, server: TcpStream, bpp: &AtomicU8) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, client);
    let mut server = server;
    // Version, the chosen security type, ClientInit (no authentication here).
    // Each is answered before the next is sent: forward them one by one.
    for n in [12, 1, 1] {
        let mut hs = vec![0u8; n];
        r.read_exact(&mut hs)?;
        server.write_all(&hs)?;
    }
    loop {
        // Parse from a recording reader, then forward exactly those bytes.
        let mut rec = Recorder {
            r: &mut r,
            seen: Vec::new(),
        };
        let m = read_client_message(&mut rec, &Limits::default())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if let ClientMessage::SetPixelFormat(pf) = &m {
            bpp.store((pf.bits_per_pixel / 8).max(1), Ordering::SeqCst);
        }
        server.write_all(&rec.seen)?;
    }
}

struct Recorder<'a, R> {
    r: &'a mut R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Recorder<'_, R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(b)?;
        self.seen.extend_from_slice(&b[..n]);
        Ok(n)
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn server_to_client(
    server: TcpStream,
    client: TcpStream,
    bpp: &AtomicU8,
    updates: &AtomicU64,
) -> io::Result<()> {
    let mut t = Tee {
        r: BufReader::with_capacity(256 * 1024, server),
        w: client,
    };
    // Version; security types (3.8); SecurityResult; ServerInit.
    t.fwd(12)?;
    let n = t.fwd(1)?[0];
    t.fwd(usize::from(n))?;
    t.fwd(4)?;
    let init = t.fwd(24)?;
    bpp.store((init[4] / 8).max(1), Ordering::SeqCst);
    t.pass(u64::from(u32_at(&init, 20)))?;
    loop {
        let ty = t.fwd(1)?[0];
        match ty {
            0 => {
                let h = t.fwd(3)?;
                let rects = u16_at(&h, 1);
                let mut pixels = false;
                for _ in 0..rects {
                    let r = t.fwd(12)?;
                    let (w, h) = (u64::from(u16_at(&r, 4)), u64::from(u16_at(&r, 6)));
                    let bytes = u64::from(bpp.load(Ordering::SeqCst));
                    match u32_at(&r, 8) as i32 {
                        0 => {
                            pixels = true;
                            t.pass(w * h * bytes)?;
                        }
                        1 => {
                            pixels = true;
                            t.pass(4)?;
                        }
                        16 => {
                            pixels = true;
                            let len = t.fwd(4)?;
                            t.pass(u64::from(u32_at(&len, 0)))?;
                        }
                        -239 => t.pass(w * h * bytes + w.div_ceil(8) * h)?, // cursor
                        -308 => {
                            let n = t.fwd(4)?[0];
                            t.pass(16 * u64::from(n))?;
                        }
                        -224 => break,                  // LastRect
                        -223 | -258 | -257 | -313 => {} // no body
                        e => {
                            return Err(bad(format!("encoding {e} not parsed by the bench proxy")));
                        }
                    }
                }
                if pixels {
                    updates.fetch_add(1, Ordering::SeqCst);
                }
            }
            2 => {}   // Bell
            150 => {} // EndOfContinuousUpdates
            3 => {
                let h = t.fwd(7)?;
                t.pass(u64::from((u32_at(&h, 3) as i32).unsigned_abs()))?;
            }
            248 => {
                let h = t.fwd(8)?;
                t.pass(u64::from(h[7]))?;
            }
            other => {
                return Err(bad(format!(
                    "server message {other} not parsed by the bench proxy"
                )));
            }
        }
    }
}
