//! Drawing VGA state into the surface.
//!
//! Legacy modes (text, planar, 256-colour, CGA) are small (at most a few hundred thousand
//! pixels): when the guest changed registers or memory since the last refresh, the whole
//! picture is drawn into a scratch frame and compared with the previous one in surface
//! tiles; only tiles that differ are copied and marked dirty. When only a blink phase
//! flipped (cursor every 266 ms, blinking characters every 533 ms), just the cursor cell
//! or the blinking cells are redrawn over the last frame. A static screen costs one flag
//! test per refresh.
//!
//! DISPI modes can be large and the guest writes them without exits, so they are driven by
//! the dirty-page bitmap: only scan lines whose bytes lie on written pages are converted
//! and marked. A mode change, a palette change or panning redraws everything.
//!
//! Pixel geometry follows what the CRTC scans out, as QEMU shows it: mode 3 is 720x400,
//! mode 12h 640x480, mode 13h 640x400 (each pixel two dots wide, each line scanned twice).

use std::sync::{Arc, Mutex};

use display::encoding::Rect;
use display::surface::{Surface, TILE};
use vm_memory::{Bytes, VolatileMemory};

use super::dispi::DispiMode;
use super::regs::{AR_INDEX_PAS, AR10_BLINK, AR10_LINE_GRAPHICS, VgaRegs};
use super::{PLANAR_SIZE, VgaCore};
use crate::memory_slots::{HostRam, PAGE_SIZE, page_is_dirty};

/// Half a cursor blink period: the VGA toggles the cursor every 16 frames at 60 Hz.
pub const CURSOR_BLINK_MS: u64 = 16 * 1000 / 60;
/// Character blink toggles every 32 frames.
pub const CHAR_BLINK_MS: u64 = 32 * 1000 / 60;
/// Largest legacy picture we draw (the CRTC can describe bigger nonsense).
const MAX_LEGACY: u32 = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shown {
    Nothing,
    Legacy { width: u32, height: u32 },
    Dispi(DispiMode),
}

pub(crate) struct Renderer {
    surface: Arc<Surface>,
    shown: Shown,
    /// The last legacy frame drawn (what the surface holds).
    prev: Vec<u32>,
    /// Blink phases the last text frame used, when it had anything blinking.
    blink: Option<(bool, bool)>,
    /// What blinks on the last text frame: (the cursor, characters).
    blinking: (bool, bool),
    /// Rectangles the last refresh marked dirty (for tests and tracing).
    pub(crate) last_marked: Vec<Rect>,
    /// The planar memory a legacy refresh draws from, copied under the device lock.
    planar: Vec<u8>,
}

impl Renderer {
    pub(crate) fn new(surface: Arc<Surface>) -> Renderer {
        Renderer {
            surface,
            shown: Shown::Nothing,
            prev: Vec::new(),
            blink: None,
            blinking: (false, false),
            last_marked: Vec::new(),
            planar: Vec::new(),
        }
    }
}

/// What a refresh has to draw, taken from the device under its lock.
enum Work {
    Nothing,
    Blank,
    Dispi {
        m: DispiMode,
        /// Redraw every line, not only those on dirty pages.
        full: bool,
        dirty: Vec<u64>,
        /// The 256 DAC colours (8 bpp only).
        pal: Vec<u32>,
        vram: HostRam,
    },
    /// A legacy picture, from these registers and the planar memory copied into
    /// [`Renderer::planar`]; `changed` when more than a blink phase moved.
    Legacy {
        regs: Box<VgaRegs>,
        changed: bool,
    },
}

/// Draws what changed since the last refresh into the surface. The device lock is held
/// only to take what the drawing needs (flags, registers, the dirty bitmap, and for a
/// legacy picture a copy of the 256 KiB of planar memory, a few microseconds); the drawing
/// runs without it, so a vCPU writing VGA state never waits for a render. A guest write
/// during the drawing sets the device's change flags again, and the next refresh draws it.
pub(crate) fn refresh(core: &Mutex<VgaCore>, r: &mut Renderer, now_ms: u64) {
    r.last_marked.clear();
    let work = {
        let mut c = super::lock(core);
        c.notified = false;
        take_work(&mut c, r, now_ms)
    };
    match work {
        Work::Nothing => {}
        Work::Blank => blank(r),
        Work::Dispi {
            m,
            full,
            dirty,
            pal,
            vram,
        } => render_dispi(r, m, full, &dirty, &pal, &vram),
        Work::Legacy { regs, changed } => render_legacy(r, &regs, changed, now_ms),
    }
}

