//! The built-in console: a running VM's screen in the window, through the vnc-rs crate
//! connected to the VM's VNC port (the same door outside clients use).
//!
//! A worker thread runs vnc-rs on a small tokio runtime: it applies the server's rectangles
//! to a shared framebuffer, records which regions changed, and asks for the next
//! incremental update; the window uploads only those regions to its GPU texture.
//! Input goes the other way: pointer positions (absolute, in guest pixels whatever the
//! scale) and key presses as X11 keysyms.
//!
//! Not here yet: QEMU extended key events (scan codes), keyboard grab, the send-key menu,
//! clipboard, the password prompt (a VM's password file is read instead), reconnection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eframe::egui;
use egui::{Color32, ColorImage, TextureHandle, TextureOptions};

/// A changed region, in guest pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dirty {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

#[derive(Default)]
struct Shared {
    width: usize,
    height: usize,
    pixels: Vec<Color32>,
    dirty: Vec<Dirty>,
    resized: bool,
    status: String,
    closed: bool,
}

impl Shared {
    fn resize(&mut self, w: usize, h: usize) {
        self.width = w;
        self.height = h;
        self.pixels = vec![Color32::BLACK; w * h];
        self.resized = true;
        self.dirty.clear();
    }

    /// Writes RGBA rows for `r` (clipped to the screen: a server may send anything).
    fn put(&mut self, (x, y, w, h): (usize, usize, usize, usize), rgba: &[u8]) {
        for (i, px) in rgba.chunks_exact(4).enumerate().take(w * h) {
            let (px_x, px_y) = (x + i % w.max(1), y + i / w.max(1));
            if px_x < self.width && px_y < self.height {
                self.pixels[px_y * self.width + px_x] = Color32::from_rgb(px[0], px[1], px[2]);
            }
        }
        self.mark(x, y, w, h);
    }

    fn copy(&mut self, dst: (usize, usize), src: (usize, usize, usize, usize)) {
        let (sx, sy, w, h) = src;
        let (dx, dy) = dst;
        if sx + w > self.width
            || sy + h > self.height
            || dx + w > self.width
            || dy + h > self.height
        {
            return;
        }
        let copy: Vec<Color32> = (0..h)
            .flat_map(|row| {
                let s = (sy + row) * self.width + sx;
                self.pixels[s..s + w].to_vec()
            })
            .collect();
        for row in 0..h {
            let d = (dy + row) * self.width + dx;
            self.pixels[d..d + w].copy_from_slice(&copy[row * w..(row + 1) * w]);
        }
        self.mark(dx, dy, w, h);
    }

    fn mark(&mut self, x: usize, y: usize, w: usize, h: usize) {
        let w = w.min(self.width.saturating_sub(x));
        let h = h.min(self.height.saturating_sub(y));
        if w > 0 && h > 0 {
            self.dirty.push(Dirty { x, y, w, h });
        }
    }
}

/// One VM's console: the connection thread and what the window shows.
pub struct Console {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    input: tokio::sync::mpsc::UnboundedSender<vnc::X11Event>,
    texture: Option<TextureHandle>,
    buttons: u8,
    last_pointer: Option<(u16, u16)>,
}

