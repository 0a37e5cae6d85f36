//! The built-in console: a running VM's screen in the window, through the vnc-rs crate
//! connected to the VM's VNC port (the same door outside clients use).
//!
//! A worker thread runs vnc-rs on a small tokio runtime: it applies the server's rectangles
//! to a shared framebuffer, records which regions changed, and keeps one update request
//! outstanding; the window uploads only the changed regions to its GPU texture.
//!
//! The frame's path is kept short because a whole 1080p screen is 8 MB a frame: the
//! console asks for the server's own pixel layout (so the server sends its memory as is),
//! converts it to the texture's RGBA with a copy and a word-wide swap the compiler
//! vectorises, uploads overlapping regions once per paint, and reuses the upload buffers
//! once the renderer is done with them. vnc-rs's own copies (two per rectangle, and a
//! fresh buffer for each) and the renderer's are what remains (issue 6's benchmark).
//!
//! Input goes the other way, through [`inject`] (vnc-rs has no QEMU extended key event):
//! keys as PC scan codes with their keysym ([`keys`]), so any host/guest layout pair works;
//! the pointer as absolute guest pixels whatever the scale; the host clipboard as cut text
//! (below), or typed as key presses ([`typing`]).
//!
//! The keyboard is grabbed by clicking into the screen: then every key egui sees goes to
//! the guest (Tab, Esc, Ctrl+C …), and Ctrl+Alt pressed and released alone lets go. Keys
//! the window manager takes before the window sees them (Alt+Tab, Alt+F4 on most desktops)
//! cannot be grabbed: winit has no keyboard grab. The send-key menu covers the usual ones.
//!
//! Clipboard: text goes both ways through the VNC Extended Clipboard (UTF-8 in zlib) when
//! the server offers it, as ours does. vnc-rs cannot read its messages, so [`inject`]
//! frames the server's stream ([`server_stream`]) and takes every cut text out before
//! vnc-rs sees it, and adds the pseudo-encoding to vnc-rs's SetEncodings. The guest's text
//! comes as the server's Notify, our Request, its Provide; the host's goes as a Provide
//! when it fits the size the server announced, else as a Notify for the server to Request.
//! A server without the extension (QEMU before 6.1, and many others) gets RFC 6143's
//! Latin-1 cut text both ways: characters outside Latin-1 go as '?', and the guest's text
//! is decoded as Latin-1.
//!
//! When the connection drops (a reset rebuilding the VNC server, a VMM restart), the last
//! frame stays on screen greyed and the worker reconnects every second while the VM runs.
//! A VNC password is asked for in a small dialog (or read from the VM's password file) and
//! kept in memory only.

pub mod inject;
pub mod keys;
pub mod server_stream;
pub mod typing;
mod worker;

use worker::Worker;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use eframe::egui;
use egui::{Color32, ColorImage, TextureHandle, TextureOptions};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use inject::{InjectStream, Injector};
use typing::{Stroke, TYPE_INTERVAL};

/// How often a dropped connection is retried.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// How long clipboard text asked of the desktop may take to come ("Type clipboard", "Send
/// clipboard", the grab's sync) before the console stops waiting for it.
const PASTE_WAIT: Duration = Duration::from_secs(5);
/// Update requests go out as frames arrive (one outstanding keeps updates flowing with no
/// polling on a static screen); this spaces them within one burst of rectangles.
const REQUEST_SPACING: Duration = Duration::from_millis(4);
/// While frames keep coming, a request also goes out this often: vnc-rs reports a
/// rectangle only once all of it has arrived, and a request that reaches the server while
/// it is still sending lets it start the next update at once instead of after a round
/// trip (the server merges requests, so extra ones cost 10 bytes each).
const PUMP_EVERY: Duration = Duration::from_millis(8);
/// How long after the last frame the screen counts as changing.
const ACTIVE_FOR: Duration = Duration::from_millis(100);
/// More changed regions than this are uploaded as their bounding box: one large texture
/// upload is cheaper than hundreds of small ones.
const MAX_UPLOADS: usize = 16;
/// More pending regions than this (nobody painting) fold into their bounding box.
const MAX_DIRTY: usize = 256;

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
    connected: bool,
    closed: bool,
    /// The server wants a password we do not have: `Some(why)` shows the prompt.
    need_password: Option<String>,
    /// The guest's clipboard, for the host's.
    server_cut: Option<String>,
    /// The server speaks the Extended Clipboard (UTF-8) on this connection.
    ext_clipboard: bool,
    /// Framebuffer rectangles received since the console opened.
    rects: u64,
    /// What is wrong with the VM's boot, from [`ConsoleOptions::boot_note`].
    boot_note: Option<String>,
}

impl Shared {
    fn resize(&mut self, w: usize, h: usize) {
        if (w, h) == (self.width, self.height) {
            // A reconnect to the same mode keeps the last frame until the new one arrives.
            return;
        }
        self.width = w;
        self.height = h;
        self.pixels = vec![Color32::BLACK; w * h];
        self.resized = true;
        self.dirty.clear();
    }

    /// Writes the server's rows for `r` (clipped to the screen: a server may send
    /// anything; a short buffer writes what it has). The rows are in [`wire_format`].
    fn put(&mut self, (x, y, w, h): (usize, usize, usize, usize), bgrx: &[u8]) {
        if w == 0 {
            return;
        }
        let cols = w.min(self.width.saturating_sub(x));
        for (row, line) in bgrx.chunks(w * 4).take(h).enumerate() {
            let py = y + row;
            if py >= self.height || cols == 0 {
                break;
            }
            let n = cols.min(line.len() / 4);
            let start = py * self.width + x;
            bgrx_to_color32(&line[..n * 4], &mut self.pixels[start..start + n]);
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
        // Rows in the order that never reads a row already overwritten (as memmove).
        let stride = self.width;
        let mut each = |row: usize| {
            let (s, d) = ((sy + row) * stride + sx, (dy + row) * stride + dx);
            self.pixels.copy_within(s..s + w, d);
        };
        if dy > sy {
            (0..h).rev().for_each(&mut each);
        } else {
            (0..h).for_each(&mut each);
        }
        self.mark(dx, dy, w, h);
    }

    fn mark(&mut self, x: usize, y: usize, w: usize, h: usize) {
        let w = w.min(self.width.saturating_sub(x));
        let h = h.min(self.height.saturating_sub(y));
        if w > 0 && h > 0 {
            self.dirty.push(Dirty { x, y, w, h });
        }
        if self.dirty.len() > MAX_DIRTY {
            // Nobody is painting (a minimised window): keep one region, not a growing list.
            self.dirty = vec![bounding_box(&self.dirty)];
        }
    }

    /// The regions to upload: as they are, or their bounding box when there are many or
    /// when they overlap (several whole-screen updates arrived between two paints: one
    /// upload, not one each).
    fn take_dirty(&mut self) -> Vec<Dirty> {
        let d = std::mem::take(&mut self.dirty);
        if d.len() <= 1 {
            return d;
        }
        let bbox = bounding_box(&d);
        let area: usize = d.iter().map(|r| r.w * r.h).sum();
        if d.len() > MAX_UPLOADS || area >= bbox.w * bbox.h {
            return vec![bbox];
        }
        d
    }
}

fn bounding_box(d: &[Dirty]) -> Dirty {
    let x0 = d.iter().map(|r| r.x).min().unwrap_or(0);
    let y0 = d.iter().map(|r| r.y).min().unwrap_or(0);
    let x1 = d.iter().map(|r| r.x + r.w).max().unwrap_or(0);
    let y1 = d.iter().map(|r| r.y + r.h).max().unwrap_or(0);
    Dirty {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    }
}

/// The pixel format the console asks of the server: 32-bit little-endian 0x00RRGGBB
/// (bytes B, G, R, unused), the framebuffer's own layout in our VNC server (and QEMU's),
/// so the server sends its memory as it is instead of converting every pixel.
fn wire_format() -> vnc::PixelFormat {
    vnc::PixelFormat::bgra()
}

/// Converts pixels in [`wire_format`] to opaque `Color32` (RGBA in memory): one copy, then
/// red and blue swapped and alpha set on whole 32-bit words, which the compiler turns into
/// SIMD (a per-pixel `Color32::from_rgb` does not vectorise). `src` is `4 * dst.len()`
/// bytes.
fn bgrx_to_color32(src: &[u8], dst: &mut [Color32]) {
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(dst);
    bytes.copy_from_slice(src);
    match bytemuck::try_cast_slice_mut::<u8, u32>(bytes) {
        Ok(words) => {
            for p in words {
                let v = u32::from_le(*p);
                *p = (0xff00_0000 | (v & 0x0000_ff00) | ((v >> 16) & 0xff) | ((v & 0xff) << 16))
                    .to_le();
            }
        }
        // Not 4-byte aligned (never seen: rows start at whole pixels of a Vec<Color32>).
        Err(_) => {
            for px in bytes.chunks_exact_mut(4) {
                px.swap(0, 2);
                px[3] = 0xff;
            }
        }
    }
}

/// What the window asks of the worker.
#[derive(Debug)]
enum Cmd {
    Key {
        keysym: u32,
        down: bool,
        code: Option<u16>,
    },
    Pointer(u16, u16, u8),
    CutText(String),
    Type(Vec<Stroke>),
    Password(String),
    Close,
}

/// Where to connect now: `None` while the VM is not running (the worker then waits). For
/// a VM the app manages: [`crate::service::VmService::vnc_follower`].
pub type Target = Arc<dyn Fn() -> Option<SocketAddr> + Send + Sync>;

/// Asked about once a second, off the window's thread: what is wrong with the VM's boot,
/// for the status line (`None`: nothing). For a VM the app manages:
/// [`crate::service::VmService::boot_note`].
pub type BootNote = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// A window with a VM's console alone (`vmdesk console NAME`); `addr` is where the first
/// connection goes.
pub fn run_window(name: &str, addr: SocketAddr, opts: ConsoleOptions) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(format!("{name} - vmdesk"))
            .with_inner_size([740.0, 440.0]),
        ..Default::default()
    };
    // Connecting while the window is made: both take about a tenth of a second.
    let mut console = Console::open_detached(name, addr, opts);
    eframe::run_ui_native("vmdesk-console", options, move |ui, _frame| {
        egui::CentralPanel::default().show(ui, |ui| console.ui(ui));
    })
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// The window the console's threads ask to repaint when something changed; empty until
/// the window's first frame attaches it (a console may start connecting before that).
#[derive(Clone, Default)]
pub struct Repaint(Arc<std::sync::OnceLock<egui::Context>>);

