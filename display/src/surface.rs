//! The shared framebuffer surface: one producer (the VMM's graphics device, or a demo)
//! writes native pixels and says what changed; any number of consumers (VNC sessions)
//! read it, each at its own pace.
//!
//! Design:
//! - Pixels are `0x00RRGGBB` ([`crate::pixel::Native`]) in one `Vec`, row-major, behind an
//!   `RwLock`. The producer holds the write lock only while it writes; consumers hold the
//!   read lock only while they copy changed tiles into their own shadow copy, never while
//!   they encode or write to a socket. A slow client therefore never stalls the producer:
//!   it simply finds fewer, newer pixels the next time it looks.
//! - Change tracking is per consumer: every [`Consumer`] has its own dirty-tile map, its
//!   own queue of pending copies and its own condition variable, so "something changed"
//!   wakes it without polling and what one client has already seen never affects another.
//! - Tiles are 64x64 pixels. The VMM learns about changes from KVM's dirty-page bitmap in
//!   4 KiB pages (1024 pixels at 32 bpp, i.e. whole rows at common widths), so finer tiles
//!   would buy little precision at more bookkeeping (1080p is 510 tiles of 64x64 against
//!   8160 of 16x16). 64 is also the tile of ZRLE and Tight and a multiple of Hextile's 16,
//!   so rectangles built from tiles split evenly in every encoder. Precision within a tile
//!   comes from comparing against the consumer's shadow: only the bounding box of pixels
//!   that really differ is sent, and tiles that were marked but not changed are dropped.
//! - [`Surface::copy_rect`] moves pixels and records the move for each consumer, so a
//!   session can send CopyRect instead of pixels (a scrolling text console is the case
//!   that matters). A move is recorded only while its source is clean for that consumer
//!   (otherwise the client's copy of the source is stale) and while fewer than
//!   [`MAX_PENDING_COPIES`] are queued; otherwise the destination is just marked dirty.
//! - Not here: text mode (the VGA device renders it into pixels), colour maps, and more
//!   than one head.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::encoding::{PixelView, Rect};
use crate::pixel::Native;

/// Tile edge in pixels (see the module docs for why 64).
pub const TILE: usize = 64;
/// Copies queued per consumer before further copies degrade to dirty rectangles.
pub const MAX_PENDING_COPIES: usize = 16;
/// Largest width or height a surface takes (RFB sizes are u16; this keeps memory sane).
pub const MAX_DIMENSION: u16 = 8192;

/// A pointer shape for the Cursor pseudo-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub width: u16,
    pub height: u16,
    pub hot_x: u16,
    pub hot_y: u16,
    /// `0xAARRGGBB`, row-major; alpha >= 0x80 is drawn, below is transparent.
    pub pixels: Vec<u32>,
}

/// A move of pixels within the surface, as reported by the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOp {
    pub src: Rect,
    pub dst_x: u16,
    pub dst_y: u16,
}

impl CopyOp {
    pub fn dst(&self) -> Rect {
        Rect::new(self.dst_x, self.dst_y, self.src.w, self.src.h)
    }
}

/// Mutable access to the pixels, handed to the producer's closure.
pub struct FrameMut<'a> {
    pub pixels: &'a mut [Native],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
}

impl FrameMut<'_> {
    /// Row `y`, `width` pixels.
    pub fn row_mut(&mut self, y: usize) -> &mut [Native] {
        let s = y * self.stride;
        &mut self.pixels[s..s + self.width]
    }
}

struct Frame {
    width: usize,
    height: usize,
    pixels: Vec<Native>,
}

impl Frame {
    fn new(width: u16, height: u16) -> Self {
        let (w, h) = (usize::from(width), usize::from(height));
        Frame {
            width: w,
            height: h,
            pixels: vec![0; w * h],
        }
    }

    fn view(&self) -> PixelView<'_> {
        PixelView {
            pixels: &self.pixels,
            width: self.width,
            height: self.height,
            stride: self.width,
        }
    }

    /// `rect` clipped to the frame, or `None` when nothing is left.
    fn clip(&self, r: Rect) -> Option<Rect> {
        clip_to(r, self.width, self.height)
    }
}