impl Console {
    /// Connects in the background; the window repaints as frames arrive.
    pub fn open(
        name: &str,
        addr: SocketAddr,
        password_file: Option<PathBuf>,
        ctx: egui::Context,
    ) -> Console {
        let shared = Arc::new(Mutex::new(Shared {
            status: format!("connecting to {addr}…"),
            ..Default::default()
        }));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let s = shared.clone();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    s.lock().unwrap().status = format!("cannot start the viewer: {e}");
                    return;
                }
            };
            let result = rt.block_on(run(addr, password_file, s.clone(), rx, ctx.clone()));
            let mut sh = s.lock().unwrap();
            sh.closed = true;
            sh.status = match result {
                Ok(()) => "disconnected".into(),
                Err(e) => format!("VNC {addr}: {e}"),
            };
            ctx.request_repaint();
        });
        Console {
            name: name.into(),
            addr,
            shared,
            input: tx,
            texture: None,
            buttons: 0,
            last_pointer: None,
        }
    }

    pub fn close(&self) {
        // Dropping the sender ends the worker's loop; this makes it prompt.
        let _ = self.input.send(vnc::X11Event::CopyText(String::new()));
        self.shared.lock().unwrap().closed = true;
    }

    /// Draws the screen scaled to fit `ui`, and sends the pointer and keys.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let (w, h, status) = {
            let mut sh = self.shared.lock().unwrap();
            if sh.resized || self.texture.is_none() && sh.width > 0 {
                sh.resized = false;
                sh.dirty.clear();
                let img = ColorImage::new([sh.width, sh.height], sh.pixels.clone());
                self.texture = Some(
                    ui.ctx()
                        .load_texture("console", img, TextureOptions::NEAREST),
                );
            } else if let Some(tex) = &mut self.texture {
                // Only the changed regions go to the GPU.
                for d in std::mem::take(&mut sh.dirty) {
                    let mut px = Vec::with_capacity(d.w * d.h);
                    for row in d.y..d.y + d.h {
                        let s = row * sh.width + d.x;
                        px.extend_from_slice(&sh.pixels[s..s + d.w]);
                    }
                    tex.set_partial(
                        [d.x, d.y],
                        ColorImage::new([d.w, d.h], px),
                        TextureOptions::NEAREST,
                    );
                }
            }
            (sh.width, sh.height, sh.status.clone())
        };
        ui.horizontal(|ui| {
            ui.monospace(format!(
                "vncviewer {}",
                crate::runtime::vnc_display(self.addr)
            ));
            if ui.small_button("Copy").clicked() {
                ui.ctx().copy_text(format!(
                    "vncviewer {}",
                    crate::runtime::vnc_display(self.addr)
                ));
            }
            ui.label(&status);
        });
        let Some(tex) = &self.texture else {
            return;
        };
        if w == 0 || h == 0 {
            return;
        }
        let avail = ui.available_size();
        let scale = (avail.x / w as f32).min(avail.y / h as f32).clamp(0.1, 4.0);
        let size = egui::vec2(w as f32 * scale, h as f32 * scale);
        let resp = ui.add(egui::Image::new((tex.id(), size)).sense(egui::Sense::click_and_drag()));
        if resp.clicked() || resp.drag_started() {
            resp.request_focus();
        }
        // Pointer: guest pixels from window points, exact at any scale.
        if let Some(pos) = resp.hover_pos() {
            let rel = (pos - resp.rect.min) / scale;
            let x = (rel.x.max(0.0) as usize).min(w - 1) as u16;
            let y = (rel.y.max(0.0) as usize).min(h - 1) as u16;
            let buttons = ui.input(|i| {
                u8::from(i.pointer.primary_down())
                    | u8::from(i.pointer.middle_down()) << 1
                    | u8::from(i.pointer.secondary_down()) << 2
            });
            if self.last_pointer != Some((x, y)) || buttons != self.buttons {
                self.last_pointer = Some((x, y));
                self.buttons = buttons;
                let _ = self
                    .input
                    .send(vnc::X11Event::PointerEvent((x, y, buttons).into()));
            }
        }
        if resp.has_focus() {
            // Keep Tab and arrows for the guest, not egui's focus moves.
            ui.memory_mut(|m| {
                m.set_focus_lock_filter(
                    resp.id,
                    egui::EventFilter {
                        tab: true,
                        horizontal_arrows: true,
                        vertical_arrows: true,
                        escape: true,
                    },
                )
            });
            let events = ui.input(|i| i.events.clone());
            for ev in events {
                match ev {
                    egui::Event::Text(t) => {
                        for c in t.chars() {
                            let sym = char_keysym(c);
                            let _ = self.input.send(vnc::X11Event::KeyEvent((sym, true).into()));
                            let _ = self
                                .input
                                .send(vnc::X11Event::KeyEvent((sym, false).into()));
                        }
                    }
                    egui::Event::Key { key, pressed, .. } => {
                        if let Some(sym) = key_keysym(key) {
                            let _ = self
                                .input
                                .send(vnc::X11Event::KeyEvent((sym, pressed).into()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.close();
    }
}

/// The keysym of a typed character: Latin-1 is its code point, the rest 0x0100_0000 + it.
fn char_keysym(c: char) -> u32 {
    let u = c as u32;
    if (0x20..=0x7e).contains(&u) || (0xa0..=0xff).contains(&u) {
        u
    } else {
        0x0100_0000 | u
    }
}

/// Keys that produce no text: their X11 keysyms.
fn key_keysym(key: egui::Key) -> Option<u32> {
    use egui::Key::*;
    Some(match key {
        Enter => 0xff0d,
        Backspace => 0xff08,
        Tab => 0xff09,
        Escape => 0xff1b,
        Delete => 0xffff,
        Insert => 0xff63,
        Home => 0xff50,
        End => 0xff57,
        PageUp => 0xff55,
        PageDown => 0xff56,
        ArrowLeft => 0xff51,
        ArrowUp => 0xff52,
        ArrowRight => 0xff53,
        ArrowDown => 0xff54,
        F1 => 0xffbe,
        F2 => 0xffbf,
        F3 => 0xffc0,
        F4 => 0xffc1,
        F5 => 0xffc2,
        F6 => 0xffc3,
        F7 => 0xffc4,
        F8 => 0xffc5,
        F9 => 0xffc6,
        F10 => 0xffc7,
        F11 => 0xffc8,
        F12 => 0xffc9,
        _ => return None,
    })
}

async fn run(
    addr: SocketAddr,
    password_file: Option<PathBuf>,
    shared: Arc<Mutex<Shared>>,
    mut input: tokio::sync::mpsc::UnboundedReceiver<vnc::X11Event>,
    ctx: egui::Context,
) -> Result<(), String> {
    let password = match password_file {
        Some(p) => std::fs::read_to_string(&p)
            .map(|s| s.lines().next().unwrap_or_default().to_string())
            .map_err(|e| format!("{}: {e}", p.display()))?,
        None => String::new(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let vnc = vnc::VncConnector::new(tcp)
        .set_auth_method(async move { Ok(password) })
        .add_encoding(vnc::VncEncoding::CopyRect)
        .add_encoding(vnc::VncEncoding::Raw)
        .allow_shared(true)
        .set_pixel_format(vnc::PixelFormat::rgba())
        .build()
        .map_err(|e| e.to_string())?
        .try_start()
        .await
        .map_err(|e| e.to_string())?
        .finish()
        .map_err(|e| e.to_string())?;
    shared.lock().unwrap().status = "connected".into();
    vnc.input(vnc::X11Event::FullRefresh)
        .await
        .map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_millis(33));
    loop {
        tokio::select! {
            ev = vnc.recv_event() => {
                let ev = ev.map_err(|e| e.to_string())?;
                let mut sh = shared.lock().unwrap();
                match ev {
                    vnc::VncEvent::SetResolution(s) => {
                        sh.resize(usize::from(s.width), usize::from(s.height))
                    }
                    vnc::VncEvent::RawImage(r, data) => sh.put(
                        (
                            usize::from(r.x),
                            usize::from(r.y),
                            usize::from(r.width),
                            usize::from(r.height),
                        ),
                        &data,
                    ),
                    vnc::VncEvent::Copy(dst, src) => sh.copy(
                        (usize::from(dst.x), usize::from(dst.y)),
                        (
                            usize::from(src.x),
                            usize::from(src.y),
                            usize::from(dst.width),
                            usize::from(dst.height),
                        ),
                    ),
                    vnc::VncEvent::Error(e) => return Err(e.to_string()),
                    _ => {}
                }
                drop(sh);
                ctx.request_repaint();
            }
            msg = input.recv() => {
                match msg {
                    None => break,
                    Some(vnc::X11Event::CopyText(t)) if t.is_empty() => break,
                    Some(ev) => vnc.input(ev).await.map_err(|e| e.to_string())?,
                }
            }
            _ = tick.tick() => {
                if shared.lock().unwrap().closed {
                    break;
                }
                vnc.input(vnc::X11Event::Refresh).await.map_err(|e| e.to_string())?;
            }
        }
    }
    let _ = vnc.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangles_are_clipped_and_marked() {
        let mut s = Shared::default();
        s.resize(4, 3);
        s.resized = false;
        // A 2x2 red square at (3,2): only (3,2) is on the screen.
        s.put((3, 2, 2, 2), &[255, 0, 0, 0].repeat(4));
        assert_eq!(s.pixels[2 * 4 + 3], Color32::from_rgb(255, 0, 0));
        assert_eq!(
            s.dirty,
            [Dirty {
                x: 3,
                y: 2,
                w: 1,
                h: 1
            }]
        );
        s.put((0, 0, 1, 1), &[0, 0, 255, 0]);
        s.copy((1, 1), (0, 0, 1, 1));
        assert_eq!(s.pixels[4 + 1], Color32::from_rgb(0, 0, 255));
        // A copy from outside the screen is ignored.
        s.copy((0, 0), (3, 2, 5, 5));
        assert_eq!(s.pixels[0], Color32::from_rgb(0, 0, 255));
        // A rectangle entirely off-screen marks nothing.
        s.dirty.clear();
        s.put((10, 10, 1, 1), &[1, 2, 3, 0]);
        assert!(s.dirty.is_empty());
    }

    #[test]
    fn keysyms() {
        assert_eq!(char_keysym('a'), 0x61);
        assert_eq!(char_keysym('é'), 0xe9);
        assert_eq!(char_keysym('€'), 0x0100_20ac);
        assert_eq!(key_keysym(egui::Key::Enter), Some(0xff0d));
        assert_eq!(key_keysym(egui::Key::A), None);
    }

    struct Recorder(Mutex<Vec<(u16, u16, u8)>>, Mutex<Vec<(u32, bool)>>);
    impl display::rfb::InputSink for Recorder {
        fn key(&self, keysym: u32, down: bool, _scancode: Option<u16>) {
            self.1.lock().unwrap().push((keysym, down));
        }
        fn pointer(&self, x: u16, y: u16, buttons: u8) {
            self.0.lock().unwrap().push((x, y, buttons));
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The console against our own VNC server: it shows the surface, follows a change, and
    /// its pointer and keys reach the server's input sink.
    #[test]
    fn shows_the_screen_and_sends_input() {
        use display::encoding::Rect;
        let surface = display::surface::Surface::new(64, 48);
        surface.fill_rect(Rect::new(0, 0, 64, 48), 0x00cc_0000);
        surface.fill_rect(Rect::new(10, 5, 8, 4), 0x0000_33ff);
        let sink = Arc::new(Recorder(Mutex::default(), Mutex::default()));
        let server = display::rfb::VncServer::start(
            display::rfb::VncConfig::new("127.0.0.1:0".parse().unwrap()),
            surface.clone(),
            sink.clone(),
        )
        .unwrap();
        let console = Console::open("t", server.local_addr(), None, egui::Context::default());
        let px = |x: usize, y: usize| {
            let sh = console.shared.lock().unwrap();
            (sh.width == 64 && sh.height == 48).then(|| sh.pixels[y * 64 + x])
        };
        wait_for("the first frame", || {
            px(0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
                && px(11, 6) == Some(Color32::from_rgb(0, 0x33, 0xff))
        });
        surface.fill_rect(Rect::new(40, 30, 4, 4), 0x0000_ff00);
        wait_for("an incremental update", || {
            px(41, 31) == Some(Color32::from_rgb(0, 0xff, 0))
        });
        assert!(!console.shared.lock().unwrap().dirty.is_empty());
        console
            .input
            .send(vnc::X11Event::PointerEvent((12, 34, 1).into()))
            .unwrap();
        console
            .input
            .send(vnc::X11Event::KeyEvent((char_keysym('q'), true).into()))
            .unwrap();
        wait_for("the pointer", || {
            sink.0.lock().unwrap().contains(&(12, 34, 1))
        });
        wait_for("the key", || sink.1.lock().unwrap().contains(&(0x71, true)));
    }
}