fn take_work(c: &mut VgaCore, r: &mut Renderer, now_ms: u64) -> Work {
    if c.dispi.enabled() {
        match c.dispi.mode() {
            Some(m) if m.bpp > 4 => {
                let dirty = c.take_dirty();
                let full = c.dispi_full || r.shown != Shown::Dispi(m);
                c.dispi_full = false;
                c.legacy_changed = true;
                let pal = if m.bpp == 8 {
                    (0..=255u8).map(|i| c.regs.dac_rgb(i, m.dac_8bit)).collect()
                } else {
                    Vec::new()
                };
                return Work::Dispi {
                    m,
                    full,
                    dirty,
                    pal,
                    vram: c.vram.clone(),
                };
            }
            // 4 bpp DISPI modes are VGA planar memory; the VGA BIOS programs the CRTC
            // for their size, so the VGA renderer draws them.
            Some(_) => {}
            // Modes that do not fit: show nothing.
            None => {
                let _ = c.take_dirty();
                return Work::Blank;
            }
        }
    }
    // Legacy modes are drawn from planar memory and the registers, not from dirty pages:
    // drop the device's own marks. (The hypervisor's log for the linear framebuffer is
    // left alone; the first DISPI refresh after a mode switch redraws everything anyway.)
    c.dirty.fill(0);
    let Some((_, shown)) = legacy_picture(&c.regs) else {
        return Work::Blank;
    };
    let blink_flipped = r.blink.is_some_and(|b| b != blink_phases(now_ms));
    if !c.legacy_changed && r.shown == shown && !blink_flipped {
        return Work::Nothing;
    }
    let changed = c.legacy_changed || r.shown != shown || r.planar.len() != PLANAR_SIZE;
    c.legacy_changed = false;
    // A blink tick on an unchanged screen draws from the copy the last change took (the
    // guest wrote nothing since, or `legacy_changed` would be set).
    if changed {
        r.planar.resize(PLANAR_SIZE, 0);
        if c.vram
            .as_volatile_slice()
            .read_slice(&mut r.planar, 0)
            .is_err()
        {
            r.planar.fill(0);
        }
    }
    Work::Legacy {
        regs: Box::new(c.regs.clone()),
        changed,
    }
}

/// Cursor and character blink phases at `now_ms` (true: shown).
fn blink_phases(now_ms: u64) -> (bool, bool) {
    (
        (now_ms / CURSOR_BLINK_MS).is_multiple_of(2),
        (now_ms / CHAR_BLINK_MS).is_multiple_of(2),
    )
}

/// The legacy picture the registers describe, and its size; `None` when the screen is
/// off (palette address source clear, as at power-on and during a mode set, or the
/// sequencer's screen-off bit) or the CRTC describes nothing drawable: then it shows black
/// at the size already shown, like QEMU, so clients do not see a resize to whatever
/// half-programmed CRTC values say.
fn legacy_picture(regs: &VgaRegs) -> Option<(Legacy, Shown)> {
    let screen_on = regs.ar_index & AR_INDEX_PAS != 0 && regs.sr[1] & 0x20 == 0;
    if !screen_on {
        return None;
    }
    let geom = legacy_geometry(regs)?;
    let (width, height) = match &geom {
        Legacy::Text(t) => (t.cols * t.cw * if t.double { 2 } else { 1 }, t.rows * t.ch),
        Legacy::Graphics(g) => (g.width, g.height),
    };
    Some((geom, Shown::Legacy { width, height }))
}

/// Milliseconds from `now_ms` until the picture shown next changes by itself (a blink
/// phase flips); `None` when nothing on it blinks, so only a guest write can change it.
pub(crate) fn until_blink_ms(r: &Renderer, now_ms: u64) -> Option<u64> {
    if r.blink.is_none() || !matches!(r.shown, Shown::Legacy { .. }) {
        return None;
    }
    let next = |period: u64| period - now_ms % period;
    match r.blinking {
        (true, true) => Some(next(CURSOR_BLINK_MS).min(next(CHAR_BLINK_MS))),
        (true, false) => Some(next(CURSOR_BLINK_MS)),
        (false, true) => Some(next(CHAR_BLINK_MS)),
        (false, false) => None,
    }
}