fn clip_to(r: Rect, width: usize, height: usize) -> Option<Rect> {
    let x0 = usize::from(r.x).min(width);
    let y0 = usize::from(r.y).min(height);
    let x1 = (usize::from(r.x) + usize::from(r.w)).min(width);
    let y1 = (usize::from(r.y) + usize::from(r.h)).min(height);
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    Some(Rect::new(
        x0 as u16,
        y0 as u16,
        (x1 - x0) as u16,
        (y1 - y0) as u16,
    ))
}

fn intersect(a: Rect, b: Rect) -> Option<Rect> {
    let x0 = a.x.max(b.x);
    let y0 = a.y.max(b.y);
    let x1 = (u32::from(a.x) + u32::from(a.w)).min(u32::from(b.x) + u32::from(b.w));
    let y1 = (u32::from(a.y) + u32::from(a.h)).min(u32::from(b.y) + u32::from(b.h));
    if x1 <= u32::from(x0) || y1 <= u32::from(y0) {
        return None;
    }
    Some(Rect::new(
        x0,
        y0,
        (x1 - u32::from(x0)) as u16,
        (y1 - u32::from(y0)) as u16,
    ))
}

fn contains(outer: Rect, inner: Rect) -> bool {
    intersect(outer, inner) == Some(inner)
}

/// One consumer's view of what changed since it last looked.
struct DirtyState {
    tiles_x: usize,
    tiles_y: usize,
    dirty: Vec<bool>,
    any_dirty: bool,
    copies: Vec<CopyOp>,
    resized: bool,
    cursor_changed: bool,
    kicked: bool,
}

impl DirtyState {
    fn new(width: usize, height: usize) -> Self {
        let tiles_x = width.div_ceil(TILE);
        let tiles_y = height.div_ceil(TILE);
        DirtyState {
            tiles_x,
            tiles_y,
            dirty: vec![true; tiles_x * tiles_y],
            any_dirty: tiles_x * tiles_y > 0,
            copies: Vec::new(),
            resized: false,
            cursor_changed: true,
            kicked: false,
        }
    }

    /// Marks every tile that `r` (already clipped) touches.
    fn mark(&mut self, r: Rect) {
        if mark_tiles(&mut self.dirty, self.tiles_x, self.tiles_y, r) {
            self.any_dirty = true;
        }
    }

    fn any_marked(&self, r: Rect) -> bool {
        let tx0 = usize::from(r.x) / TILE;
        let ty0 = usize::from(r.y) / TILE;
        let tx1 = ((usize::from(r.x) + usize::from(r.w)).div_ceil(TILE)).min(self.tiles_x);
        let ty1 = ((usize::from(r.y) + usize::from(r.h)).div_ceil(TILE)).min(self.tiles_y);
        (ty0..ty1).any(|ty| (tx0..tx1).any(|tx| self.dirty[ty * self.tiles_x + tx]))
    }

    fn has_news(&self) -> bool {
        self.any_dirty || !self.copies.is_empty() || self.resized || self.cursor_changed
    }
}

/// Sets the tiles of a `tiles_x` x `tiles_y` map that `r` touches; true if any.
fn mark_tiles(dirty: &mut [bool], tiles_x: usize, tiles_y: usize, r: Rect) -> bool {
    let tx0 = usize::from(r.x) / TILE;
    let ty0 = usize::from(r.y) / TILE;
    let tx1 = ((usize::from(r.x) + usize::from(r.w)).div_ceil(TILE)).min(tiles_x);
    let ty1 = ((usize::from(r.y) + usize::from(r.h)).div_ceil(TILE)).min(tiles_y);
    let mut any = false;
    for ty in ty0..ty1 {
        for tx in tx0..tx1 {
            dirty[ty * tiles_x + tx] = true;
            any = true;
        }
    }
    any
}

struct ConsumerShared {
    state: Mutex<DirtyState>,
    cond: Condvar,
}

