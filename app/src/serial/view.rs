//! The window's serial console: a VM's COM1 drawn as a VT100 terminal (`vt100` parses the
//! stream into a screen with colours, a cursor and scrollback) in an egui window, with the
//! keyboard going back to the guest.
//!
//! A reader thread feeds what the socket brings into the parser and asks for a repaint; a
//! writer thread sends the keys, so the window never waits on the socket. The screen is
//! 80x24, what a serial getty and a text installer assume (a serial line carries no
//! window size). Each row is a label (so it reads out, and tests find its text), with
//! runs of equal colours as sections; the cursor is its cell drawn inverse. The mouse
//! wheel scrolls through the scrollback; a key typed returns to the live screen.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};

use eframe::egui;
use egui::text::{LayoutJob, TextFormat};
use egui::{Color32, FontId, RichText};

use super::keys::key_bytes;
use crate::service::VmService;

pub const ROWS: u16 = 24;
pub const COLS: u16 = 80;
/// Lines kept above the screen for the mouse wheel.
pub const SCROLLBACK_LINES: usize = 5000;
const FONT_SIZE: f32 = 14.0;
const BACKGROUND: Color32 = Color32::from_rgb(0, 0, 0);
const FOREGROUND: Color32 = Color32::from_rgb(0xd0, 0xd0, 0xd0);

/// What the reader thread shares with the window.
struct Screen {
    parser: vt100::Parser,
    /// Why the connection ended, once it has.
    ended: Option<String>,
}

fn new_parser() -> vt100::Parser {
    let n = |v: u16| std::num::NonZeroU16::new(v).expect("a non-zero size");
    vt100::Parser::new(n(ROWS), n(COLS), SCROLLBACK_LINES)
}

/// One VM's serial console.
pub struct SerialConsole {
    pub name: String,
    screen: Arc<Mutex<Screen>>,
    /// Keys to the writer thread; `None` when not connected.
    keys: Option<Sender<Vec<u8>>>,
    /// The connection, shut down when the console goes (which ends the reader thread and
    /// tells the VMM this viewer is gone).
    stream: Option<UnixStream>,
    /// Why it could not connect.
    error: Option<String>,
    /// Lines scrolled back from the live screen.
    scrolled: usize,
    /// Wheel movement not yet a whole line.
    wheel: f32,
    focus_asked: bool,
}

fn lock(screen: &Mutex<Screen>) -> MutexGuard<'_, Screen> {
    screen.lock().unwrap_or_else(|e| e.into_inner())
}

impl SerialConsole {
    /// Connects to the serial console of the running VM `name`; a console that could not
    /// connect shows why.
    pub fn open(vms: &VmService, name: &str, ctx: &egui::Context) -> SerialConsole {
        match vms.serial_connect(name) {
            Ok(stream) => SerialConsole::attach(name, stream, ctx),
            Err(e) => {
                let mut c = SerialConsole::detached(name);
                c.error = Some(e.to_string());
                c
            }
        }
    }

    fn detached(name: &str) -> SerialConsole {
        SerialConsole {
            name: name.to_string(),
            screen: Arc::new(Mutex::new(Screen {
                parser: new_parser(),
                ended: None,
            })),
            keys: None,
            stream: None,
            error: None,
            scrolled: 0,
            wheel: 0.0,
            focus_asked: false,
        }
    }

    /// A console on a connected stream (the VMM's socket, or a test's).
    pub fn attach(name: &str, stream: UnixStream, ctx: &egui::Context) -> SerialConsole {
        let mut c = SerialConsole::detached(name);
        let clones = stream
            .try_clone()
            .and_then(|w| Ok((w, stream.try_clone()?)));
        let (writer, own) = match clones {
            Ok(pair) => pair,
            Err(e) => {
                c.error = Some(format!("'{name}': serial console: {e}"));
                return c;
            }
        };
        let (keys, pending) = channel::<Vec<u8>>();
        let _ = std::thread::Builder::new()
            .name("serial-keys".into())
            .spawn(move || {
                let mut writer = writer;
                for bytes in pending {
                    if writer.write_all(&bytes).is_err() {
                        return;
                    }
                }
            });
        let screen = c.screen.clone();
        let ctx = ctx.clone();
        let _ = std::thread::Builder::new()
            .name("serial-view".into())
            .spawn(move || read_into(stream, &screen, &ctx));
        c.keys = Some(keys);
        c.stream = Some(own);
        c
    }