fn resize(r: &mut Renderer, width: u32, height: u32) {
    r.surface.resize(width as u16, height as u16);
}

fn blank(r: &mut Renderer) {
    if r.shown != Shown::Nothing {
        let (w, h) = r.surface.size();
        r.surface.fill_rect(Rect::new(0, 0, w, h), 0);
        r.last_marked.push(Rect::new(0, 0, w, h));
        r.shown = Shown::Nothing;
        r.prev.clear();
    }
}

// ----- DISPI -----

fn render_dispi(
    r: &mut Renderer,
    m: DispiMode,
    full: bool,
    dirty: &[u64],
    pal: &[u32],
    vram: &HostRam,
) {
    if r.shown != Shown::Dispi(m) {
        resize(r, m.xres, m.yres);
        r.shown = Shown::Dispi(m);
        r.prev.clear();
        r.blink = None;
    }
    let bypp = m.bytes_per_pixel() as usize;
    let row_bytes = m.xres as usize * bypp;
    let mut buf = vec![0u8; row_bytes];
    let vram = vram.as_volatile_slice();
    // Rectangles of whole lines sharing one column range, as (x0, x1, y0, y1).
    let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
    r.surface.with_frame_mut(|f| {
        let lines = (m.yres as usize).min(f.height);
        let width = (m.xres as usize).min(f.width);
        for y in 0..lines {
            let off = m.start as usize + y * m.line_offset as usize;
            let cols = if full {
                Some((0, width))
            } else {
                dirty_columns(dirty, off, row_bytes, bypp, width)
            };
            let Some((x0, x1)) = cols else {
                continue;
            };
            let (b0, b1) = (x0 * bypp, x1 * bypp);
            if vram.read_slice(&mut buf[b0..b1], off + b0).is_err() {
                continue;
            }
            convert_row(&buf[b0..b1], m.bpp, pal, &mut f.row_mut(y)[x0..x1]);
            match spans.last_mut() {
                Some((sx0, sx1, _, end)) if *end == y && (*sx0, *sx1) == (x0, x1) => *end = y + 1,
                _ => spans.push((x0, x1, y, y + 1)),
            }
        }
    });
    for (x0, x1, y0, y1) in spans {
        let rect = Rect::new(x0 as u16, y0 as u16, (x1 - x0) as u16, (y1 - y0) as u16);
        r.surface.mark_dirty(rect);
        r.last_marked.push(rect);
    }
}

/// The columns `[x0, x1)` of a scan line at byte `off` (`len` bytes, `bypp` bytes a
/// pixel, `width` pixels) that lie on dirty pages, or `None` when none do.
fn dirty_columns(
    bitmap: &[u64],
    off: usize,
    len: usize,
    bypp: usize,
    width: usize,
) -> Option<(usize, usize)> {
    if len == 0 {
        return None;
    }
    let page = PAGE_SIZE as usize;
    let (first, last) = (off / page, (off + len - 1) / page);
    let dirty: Vec<usize> = (first..=last)
        .filter(|&p| page_is_dirty(bitmap, p))
        .collect();
    let (&lo, &hi) = (dirty.first()?, dirty.last()?);
    let b0 = (lo * page).max(off) - off;
    let b1 = ((hi + 1) * page).min(off + len) - off;
    Some(((b0 / bypp).min(width), b1.div_ceil(bypp).min(width)))
}