impl ConsumerShared {
    fn lock(&self) -> MutexGuard<'_, DirtyState> {
        // A panic elsewhere while holding this lock leaves only bookkeeping behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The framebuffer. Share it as `Arc<Surface>` between the producer and the server.
pub struct Surface {
    frame: RwLock<Frame>,
    consumers: Mutex<Vec<Weak<ConsumerShared>>>,
    cursor: Mutex<Option<Arc<Cursor>>>,
}

impl std::fmt::Debug for Surface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (w, h) = self.size();
        f.debug_struct("Surface")
            .field("width", &w)
            .field("height", &h)
            .finish()
    }
}

impl Surface {
    /// A black surface; sizes are clamped to 1..=[`MAX_DIMENSION`].
    pub fn new(width: u16, height: u16) -> Arc<Surface> {
        let (width, height) = clamp_size(width, height);
        Arc::new(Surface {
            frame: RwLock::new(Frame::new(width, height)),
            consumers: Mutex::new(Vec::new()),
            cursor: Mutex::new(None),
        })
    }

    fn frame_read(&self) -> std::sync::RwLockReadGuard<'_, Frame> {
        self.frame.read().unwrap_or_else(|e| e.into_inner())
    }

    fn frame_write(&self) -> std::sync::RwLockWriteGuard<'_, Frame> {
        self.frame.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `f` for every live consumer, forgetting dropped ones, and wakes each.
    fn for_each_consumer(&self, mut f: impl FnMut(&mut DirtyState)) {
        let mut list = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| {
            let Some(c) = w.upgrade() else {
                return false;
            };
            f(&mut c.lock());
            c.cond.notify_all();
            true
        });
    }

    /// (width, height).
    pub fn size(&self) -> (u16, u16) {
        let f = self.frame_read();
        (f.width as u16, f.height as u16)
    }

    /// Distance between rows in pixels (equal to the width: the surface is packed).
    pub fn stride(&self) -> usize {
        self.frame_read().width
    }

    /// Runs `f` on the pixels under the write lock. Call [`mark_dirty`](Self::mark_dirty)
    /// afterwards for what changed (and before any [`copy_rect`](Self::copy_rect) whose
    /// source it wrote).
    pub fn with_frame_mut<R>(&self, f: impl FnOnce(&mut FrameMut<'_>) -> R) -> R {
        let mut guard = self.frame_write();
        let frame = &mut *guard;
        let mut fm = FrameMut {
            width: frame.width,
            height: frame.height,
            stride: frame.width,
            pixels: &mut frame.pixels,
        };
        f(&mut fm)
    }

    /// Runs `f` on a read-only view of the pixels (holding the read lock: be quick).
    pub fn read<R>(&self, f: impl FnOnce(&PixelView<'_>) -> R) -> R {
        let frame = self.frame_read();
        f(&frame.view())
    }

    /// A copy of all pixels, row-major, `width * height` long.
    pub fn snapshot(&self) -> (u16, u16, Vec<Native>) {
        let f = self.frame_read();
        (f.width as u16, f.height as u16, f.pixels.clone())
    }

    /// Tells every consumer that `rect` (clipped to the surface) changed.
    pub fn mark_dirty(&self, rect: Rect) {
        let (w, h) = {
            let f = self.frame_read();
            (f.width, f.height)
        };
        if let Some(r) = clip_to(rect, w, h) {
            self.for_each_consumer(|s| s.mark(r));
        }
    }

    /// Marks the whole surface changed.
    pub fn mark_all_dirty(&self) {
        let (w, h) = self.size();
        self.mark_dirty(Rect::new(0, 0, w, h));
    }

    /// Writes a rectangle of pixels (`src` row-major with `src_stride` pixels per row) at
    /// (x, y), clipped to the surface, and marks it dirty. Short `src` is ignored.
    pub fn write_rect(&self, rect: Rect, src: &[Native], src_stride: usize) {
        let mut frame = self.frame_write();
        let Some(r) = frame.clip(rect) else {
            return;
        };
        let (w, h) = (usize::from(r.w), usize::from(r.h));
        let (ox, oy) = (usize::from(r.x - rect.x), usize::from(r.y - rect.y));
        if src_stride < ox + w || src.len() < (oy + h - 1) * src_stride + ox + w {
            return;
        }
        let fw = frame.width;
        for row in 0..h {
            let s = (oy + row) * src_stride + ox;
            let d = (usize::from(r.y) + row) * fw + usize::from(r.x);
            frame.pixels[d..d + w].copy_from_slice(&src[s..s + w]);
        }
        self.for_each_consumer(|s| s.mark(r));
    }

    /// Fills a rectangle (clipped) with one colour and marks it dirty.
    pub fn fill_rect(&self, rect: Rect, colour: Native) {
        let mut frame = self.frame_write();
        let Some(r) = frame.clip(rect) else {
            return;
        };
        let fw = frame.width;
        for y in usize::from(r.y)..usize::from(r.y) + usize::from(r.h) {
            let d = y * fw + usize::from(r.x);
            frame.pixels[d..d + usize::from(r.w)].fill(colour);
        }
        self.for_each_consumer(|s| s.mark(r));
    }

    /// Moves the pixels of `src` so that its top-left lands on (dst_x, dst_y), like a
    /// `memmove` (overlap is fine). Both rectangles are clipped to the surface. Consumers
    /// that can are told about the move so they may send CopyRect.
    pub fn copy_rect(&self, src: Rect, dst_x: u16, dst_y: u16) {
        let mut frame = self.frame_write();
        let (fw, fh) = (frame.width, frame.height);
        let Some(s) = clip_to(src, fw, fh) else {
            return;
        };
        // Shift the destination with any clipping of the source, then clip it too, and
        // shrink the source to match.
        let dx = u32::from(dst_x) + u32::from(s.x - src.x);
        let dy = u32::from(dst_y) + u32::from(s.y - src.y);
        if dx >= fw as u32 || dy >= fh as u32 {
            return;
        }
        let w = (u32::from(s.w)).min(fw as u32 - dx) as usize;
        let h = (u32::from(s.h)).min(fh as u32 - dy) as usize;
        let (sx, sy, dx, dy) = (usize::from(s.x), usize::from(s.y), dx as usize, dy as usize);
        if w == 0 || h == 0 {
            return;
        }
        let rows: Box<dyn Iterator<Item = usize>> = if dy > sy {
            Box::new((0..h).rev())
        } else {
            Box::new(0..h)
        };
        for row in rows {
            let from = (sy + row) * fw + sx;
            let to = (dy + row) * fw + dx;
            frame.pixels.copy_within(from..from + w, to);
        }
        let op = CopyOp {
            src: Rect::new(sx as u16, sy as u16, w as u16, h as u16),
            dst_x: dx as u16,
            dst_y: dy as u16,
        };
        // Recorded while the write lock is held, so a consumer's "take the news, then read
        // the pixels" (done under the read lock) sees the move and its pixels together.
        self.for_each_consumer(|st| {
            if st.resized || st.copies.len() >= MAX_PENDING_COPIES || st.any_marked(op.src) {
                st.mark(op.dst());
            } else {
                st.copies.push(op);
            }
        });
        drop(frame);
    }

    /// Changes the size; the new frame is black and every consumer is told.
    pub fn resize(&self, width: u16, height: u16) {
        let (width, height) = clamp_size(width, height);
        let mut frame = self.frame_write();
        if frame.width == usize::from(width) && frame.height == usize::from(height) {
            return;
        }
        *frame = Frame::new(width, height);
        let (w, h) = (frame.width, frame.height);
        self.for_each_consumer(|st| {
            let cursor_changed = st.cursor_changed;
            *st = DirtyState::new(w, h);
            st.resized = true;
            st.cursor_changed = cursor_changed;
        });
    }

    /// Sets (or clears) the pointer shape clients draw locally.
    pub fn set_cursor(&self, cursor: Option<Cursor>) {
        let cursor = cursor.filter(|c| {
            c.width <= 256
                && c.height <= 256
                && c.pixels.len() == usize::from(c.width) * usize::from(c.height)
        });
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = cursor.map(Arc::new);
        self.for_each_consumer(|st| st.cursor_changed = true);
    }

    /// The current pointer shape, if any.
    pub fn cursor(&self) -> Option<Arc<Cursor>> {
        self.cursor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A new consumer; its first [`Consumer::take`] reports the whole surface.
    pub fn subscribe(self: &Arc<Self>) -> Consumer {
        let frame = self.frame_read();
        let shared = Arc::new(ConsumerShared {
            state: Mutex::new(DirtyState::new(frame.width, frame.height)),
            cond: Condvar::new(),
        });
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&shared));
        Consumer {
            surface: Arc::clone(self),
            shared,
            shadow: Frame::new(frame.width as u16, frame.height as u16),
        }
    }
}