    /// Reconnects after the VM was restarted (or the VMM let go of this viewer): a fresh
    /// screen, as the VMM replays its scrollback to the new connection.
    pub fn reconnect(&mut self, vms: &VmService, ctx: &egui::Context) {
        *self = SerialConsole::open(vms, &self.name, ctx);
    }

    /// The screen's text, rows joined by newlines (for tests and screen readers alike).
    pub fn contents(&self) -> String {
        lock(&self.screen).parser.screen().contents()
    }

    /// Sends bytes to the guest, as typed.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Some(k) = &self.keys
            && k.send(bytes.to_vec()).is_err()
        {
            self.keys = None;
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, vms: Option<&VmService>) {
        let ended = lock(&self.screen).ended.clone();
        ui.horizontal(|ui| {
            match (&self.error, &ended) {
                (Some(e), _) => {
                    ui.colored_label(Color32::LIGHT_RED, e);
                }
                (None, Some(why)) => {
                    ui.colored_label(Color32::LIGHT_RED, why);
                }
                (None, None) if self.scrolled > 0 => {
                    ui.label(format!(
                        "{} lines back (type, or scroll down, to return)",
                        self.scrolled
                    ));
                }
                (None, None) => {
                    ui.label(RichText::new("COM1; click here and type").weak());
                }
            }
            if (self.error.is_some() || ended.is_some())
                && let Some(vms) = vms
                && ui.button("Reconnect").clicked()
            {
                self.reconnect(vms, ui.ctx());
            }
        });
        self.terminal_ui(ui);
    }

    fn terminal_ui(&mut self, ui: &mut egui::Ui) {
        let font = FontId::monospace(FONT_SIZE);
        let id = egui::Id::unique(("serial-terminal", &self.name));
        let frame = egui::Frame::new()
            .fill(BACKGROUND)
            .inner_margin(4.0)
            .show(ui, |ui| {
                ui.spacing_mut().item_spacing = egui::vec2(0.0, 0.0);
                let mut screen = lock(&self.screen);
                let s = screen.parser.screen_mut();
                s.set_scrollback(self.scrolled);
                // The scrollback clamps what is asked of it.
                self.scrolled = s.scrollback();
                let screen = screen.parser.screen();
                let cursor =
                    (self.scrolled == 0 && !screen.hide_cursor()).then(|| screen.cursor_position());
                for row in 0..ROWS {
                    let job = row_job(screen, row, cursor, &font);
                    ui.add(
                        egui::Label::new(job)
                            .selectable(false)
                            .wrap_mode(egui::TextWrapMode::Extend),
                    );
                }
            });
        let response = ui.interact(frame.response.rect, id, egui::Sense::click());
        if response.clicked() || !self.focus_asked {
            response.request_focus();
            self.focus_asked = true;
        }
        if response.hovered() {
            let row_height = ui.fonts_mut(|f| f.row_height(&font)).max(1.0);
            self.wheel += ui.input(|i| i.smooth_scroll_delta.y) / row_height;
            let lines = self.wheel.trunc();
            self.wheel -= lines;
            self.scrolled = (self.scrolled as i64 + lines as i64).max(0) as usize;
        }
        if !response.has_focus() {
            return;
        }
        ui.memory_mut(|m| {
            m.set_focus_lock_filter(
                id,
                egui::EventFilter {
                    tab: true,
                    horizontal_arrows: true,
                    vertical_arrows: true,
                    escape: true,
                },
            )
        });
        let application_cursor = lock(&self.screen).parser.screen().application_cursor();
        let typed = ui.input(|i| typed_bytes(&i.events, application_cursor));
        if !typed.is_empty() {
            self.scrolled = 0;
            self.send(&typed);
        }
    }
}