impl Repaint {
    pub fn request(&self) {
        if let Some(ctx) = self.0.get() {
            ctx.request_repaint();
        }
    }

    /// The window, once: what came before is drawn at its next frame.
    fn attach(&self, ctx: &egui::Context) {
        if self.0.get().is_none() && self.0.set(ctx.clone()).is_ok() {
            ctx.request_repaint();
        }
    }
}

/// How often [`ConsoleOptions::boot_note`] is asked.
const BOOT_NOTE_POLL: Duration = Duration::from_secs(1);

/// How a console connects; [`Console::open`] takes the common case.
#[derive(Clone, Default)]
pub struct ConsoleOptions {
    /// The VM's VNC password file, tried before asking.
    pub password_file: Option<PathBuf>,
    /// Asked before every (re)connection; by default the address given to `open`.
    pub target: Option<Target>,
    /// A window of its own (`vmdesk console N`): offers fullscreen.
    pub standalone: bool,
    /// Counts the window's paints that put new pixels on screen (for benchmarks, which
    /// compare it with the frames the server sent).
    pub frames_shown: Option<Arc<AtomicU64>>,
    /// What is wrong with the VM's boot, shown under the status line.
    pub boot_note: Option<BootNote>,
}

/// What a `RequestPaste` we sent is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PasteFor {
    Type,
    CutText,
}

/// One VM's console: the connection thread and what the window shows.
pub struct Console {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    cmds: UnboundedSender<Cmd>,
    texture: Option<TextureHandle>,
    /// Images handed to the renderer this frame (see `sync_texture`).
    in_flight: Vec<Arc<ColorImage>>,
    buttons: u8,
    last_pointer: Option<(u16, u16)>,
    /// Scale to fit (true) or one guest pixel per physical pixel.
    pub fit: bool,
    standalone: bool,
    frames_shown: Option<Arc<AtomicU64>>,
    grabbed: bool,
    chord: keys::ReleaseChord,
    /// Keys the guest has seen go down and not up: (scan code → keysym).
    down: BTreeMap<u16, u32>,
    zoom_keys: Option<bool>,
    paste_for: Option<(PasteFor, Instant)>,
    /// The last text sent as cut text (so a grab does not send it again).
    last_cut: Option<String>,
    notice: Option<String>,
    password: String,
    opened: Instant,
    first_frame_logged: bool,
    /// The window to repaint when the connection has news.
    repaint: Repaint,
}

impl Console {
    /// Connects in the background; the window repaints as frames arrive.
    pub fn open(
        name: &str,
        addr: SocketAddr,
        password_file: Option<PathBuf>,
        ctx: egui::Context,
    ) -> Console {
        Console::open_with(
            name,
            addr,
            ConsoleOptions {
                password_file,
                ..Default::default()
            },
            ctx,
        )
    }

    pub fn open_with(
        name: &str,
        addr: SocketAddr,
        opts: ConsoleOptions,
        ctx: egui::Context,
    ) -> Console {
        let console = Console::open_detached(name, addr, opts);
        console.repaint.attach(&ctx);
        console
    }