fn clamp_size(width: u16, height: u16) -> (u16, u16) {
    (
        width.clamp(1, MAX_DIMENSION),
        height.clamp(1, MAX_DIMENSION),
    )
}

/// Wakes a [`Consumer`] blocked in [`Consumer::wait`] from another thread.
#[derive(Clone)]
pub struct Waker(Arc<ConsumerShared>);

impl Waker {
    pub fn wake(&self) {
        self.0.lock().kicked = true;
        self.0.cond.notify_all();
    }
}

/// Why [`Consumer::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The surface changed (pixels, copies, size or cursor).
    Changed,
    /// Someone called [`Waker::wake`].
    Kicked,
    TimedOut,
}

/// What changed since the last [`Consumer::take`], ready to encode from
/// [`Consumer::view`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// New size, when the surface was resized (everything is in `rects` too).
    pub resized: Option<(u16, u16)>,
    /// Moves to send first (as CopyRect), in order. Empty unless asked for.
    pub copies: Vec<CopyOp>,
    /// Rectangles whose pixels to send, after the copies.
    pub rects: Vec<Rect>,
    /// New pointer shape (`Some(None)`: the shape was removed).
    pub cursor: Option<Option<Arc<Cursor>>>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.resized.is_none()
            && self.copies.is_empty()
            && self.rects.is_empty()
            && self.cursor.is_none()
    }
}