impl Drop for SerialConsole {
    fn drop(&mut self) {
        if let Some(s) = &self.stream {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// What the keyboard events of one frame send to the guest.
pub fn typed_bytes(events: &[egui::Event], application_cursor: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        match e {
            egui::Event::Text(t) => out.extend_from_slice(t.as_bytes()),
            // A terminal sends a pasted line break as Enter does.
            egui::Event::Paste(t) => out.extend(t.replace('\n', "\r").bytes()),
            // egui takes Ctrl+C and Ctrl+X as the clipboard's; here they are the guest's.
            egui::Event::Copy => out.push(0x03),
            egui::Event::Cut => out.push(0x18),
            egui::Event::Key {
                key,
                pressed: true,
                modifiers,
                ..
            } => {
                if let Some(b) = key_bytes(*key, *modifiers, application_cursor) {
                    out.extend(b);
                }
            }
            _ => {}
        }
    }
    out
}

/// The socket's bytes into the screen until it closes.
fn read_into(mut stream: UnixStream, screen: &Mutex<Screen>, ctx: &egui::Context) {
    let mut buf = [0u8; 8192];
    let why = loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                break "the serial console closed: the VM stopped (or its VMM let go of this \
                       viewer)"
                    .to_string();
            }
            Ok(n) => {
                lock(screen).parser.process(&buf[..n]);
                ctx.request_repaint();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break format!("the serial console failed: {e}"),
        }
    };
    lock(screen).ended = Some(why);
    ctx.request_repaint();
}

/// One screen row as text sections, a section per run of cells that look alike.
fn row_job(
    screen: &vt100::Screen,
    row: u16,
    cursor: Option<(u16, u16)>,
    font: &FontId,
) -> LayoutJob {
    let mut job = LayoutJob::default();
    let mut run = String::new();
    let mut run_format: Option<TextFormat> = None;
    for col in 0..COLS {
        let Some(cell) = screen.cell(row, col) else {
            continue;
        };
        if cell.is_wide_continuation() {
            continue;
        }
        let format = cell_format(cell, cursor == Some((row, col)), font);
        if run_format.as_ref() != Some(&format) {
            if let Some(f) = run_format.take() {
                job.append(&run, 0.0, f);
            }
            run.clear();
            run_format = Some(format);
        }
        if cell.has_contents() {
            run.push_str(cell.contents());
        } else {
            run.push(' ');
        }
    }
    if let Some(f) = run_format {
        job.append(&run, 0.0, f);
    }
    job
}

fn cell_format(cell: &vt100::Cell, is_cursor: bool, font: &FontId) -> TextFormat {
    let mut fg = colour(cell.fgcolor(), FOREGROUND, cell.bold());
    let mut bg = colour(cell.bgcolor(), BACKGROUND, false);
    if cell.inverse() != is_cursor {
        std::mem::swap(&mut fg, &mut bg);
    }
    if cell.dim() {
        fg = fg.gamma_multiply(0.6);
    }
    TextFormat {
        font_id: font.clone(),
        color: fg,
        background: bg,
        italics: cell.italic(),
        underline: if cell.underline() {
            egui::Stroke::new(1.0, fg)
        } else {
            egui::Stroke::NONE
        },
        ..Default::default()
    }
}