    /// Starts connecting before there is a window to repaint: the window attaches itself
    /// at its first frame ([`Console::ui`]). `vmdesk console` opens the connection this way
    /// while the window and its GL context are still being made, which are slower than
    /// the connection and the first update together.
    pub fn open_detached(name: &str, addr: SocketAddr, opts: ConsoleOptions) -> Console {
        let repaint = Repaint::default();
        let shared = Arc::new(Mutex::new(Shared {
            status: format!("connecting to {addr}…"),
            ..Default::default()
        }));
        if let Some(note) = opts.boot_note.clone() {
            spawn_boot_note_poll(note, Arc::downgrade(&shared), repaint.clone());
        }
        let (tx, rx) = unbounded_channel();
        let worker = Worker {
            shared: shared.clone(),
            target: opts
                .target
                .clone()
                .unwrap_or_else(|| Arc::new(move || Some(addr))),
            password_file: opts.password_file.clone(),
            repaint: repaint.clone(),
        };
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    lock(&worker.shared).status = format!("cannot start the viewer: {e}");
                    return;
                }
            };
            rt.block_on(worker.run(rx));
        });
        Console {
            name: name.into(),
            addr,
            shared,
            cmds: tx,
            texture: None,
            in_flight: Vec::new(),
            buttons: 0,
            last_pointer: None,
            fit: true,
            standalone: opts.standalone,
            frames_shown: opts.frames_shown.clone(),
            grabbed: false,
            chord: keys::ReleaseChord::default(),
            down: BTreeMap::new(),
            zoom_keys: None,
            paste_for: None,
            last_cut: None,
            notice: None,
            password: String::new(),
            opened: Instant::now(),
            first_frame_logged: false,
            repaint,
        }
    }

    pub fn close(&self) {
        let _ = self.cmds.send(Cmd::Close);
        lock(&self.shared).closed = true;
    }

    /// Whether the keyboard goes to the guest.
    pub fn grabbed(&self) -> bool {
        self.grabbed
    }

    fn send(&self, c: Cmd) {
        let _ = self.cmds.send(c);
    }

    fn key(&mut self, code: Option<u16>, keysym: u32, down: bool) {
        tracing::debug!(?code, keysym, down, "console: key to the guest");
        if let Some(c) = code {
            if down {
                self.down.insert(c, keysym);
            } else {
                self.down.remove(&c);
            }
        }
        self.send(Cmd::Key { keysym, down, code });
    }

    /// Lets go of every key the guest still holds down (grab released, focus lost).
    fn release_keys(&mut self) {
        for (code, keysym) in std::mem::take(&mut self.down) {
            self.send(Cmd::Key {
                keysym,
                down: false,
                code: Some(code),
            });
        }
    }

    /// Sends a send-key menu entry.
    pub fn send_combo(&mut self, combo: &keys::Combo) {
        for (code, sym, down) in keys::combo_events(combo.keys) {
            self.key(Some(code), sym, down);
        }
    }

    /// Types `text` into the guest (paced); returns how many characters had no key.
    pub fn type_text(&mut self, text: &str) -> usize {
        let (strokes, skipped) = typing::strokes(text);
        let typed = text.chars().count() - skipped;
        tracing::debug!(typed, skipped, "console: typing the clipboard");
        self.notice = Some(if skipped == 0 {
            format!("typing {typed} characters")
        } else {
            format!("typing {typed} characters; {skipped} with no key on a US keyboard skipped")
        });
        self.send(Cmd::Type(strokes));
        skipped
    }

    /// Offers `text` to the guest as its clipboard (UTF-8 through the Extended Clipboard
    /// when the server has it, else Latin-1 cut text).
    pub fn send_clipboard(&mut self, text: &str) {
        self.last_cut = Some(text.to_owned());
        self.send(Cmd::CutText(text.to_owned()));
    }

    fn request_paste(&mut self, ctx: &egui::Context, what: PasteFor) {
        self.paste_for = Some((what, Instant::now()));
        ctx.send_viewport_cmd(egui::ViewportCommand::RequestPaste);
    }

    /// Uploads what changed to the texture; returns (width, height, status, connected).
    fn sync_texture(&mut self, ctx: &egui::Context) -> (usize, usize, String, bool) {
        // Buffers of earlier uploads that the renderer has finished with come back here.
        let mut spare: Vec<Vec<Color32>> = std::mem::take(&mut self.in_flight)
            .into_iter()
            .filter_map(|img| Arc::try_unwrap(img).ok().map(|i| i.pixels))
            .collect();
        let mut uploads = Vec::new();
        // A new picture went to the GPU (a whole new texture, or changed regions).
        let mut new_pixels = false;
        let mut sh = lock(&self.shared);
        if sh.width > 0 && (sh.resized || self.texture.is_none()) {
            sh.resized = false;
            sh.dirty.clear();
            let img = ColorImage::new([sh.width, sh.height], sh.pixels.clone());
            self.texture = Some(ctx.load_texture("console", img, TextureOptions::NEAREST));
            // Updates that came before the window's first frame are in it.
            new_pixels = sh.rects > 0;
        } else if self.texture.is_some() {
            // Only the changed regions go to the GPU (copied out here, uploaded below,
            // so the connection thread is not kept waiting for the lock).
            for d in sh.take_dirty() {
                let mut px = spare.pop().unwrap_or_default();
                px.clear();
                px.reserve(d.w * d.h);
                for row in d.y..d.y + d.h {
                    let s = row * sh.width + d.x;
                    px.extend_from_slice(&sh.pixels[s..s + d.w]);
                }
                uploads.push(([d.x, d.y], Arc::new(ColorImage::new([d.w, d.h], px))));
            }
        }
        if !self.first_frame_logged && sh.rects > 0 && self.texture.is_some() {
            self.first_frame_logged = true;
            tracing::info!(
                "console {}: first frame uploaded after {} ms",
                self.name,
                self.opened.elapsed().as_millis()
            );
        }
        if let Some(t) = sh.server_cut.take() {
            // The guest's clipboard becomes the host's.
            self.last_cut = Some(t.clone());
            ctx.copy_text(t);
        }
        let out = (sh.width, sh.height, sh.status.clone(), sh.connected);
        drop(sh);
        new_pixels |= !uploads.is_empty();
        if let Some(n) = self.frames_shown.as_ref().filter(|_| new_pixels) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(tex) = &mut self.texture {
            for (at, img) in uploads {
                // Kept so its buffer can be reused once the renderer has uploaded it: a
                // stream of whole-screen frames then allocates (and page-faults) nothing.
                self.in_flight.push(img.clone());
                tex.set_partial(at, img, TextureOptions::NEAREST);
            }
        }
        out
    }

    /// Draws the console into `ui`: a toolbar, a status line and the screen.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.repaint.attach(&ctx);
        let (w, h, status, connected) = self.sync_texture(&ctx);
        self.password_prompt(&ctx);
        self.handle_paste(ui);
        self.toolbar(ui);
        ui.horizontal(|ui| {
            if self.grabbed {
                ui.strong("Press Ctrl+Alt to release the keyboard");
            } else if connected {
                ui.label("Click the screen to send it the keyboard");
            }
            ui.label(&status);
            if let Some(n) = &self.notice {
                ui.label(n);
            }
        });
        let boot_note = lock(&self.shared).boot_note.clone();
        if let Some(note) = boot_note {
            ui.colored_label(Color32::from_rgb(255, 170, 60), note);
        }
        let Some(tex) = self.texture.clone() else {
            return;
        };
        if w == 0 || h == 0 {
            return;
        }
        let ppp = ctx.pixels_per_point();
        let img_size = |avail: egui::Vec2| {
            if self.fit {
                let scale = (avail.x / w as f32)
                    .min(avail.y / h as f32)
                    .clamp(0.05, 8.0);
                egui::vec2(w as f32 * scale, h as f32 * scale)
            } else {
                // One guest pixel per physical pixel: sharp at any pixels_per_point.
                egui::vec2(w as f32 / ppp, h as f32 / ppp)
            }
        };
        let tint = if connected {
            Color32::WHITE
        } else {
            Color32::from_gray(110)
        };
        let show = |ui: &mut egui::Ui| {
            let size = img_size(ui.available_size());
            ui.add(
                egui::Image::new((tex.id(), size))
                    .tint(tint)
                    .sense(egui::Sense::click_and_drag()),
            )
        };
        let resp = if self.fit {
            show(ui)
        } else {
            egui::ScrollArea::both()
                .auto_shrink([false, false])
                .show(ui, show)
                .inner
        };
        let pressed = self.pointer(ui, &resp, (w, h));
        self.keyboard(ui, &resp, pressed);
    }

    fn toolbar(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        // Wraps in a narrow window rather than pushing the Copy button out of sight.
        ui.horizontal_wrapped(|ui| {
            ui.menu_button("Send key", |ui| {
                for combo in keys::SEND_KEYS {
                    if ui.button(combo.label).clicked() {
                        self.send_combo(combo);
                        ui.close();
                    }
                }
            });
            if ui
                .button("Type clipboard")
                .on_hover_text("Types the host clipboard as key presses (US layout)")
                .clicked()
            {
                self.request_paste(&ctx, PasteFor::Type);
            }
            if ui
                .button("Send clipboard")
                .on_hover_text(
                    "Offers the host clipboard to the guest (as Latin-1 text if its VNC \
                     server lacks the Extended Clipboard)",
                )
                .clicked()
            {
                self.request_paste(&ctx, PasteFor::CutText);
            }
            ui.separator();
            ui.selectable_value(&mut self.fit, true, "Scale to fit");
            ui.selectable_value(&mut self.fit, false, "1:1");
            if self.standalone {
                let full = ctx.input(|i| i.viewport().fullscreen.unwrap_or(false));
                if ui
                    .selectable_label(full, "Fullscreen")
                    .on_hover_text("Toggles fullscreen")
                    .clicked()
                {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(!full));
                }
            }
            ui.separator();
            let line = format!("vncviewer {}", crate::runtime::vnc_display(self.addr));
            ui.monospace(&line);
            if ui.small_button("Copy").clicked() {
                ctx.copy_text(line);
            }
        });
    }

    fn password_prompt(&mut self, ctx: &egui::Context) {
        let Some(why) = lock(&self.shared).need_password.clone() else {
            return;
        };
        let mut submit = false;
        let mut cancel = false;
        egui::Modal::new(egui::Id::unique(("vnc-password", &self.name))).show(ctx, |ui| {
            ui.heading(format!("Password for {}", self.name));
            if !why.is_empty() {
                ui.colored_label(ui.visuals().error_fg_color, &why);
            }
            let r = ui.add(egui::TextEdit::singleline(&mut self.password).password(true));
            r.request_focus();
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                submit = true;
            }
            ui.horizontal(|ui| {
                submit |= ui.button("Connect").clicked();
                cancel = ui.button("Cancel").clicked();
            });
        });
        if submit {
            lock(&self.shared).need_password = None;
            let p = std::mem::take(&mut self.password);
            self.send(Cmd::Password(p));
        } else if cancel {
            lock(&self.shared).need_password = None;
            self.password.clear();
            self.close();
            lock(&self.shared).status = "no password given".into();
        }
    }

    /// Clipboard text we asked for (Type / Send clipboard, or the grab's sync).
    fn handle_paste(&mut self, ui: &egui::Ui) {
        let Some((what, asked)) = self.paste_for else {
            return;
        };
        let text = ui.input(|i| {
            i.events.iter().find_map(|e| match e {
                egui::Event::Paste(t) => Some(t.clone()),
                _ => None,
            })
        });
        let Some(text) = text else {
            // An empty clipboard sends nothing. The wait is long: the answer comes from
            // another X client (the clipboard's owner) and a slow or busy desktop may take
            // a second or more (half a second lost "Type clipboard" in the nested host).
            if asked.elapsed() > PASTE_WAIT {
                tracing::debug!("console: no clipboard text came");
                self.paste_for = None;
            }
            return;
        };
        self.paste_for = None;
        // Ours: keep it from the keyboard handling and any text field.
        ui.ctx()
            .input_mut(|i| i.events.retain(|e| !matches!(e, egui::Event::Paste(_))));
        match what {
            PasteFor::Type => {
                self.type_text(&text);
            }
            PasteFor::CutText => {
                if self.last_cut.as_deref() != Some(text.as_str()) {
                    self.send_clipboard(&text);
                }
            }
        }
    }

    /// Sends the pointer's moves, buttons and wheel to the guest; true when a button went
    /// down on the screen this frame.
    fn pointer(&mut self, ui: &egui::Ui, resp: &egui::Response, (w, h): (usize, usize)) -> bool {
        let Some(pos) = resp.hover_pos() else {
            return false;
        };
        let (x, y) = guest_pixel(pos, resp.rect, (w, h));
        let (presses, buttons, scroll) = ui.input(|i| {
            let wheel: f32 = i
                .events
                .iter()
                .map(|e| match e {
                    egui::Event::MouseWheel { delta, .. } => delta.y,
                    _ => 0.0,
                })
                .sum();
            // Each press and release of this frame, in order, on the screen.
            let presses: Vec<(u8, bool)> = i
                .events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::PointerButton {
                        pos,
                        button,
                        pressed,
                        ..
                    } if resp.rect.contains(*pos) => {
                        let bit = match button {
                            egui::PointerButton::Primary => 1,
                            egui::PointerButton::Middle => 2,
                            egui::PointerButton::Secondary => 4,
                            _ => return None,
                        };
                        Some((bit, *pressed))
                    }
                    _ => None,
                })
                .collect();
            (
                presses,
                u8::from(i.pointer.primary_down())
                    | u8::from(i.pointer.middle_down()) << 1
                    | u8::from(i.pointer.secondary_down()) << 2,
                wheel,
            )
        });
        // A click shorter than a frame (a slow machine, a scripted click) is a press and a
        // release in one frame, with the button up again by the frame's end: each goes to
        // the guest, or it would see no click at all.
        let any_press = presses.iter().any(|&(_, pressed)| pressed);
        for (bit, pressed) in presses {
            let b = if pressed {
                self.buttons | bit
            } else {
                self.buttons & !bit
            };
            if b != self.buttons {
                self.last_pointer = Some((x, y));
                self.buttons = b;
                self.send(Cmd::Pointer(x, y, b));
            }
        }
        if self.last_pointer != Some((x, y)) || buttons != self.buttons {
            self.last_pointer = Some((x, y));
            self.buttons = buttons;
            self.send(Cmd::Pointer(x, y, buttons));
        }
        // The wheel is buttons 4 (up) and 5 (down), pressed and released.
        if scroll != 0.0 {
            let wheel = if scroll > 0.0 { 1 << 3 } else { 1 << 4 };
            self.send(Cmd::Pointer(x, y, buttons | wheel));
            self.send(Cmd::Pointer(x, y, buttons));
        }
        any_press
    }

    /// `pressed`: a button went down on the screen this frame. That, not egui's click,
    /// takes the grab: egui calls a press and release further apart than 0.8 s of frame
    /// time neither a click nor a drag, and a loaded machine's frames are that slow.
    fn keyboard(&mut self, ui: &egui::Ui, resp: &egui::Response, pressed: bool) {
        let ctx = ui.ctx().clone();
        if pressed || resp.clicked() || resp.drag_started() {
            tracing::debug!(grabbed = self.grabbed, "console: a click in the screen");
            resp.request_focus();
            if !self.grabbed {
                self.chord.reset();
                // As other viewers do on focus: the guest gets the host's clipboard.
                self.request_paste(&ctx, PasteFor::CutText);
            }
        }
        let window_focused = ctx.input(|i| i.viewport().focused.unwrap_or(true));
        let grabbed = resp.has_focus() && window_focused;
        if !grabbed {
            let keys = ctx.input(|i| {
                i.events
                    .iter()
                    .filter(|e| matches!(e, egui::Event::Key { .. }))
                    .count()
            });
            if keys > 0 {
                tracing::debug!(
                    keys,
                    has_focus = resp.has_focus(),
                    window_focused,
                    "console: keys not for the guest (not grabbed)"
                );
            }
            if self.grabbed {
                self.ungrab(&ctx, resp);
            }
            return;
        }
        if !self.grabbed {
            tracing::debug!("console: grabbed");
            self.grabbed = true;
            // Ctrl+Plus/Minus/0 are the guest's while grabbed, not egui's zoom.
            let prev = ctx.options(|o| o.zoom_with_keyboard);
            self.zoom_keys = Some(prev);
            ctx.options_mut(|o| o.zoom_with_keyboard = false);
        }
        // Tab, arrows and Esc stay here instead of moving egui's focus.
        ctx.memory_mut(|m| {
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
        let events = ctx.input(|i| i.events.clone());
        let mut release = false;
        // Text that follows a key sent as a scan code is that key's character: the guest
        // makes it from the scan code with its own layout.
        let mut skip_text = false;
        for ev in events {
            match ev {
                egui::Event::Key {
                    key,
                    physical_key,
                    pressed,
                    modifiers,
                    ..
                } => {
                    let code = physical_key.and_then(keys::scancode);
                    let sym = keys::keysym(key, modifiers.shift);
                    match (code, sym) {
                        (Some(c), _) => self.key(Some(c), sym.unwrap_or(0), pressed),
                        (None, Some(s)) => self.key(None, s, pressed),
                        (None, None) => {}
                    }
                    skip_text = pressed && (code.is_some() || sym.is_some());
                    release |= self.chord.feed(key, pressed);
                }
                egui::Event::Text(t) => {
                    if std::mem::take(&mut skip_text) {
                        continue;
                    }
                    // A character with no key event (an input method): as keysyms.
                    for c in t.chars() {
                        let sym = keys::char_keysym(c);
                        self.key(None, sym, true);
                        self.key(None, sym, false);
                    }
                }
                // egui turns Ctrl+C/X/V into these and drops the key press; the key's
                // release still comes as a key event. Sent as the US positions of C/X/V.
                egui::Event::Copy => self.key(Some(0x2e), u32::from(b'c'), true),
                egui::Event::Cut => self.key(Some(0x2d), u32::from(b'x'), true),
                egui::Event::Paste(_) => self.key(Some(0x2f), u32::from(b'v'), true),
                _ => {}
            }
        }
        // Every key was the guest's: no egui widget or shortcut sees it.
        ctx.input_mut(|i| {
            i.events.retain(|e| {
                !matches!(
                    e,
                    egui::Event::Key { .. }
                        | egui::Event::Text(_)
                        | egui::Event::Copy
                        | egui::Event::Cut
                        | egui::Event::Paste(_)
                )
            })
        });
        if release {
            resp.surrender_focus();
            self.ungrab(&ctx, resp);
        }
    }

    fn ungrab(&mut self, ctx: &egui::Context, resp: &egui::Response) {
        tracing::debug!("console: grab released");
        self.grabbed = false;
        self.chord.reset();
        self.release_keys();
        if resp.has_focus() {
            resp.surrender_focus();
        }
        if let Some(prev) = self.zoom_keys.take() {
            ctx.options_mut(|o| o.zoom_with_keyboard = prev);
        }
    }
}

/// Asks `note` every [`BOOT_NOTE_POLL`] until the console closes, keeping the answer in
/// its shared state and repainting when it changes.
fn spawn_boot_note_poll(note: BootNote, shared: std::sync::Weak<Mutex<Shared>>, repaint: Repaint) {
    std::thread::spawn(move || {
        loop {
            let now = note();
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut sh = lock(&shared);
            if sh.closed {
                return;
            }
            if sh.boot_note != now {
                sh.boot_note = now;
                repaint.request();
            }
            drop(sh);
            drop(shared);
            std::thread::sleep(BOOT_NOTE_POLL);
        }
    });
}

impl Drop for Console {
    fn drop(&mut self) {
        self.close();
    }
}

/// The guest pixel under window position `pos`, the screen being drawn in `rect`; exact
/// at any scale and pixels_per_point, clamped to the screen.
fn guest_pixel(pos: egui::Pos2, rect: egui::Rect, (w, h): (usize, usize)) -> (u16, u16) {
    let fx = (pos.x - rect.min.x) * w as f32 / rect.width().max(f32::EPSILON);
    let fy = (pos.y - rect.min.y) * h as f32 / rect.height().max(f32::EPSILON);
    let x = (fx.max(0.0) as usize).min(w.saturating_sub(1));
    let y = (fy.max(0.0) as usize).min(h.saturating_sub(1));
    (
        x.min(usize::from(u16::MAX)) as u16,
        y.min(usize::from(u16::MAX)) as u16,
    )
}

fn lock(s: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic elsewhere must not take the window down with it.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use display::encoding::Rect;

    #[test]
    fn rectangles_are_clipped_and_marked() {
        let mut s = Shared::default();
        s.resize(4, 3);
        s.resized = false;
        // A 2x2 red square at (3,2) (bytes B, G, R, unused): only (3,2) is on the screen.
        s.put((3, 2, 2, 2), &[0, 0, 255, 0].repeat(4));
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
        s.put((0, 0, 1, 1), &[255, 0, 0, 0]);
        s.copy((1, 1), (0, 0, 1, 1));
        assert_eq!(s.pixels[4 + 1], Color32::from_rgb(0, 0, 255));
        // A copy from outside the screen is ignored.
        s.copy((0, 0), (3, 2, 5, 5));
        assert_eq!(s.pixels[0], Color32::from_rgb(0, 0, 255));
        // A rectangle entirely off-screen marks nothing.
        s.dirty.clear();
        s.put((10, 10, 1, 1), &[1, 2, 3, 0]);
        assert!(s.dirty.is_empty());
        // A short buffer writes what it has and does not panic.
        s.put((0, 0, 4, 3), &[9, 9, 9, 0]);
        assert_eq!(s.pixels[0], Color32::from_rgb(9, 9, 9));
        // Same size again keeps the picture (a reconnect shows the last frame).
        s.resize(4, 3);
        assert_eq!(s.pixels[0], Color32::from_rgb(9, 9, 9));
    }

    /// The server's bytes (B, G, R, anything) become opaque RGBA, whatever the unused byte
    /// holds and at any offset in a row.
    #[test]
    fn wire_pixels_become_opaque_rgba() {
        let src = [
            0x10, 0x20, 0x30, 0x00, 0x01, 0x02, 0x03, 0xff, 0xaa, 0xbb, 0xcc, 0x7f,
        ];
        let mut dst = [Color32::TRANSPARENT; 3];
        bgrx_to_color32(&src, &mut dst);
        assert_eq!(
            dst,
            [
                Color32::from_rgb(0x30, 0x20, 0x10),
                Color32::from_rgb(0x03, 0x02, 0x01),
                Color32::from_rgb(0xcc, 0xbb, 0xaa),
            ]
        );
        let mut s = Shared::default();
        s.resize(5, 2);
        s.put((1, 1, 3, 1), &src);
        assert_eq!(&s.pixels[6..9], &dst);
        assert_eq!(s.pixels[5], Color32::BLACK);
        assert_eq!(s.pixels[9], Color32::BLACK);
    }

    /// CopyRect onto an overlapping destination (a scroll up or down, or sideways) moves
    /// the picture as the server meant it, not a smeared copy.
    #[test]
    fn overlapping_copies_move_the_picture() {
        let mut s = Shared::default();
        s.resize(3, 4);
        let column =
            |s: &Shared, x: usize| -> Vec<u8> { (0..4).map(|y| s.pixels[y * 3 + x].r()).collect() };
        for y in 0..4u8 {
            s.put((0, usize::from(y), 3, 1), &[0, 0, y + 1, 0].repeat(3));
        }
        // Scroll down by one row: rows 0..3 to 1..4.
        s.copy((0, 1), (0, 0, 3, 3));
        assert_eq!(column(&s, 0), [1, 1, 2, 3]);
        // And back up by two: rows 2..4 to 0..2.
        s.copy((0, 0), (0, 2, 3, 2));
        assert_eq!(column(&s, 2), [2, 3, 2, 3]);
        // Sideways within a row.
        s.put((0, 0, 3, 1), &[0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0]);
        s.copy((1, 0), (0, 0, 2, 1));
        assert_eq!(
            (0..3).map(|x| s.pixels[x].r()).collect::<Vec<_>>(),
            [7, 7, 8]
        );
    }

    /// Two whole-screen updates between paints are one upload, not two; separate small
    /// regions stay separate; a window that never paints keeps a bounded list.
    #[test]
    fn overlapping_regions_upload_once_and_the_list_stays_bounded() {
        let mut s = Shared::default();
        s.resize(100, 50);
        s.mark(0, 0, 100, 50);
        s.mark(0, 0, 100, 50);
        assert_eq!(
            s.take_dirty(),
            [Dirty {
                x: 0,
                y: 0,
                w: 100,
                h: 50
            }]
        );
        s.mark(0, 0, 2, 2);
        s.mark(90, 40, 2, 2);
        assert_eq!(s.take_dirty().len(), 2);
        for i in 0..10_000 {
            s.mark(i % 100, (i / 100) % 50, 1, 1);
            assert!(s.dirty.len() <= MAX_DIRTY);
        }
        let d = s.take_dirty();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].w, d[0].h), (100, 50));
    }

    #[test]
    fn many_changed_regions_upload_as_one() {
        let mut s = Shared::default();
        s.resize(100, 100);
        for i in 0..40 {
            s.mark(i * 2, i, 2, 1);
        }
        assert_eq!(
            s.take_dirty(),
            [Dirty {
                x: 0,
                y: 0,
                w: 80,
                h: 40
            }]
        );
        s.mark(1, 2, 3, 4);
        assert_eq!(s.take_dirty().len(), 1);
        assert!(s.take_dirty().is_empty());
    }

    #[test]
    fn pointer_is_exact_scaled_and_one_to_one() {
        let rect = |x, y, w, h| egui::Rect::from_min_size(egui::pos2(x, y), egui::vec2(w, h));
        // Fit: 640x480 shown at 2x from (10, 20).
        let r = rect(10.0, 20.0, 1280.0, 960.0);
        assert_eq!(guest_pixel(egui::pos2(10.0, 20.0), r, (640, 480)), (0, 0));
        assert_eq!(guest_pixel(egui::pos2(13.9, 23.9), r, (640, 480)), (1, 1));
        assert_eq!(
            guest_pixel(egui::pos2(5000.0, -3.0), r, (640, 480)),
            (639, 0)
        );
        // 1:1 at pixels_per_point 1.5: 640 guest pixels are 426.67 points wide, and the
        // point 100 physical pixels right of the image's corner is guest pixel 100.
        let ppp = 1.5;
        let r = rect(10.0, 20.0, 640.0 / ppp, 480.0 / ppp);
        let at = |px: f32, py: f32| egui::pos2(10.0 + (px + 0.5) / ppp, 20.0 + (py + 0.5) / ppp);
        assert_eq!(guest_pixel(at(100.0, 7.0), r, (640, 480)), (100, 7));
        assert_eq!(guest_pixel(at(639.0, 479.0), r, (640, 480)), (639, 479));
        assert_eq!(guest_pixel(at(333.0, 250.0), r, (640, 480)), (333, 250));
    }

    type Keys = Mutex<Vec<(u32, bool, Option<u16>)>>;
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u16, u16, u8)>>, Keys, Mutex<Vec<String>>);
    impl display::rfb::InputSink for Recorder {
        fn key(&self, keysym: u32, down: bool, scancode: Option<u16>) {
            self.1.lock().unwrap().push((keysym, down, scancode));
        }
        fn pointer(&self, x: u16, y: u16, buttons: u8) {
            self.0.lock().unwrap().push((x, y, buttons));
        }
        fn clipboard(&self, text: String) {
            self.2.lock().unwrap().push(text);
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the server has had as many key events as `expect`, then checks them.
    fn assert_keys(sink: &Recorder, expect: &[(u32, bool, Option<u16>)]) {
        wait_for("the keys", || sink.1.lock().unwrap().len() >= expect.len());
        assert_eq!(*sink.1.lock().unwrap(), expect);
    }

    fn server(
        w: u16,
        h: u16,
        cfg: impl FnOnce(&mut display::rfb::VncConfig),
    ) -> (
        display::rfb::VncServer,
        Arc<display::surface::Surface>,
        Arc<Recorder>,
    ) {
        let surface = display::surface::Surface::new(w, h);
        surface.fill_rect(Rect::new(0, 0, w, h), 0x00cc_0000);
        let sink = Arc::new(Recorder::default());
        let mut config = display::rfb::VncConfig::new("127.0.0.1:0".parse().unwrap());
        cfg(&mut config);
        let server = display::rfb::VncServer::start(config, surface.clone(), sink.clone()).unwrap();
        (server, surface, sink)
    }

    fn px(console: &Console, x: usize, y: usize) -> Option<Color32> {
        let sh = lock(&console.shared);
        (sh.width > x && sh.height > y).then(|| sh.pixels[y * sh.width + x])
    }

    /// A console opened before its window exists (`vmdesk console`) connects and takes the
    /// screen at once; the window's first frame then shows it, counted as a frame shown.
    #[test]
    fn a_detached_console_connects_before_the_window_and_shows_at_its_first_frame() {
        let (server, _surface, _sink) = server(64, 48, |_| {});
        let shown = Arc::new(AtomicU64::new(0));
        let opts = ConsoleOptions {
            frames_shown: Some(shown.clone()),
            ..Default::default()
        };
        let mut console = Console::open_detached("t", server.local_addr(), opts);
        wait_for("the first update, with no window", || {
            lock(&console.shared).rects > 0
        });
        assert!(console.texture.is_none());
        let ctx = egui::Context::default();
        frame(&ctx, &mut console, vec![]);
        assert!(console.texture.is_some(), "drawn at the first frame");
        assert_eq!(shown.load(Ordering::Relaxed), 1);
        assert_eq!(px(&console, 0, 0), Some(Color32::from_rgb(0xcc, 0, 0)));
    }

    /// The console against our own VNC server: it shows the surface, follows a change, and
    /// its pointer and keys reach the server's input sink.
    #[test]
    fn shows_the_screen_and_sends_input() {
        let (server, surface, sink) = server(64, 48, |_| {});
        surface.fill_rect(Rect::new(10, 5, 8, 4), 0x0000_33ff);
        let console = Console::open("t", server.local_addr(), None, egui::Context::default());
        wait_for("the first frame", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
                && px(&console, 11, 6) == Some(Color32::from_rgb(0, 0x33, 0xff))
        });
        surface.fill_rect(Rect::new(40, 30, 4, 4), 0x0000_ff00);
        wait_for("an incremental update", || {
            px(&console, 41, 31) == Some(Color32::from_rgb(0, 0xff, 0))
        });
        assert!(!lock(&console.shared).dirty.is_empty());
        console.send(Cmd::Pointer(12, 34, 1));
        console.send(Cmd::Key {
            keysym: 0x71,
            down: true,
            code: None,
        });
        wait_for("the pointer", || {
            sink.0.lock().unwrap().contains(&(12, 34, 1))
        });
        wait_for("the key", || {
            sink.1.lock().unwrap().contains(&(0x71, true, None))
        });
        // The guest changes mode: the console follows.
        surface.resize(80, 60);
        surface.fill_rect(Rect::new(0, 0, 80, 60), 0x0000_00ff);
        wait_for("the new size", || {
            px(&console, 79, 59) == Some(Color32::from_rgb(0, 0, 0xff))
        });
    }

    /// Drives the console's window as egui would: one frame with these events.
    fn frame(ctx: &egui::Context, console: &mut Console, events: Vec<egui::Event>) {
        let raw = egui::RawInput {
            events,
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(800.0, 600.0),
            )),
            ..Default::default()
        };
        // No renderer here: drop the texture uploads on purpose.
        ctx.run_ui(raw, |ui| console.ui(ui)).textures_delta.clear();
    }

    fn key(key: egui::Key, physical: Option<egui::Key>, pressed: bool) -> egui::Event {
        egui::Event::Key {
            key,
            physical_key: physical,
            pressed,
            repeat: false,
            modifiers: egui::Modifiers::default(),
        }
    }

    fn primary_button(pos: egui::Pos2, pressed: bool) -> egui::Event {
        egui::Event::PointerButton {
            pos,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: egui::Modifiers::default(),
        }
    }

    /// Opens a console on `server`, waits for its picture and grabs the keyboard by
    /// clicking into the screen.
    fn grabbed_console(server: &display::rfb::VncServer, ctx: &egui::Context) -> Console {
        let mut console = Console::open("t", server.local_addr(), None, ctx.clone());
        wait_for("the first frame", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
        });
        frame(ctx, &mut console, vec![]);
        let p = egui::pos2(400.0, 330.0);
        let button = |pressed| primary_button(p, pressed);
        frame(
            ctx,
            &mut console,
            vec![egui::Event::PointerMoved(p), button(true)],
        );
        frame(ctx, &mut console, vec![button(false)]);
        frame(ctx, &mut console, vec![]);
        assert!(
            console.grabbed(),
            "a click into the screen grabs the keyboard"
        );
        console
    }

    /// A click the frames see as slow (press and release 2 s apart: a loaded machine's
    /// frame rate, or a person who holds the button) grabs the keyboard all the same: egui
    /// calls that neither a click nor a drag, but the person clicked into the screen.
    #[test]
    fn a_slow_click_grabs_the_keyboard() {
        let (server, _surface, _sink) = server(64, 48, |_| {});
        let ctx = egui::Context::default();
        let mut console = Console::open("t", server.local_addr(), None, ctx.clone());
        wait_for("the first frame", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
        });
        let at = |time: f64, events: Vec<egui::Event>| egui::RawInput {
            events,
            time: Some(time),
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(800.0, 600.0),
            )),
            ..Default::default()
        };
        let p = egui::pos2(400.0, 330.0);
        for raw in [
            at(1.0, vec![egui::Event::PointerMoved(p)]),
            at(1.1, vec![primary_button(p, true)]),
            at(3.1, vec![primary_button(p, false)]),
            at(3.2, vec![]),
        ] {
            ctx.run_ui(raw, |ui| console.ui(ui)).textures_delta.clear();
        }
        assert!(console.grabbed(), "a slow click into the screen grabs");
    }

    /// A press and a release in one frame (a click quicker than a frame) still reach the
    /// server as a press, then a release, at the pointer's place.
    #[test]
    fn a_click_within_one_frame_is_a_click() {
        let (server, _surface, sink) = server(64, 48, |_| {});
        let ctx = egui::Context::default();
        let mut console = Console::open("t", server.local_addr(), None, ctx.clone());
        wait_for("the first frame", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
        });
        frame(&ctx, &mut console, vec![]);
        let p = egui::pos2(400.0, 330.0);
        let button = |pressed| primary_button(p, pressed);
        frame(
            &ctx,
            &mut console,
            vec![egui::Event::PointerMoved(p), button(true), button(false)],
        );
        frame(&ctx, &mut console, vec![]);
        wait_for("a press and a release", || {
            let got = sink.0.lock().unwrap();
            let buttons: Vec<u8> = got.iter().map(|e| e.2).collect();
            buttons.windows(2).any(|w| w == [1, 0])
        });
        let got = sink.0.lock().unwrap();
        let pressed = got.iter().find(|e| e.2 == 1).unwrap();
        let released = got.iter().rev().find(|e| e.2 == 0).unwrap();
        assert_eq!((pressed.0, pressed.1), (released.0, released.1), "{got:?}");
    }

    /// A key egui reports with its physical position reaches the server as that position's
    /// scan code, whatever the logical key (a French AZERTY `A` is the US `Q` key), and
    /// its character is not sent again as a keysym; Ctrl+Alt alone releases the grab,
    /// after which keys stay on the host.
    #[test]
    fn physical_keys_arrive_as_scan_codes_and_ctrl_alt_releases() {
        use egui::Key;
        let (server, _surface, sink) = server(64, 48, |_| {});
        let ctx = egui::Context::default();
        let mut console = grabbed_console(&server, &ctx);
        frame(
            &ctx,
            &mut console,
            vec![
                key(Key::A, Some(Key::Q), true),
                egui::Event::Text("a".into()),
                key(Key::A, Some(Key::Q), false),
                key(Key::ArrowUp, Some(Key::ArrowUp), true),
                key(Key::ArrowUp, Some(Key::ArrowUp), false),
                key(Key::Tab, Some(Key::Tab), true),
                key(Key::Tab, Some(Key::Tab), false),
            ],
        );
        let expect = vec![
            (0x61, true, Some(0x10)),
            (0x61, false, Some(0x10)),
            (0xff52, true, Some(0xe048)),
            (0xff52, false, Some(0xe048)),
            (0xff09, true, Some(0x0f)),
            (0xff09, false, Some(0x0f)),
        ];
        assert_keys(&sink, &expect);
        assert!(console.grabbed(), "Tab does not move the focus away");
        sink.1.lock().unwrap().clear();

        frame(
            &ctx,
            &mut console,
            vec![
                key(Key::ControlLeft, Some(Key::ControlLeft), true),
                key(Key::AltLeft, Some(Key::AltLeft), true),
                key(Key::AltLeft, Some(Key::AltLeft), false),
                key(Key::ControlLeft, Some(Key::ControlLeft), false),
            ],
        );
        frame(&ctx, &mut console, vec![]);
        assert!(!console.grabbed(), "Ctrl+Alt releases the grab");
        frame(
            &ctx,
            &mut console,
            vec![
                key(Key::B, Some(Key::B), true),
                key(Key::B, Some(Key::B), false),
            ],
        );
        wait_for("the chord", || sink.1.lock().unwrap().len() >= 4);
        std::thread::sleep(Duration::from_millis(200));
        let got = sink.1.lock().unwrap().clone();
        assert_eq!(
            got.len(),
            4,
            "keys after the release stay on the host: {got:?}"
        );
        assert_eq!(got[3], (0xffe3, false, Some(0x1d)));
    }

    /// A grab released while a key is down lets the guest see it go up; the send-key
    /// menu's Ctrl+Alt+Del arrives as scan codes in order.
    #[test]
    fn held_keys_are_released_and_send_keys_arrive() {
        use egui::Key;
        let (server, _surface, sink) = server(64, 48, |_| {});
        let ctx = egui::Context::default();
        let mut console = grabbed_console(&server, &ctx);
        frame(
            &ctx,
            &mut console,
            vec![key(Key::ShiftLeft, Some(Key::ShiftLeft), true)],
        );
        // The window loses focus with Shift still down.
        let raw = egui::RawInput {
            focused: false,
            ..Default::default()
        };
        ctx.run_ui(raw, |ui| console.ui(ui)).textures_delta.clear();
        assert!(!console.grabbed());
        console.send_combo(&keys::SEND_KEYS[0]);
        let expect = vec![
            (0xffe1, true, Some(0x2a)),
            (0xffe1, false, Some(0x2a)),
            (0xffe3, true, Some(0x1d)),
            (0xffe9, true, Some(0x38)),
            (0xffff, true, Some(0xe053)),
            (0xffff, false, Some(0xe053)),
            (0xffe9, false, Some(0x38)),
            (0xffe3, false, Some(0x1d)),
        ];
        assert_keys(&sink, &expect);
    }

    /// "Type clipboard": the text arrives in order, Shift around shifted characters, paced;
    /// characters with no US key are skipped and counted.
    #[test]
    fn typed_text_arrives_in_order_with_shift() {
        let (server, _surface, sink) = server(64, 48, |_| {});
        let mut console = Console::open("t", server.local_addr(), None, egui::Context::default());
        wait_for("connected", || lock(&console.shared).connected);
        let start = Instant::now();
        assert_eq!(console.type_text("Hi!\né"), 1);
        let (expect, _) = typing::strokes("Hi!\n");
        let expect: Vec<_> = expect
            .iter()
            .map(|s| (s.keysym, s.down, Some(s.code)))
            .collect();
        assert_eq!(expect.len(), 12);
        assert_keys(&sink, &expect);
        assert_eq!(expect[0], (0xffe1, true, Some(0x2a)));
        assert!(
            start.elapsed() >= TYPE_INTERVAL * (expect.len() as u32 - 1),
            "typing is paced"
        );
    }

    /// "Type clipboard" asked; the clipboard's owner answered a second later (a busy
    /// desktop): the text is still typed. Nothing coming for longer stops the wait.
    #[test]
    fn clipboard_text_that_comes_late_is_still_typed() {
        let (server, _surface, sink) = server(64, 48, |_| {});
        let mut console = Console::open("t", server.local_addr(), None, egui::Context::default());
        wait_for("connected", || lock(&console.shared).connected);
        let ctx = egui::Context::default();
        let frame = |console: &mut Console, events: Vec<egui::Event>| {
            let input = egui::RawInput {
                events,
                ..Default::default()
            };
            let _ = ctx.run_ui(input, |ui| console.handle_paste(ui));
        };
        console.paste_for = Some((PasteFor::Type, Instant::now() - Duration::from_secs(1)));
        frame(&mut console, vec![]);
        assert!(console.paste_for.is_some(), "still waiting after a second");
        frame(&mut console, vec![egui::Event::Paste("ab".into())]);
        assert!(console.paste_for.is_none());
        let (expect, _) = typing::strokes("ab");
        let expect: Vec<_> = expect
            .iter()
            .map(|s| (s.keysym, s.down, Some(s.code)))
            .collect();
        assert_keys(&sink, &expect);
        console.paste_for = Some((PasteFor::Type, Instant::now() - PASTE_WAIT * 2));
        frame(&mut console, vec![]);
        assert!(console.paste_for.is_none(), "no longer waiting");
    }

    /// Our server speaks the Extended Clipboard: UTF-8 text arrives intact both ways (the
    /// guest's through Notify, Request, Provide; the host's as a Provide).
    #[test]
    fn clipboard_goes_both_ways_in_utf8() {
        let (server, _surface, sink) = server(64, 48, |_| {});
        let mut console = Console::open("t", server.local_addr(), None, egui::Context::default());
        wait_for("the extended clipboard", || {
            lock(&console.shared).ext_clipboard
        });
        server.set_clipboard("héllo € ünïcode");
        wait_for("the guest's text", || {
            lock(&console.shared).server_cut.as_deref() == Some("héllo € ünïcode")
        });
        console.send_clipboard("€ ünï\nline two");
        wait_for("the host's text", || !sink.2.lock().unwrap().is_empty());
        assert_eq!(*sink.2.lock().unwrap(), vec!["€ ünï\nline two".to_string()]);
        // The picture still comes through the framed stream.
        wait_for("the picture", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
        });
    }

    /// A scripted RFB 3.8 server without the Extended Clipboard (as QEMU before 6.1): the
    /// console still offers it in SetEncodings, but sends Latin-1 cut text, and the
    /// server's Latin-1 cut text is read as Latin-1.
    #[test]
    fn a_server_without_the_extended_clipboard_gets_latin1() {
        use display::rfb::protocol::{
            ClientMessage, Limits, read_client_message, write_server_cut_text,
        };
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (got_tx, got) = std::sync::mpsc::channel();
        let (send, send_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 12];
            s.write_all(b"RFB 003.008\n").unwrap();
            s.read_exact(&mut b).unwrap();
            s.write_all(&[1, 1]).unwrap();
            s.read_exact(&mut b[..1]).unwrap();
            s.write_all(&0u32.to_be_bytes()).unwrap();
            s.read_exact(&mut b[..1]).unwrap();
            let mut init = vec![0, 32, 0, 16];
            init.extend_from_slice(&display::pixel::PixelFormat::NATIVE.to_bytes());
            init.extend_from_slice(&4u32.to_be_bytes());
            init.extend_from_slice(b"qemu");
            s.write_all(&init).unwrap();
            let mut w = s.try_clone().unwrap();
            std::thread::spawn(move || {
                for m in send_rx {
                    if w.write_all(&m).is_err() {
                        return;
                    }
                }
            });
            while let Ok(m) = read_client_message(&mut s, &Limits::default()) {
                if got_tx.send(m).is_err() {
                    return;
                }
            }
        });
        let mut console = Console::open("t", addr, None, egui::Context::default());
        wait_for("connected", || lock(&console.shared).connected);
        console.send_clipboard("héllo €");
        let mut seen = Vec::new();
        while !seen.iter().any(|m| matches!(m, ClientMessage::CutText(_))) {
            seen.push(
                got.recv_timeout(Duration::from_secs(10))
                    .expect("the cut text"),
            );
        }
        assert!(
            seen.contains(&ClientMessage::CutText("héllo ?".into())),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|m| matches!(m, ClientMessage::SetEncodings(e)
                if e.contains(&display::encoding::number::EXTENDED_CLIPBOARD))),
            "the console offers the Extended Clipboard: {seen:?}"
        );
        let mut m = Vec::new();
        write_server_cut_text("héllo wörld", &mut m);
        send.send(m).unwrap();
        wait_for("the server's cut text", || {
            lock(&console.shared).server_cut.as_deref() == Some("héllo wörld")
        });
        assert!(!lock(&console.shared).ext_clipboard);
        assert!(
            !seen
                .iter()
                .any(|m| matches!(m, ClientMessage::ExtendedCutText { .. })),
            "{seen:?}"
        );
    }

    /// A VM with a password: the console asks, a wrong answer asks again with the reason,
    /// the right one connects.
    #[test]
    fn asks_for_the_password_until_it_is_right() {
        let (server, _surface, _sink) = server(64, 48, |c| {
            c.password = Some(display::rfb::Password::new("s3cret"));
        });
        let console = Console::open("t", server.local_addr(), None, egui::Context::default());
        wait_for("the prompt", || {
            lock(&console.shared).need_password.is_some()
        });
        assert_eq!(lock(&console.shared).need_password.as_deref(), Some(""));
        lock(&console.shared).need_password = None;
        console.send(Cmd::Password("wrong".into()));
        wait_for("the second prompt", || {
            lock(&console.shared).need_password.is_some()
        });
        let why = lock(&console.shared).need_password.take().unwrap();
        assert!(why.starts_with("Wrong password"), "{why}");
        console.send(Cmd::Password("s3cret".into()));
        wait_for("the picture", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
        });
        assert!(lock(&console.shared).connected);
    }

    /// The server goes away (a VMM restart) and comes back on the same port: the console
    /// says so, keeps the last frame, and reconnects by itself.
    #[test]
    fn reconnects_after_the_server_restarts() {
        let (mut server, _surface, _sink) = server(64, 48, |_| {});
        let addr = server.local_addr();
        let console = Console::open("t", addr, None, egui::Context::default());
        wait_for("the first frame", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
        });
        server.shutdown();
        drop(server);
        wait_for("the disconnect", || !lock(&console.shared).connected);
        assert!(lock(&console.shared).status.starts_with("Disconnected"));
        assert_eq!(px(&console, 0, 0), Some(Color32::from_rgb(0xcc, 0, 0)));
        let surface = display::surface::Surface::new(64, 48);
        surface.fill_rect(Rect::new(0, 0, 64, 48), 0x0000_ff00);
        let _server = display::rfb::VncServer::start(
            display::rfb::VncConfig::new(addr),
            surface,
            Arc::new(display::rfb::NullInput),
        )
        .unwrap();
        wait_for("the new picture", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0, 0xff, 0))
        });
        assert!(lock(&console.shared).connected);
    }

    /// While the owner says the VM is not running, the console waits instead of dialling.
    #[test]
    fn the_boot_note_follows_the_vm() {
        let (server, _surface, _sink) = server(64, 48, |_| {});
        let note = Arc::new(Mutex::new(Some("No bootable device: x".to_string())));
        let n = note.clone();
        let console = Console::open_with(
            "t",
            server.local_addr(),
            ConsoleOptions {
                boot_note: Some(Arc::new(move || n.lock().unwrap().clone())),
                ..Default::default()
            },
            egui::Context::default(),
        );
        wait_for("the note", || {
            lock(&console.shared).boot_note.as_deref() == Some("No bootable device: x")
        });
        *note.lock().unwrap() = None;
        wait_for("the note gone", || {
            lock(&console.shared).boot_note.is_none()
        });
    }

    #[test]
    fn waits_while_the_vm_is_stopped() {
        let (server, _surface, _sink) = server(64, 48, |_| {});
        let addr = server.local_addr();
        let running = Arc::new(AtomicBool::new(false));
        let r = running.clone();
        let console = Console::open_with(
            "t",
            addr,
            ConsoleOptions {
                target: Some(Arc::new(move || r.load(Ordering::SeqCst).then_some(addr))),
                ..Default::default()
            },
            egui::Context::default(),
        );
        wait_for("the stopped status", || {
            lock(&console.shared).status == "the VM is not running"
        });
        assert_eq!(server.client_count(), 0);
        running.store(true, Ordering::SeqCst);
        wait_for("the picture", || {
            px(&console, 0, 0) == Some(Color32::from_rgb(0xcc, 0, 0))
        });
    }
}