/// One reader of the surface, with its own change tracking and shadow copy of what it
/// has taken (which is what its client has, once sent).
pub struct Consumer {
    surface: Arc<Surface>,
    shared: Arc<ConsumerShared>,
    shadow: Frame,
}

impl Consumer {
    pub fn waker(&self) -> Waker {
        Waker(Arc::clone(&self.shared))
    }

    /// Blocks until something changed (when `want_changes`), someone kicked, or
    /// `timeout` passed. A kick is consumed by the wait that reports it.
    pub fn wait(&self, want_changes: bool, timeout: Duration) -> Wake {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if st.kicked {
                st.kicked = false;
                return Wake::Kicked;
            }
            if want_changes && st.has_news() {
                return Wake::Changed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::TimedOut;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// True when [`take`](Self::take) would report something (cheap; no pixels read).
    pub fn has_changes(&self) -> bool {
        self.shared.lock().has_news()
    }

    /// Takes everything that changed into the shadow copy and says what to send.
    /// `use_copies`: report moves as [`CopyOp`]s (else they become pixel rectangles).
    /// `full`: also send this region (clipped) whether or not it changed.
    pub fn take(&mut self, use_copies: bool, full: Option<Rect>) -> Update {
        let frame = self.surface.frame_read();
        let mut st = self.shared.lock();
        let resized = std::mem::take(&mut st.resized);
        let cursor_changed = std::mem::take(&mut st.cursor_changed);
        let copies = std::mem::take(&mut st.copies);
        let tiles_x = frame.width.div_ceil(TILE);
        let n = st.dirty.len();
        let dirty = if st.any_dirty {
            st.any_dirty = false;
            std::mem::replace(&mut st.dirty, vec![false; n])
        } else {
            // Nothing marked: compare no tile (a copy or cursor change alone is cheap).
            vec![false; n]
        };
        drop(st);

        let mut update = Update::default();
        if resized || self.shadow.width != frame.width || self.shadow.height != frame.height {
            self.shadow = Frame::new(frame.width as u16, frame.height as u16);
            update.resized = Some((frame.width as u16, frame.height as u16));
        }
        // Tiles whose pixels must be compared (and maybe sent).
        let mut check = if dirty.len() == frame.width.div_ceil(TILE) * frame.height.div_ceil(TILE) {
            dirty
        } else {
            vec![true; frame.width.div_ceil(TILE) * frame.height.div_ceil(TILE)]
        };
        let tiles_y = frame.height.div_ceil(TILE);
        for op in copies {
            if update.resized.is_none() && use_copies {
                apply_copy(&mut self.shadow, &op);
                update.copies.push(op);
            } else {
                // The client will not copy: the destination's pixels must be sent instead.
                mark_tiles(&mut check, tiles_x, tiles_y, op.dst());
            }
        }
        let full = full.and_then(|r| frame.clip(r));
        let mut changed = Vec::new();
        for ty in 0..tiles_y {
            for tx in 0..tiles_x {
                if !check[ty * tiles_x + tx] {
                    continue;
                }
                if let Some(r) = sync_tile(&frame, &mut self.shadow, tx, ty) {
                    changed.push(r);
                }
            }
        }
        drop(frame);

        let merged = merge_rects(changed);
        if let Some(f) = full {
            update.rects.push(f);
            update
                .rects
                .extend(merged.into_iter().filter(|r| !contains(f, *r)));
        } else {
            update.rects = merged;
        }
        if cursor_changed {
            update.cursor = Some(self.surface.cursor());
        }
        update
    }

    /// The pixels as of the last [`take`](Self::take), for the encoders.
    pub fn view(&self) -> PixelView<'_> {
        self.shadow.view()
    }

    /// Size of the shadow copy (what the client was last told).
    pub fn size(&self) -> (u16, u16) {
        (self.shadow.width as u16, self.shadow.height as u16)
    }
}

fn apply_copy(f: &mut Frame, op: &CopyOp) {
    let (w, h) = (usize::from(op.src.w), usize::from(op.src.h));
    let (sx, sy) = (usize::from(op.src.x), usize::from(op.src.y));
    let (dx, dy) = (usize::from(op.dst_x), usize::from(op.dst_y));
    if sx + w > f.width || dx + w > f.width || sy + h > f.height || dy + h > f.height {
        return;
    }
    let fw = f.width;
    let mut step = |row: usize| {
        let from = (sy + row) * fw + sx;
        let to = (dy + row) * fw + dx;
        f.pixels.copy_within(from..from + w, to);
    };
    if dy > sy {
        (0..h).rev().for_each(&mut step);
    } else {
        (0..h).for_each(&mut step);
    }
}

/// Copies tile (tx, ty) from `frame` into `shadow` and returns the bounding box of the
/// pixels that differed, if any.
fn sync_tile(frame: &Frame, shadow: &mut Frame, tx: usize, ty: usize) -> Option<Rect> {
    let x0 = tx * TILE;
    let y0 = ty * TILE;
    let x1 = (x0 + TILE).min(frame.width);
    let y1 = (y0 + TILE).min(frame.height);
    let fw = frame.width;
    let (mut bx0, mut by0, mut bx1, mut by1) = (usize::MAX, usize::MAX, 0, 0);
    for y in y0..y1 {
        let s = y * fw;
        let new = &frame.pixels[s + x0..s + x1];
        let old = &mut shadow.pixels[s + x0..s + x1];
        if new == old {
            continue;
        }
        let first = new.iter().zip(old.iter()).position(|(a, b)| a != b);
        let last = new.iter().zip(old.iter()).rposition(|(a, b)| a != b);
        if let (Some(f), Some(l)) = (first, last) {
            bx0 = bx0.min(x0 + f);
            bx1 = bx1.max(x0 + l + 1);
            by0 = by0.min(y);
            by1 = y + 1;
        }
        old.copy_from_slice(new);
    }
    if bx1 == 0 {
        return None;
    }
    Some(Rect::new(
        bx0 as u16,
        by0 as u16,
        (bx1 - bx0) as u16,
        (by1 - by0) as u16,
    ))
}

/// Joins horizontally touching boxes of the same rows (a full-width change becomes one
/// rectangle per tile row), then vertically touching ones of the same columns.
fn merge_rects(rects: Vec<Rect>) -> Vec<Rect> {
    let mut horiz: Vec<Rect> = Vec::with_capacity(rects.len());
    for r in rects {
        if let Some(last) = horiz.last_mut()
            && last.y == r.y
            && last.h == r.h
            && u32::from(last.x) + u32::from(last.w) == u32::from(r.x)
        {
            last.w += r.w;
            continue;
        }
        horiz.push(r);
    }
    let mut out: Vec<Rect> = Vec::with_capacity(horiz.len());
    for r in horiz {
        if let Some(prev) = out
            .iter_mut()
            .rev()
            .find(|p| p.x == r.x && p.w == r.w && u32::from(p.y) + u32::from(p.h) == u32::from(r.y))
        {
            prev.h += r.h;
            continue;
        }
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn pattern(w: usize, h: usize) -> Vec<Native> {
        (0..w * h)
            .map(|i| ((i * 2654435761) as u32) & 0x00ff_ffff)
            .collect()
    }

    #[test]
    fn first_take_is_everything_then_nothing() {
        let s = Surface::new(200, 100);
        let mut c = s.subscribe();
        s.write_rect(Rect::new(0, 0, 200, 100), &pattern(200, 100), 200);
        let u = c.take(true, None);
        assert_eq!(u.rects, vec![Rect::new(0, 0, 200, 100)]);
        assert_eq!(c.view().pixels, &s.snapshot().2[..]);
        let u = c.take(true, None);
        assert!(u.rects.is_empty() && u.copies.is_empty(), "{u:?}");
        assert!(!c.has_changes());
    }

    #[test]
    fn small_change_sends_only_its_bounding_box() {
        let s = Surface::new(300, 200);
        let mut c = s.subscribe();
        c.take(true, None);
        s.fill_rect(Rect::new(70, 80, 3, 2), 0x00ff_0000);
        assert_eq!(c.take(true, None).rects, vec![Rect::new(70, 80, 3, 2)]);
        // Marked but unchanged: nothing to send.
        s.mark_dirty(Rect::new(0, 0, 300, 200));
        assert!(c.take(true, None).rects.is_empty());
    }

    #[test]
    fn each_consumer_has_its_own_dirty_state() {
        let s = Surface::new(128, 128);
        let mut a = s.subscribe();
        let mut b = s.subscribe();
        a.take(true, None);
        b.take(true, None);
        s.fill_rect(Rect::new(0, 0, 10, 10), 1);
        assert_eq!(a.take(true, None).rects, vec![Rect::new(0, 0, 10, 10)]);
        s.fill_rect(Rect::new(100, 100, 5, 5), 2);
        // b never looked in between: it gets both changes.
        assert_eq!(
            b.take(true, None).rects,
            vec![Rect::new(0, 0, 10, 10), Rect::new(100, 100, 5, 5)]
        );
        assert_eq!(a.take(true, None).rects, vec![Rect::new(100, 100, 5, 5)]);
    }

    #[test]
    fn copy_rect_is_reported_and_shadow_follows() {
        let s = Surface::new(256, 256);
        let mut c = s.subscribe();
        s.write_rect(Rect::new(0, 0, 256, 256), &pattern(256, 256), 256);
        c.take(true, None);
        // Scroll up by 16 rows, as a text console does.
        s.copy_rect(Rect::new(0, 16, 256, 240), 0, 0);
        s.fill_rect(Rect::new(0, 240, 256, 16), 0);
        let u = c.take(true, None);
        assert_eq!(
            u.copies,
            vec![CopyOp {
                src: Rect::new(0, 16, 256, 240),
                dst_x: 0,
                dst_y: 0
            }]
        );
        assert_eq!(u.rects, vec![Rect::new(0, 240, 256, 16)]);
        assert_eq!(c.view().pixels, &s.snapshot().2[..]);
    }

    #[test]
    fn copy_from_dirty_source_degrades_to_pixels() {
        let s = Surface::new(128, 128);
        let mut c = s.subscribe();
        c.take(true, None);
        s.fill_rect(Rect::new(0, 0, 8, 8), 0x123456);
        s.copy_rect(Rect::new(0, 0, 8, 8), 100, 100);
        let u = c.take(true, None);
        assert!(u.copies.is_empty());
        assert_eq!(
            u.rects,
            vec![Rect::new(0, 0, 8, 8), Rect::new(100, 100, 8, 8)]
        );
        assert_eq!(c.view().pixels, &s.snapshot().2[..]);
    }

    #[test]
    fn copies_become_pixels_when_not_wanted() {
        let s = Surface::new(128, 128);
        let mut c = s.subscribe();
        s.write_rect(Rect::new(0, 0, 128, 128), &pattern(128, 128), 128);
        c.take(false, None);
        s.copy_rect(Rect::new(0, 0, 16, 16), 64, 64);
        let u = c.take(false, None);
        assert!(u.copies.is_empty());
        assert_eq!(u.rects, vec![Rect::new(64, 64, 16, 16)]);
        assert_eq!(c.view().pixels, &s.snapshot().2[..]);
    }

    #[test]
    fn resize_reports_new_size_and_everything() {
        let s = Surface::new(64, 64);
        let mut c = s.subscribe();
        c.take(true, None);
        s.resize(100, 50);
        s.fill_rect(Rect::new(0, 0, 100, 50), 7);
        let u = c.take(true, None);
        assert_eq!(u.resized, Some((100, 50)));
        assert_eq!(u.rects, vec![Rect::new(0, 0, 100, 50)]);
        assert_eq!(c.size(), (100, 50));
    }

    #[test]
    fn full_request_sends_region_even_if_unchanged() {
        let s = Surface::new(64, 64);
        let mut c = s.subscribe();
        c.take(true, None);
        let u = c.take(true, Some(Rect::new(0, 0, 1000, 1000)));
        assert_eq!(u.rects, vec![Rect::new(0, 0, 64, 64)]);
    }

    #[test]
    fn clipping_never_panics() {
        let s = Surface::new(10, 10);
        s.fill_rect(Rect::new(65535, 65535, 65535, 65535), 1);
        s.fill_rect(Rect::new(5, 5, 65535, 65535), 1);
        s.copy_rect(Rect::new(8, 8, 100, 100), 0, 0);
        s.copy_rect(Rect::new(0, 0, 100, 100), 9, 9);
        s.copy_rect(Rect::new(0, 0, 5, 5), 65535, 0);
        s.write_rect(Rect::new(0, 0, 10, 10), &[0; 3], 10);
        s.mark_dirty(Rect::new(65535, 0, 1, 1));
        let (_, _, px) = s.snapshot();
        assert_eq!(px[9 * 10 + 9], 1);
    }

    #[test]
    fn wait_wakes_on_change_and_kick_without_polling() {
        let s = Surface::new(64, 64);
        let mut c = s.subscribe();
        c.take(true, None);
        assert_eq!(c.wait(true, Duration::from_millis(10)), Wake::TimedOut);
        let s2 = Arc::clone(&s);
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            s2.fill_rect(Rect::new(1, 1, 1, 1), 5);
        });
        let start = Instant::now();
        assert_eq!(c.wait(true, Duration::from_secs(5)), Wake::Changed);
        assert!(start.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
        // Not wanting changes: only a kick wakes.
        let w = c.waker();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        assert_eq!(c.wait(false, Duration::from_secs(5)), Wake::Kicked);
        t.join().unwrap();
    }

    #[test]
    fn producer_is_not_blocked_by_an_idle_consumer() {
        let s = Surface::new(640, 480);
        let _slow = s.subscribe(); // never takes
        let start = Instant::now();
        for i in 0..1000u32 {
            s.fill_rect(Rect::new((i % 600) as u16, 0, 40, 480), i);
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn cursor_change_is_news() {
        let s = Surface::new(16, 16);
        let mut c = s.subscribe();
        let u = c.take(true, None);
        assert_eq!(u.cursor, Some(None));
        s.set_cursor(Some(Cursor {
            width: 2,
            height: 1,
            hot_x: 0,
            hot_y: 0,
            pixels: vec![0xff00_0000, 0],
        }));
        assert!(c.has_changes());
        let u = c.take(true, None);
        assert_eq!(u.cursor.unwrap().unwrap().width, 2);
    }
}