fn convert_row(src: &[u8], bpp: u32, pal: &[u32], out: &mut [u32]) {
    match bpp {
        8 => {
            for (o, &b) in out.iter_mut().zip(src) {
                *o = pal[usize::from(b)];
            }
        }
        15 | 16 => {
            for (o, p) in out.iter_mut().zip(src.chunks_exact(2)) {
                let v = u32::from(u16::from_le_bytes([p[0], p[1]]));
                let (r, g, b) = if bpp == 15 {
                    ((v >> 10) & 0x1f, (v >> 5) & 0x1f, v & 0x1f)
                } else {
                    ((v >> 11) & 0x1f, (v >> 5) & 0x3f, v & 0x1f)
                };
                let r = (r << 3) | (r >> 2);
                let b = (b << 3) | (b >> 2);
                let g = if bpp == 15 {
                    (g << 3) | (g >> 2)
                } else {
                    (g << 2) | (g >> 4)
                };
                *o = r << 16 | g << 8 | b;
            }
        }
        24 => {
            for (o, p) in out.iter_mut().zip(src.chunks_exact(3)) {
                *o = u32::from(p[2]) << 16 | u32::from(p[1]) << 8 | u32::from(p[0]);
            }
        }
        _ => {
            for (o, p) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = u32::from_le_bytes([p[0], p[1], p[2], 0]);
            }
        }
    }
}

// ----- legacy VGA -----

enum Legacy {
    Text(TextGeom),
    Graphics(GfxGeom),
}

struct TextGeom {
    cols: u32,
    rows: u32,
    /// Dots per character cell (8 or 9) before any doubling.
    cw: u32,
    ch: u32,
    /// Each dot shown twice (40-column modes).
    double: bool,
}

struct GfxGeom {
    width: u32,
    height: u32,
    shift: u8,
}

fn legacy_geometry(r: &VgaRegs) -> Option<Legacy> {
    let lines = r.vertical_display_lines();
    let double = r.sr[1] & 0x08 != 0;
    if r.gr[6] & 1 == 0 {
        let ch = u32::from(r.cr[9] & 0x1f) + 1;
        let g = TextGeom {
            cols: u32::from(r.cr[1]) + 1,
            rows: lines / ch,
            cw: if r.sr[1] & 1 != 0 { 8 } else { 9 },
            ch,
            double,
        };
        let w = g.cols * g.cw * if double { 2 } else { 1 };
        (g.rows > 0 && w <= MAX_LEGACY && g.rows * ch <= MAX_LEGACY).then_some(Legacy::Text(g))
    } else {
        let width = (u32::from(r.cr[1]) + 1) * 8 * if double { 2 } else { 1 };
        let g = GfxGeom {
            width,
            height: lines,
            shift: (r.gr[5] >> 5) & 3,
        };
        (width <= MAX_LEGACY && lines <= MAX_LEGACY).then_some(Legacy::Graphics(g))
    }
}

/// Legacy VGA memory as a refresh sees it: the registers and a copy of the planar memory
/// (byte `4 * offset + plane`).
struct View<'a> {
    regs: &'a VgaRegs,
    mem: &'a [u8],
}

