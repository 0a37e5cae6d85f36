//! Real VNC clients against our server: vncdotool (Python), TigerVNC's vncviewer under
//! Xvfb (its screen, and its Extended Clipboard with xclip on its desktop), and the vnc-rs
//! crate. The external tools come from
//! `resources/scripts/install-deps.sh test`; when one is missing the test prints
//! `SKIP name: reason` and passes, unless VMDESK_REQUIRE_TOOLS=1.

mod rfb_support;
#[path = "../../vmm/tests/common/x11.rs"]
#[allow(dead_code)] // Not every X helper: the xdotool one drives windows.
mod x11;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use display::encoding::Rect;
use display::rfb::Password;
use rfb_support::{Harness, Input, skip};
use x11::{Xvfb, x_clipboard, x_copy};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn vncdo() -> Option<PathBuf> {
    let venv = std::env::var_os("VMDESK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv"));
    let p = venv.join("bin/vncdo");
    if p.is_file() {
        return Some(p);
    }
    which("vncdo")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmdesk-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a command with a time limit; returns whether it exited successfully.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a binary PPM (P6, maxval 255) into native pixels.
fn read_ppm(path: &Path) -> (usize, usize, Vec<u32>) {
    let data = std::fs::read(path).unwrap();
    let mut fields = Vec::new();
    let mut i = 0;
    // Four header fields (magic, width, height, maxval), with comments allowed.
    while fields.len() < 4 {
        while data[i].is_ascii_whitespace() {
            i += 1;
        }
        if data[i] == b'#' {
            while data[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while !data[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).into_owned());
    }
    i += 1;
    assert_eq!(fields[0], "P6");
    assert_eq!(fields[3], "255");
    let w: usize = fields[1].parse().unwrap();
    let h: usize = fields[2].parse().unwrap();
    let px = data[i..i + w * h * 3]
        .chunks_exact(3)
        .map(|c| (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]))
        .collect();
    (w, h, px)
}