/// xterm's colours: the 16 named ones (bold brightens the first eight), the 6x6x6 cube and
/// the grey ramp.
fn colour(c: vt100::Color, default: Color32, bold: bool) -> Color32 {
    const NAMED: [(u8, u8, u8); 16] = [
        (0x00, 0x00, 0x00),
        (0xcd, 0x00, 0x00),
        (0x00, 0xcd, 0x00),
        (0xcd, 0xcd, 0x00),
        (0x00, 0x00, 0xee),
        (0xcd, 0x00, 0xcd),
        (0x00, 0xcd, 0xcd),
        (0xe5, 0xe5, 0xe5),
        (0x7f, 0x7f, 0x7f),
        (0xff, 0x00, 0x00),
        (0x00, 0xff, 0x00),
        (0xff, 0xff, 0x00),
        (0x5c, 0x5c, 0xff),
        (0xff, 0x00, 0xff),
        (0x00, 0xff, 0xff),
        (0xff, 0xff, 0xff),
    ];
    match c {
        vt100::Color::Default if bold => Color32::WHITE,
        vt100::Color::Default => default,
        vt100::Color::Idx(i) if i < 16 => {
            let i = if bold && i < 8 { i + 8 } else { i };
            let (r, g, b) = NAMED[usize::from(i)];
            Color32::from_rgb(r, g, b)
        }
        vt100::Color::Idx(i) if i < 232 => {
            let i = i - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            Color32::from_rgb(level(i / 36), level((i / 6) % 6), level(i % 6))
        }
        vt100::Color::Idx(i) => {
            let v = 8 + (i - 232) * 10;
            Color32::from_rgb(v, v, v)
        }
        vt100::Color::Rgb(r, g, b) => Color32::from_rgb(r, g, b),
    }
}

/// The serial console windows the main window has open, one per VM.
#[derive(Default)]
pub struct SerialWindows {
    open: BTreeMap<String, SerialConsole>,
}

impl SerialWindows {
    /// Opens `name`'s serial console, or brings its window to the front.
    pub fn open(&mut self, vms: &VmService, name: &str, ctx: &egui::Context) {
        if let Some(c) = self.open.get_mut(name) {
            c.focus_asked = false;
            ctx.move_to_top(egui::LayerId::new(egui::Order::Middle, window_id(name)));
            return;
        }
        self.open
            .insert(name.to_string(), SerialConsole::open(vms, name, ctx));
    }

    pub fn show(&mut self, ctx: &egui::Context, vms: &VmService) {
        self.open.retain(|name, console| {
            let mut open = true;
            egui::Window::new(format!("Serial console: {name}"))
                .id(window_id(name))
                .open(&mut open)
                .resizable(false)
                .show(ctx, |ui| console.ui(ui, Some(vms)));
            open
        });
    }
}