impl View<'_> {
    fn byte(&self, i: usize) -> u8 {
        self.mem.get(i).copied().unwrap_or(0)
    }

    /// The four planes' bytes at `offset`.
    fn planes(&self, offset: usize) -> u32 {
        let i = offset * 4;
        self.mem
            .get(i..i + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn render_legacy(r: &mut Renderer, regs: &VgaRegs, changed: bool, now_ms: u64) {
    let Some((geom, shown)) = legacy_picture(regs) else {
        return blank(r);
    };
    let Shown::Legacy { width, height } = shown else {
        return;
    };
    let phases = blink_phases(now_ms);
    let flipped = r.blink.map(|(cur, chr)| (cur != phases.0, chr != phases.1));
    let planar = std::mem::take(&mut r.planar);
    let view = View { regs, mem: &planar };
    if let (Legacy::Text(t), Some(which)) = (&geom, flipped)
        && !changed
        && r.shown == shown
        && r.prev.len() == (width * height) as usize
    {
        // Only a blink phase flipped: redraw just the cursor cell and/or the cells that
        // blink, straight into the last frame, and copy those cells out.
        redraw_blinking(r, &view, t, phases, which, width as usize, height as usize);
        r.planar = planar;
        return;
    }
    let mut frame = vec![0u32; (width * height) as usize];
    r.blink = None;
    match &geom {
        Legacy::Text(t) => {
            let drawn = draw_text(&view, t, phases, None, &mut frame, width as usize);
            if drawn.blinks.0 || drawn.blinks.1 {
                r.blink = Some(phases);
                r.blinking = drawn.blinks;
            }
        }
        Legacy::Graphics(g) => draw_graphics(&view, g, &mut frame),
    }
    r.planar = planar;
    if r.shown != shown {
        resize(r, width, height);
        r.shown = shown;
        r.prev = vec![!0; frame.len()];
    }
    let (w, h) = (width as usize, height as usize);
    let tiles_x = w.div_ceil(TILE);
    let mut changed_tiles = vec![false; tiles_x * h.div_ceil(TILE)];
    let prev = &mut r.prev;
    let mut any = false;
    r.surface.with_frame_mut(|f| {
        if f.width != w || f.height != h {
            return;
        }
        for ty in (0..h).step_by(TILE) {
            for tx in (0..w).step_by(TILE) {
                let tw = TILE.min(w - tx);
                let th = TILE.min(h - ty);
                let changed = (ty..ty + th).any(|y| {
                    let s = y * w + tx;
                    frame[s..s + tw] != prev[s..s + tw]
                });
                if changed {
                    for y in ty..ty + th {
                        let s = y * w + tx;
                        f.row_mut(y)[tx..tx + tw].copy_from_slice(&frame[s..s + tw]);
                    }
                    changed_tiles[(ty / TILE) * tiles_x + tx / TILE] = true;
                    any = true;
                }
            }
        }
    });
    *prev = frame;
    if any {
        mark_tiles(r, &changed_tiles, tiles_x, w, h);
    }
}

/// A blink tick on an unchanged text screen: redraws the cursor cell (when the cursor's
/// phase flipped) and the cells with the blink attribute (when the character phase
/// flipped) into the last frame, copies just those cells to the surface and marks their
/// tiles. Costs a scan of the attributes, not a re-render and diff of the whole frame.
fn redraw_blinking(
    r: &mut Renderer,
    view: &View<'_>,
    t: &TextGeom,
    phases: (bool, bool),
    (cursor, chars): (bool, bool),
    w: usize,
    h: usize,
) {
    let mut prev = std::mem::take(&mut r.prev);
    let drawn = draw_text(view, t, phases, Some((cursor, chars)), &mut prev, w);
    // Nothing but the blink phases changed, so neither did what blinks; a cursor-only
    // redraw does not scan the other cells to find out.
    let blinking = (drawn.blinks.0, r.blinking.1 || drawn.blinks.1);
    r.blink = (blinking.0 || blinking.1).then_some(phases);
    r.blinking = blinking;
    let tiles_x = w.div_ceil(TILE);
    let mut changed_tiles = vec![false; tiles_x * h.div_ceil(TILE)];
    let (cell_w, cell_h) = (drawn.cell_w, t.ch as usize);
    r.surface.with_frame_mut(|f| {
        if f.width != w || f.height != h {
            return;
        }
        for &(row, col) in &drawn.cells {
            let (x0, y0) = (col * cell_w, row * cell_h);
            for y in y0..(y0 + cell_h).min(h) {
                let s = y * w + x0;
                f.row_mut(y)[x0..x0 + cell_w].copy_from_slice(&prev[s..s + cell_w]);
            }
            for ty in y0 / TILE..=(y0 + cell_h - 1) / TILE {
                for tx in x0 / TILE..=(x0 + cell_w - 1) / TILE {
                    changed_tiles[ty * tiles_x + tx] = true;
                }
            }
        }
    });
    r.prev = prev;
    if !drawn.cells.is_empty() {
        mark_tiles(r, &changed_tiles, tiles_x, w, h);
    }
}

/// Tells the surface's consumers which tiles changed, in as few rectangles as is cheap:
/// the bounding box when it is mostly changed tiles anyway, otherwise horizontal runs.
/// Each mark wakes the VNC sessions, which may send what is marked at once, so a glyph
/// that straddles two tiles must be marked in one rectangle or a client can see half of
/// it in one update and the rest in the next.
fn mark_tiles(r: &mut Renderer, tiles: &[bool], tiles_x: usize, w: usize, h: usize) {
    let mut count = 0;
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, _) in tiles.iter().enumerate().filter(|(_, t)| **t) {
        let (tx, ty) = (i % tiles_x, i / tiles_x);
        count += 1;
        (x0, y0, x1, y1) = (x0.min(tx), y0.min(ty), x1.max(tx + 1), y1.max(ty + 1));
    }
    if count == 0 {
        return;
    }
    let rect = |tx0: usize, ty0: usize, tx1: usize, ty1: usize| {
        let (px0, py0) = (tx0 * TILE, ty0 * TILE);
        let (px1, py1) = ((tx1 * TILE).min(w), (ty1 * TILE).min(h));
        Rect::new(
            px0 as u16,
            py0 as u16,
            (px1 - px0) as u16,
            (py1 - py0) as u16,
        )
    };
    let mut rects = Vec::new();
    if (x1 - x0) * (y1 - y0) <= 2 * count {
        rects.push(rect(x0, y0, x1, y1));
    } else {
        for ty in y0..y1 {
            let mut tx = x0;
            while tx < x1 {
                if !tiles[ty * tiles_x + tx] {
                    tx += 1;
                    continue;
                }
                let start = tx;
                while tx < x1 && tiles[ty * tiles_x + tx] {
                    tx += 1;
                }
                rects.push(rect(start, ty, tx, ty + 1));
            }
        }
    }
    for rect in rects {
        r.surface.mark_dirty(rect);
        r.last_marked.push(rect);
    }
}

/// Planar offset of character map `m` (0..=7) in plane 2: maps 0-3 every 16 KiB, 4-7
/// 8 KiB above them, as the hardware (and SeaBIOS's font loader) lays them out.
fn font_offset(m: u8) -> usize {
    usize::from(m & 3) * 0x4000 + usize::from(m >> 2) * 0x2000
}

/// What [`draw_text`] did.
struct TextDrawn {
    /// What on the screen blinks: (the cursor, a character with the blink attribute).
    blinks: (bool, bool),
    /// The cells drawn, as (row, column), when only blinking cells were asked for.
    cells: Vec<(usize, usize)>,
    /// Pixels across a cell.
    cell_w: usize,
}

/// Draws the text screen, or with `only = Some((cursor, chars))` just the cursor cell
/// (when `cursor`) and the cells with the blink attribute (when `chars`), over a frame
/// that already holds the rest.
fn draw_text(
    v: &View<'_>,
    t: &TextGeom,
    (cursor_on, blink_on): (bool, bool),
    only: Option<(bool, bool)>,
    frame: &mut [u32],
    stride: usize,
) -> TextDrawn {
    let r = v.regs;
    let pal: Vec<u32> = (0..16u8)
        .map(|i| r.dac_rgb(r.attr_to_dac(i), false))
        .collect();
    let sr3 = r.sr[3];
    // Attribute bit 3 picks map A (SR3 bits 5,3,2) when set, map B (bits 4,1,0) when clear.
    let map_b = font_offset((sr3 & 3) | ((sr3 >> 4) & 1) << 2);
    let map_a = font_offset(((sr3 >> 2) & 3) | ((sr3 >> 5) & 1) << 2);
    let blink_enabled = r.ar[0x10] & AR10_BLINK != 0;
    let line_graphics = r.ar[0x10] & AR10_LINE_GRAPHICS != 0;
    let start = r.start_address() as usize;
    let line_cells = usize::from(r.cr[0x13]) * 2;
    let cursor_addr = usize::from(r.cr[0x0e]) << 8 | usize::from(r.cr[0x0f]);
    let (cs, ce) = (u32::from(r.cr[0x0a] & 0x1f), u32::from(r.cr[0x0b] & 0x1f));
    let cursor_enabled = r.cr[0x0a] & 0x20 == 0 && cs <= ce && cs < t.ch;
    let dot_w = if t.double { 2 } else { 1 };
    let cell_w = (t.cw * dot_w) as usize;
    let mut drawn = TextDrawn {
        blinks: (cursor_enabled, false),
        cells: Vec::new(),
        cell_w,
    };
    let (mut rows, mut cols) = (0..t.rows as usize, 0..t.cols as usize);
    if only == Some((true, false)) && line_cells >= t.cols as usize {
        // Only the cursor's phase flipped: its cell (if on screen) is all there is to draw.
        let rel = cursor_addr.wrapping_sub(start) & 0xffff;
        let (row, col) = (rel / line_cells, rel % line_cells);
        if cursor_enabled && row < t.rows as usize && col < t.cols as usize {
            (rows, cols) = (row..row + 1, col..col + 1);
        } else {
            (rows, cols) = (0..0, 0..0);
        }
    }
    for row in rows {
        for col in cols.clone() {
            let cell = (start + row * line_cells + col) & 0xffff;
            let ca = v.planes(cell);
            let (chr, attr) = (ca as u8, (ca >> 8) as u8);
            let mut fg = attr & 0x0f;
            let mut bg = attr >> 4;
            let blinking = blink_enabled && attr & 0x80 != 0;
            if blink_enabled {
                bg &= 7;
                if blinking {
                    drawn.blinks.1 = true;
                    if !blink_on {
                        fg = bg;
                    }
                }
            }
            let at_cursor = cursor_enabled && cell == cursor_addr;
            if let Some((cursor, chars)) = only {
                if !(cursor && at_cursor || chars && blinking) {
                    continue;
                }
                drawn.cells.push((row, col));
            }
            let font = if attr & 0x08 != 0 { map_a } else { map_b };
            let is_cursor = at_cursor && cursor_on;
            let (fgc, bgc) = (pal[usize::from(fg)], pal[usize::from(bg)]);
            for line in 0..t.ch as usize {
                let glyph_off = font + usize::from(chr) * 32 + line;
                let mut bits = v.byte(glyph_off * 4 + 2);
                if is_cursor && (cs as usize..=ce as usize).contains(&line) {
                    bits = 0xff;
                }
                // The ninth dot repeats the eighth for the line-drawing characters.
                let ninth = is_cursor && (cs as usize..=ce as usize).contains(&line)
                    || (line_graphics && (0xc0..=0xdf).contains(&chr) && bits & 1 != 0);
                let y = row * t.ch as usize + line;
                let o = y * stride + col * cell_w;
                let px = &mut frame[o..o + cell_w];
                for dot in 0..t.cw as usize {
                    let on = if dot < 8 {
                        bits & (0x80 >> dot) != 0
                    } else {
                        ninth
                    };
                    let colour = if on { fgc } else { bgc };
                    for d in 0..dot_w as usize {
                        px[dot * dot_w as usize + d] = colour;
                    }
                }
            }
        }
    }
    drawn
}

fn draw_graphics(v: &View<'_>, g: &GfxGeom, frame: &mut [u32]) {
    let r = v.regs;
    let byte = |i: usize| -> u8 { v.byte(i) };
    let double = r.sr[1] & 0x08 != 0;
    let cr9 = r.cr[9];
    let double_scan = u32::from(cr9 >> 7);
    let start = r.start_address() as usize;
    let line_bytes = usize::from(r.cr[0x13]) * 2;
    let w = g.width as usize;
    let pal16: Vec<u32> = (0..16u8)
        .map(|i| r.dac_rgb(r.attr_to_dac(i & r.ar[0x12]), false))
        .collect();
    match g.shift {
        0 => {
            // 16-colour planar: one bit per plane per pixel.
            let repeat = ((u32::from(cr9 & 0x1f) + 1) << double_scan).max(1);
            let mut planes = 0u32;
            for y in 0..g.height as usize {
                let line = y / repeat as usize;
                let base = start + line * line_bytes;
                for x in 0..w {
                    let px = if double { x / 2 } else { x };
                    let bit = 7 - (px % 8);
                    if x == 0 || (bit == 7 && (!double || x % 2 == 0)) {
                        // The four planes' bytes hold eight pixels: read them once.
                        planes = v.planes((base + px / 8) & 0xffff);
                    }
                    let mut idx = 0u8;
                    for p in 0..4 {
                        idx |= (((planes >> (8 * p + bit)) & 1) as u8) << p;
                    }
                    frame[y * w + x] = pal16[usize::from(idx)];
                }
            }
        }
        1 => {
            // CGA 2 bpp: even lines in the first 8 KiB, odd in the second (address bit 13
            // from the row scan counter), each CPU byte four pixels, odd/even planes; the
            // CRTC is in word mode, so a line is four bytes per offset unit.
            for y in 0..g.height as usize {
                let line = y >> double_scan;
                let cpu_base = (line & 1) * 0x2000 + (line >> 1) * line_bytes * 2 + start * 2;
                for x in 0..w {
                    let px = if double { x / 2 } else { x };
                    let a = (cpu_base + px / 4) & 0xffff;
                    let b = byte((a >> 1) * 4 + (a & 1));
                    let idx = (b >> (6 - 2 * (px % 4))) & 3;
                    frame[y * w + x] = pal16[usize::from(idx)];
                }
            }
        }
        _ => {
            // 256 colours: a byte per pixel, each pixel two dots wide.
            let repeat = ((u32::from(cr9 & 0x1f) + 1) << double_scan).max(1);
            let pal: Vec<u32> = (0..=255u8).map(|i| r.dac_rgb(i, false)).collect();
            for y in 0..g.height as usize {
                let line = y / repeat as usize;
                let base = start * 4 + line * line_bytes * 4;
                for x in 0..w {
                    let px = if double { x / 4 } else { x / 2 };
                    frame[y * w + x] = pal[usize::from(byte((base + px) & 0x3_ffff))];
                }
            }
        }
    }
}

/// Reads text back from pixels: every `cw` x `ch` cell is matched against the glyphs of
/// `font` (256 glyphs of `ch` bytes each, the 8 dots of a line in one byte, the 9th dot
/// ignored) and becomes the character whose dots split the cell into one foreground and
/// one background colour. Unreadable cells become '?', non-ASCII characters '.'. Tests
/// (and screen scrapers) use it to check what a guest put on a text screen.
pub fn read_text(
    pixels: &[u32],
    width: usize,
    height: usize,
    font: &[u8],
    cw: usize,
    ch: usize,
) -> Vec<String> {
    if cw < 8 || ch == 0 || font.len() < 256 * ch || pixels.len() < width * height {
        return Vec::new();
    }
    // Space first, so a plain cell reads as a space; then printable ASCII.
    let order: Vec<u8> = std::iter::once(b' ')
        .chain(0x21..0x7f)
        .chain((0..=255).filter(|c| !(0x20..0x7f).contains(c)))
        .collect();
    let mut lines = Vec::new();
    for row in 0..height / ch {
        let mut s = String::new();
        for col in 0..width / cw {
            let px = |line: usize, dot: usize| pixels[(row * ch + line) * width + col * cw + dot];
            let fits = |c: u8| {
                let (mut fg, mut bg) = (None, None);
                (0..ch).all(|line| {
                    let bits = font[usize::from(c) * ch + line];
                    (0..8).all(|dot| {
                        let slot = if bits & (0x80 >> dot) != 0 {
                            &mut fg
                        } else {
                            &mut bg
                        };
                        *slot.get_or_insert(px(line, dot)) == px(line, dot)
                    })
                }) && (fg.is_none() || fg != bg)
            };
            let c = order.iter().copied().find(|&c| fits(c));
            s.push(match c {
                Some(c) if (0x20..0x7f).contains(&c) => char::from(c),
                Some(_) => '.',
                None => '?',
            });
        }
        lines.push(s.trim_end().to_string());
    }
    lines
}

/// The text on the screen now, read from the surface's pixels with the font in plane 2;
/// `None` unless a text mode is shown.
pub(crate) fn screen_text(c: &VgaCore, r: &Renderer) -> Option<Vec<String>> {
    let Some(Legacy::Text(t)) = legacy_geometry(&c.regs) else {
        return None;
    };
    if t.double {
        return None;
    }
    let sr3 = c.regs.sr[3];
    let map_b = font_offset((sr3 & 3) | ((sr3 >> 4) & 1) << 2);
    let vram = c.vram.as_volatile_slice();
    let ch = t.ch as usize;
    let font: Vec<u8> = (0..256 * ch)
        .map(|i| {
            let off = map_b + (i / ch) * 32 + i % ch;
            vram.read_obj::<u8>(off * 4 + 2).unwrap_or(0)
        })
        .collect();
    let (w, h, pixels) = r.surface.snapshot();
    if u32::from(w) != t.cols * t.cw || u32::from(h) != t.rows * t.ch {
        return None;
    }
    Some(read_text(
        &pixels,
        usize::from(w),
        usize::from(h),
        &font,
        t.cw as usize,
        ch,
    ))
}