/// Reads an uncompressed 24- or 32-bit BMP (what vncdotool's capture writes) into native
/// pixels.
fn read_bmp(path: &Path) -> (usize, usize, Vec<u32>) {
    let d = std::fs::read(path).unwrap();
    let u32le = |o: usize| u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
    assert_eq!(&d[..2], b"BM");
    let off = u32le(10) as usize;
    let w = u32le(18) as usize;
    let raw_h = u32le(22) as i32;
    let bpp = usize::from(u16::from_le_bytes([d[28], d[29]]));
    assert!(bpp == 24 || bpp == 32, "{bpp} bpp BMP");
    let h = raw_h.unsigned_abs() as usize;
    let row_len = (w * bpp / 8).div_ceil(4) * 4;
    let mut px = vec![0u32; w * h];
    for y in 0..h {
        // Positive height: rows stored bottom-up.
        let src_row = if raw_h > 0 { h - 1 - y } else { y };
        let row = &d[off + src_row * row_len..];
        for x in 0..w {
            let p = &row[x * bpp / 8..];
            px[y * w + x] = (u32::from(p[2]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[0]);
        }
    }
    (w, h, px)
}

#[test]
fn vncdotool_capture_equals_surface_and_input_arrives() {
    let Some(vncdo) = vncdo() else {
        return skip(
            "vncdotool_capture_equals_surface_and_input_arrives",
            "vncdo not found (run resources/scripts/install-deps.sh test)",
        );
    };
    let h = Harness::new(320, 240);
    let dir = temp_dir("vncdo");
    let shot = dir.join("shot.bmp");
    let server = format!("127.0.0.1::{}", h.addr().port());
    assert!(run_with_timeout(
        Command::new(&vncdo)
            .args(["-s", &server, "capture"])
            .arg(&shot),
        Duration::from_secs(30)
    ));
    let (w, hh, px) = read_bmp(&shot);
    let (sw, sh, spx) = h.surface.snapshot();
    assert_eq!((w, hh), (usize::from(sw), usize::from(sh)));
    assert!(px == spx, "vncdotool capture differs from the surface");

    // Keys and pointer arrive in the sink.
    assert!(run_with_timeout(
        Command::new(&vncdo).args(["-s", &server, "key", "a", "move", "10", "20", "click", "1"]),
        Duration::from_secs(30)
    ));
    let got = h.input.wait_for(4);
    assert!(got.contains(&Input::Key(0x61, true, None)), "{got:?}");
    assert!(got.contains(&Input::Key(0x61, false, None)), "{got:?}");
    assert!(got.contains(&Input::Pointer(10, 20, 1)), "{got:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn vncdotool_vnc_auth() {
    let Some(vncdo) = vncdo() else {
        return skip(
            "vncdotool_vnc_auth",
            "vncdo not found (run resources/scripts/install-deps.sh test)",
        );
    };
    let h = Harness::with(64, 48, |c| c.password = Some(Password::new("t0psecret")));
    let dir = temp_dir("vncdo-auth");
    let shot = dir.join("shot.bmp");
    let server = format!("127.0.0.1::{}", h.addr().port());
    assert!(run_with_timeout(
        Command::new(&vncdo)
            .args(["-s", &server, "-p", "t0psecret", "capture"])
            .arg(&shot),
        Duration::from_secs(30)
    ));
    let (_, _, px) = read_bmp(&shot);
    assert!(px == h.surface.snapshot().2);
    let bad = dir.join("bad.bmp");
    assert!(!run_with_timeout(
        Command::new(&vncdo)
            .args(["-s", &server, "-p", "wrong", "capture"])
            .arg(&bad),
        Duration::from_secs(30)
    ));
    assert!(!bad.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// Finds the surface inside a screenshot (the viewer window sits somewhere on the screen)
/// and says whether every pixel matches.
fn find_in_screenshot(shot: &(usize, usize, Vec<u32>), surf: &(u16, u16, Vec<u32>)) -> bool {
    let (w, h, px) = shot;
    let (sw, sh) = (usize::from(surf.0), usize::from(surf.1));
    let spx = &surf.2;
    if sw > *w || sh > *h {
        return false;
    }
    for oy in 0..=(h - sh) {
        for ox in 0..=(w - sw) {
            if px[oy * w + ox..oy * w + ox + 32] != spx[..32] {
                continue;
            }
            if (0..sh)
                .all(|y| px[(oy + y) * w + ox..(oy + y) * w + ox + sw] == spx[y * sw..(y + 1) * sw])
            {
                return true;
            }
        }
    }
    false
}

/// Tests that start an X server run one at a time, so their viewers and screenshots do not
/// compete for the CPU.
static X_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tigervnc_shows_surface(h: &Harness, password: Option<&str>, name: &str) -> Option<bool> {
    let _x = X_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(viewer) = which("vncviewer") else {
        skip(name, "vncviewer not found (tigervnc-viewer)");
        return None;
    };
    let Some(import) = which("import") else {
        skip(name, "import not found (imagemagick)");
        return None;
    };
    let Some(x) = Xvfb::start() else {
        skip(name, "Xvfb not found or did not start");
        return None;
    };
    let dir = temp_dir(name);
    let mut cmd = Command::new(viewer);
    cmd.env("DISPLAY", &x.display)
        .env("HOME", &dir)
        .arg(format!("127.0.0.1::{}", h.addr().port()))
        // Lossless, so the screenshot can be compared exactly (TigerVNC would otherwise
        // pick Tight with JPEG).
        .args(["-geometry", "+0+0", "-Shared", "-NoJPEG", "-AutoSelect=0"]);
    if let Some(p) = password {
        let f = dir.join("passwd");
        std::fs::write(&f, Password::new(p).obfuscated()).unwrap();
        cmd.arg("-passwd").arg(&f);
    } else {
        cmd.args(["-SecurityTypes", "None"]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let shot = dir.join("shot.ppm");
    let png = workspace_root().join(format!("target/{name}.png"));
    let surf = h.surface.snapshot();
    // Enough for the viewer to connect and draw; a rejected one is given less.
    let wait = if password == Some("wrong") { 5 } else { 20 };
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut ok = false;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        if !run_with_timeout(
            Command::new(&import)
                .env("DISPLAY", &x.display)
                .args(["-window", "root", "-depth", "8"])
                .arg(&shot),
            Duration::from_secs(10),
        ) {
            continue;
        }
        if find_in_screenshot(&read_ppm(&shot), &surf) {
            ok = true;
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
    }
    // Keep a PNG of the screen for people to look at.
    run_with_timeout(
        Command::new(&import)
            .env("DISPLAY", &x.display)
            .args(["-window", "root"])
            .arg(&png),
        Duration::from_secs(10),
    );
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();
    Some(ok)
}

#[test]
fn tigervnc_viewer_shows_the_surface() {
    let h = Harness::new(320, 200);
    if let Some(ok) = tigervnc_shows_surface(&h, None, "tigervnc_viewer_shows_the_surface") {
        assert!(ok, "TigerVNC's window never showed the surface's pixels");
    }
}

#[test]
fn tigervnc_viewer_with_vnc_auth() {
    let h = Harness::with(160, 100, |c| c.password = Some(Password::new("pw123456")));
    if let Some(ok) = tigervnc_shows_surface(&h, Some("pw123456"), "tigervnc_viewer_with_vnc_auth")
    {
        assert!(
            ok,
            "TigerVNC with the right password never showed the surface"
        );
    }
    // A wrong password shows nothing.
    if let Some(ok) = tigervnc_shows_surface(&h, Some("wrong"), "tigervnc_viewer_wrong_password") {
        assert!(!ok);
    }
}

#[test]
fn vnc_rs_connects_and_receives_updates() {
    let h = Harness::new(200, 120);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let surface = Arc::clone(&h.surface);
    let addr = h.addr();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let vnc = vnc::VncConnector::new(tcp)
            .set_auth_method(async move { Ok(String::new()) })
            .add_encoding(vnc::VncEncoding::CopyRect)
            .add_encoding(vnc::VncEncoding::Raw)
            .allow_shared(true)
            .set_pixel_format(vnc::PixelFormat::bgra())
            .build()
            .unwrap()
            .try_start()
            .await
            .unwrap()
            .finish()
            .unwrap();
        let (w, hh) = surface.size();
        let (w, hh) = (usize::from(w), usize::from(hh));
        let mut fb = vec![0u32; w * hh];
        let matches = |fb: &Vec<u32>| *fb == surface.snapshot().2;
        for round in 0..2 {
            if round == 1 {
                surface.fill_rect(Rect::new(30, 40, 50, 20), 0x0033_6699);
            }
            vnc.input(vnc::X11Event::FullRefresh).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches(&fb) {
                assert!(Instant::now() < deadline, "vnc-rs never saw the surface");
                let ev = tokio::time::timeout(Duration::from_secs(5), vnc.recv_event())
                    .await
                    .expect("no event from vnc-rs")
                    .unwrap();
                match ev {
                    vnc::VncEvent::RawImage(r, data) => {
                        for (i, px) in data.chunks_exact(4).enumerate() {
                            let x = usize::from(r.x) + i % usize::from(r.width);
                            let y = usize::from(r.y) + i / usize::from(r.width);
                            if x < w && y < hh {
                                fb[y * w + x] = u32::from_le_bytes([px[0], px[1], px[2], 0]);
                            }
                        }
                    }
                    vnc::VncEvent::Copy(dst, src) => {
                        let copy: Vec<u32> = (0..usize::from(src.height))
                            .flat_map(|y| {
                                let s = (usize::from(src.y) + y) * w + usize::from(src.x);
                                fb[s..s + usize::from(src.width)].to_vec()
                            })
                            .collect();
                        for y in 0..usize::from(dst.height) {
                            let d = (usize::from(dst.y) + y) * w + usize::from(dst.x);
                            let s = y * usize::from(src.width);
                            fb[d..d + usize::from(dst.width)]
                                .copy_from_slice(&copy[s..s + usize::from(dst.width)]);
                        }
                    }
                    vnc::VncEvent::Error(e) => panic!("vnc-rs: {e}"),
                    _ => {}
                }
            }
        }
        let _ = vnc.close().await;
    });
}

/// TigerVNC's viewer speaks the Extended Clipboard: the server's text becomes the viewer
/// desktop's CLIPBOARD (xclip reads it through the viewer), and text an X application puts
/// there reaches the server's input sink, UTF-8 both ways.
#[test]
fn tigervnc_viewer_shares_the_clipboard_both_ways() {
    let name = "tigervnc_viewer_shares_the_clipboard_both_ways";
    let _x = X_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (Some(viewer), Some(_), Some(xdotool)) =
        (which("vncviewer"), which("xclip"), which("xdotool"))
    else {
        skip(name, "vncviewer, xclip or xdotool not found");
        return;
    };
    let Some(x) = Xvfb::start() else {
        skip(name, "Xvfb not found or did not start");
        return;
    };
    let h = Harness::new(160, 100);
    let dir = temp_dir(name);
    let mut child = Command::new(viewer)
        .env("DISPLAY", &x.display)
        .env("HOME", &dir)
        .arg(format!("127.0.0.1::{}", h.addr().port()))
        .args(["-geometry", "+0+0", "-Shared", "-SecurityTypes", "None"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.server.client_count() == 0 {
        assert!(Instant::now() < deadline, "vncviewer never connected");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The viewer takes clipboard changes either way only while its window has the focus
    // (it keeps them pending otherwise); with no window manager, focus it.
    let focused = Command::new("timeout")
        .arg("10")
        .arg(&xdotool)
        .env("DISPLAY", &x.display)
        .args(["search", "--sync", "--name", "TigerVNC", "windowfocus"])
        .status();
    assert!(
        focused.is_ok_and(|s| s.success()),
        "cannot focus the viewer"
    );

    // Server -> viewer: announced, fetched when an X application asks for it.
    let from_server = "from the guest: héllo ✓";
    let mut seen = None;
    while Instant::now() < deadline {
        h.server.set_clipboard(from_server);
        std::thread::sleep(Duration::from_millis(300));
        seen = x_clipboard(&x.display);
        if seen.as_deref() == Some(from_server) {
            break;
        }
    }
    assert_eq!(seen.as_deref(), Some(from_server));

    // Viewer -> server: an X application copies.
    let from_viewer = "from the host: ünïcode ✓";
    let mut owner = x_copy(&x.display, from_viewer);
    let want = Input::Clipboard(from_viewer.into());
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = h.input.0.lock().unwrap().clone();
        if got.contains(&want) || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = owner.kill();
    let _ = owner.wait();
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();
    assert!(got.contains(&want), "the server got {got:?}");
}