fn window_id(name: &str) -> egui::Id {
    egui::Id::unique(("serial-console", name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable as _;
    use std::time::{Duration, Instant};

    #[test]
    fn colours_are_xterms() {
        assert_eq!(
            colour(vt100::Color::Idx(1), FOREGROUND, false),
            Color32::from_rgb(0xcd, 0, 0)
        );
        assert_eq!(
            colour(vt100::Color::Idx(1), FOREGROUND, true),
            Color32::from_rgb(0xff, 0, 0)
        );
        assert_eq!(
            colour(vt100::Color::Idx(196), FOREGROUND, false),
            Color32::from_rgb(255, 0, 0)
        );
        assert_eq!(
            colour(vt100::Color::Idx(232), FOREGROUND, false),
            Color32::from_rgb(8, 8, 8)
        );
        assert_eq!(colour(vt100::Color::Default, FOREGROUND, false), FOREGROUND);
    }

    #[test]
    fn clipboard_shortcuts_and_pastes_go_to_the_guest() {
        let events = [
            egui::Event::Copy,
            egui::Event::Text("ls".into()),
            egui::Event::Paste("a\nb".into()),
            egui::Event::Key {
                key: egui::Key::Enter,
                physical_key: None,
                pressed: true,
                repeat: false,
                modifiers: egui::Modifiers::NONE,
            },
            // A release sends nothing.
            egui::Event::Key {
                key: egui::Key::Enter,
                physical_key: None,
                pressed: false,
                repeat: false,
                modifiers: egui::Modifiers::NONE,
            },
        ];
        assert_eq!(typed_bytes(&events, false), b"\x03lsa\rb\r");
    }

    /// Runs frames until `cond` holds (the reader thread works on its own time).
    fn run_until<S>(
        h: &mut Harness<'_, S>,
        what: &str,
        mut cond: impl FnMut(&Harness<'_, S>) -> bool,
    ) {
        let t = Instant::now();
        while !cond(h) {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
            h.run_steps(1);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn ui_serial_console_shows_the_guests_screen_and_sends_its_keys() {
        let (ours, mut guest) = UnixStream::pair().unwrap();
        guest
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let ctx = egui::Context::default();
        let console = SerialConsole::attach("vm", ours, &ctx);
        let mut h = Harness::new_ui_state(|ui, c: &mut SerialConsole| c.ui(ui, None), console);
        // A login prompt in colour, then a screen cleared and written at a position, as a
        // text installer draws.
        guest
            .write_all(b"Debian GNU/Linux 12 \x1b[1;32mvm\x1b[0m ttyS0\r\n\r\nvm login: ")
            .unwrap();
        run_until(&mut h, "the prompt", |h| {
            h.state().contents().contains("vm login: ")
        });
        h.run_steps(2);
        h.get_by_label_contains("vm login:");
        h.get_by_label_contains("Debian GNU/Linux 12 vm ttyS0");

        // Typing: text, Enter, Backspace, an arrow, Ctrl+C.
        h.event(egui::Event::Text("root".into()));
        h.key_press(egui::Key::Enter);
        h.key_press(egui::Key::Backspace);
        h.key_press(egui::Key::ArrowUp);
        h.key_press_modifiers(egui::Modifiers::CTRL, egui::Key::C);
        // Escape and Tab stay with the terminal instead of moving the focus.
        h.key_press(egui::Key::Tab);
        h.key_press(egui::Key::Escape);
        h.key_press(egui::Key::Tab);
        h.run_steps(3);
        let want = b"root\r\x7f\x1b[A\x03\t\x1b\t";
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < want.len() {
            let n = guest.read(&mut buf).expect("the keys reach the guest");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, want);

        guest
            .write_all(b"\x1b[2J\x1b[5;10H\x1b[44;37m Partition disks \x1b[0m")
            .unwrap();
        run_until(&mut h, "the installer's screen", |h| {
            h.state().contents().contains("Partition disks")
        });
        h.run_steps(2);
        h.get_by_label_contains("         Partition disks");
        assert!(
            h.query_by_label_contains("vm login:").is_none(),
            "the screen was cleared"
        );

        // The guest goes away: said, and the screen stays.
        drop(guest);
        run_until(&mut h, "the end", |h| {
            h.query_by_label_contains("serial console closed").is_some()
        });
        h.get_by_label_contains("Partition disks");
    }

    #[test]
    fn closing_the_console_lets_the_connection_go() {
        let (ours, mut guest) = UnixStream::pair().unwrap();
        guest
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let console = SerialConsole::attach("vm", ours, &egui::Context::default());
        drop(console);
        let mut buf = [0u8; 8];
        assert_eq!(guest.read(&mut buf).expect("closed, not left open"), 0);
    }

    #[test]
    fn ui_serial_console_scrolls_back_with_the_wheel() {
        let (ours, mut guest) = UnixStream::pair().unwrap();
        let ctx = egui::Context::default();
        let console = SerialConsole::attach("vm", ours, &ctx);
        let mut h = Harness::new_ui_state(|ui, c: &mut SerialConsole| c.ui(ui, None), console);
        for i in 0..100 {
            write!(guest, "line {i}\r\n").unwrap();
        }
        run_until(&mut h, "the last line", |h| {
            h.state().contents().contains("line 99")
        });
        h.run_steps(2);
        assert!(h.query_by_label_contains("line 10\u{20}").is_none());
        // The wheel over the terminal, up: older lines.
        h.hover_at(egui::pos2(200.0, 200.0));
        for _ in 0..20 {
            h.event(egui::Event::MouseWheel {
                unit: egui::MouseWheelUnit::Line,
                delta: egui::vec2(0.0, 10.0),
                modifiers: egui::Modifiers::NONE,
                phase: egui::TouchPhase::Move,
                source: egui::MouseWheelSource::Wheel,
            });
            h.run_steps(1);
        }
        h.run_steps(5);
        assert!(h.state().scrolled > 0, "scrolled back");
        h.get_by_label_contains("lines back");
        // Typing returns to the live screen.
        h.event(egui::Event::Text("x".into()));
        h.run_steps(3);
        assert_eq!(h.state().scrolled, 0);
        h.get_by_label_contains("line 99");
    }
}
