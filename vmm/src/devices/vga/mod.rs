//! A standard VGA compatible with Bochs/QEMU's "stdvga" (PCI 1234:1111), drawing into a
//! [`display::surface::Surface`].
//!
//! What is emulated, and where:
//! - [`regs`]: the legacy registers at 0x3B0..=0x3DF (misc, sequencer, CRTC, graphics and
//!   attribute controllers, DAC, input status).
//! - this module (`VgaCore`): the 0xA0000..=0xBFFFF window on the MMIO bus
//!   with the memory maps of GR6, odd/even and chain-4 addressing, plane write masks, read
//!   modes 0/1, write modes 0-3 with set/reset, rotate, logical ops, bit mask and latches;
//!   and, while DISPI is enabled, banked access to linear video memory through the window.
//! - [`dispi`]: Bochs DISPI registers at 0x1CE/0x1CF and in the MMIO BAR.
//! - [`pci`]: the PCI function (BAR0 16 MiB prefetchable linear framebuffer, BAR2 4 KiB
//!   MMIO with QEMU's layout, expansion ROM with SeaBIOS's VGA BIOS).
//! - [`render`]: text mode (9-dot font from plane 2, attribute palette + DAC, cursor and
//!   blink), the VGA graphics modes the BIOS sets (16-colour planar, 256-colour chain-4,
//!   CGA 2 bpp) and DISPI 8/15/16/24/32 bpp, into the surface, marking only changed tiles.
//!
//! Video memory is one 16 MiB host mapping ([`HostRam`]). The planar VGA view uses its
//! first 256 KiB with the four planes interleaved (byte `4 * offset + plane`), the layout
//! QEMU uses, so chain-4 (mode 13h) and DISPI modes address it linearly. The linear
//! framebuffer BAR maps this memory into the guest through a [`RamMapper`] (a KVM slot
//! with dirty logging), so guest writes there cost no exits and refreshes read the
//! hypervisor's dirty bitmap; without a mapper the BAR is plain MMIO on the bus.
//!
//! How the VMM uses it ([`crate::machine`] and [`crate::vm`] do this): [`Vga::new`] with the
//! surface and the VGA BIOS image, [`Vga::attach`] for the legacy ports and window,
//! [`Vga::pci_function`] onto the PCI root, [`Vga::set_ram_mapper`] once the hypervisor VM
//! exists, then [`Vga::refresh`] about 60 times a second and whenever the
//! [`Vga::set_notifier`] callback says the guest wrote something ([`Vga::until_blink`]
//! says how long a text screen may go without one). A refresh holds the device lock only
//! while it copies what it draws from; the drawing runs under the renderer's own lock, so
//! vCPUs writing VGA state never wait for it. The VMM registers the legacy window for
//! coalesced MMIO where KVM can ([`crate::kvm::coalesced`]): its writes then reach
//! [`Vga`] when a vCPU exits or the refresh drains the ring, in the guest's order.
//!
//! Not emulated: the CRTC's split screen (line compare), horizontal pel panning, the
//! hardware text underline of mono attributes, big-endian framebuffers, EDID (the BAR's
//! EDID area reads zero, so drivers use defaults), and VGA interrupts. The ninth dot of
//! line-drawing characters is repeated for 0xC0..=0xDF as on IBM's VGA (QEMU does it from
//! 0xB0, so the shade characters 0xB0..=0xBF differ from QEMU's screens in that column).

pub mod dispi;
pub mod pci;
pub mod regs;
pub mod render;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use display::surface::Surface;
use thiserror::Error;
use vm_memory::{Bytes, VolatileMemory};

use crate::bus::{Bus, BusDevice, BusError, shared};
use crate::memory_slots::{HostRam, RamMapper, SlotError, SlotId, alloc_host_ram};
use dispi::{Dispi, DispiEffect};
use regs::{RegWrite, VgaRegs};

/// Video memory size: QEMU's stdvga default.
pub const VRAM_SIZE: usize = 16 << 20;
/// The legacy window, on the MMIO bus.
pub const VGA_WINDOW_BASE: u64 = 0xa_0000;
pub const VGA_WINDOW_LEN: u64 = 0x2_0000;
/// Legacy register ports 0x3B0..=0x3DF.
pub const VGA_PORTS_BASE: u64 = 0x3b0;
pub const VGA_PORTS_LEN: u64 = 0x30;
/// DISPI index (0x1CE) and data (0x1CF, 16 bits wide so the range reaches 0x1D0).
pub const DISPI_PORTS_BASE: u64 = 0x1ce;
pub const DISPI_PORTS_LEN: u64 = 3;
/// Where the distribution's SeaBIOS package puts the VGA BIOS for this device.
pub const VGABIOS_PATH: &str = "/usr/share/seabios/vgabios-stdvga.bin";
/// Planar VGA memory: four 64 KiB planes.
const PLANAR_SIZE: usize = 256 << 10;

#[derive(Debug, Error)]
pub enum VgaError {
    #[error(
        "the VGA BIOS {path} cannot be read ({why}); install the `seabios` package (e.g. apt-get install seabios), which provides it"
    )]
    Rom { path: String, why: String },
    #[error("video memory: {0}")]
    Vram(#[from] SlotError),
    #[error("device layout: {0}")]
    Bus(#[from] BusError),
}

/// Reads the VGA BIOS image (SeaBIOS's `vgabios-stdvga.bin` unless `path` names another).
pub fn load_vgabios(path: Option<&Path>) -> Result<Vec<u8>, VgaError> {
    let path = path.unwrap_or(Path::new(VGABIOS_PATH));
    let err = |why: String| VgaError::Rom {
        path: path.display().to_string(),
        why,
    };
    let rom = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if rom.len() < 3 || rom[0] != 0x55 || rom[1] != 0xaa {
        return Err(err("not an option ROM (no 55 AA signature)".into()));
    }
    Ok(rom)
}

/// A linear framebuffer mode, as a kernel is told about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearFramebuffer {
    /// Guest-physical address of the top-left pixel.
    pub base: u64,
    /// Size of the framebuffer memory (the whole BAR).
    pub size: u64,
    pub width: u32,
    pub height: u32,
    /// Bytes per scan line.
    pub stride: u32,
    /// 8 (palette), 15, 16 (RGB 5:5:5 / 5:6:5), 24 or 32 (BGR(X) in memory).
    pub bpp: u32,
}

/// Called the first time the guest touches VGA state after a refresh.
pub type Notifier = Arc<dyn Fn() + Send + Sync>;

/// Where the linear framebuffer is mapped, when a mapper is present.
#[derive(Default)]
pub(crate) struct LfbMap {
    pub mapper: Option<Arc<dyn RamMapper>>,
    pub slot: Option<(SlotId, u64)>,
}

/// All device state behind one lock; the bus adapters and the PCI function share it.
pub struct VgaCore {
    pub(crate) regs: VgaRegs,
    pub(crate) dispi: Dispi,
    pub(crate) vram: HostRam,
    latch: u32,
    /// Video memory pages written through the device (window, MMIO BAR, clears).
    pub(crate) dirty: Vec<u64>,
    /// Legacy registers or planar memory changed since the last refresh.
    pub(crate) legacy_changed: bool,
    /// Something that invalidates the whole DISPI picture changed (mode, palette).
    pub(crate) dispi_full: bool,
    generation: Arc<AtomicU64>,
    notifier: Option<Notifier>,
    notified: bool,
    pub(crate) lfb: LfbMap,
}

impl VgaCore {
    fn new() -> Result<VgaCore, VgaError> {
        let vram = alloc_host_ram(VRAM_SIZE)?;
        Ok(VgaCore {
            regs: VgaRegs::default(),
            dispi: Dispi::new(VRAM_SIZE as u32),
            vram,
            latch: 0,
            dirty: vec![0; crate::memory_slots::bitmap_words(VRAM_SIZE as u64)],
            legacy_changed: true,
            dispi_full: true,
            generation: Arc::new(AtomicU64::new(0)),
            notifier: None,
            notified: false,
            lfb: LfbMap::default(),
        })
    }

    /// The guest changed something visible: count it and wake the VMM once per refresh.
    fn touch(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
        if !self.notified {
            self.notified = true;
            if let Some(n) = &self.notifier {
                n();
            }
        }
    }

    pub(crate) fn vram_read(&self, off: usize) -> u8 {
        self.vram.as_volatile_slice().read_obj(off).unwrap_or(0xff)
    }

    pub(crate) fn vram_write(&mut self, off: usize, v: u8) {
        if self.vram.as_volatile_slice().write_obj(v, off).is_ok() {
            crate::memory_slots::mark_range(&mut self.dirty, off as u64, 1);
        }
    }

    fn vram_read32(&self, off: usize) -> u32 {
        self.vram.as_volatile_slice().read_obj(off).unwrap_or(0)
    }

    fn vram_write32(&mut self, off: usize, v: u32) {
        if self.vram.as_volatile_slice().write_obj(v, off).is_ok() {
            crate::memory_slots::mark_range(&mut self.dirty, off as u64, 4);
        }
    }

    /// Zeroes `[0, len)` of video memory (a DISPI mode set without NOCLEARMEM).
    fn clear_vram(&mut self, len: usize) {
        let len = len.min(VRAM_SIZE);
        let zeros = vec![0u8; 64 << 10];
        let vs = self.vram.as_volatile_slice();
        let mut off = 0;
        while off < len {
            let n = (len - off).min(zeros.len());
            let _ = vs.write_slice(&zeros[..n], off);
            off += n;
        }
        crate::memory_slots::mark_range(&mut self.dirty, 0, len as u64);
    }

    /// Registers back to power-on values (video memory is not cleared, as on hardware).
    pub(crate) fn reset(&mut self) {
        self.regs = VgaRegs::default();
        self.dispi = Dispi::new(VRAM_SIZE as u32);
        self.latch = 0;
        self.legacy_changed = true;
        self.dispi_full = true;
    }

    // ----- legacy ports -----

    pub(crate) fn port_read(&mut self, port: u16) -> u8 {
        self.regs.read(port)
    }

    pub(crate) fn port_write(&mut self, port: u16, v: u8) {
        match self.regs.write(port, v) {
            RegWrite::None => {}
            RegWrite::Regs => {
                self.legacy_changed = true;
                self.touch();
            }
            RegWrite::Palette => {
                self.legacy_changed = true;
                self.dispi_full = true;
                self.touch();
            }
        }
    }

    // ----- DISPI -----

    pub(crate) fn dispi_read(&self) -> u16 {
        self.dispi.read_data()
    }

    pub(crate) fn dispi_write(&mut self, v: u16) {
        match self.dispi.write_data(v) {
            DispiEffect::None => return,
            DispiEffect::Changed => {}
            DispiEffect::Clear { bytes } => self.clear_vram(bytes as usize),
        }
        self.dispi_full = true;
        self.legacy_changed = true;
        self.touch();
    }

    // ----- the 0xA0000 window -----

    /// Maps a window offset (0..0x20000) through GR6's memory map select; `None` when the
    /// address is outside the selected map.
    fn map_window(&self, addr: u64) -> Option<usize> {
        let a = addr as usize;
        match (self.regs.gr[6] >> 2) & 3 {
            0 => Some(a),
            1 => (a < 0x1_0000).then_some(a),
            2 => (0x1_0000..0x1_8000).contains(&a).then(|| a - 0x1_0000),
            _ => (0x1_8000..0x2_0000).contains(&a).then(|| a - 0x1_8000),
        }
    }

    /// Banked DISPI access: the window's first 64 KiB shows the selected bank linearly.
    fn banked(&self, addr: u64) -> Option<Option<usize>> {
        match self.dispi.mode() {
            Some(m) if m.bpp > 4 => {
                Some((addr < 0x1_0000).then(|| self.dispi.bank_offset() as usize + addr as usize))
            }
            _ => None,
        }
    }

    pub(crate) fn window_read(&mut self, addr: u64) -> u8 {
        if let Some(b) = self.banked(addr) {
            return b.map_or(0xff, |o| self.vram_read(o));
        }
        let Some(a) = self.map_window(addr) else {
            return 0xff;
        };
        let (sr4, gr4, gr5) = (self.regs.sr[4], self.regs.gr[4], self.regs.gr[5]);
        if sr4 & 0x08 != 0 {
            // Chain-4: the low two address bits pick the plane.
            return self.vram_read(a);
        }
        if gr5 & 0x10 != 0 {
            // Odd/even: address bit 0 picks plane 0/1 (or 2/3 with GR4 bit 1).
            let plane = usize::from(gr4 & 2) | (a & 1);
            return self.vram_read(((a & !1) << 1) | plane);
        }
        if a >= PLANAR_SIZE / 4 {
            return 0xff;
        }
        self.latch = self.vram_read32(a * 4);
        if gr5 & 0x08 == 0 {
            (self.latch >> (8 * u32::from(gr4 & 3))) as u8
        } else {
            // Read mode 1: colour compare against GR2, planes masked by GR7 (don't care).
            let mut r = (self.latch ^ expand4(self.regs.gr[2])) & expand4(self.regs.gr[7]);
            r |= r >> 16;
            r |= r >> 8;
            !(r as u8)
        }
    }

    pub(crate) fn window_write(&mut self, addr: u64, v: u8) {
        self.legacy_changed = true;
        self.touch();
        if let Some(b) = self.banked(addr) {
            if let Some(o) = b {
                self.vram_write(o, v);
            }
            return;
        }
        let Some(a) = self.map_window(addr) else {
            return;
        };
        let sr2 = self.regs.sr[2] & 0x0f;
        let (sr4, gr4) = (self.regs.sr[4], self.regs.gr[4]);
        if sr4 & 0x08 != 0 {
            if sr2 & (1 << (a & 3)) != 0 {
                self.vram_write(a, v);
            }
            return;
        }
        if sr4 & 0x04 == 0 {
            // Odd/even writes (SR4 bit 2 clear).
            let plane = usize::from(gr4 & 2) | (a & 1);
            if sr2 & (1 << plane) != 0 {
                self.vram_write(((a & !1) << 1) | plane, v);
            }
            return;
        }
        if a >= PLANAR_SIZE / 4 {
            return;
        }
        let gr = self.regs.gr;
        let rotate = |b: u8| b.rotate_right(u32::from(gr[3] & 7));
        let mut bit_mask = gr[8];
        let val = match gr[5] & 3 {
            0 => {
                let b = expand_byte(rotate(v));
                let set_reset = expand4(gr[1]);
                (b & !set_reset) | (expand4(gr[0]) & set_reset)
            }
            1 => {
                // Write mode 1: the latches go out unchanged.
                self.store_planes(a, self.latch, sr2);
                return;
            }
            2 => expand4(v & 0x0f),
            _ => {
                bit_mask &= rotate(v);
                expand4(gr[0])
            }
        };
        let val = match (gr[3] >> 3) & 3 {
            0 => val,
            1 => val & self.latch,
            2 => val | self.latch,
            _ => val ^ self.latch,
        };
        let m = expand_byte(bit_mask);
        let val = (val & m) | (self.latch & !m);
        self.store_planes(a, val, sr2);
    }

    fn store_planes(&mut self, a: usize, val: u32, plane_mask: u8) {
        let wm = expand4(plane_mask);
        let old = self.vram_read32(a * 4);
        self.vram_write32(a * 4, (old & !wm) | (val & wm));
    }

    // ----- the linear framebuffer -----

    /// Moves the LFB mapping to `want` (or removes it).
    pub(crate) fn map_lfb(&mut self, want: Option<u64>) {
        let Some(mapper) = self.lfb.mapper.clone() else {
            return;
        };
        if self.lfb.slot.map(|(_, a)| a) == want {
            return;
        }
        if let Some((slot, addr)) = self.lfb.slot.take() {
            // Pages the guest wrote just before the move still need drawing.
            if let Ok(d) = mapper.dirty_pages(slot) {
                merge(&mut self.dirty, &d);
            }
            if let Err(e) = mapper.unmap(slot) {
                tracing::warn!("vga: unmapping the framebuffer at {addr:#x}: {e}");
            }
        }
        if let Some(addr) = want {
            match mapper.map(addr, &self.vram, true) {
                Ok(slot) => {
                    tracing::debug!("vga: framebuffer mapped at {addr:#x}");
                    self.lfb.slot = Some((slot, addr));
                }
                Err(e) => tracing::warn!("vga: cannot map the framebuffer at {addr:#x}: {e}"),
            }
        }
    }

    /// Takes the pages written since the last call, by the device and by the guest through
    /// the mapping.
    pub(crate) fn take_dirty(&mut self) -> Vec<u64> {
        let n = self.dirty.len();
        let mut d = std::mem::replace(&mut self.dirty, vec![0; n]);
        if let (Some(m), Some((slot, _))) = (&self.lfb.mapper, self.lfb.slot) {
            match m.dirty_pages(slot) {
                Ok(g) => merge(&mut d, &g),
                Err(e) => {
                    tracing::warn!("vga: dirty log: {e}");
                    d.fill(!0);
                }
            }
        }
        d
    }

    /// LFB accesses that reach us as MMIO (no mapper).
    pub(crate) fn lfb_read(&self, off: u64, data: &mut [u8]) {
        if self
            .vram
            .as_volatile_slice()
            .read_slice(data, off as usize)
            .is_err()
        {
            data.fill(0xff);
        }
    }

    pub(crate) fn lfb_write(&mut self, off: u64, data: &[u8]) {
        if self
            .vram
            .as_volatile_slice()
            .write_slice(data, off as usize)
            .is_ok()
        {
            crate::memory_slots::mark_range(&mut self.dirty, off, data.len() as u64);
            self.touch();
        }
    }
}

fn merge(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a |= b;
    }
}

/// Bit `p` of `v` → byte `p` all ones (one byte per plane).
fn expand4(v: u8) -> u32 {
    (0..4).fold(0, |acc, p| {
        if v & (1 << p) != 0 {
            acc | 0xff << (8 * p)
        } else {
            acc
        }
    })
}

fn expand_byte(b: u8) -> u32 {
    u32::from(b) * 0x0101_0101
}

fn lock<T: ?Sized>(core: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere leaves plain register state behind; keep going.
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ports 0x3B0..=0x3DF. Word accesses (`outw 0x3c4`) are index then data.
struct VgaPorts(Arc<Mutex<VgaCore>>);

impl BusDevice for VgaPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut c = lock(&self.0);
        for (i, b) in data.iter_mut().enumerate() {
            *b = c.port_read((VGA_PORTS_BASE + offset + i as u64) as u16);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut c = lock(&self.0);
        for (i, &b) in data.iter().enumerate() {
            c.port_write((VGA_PORTS_BASE + offset + i as u64) as u16, b);
        }
    }
}

/// DISPI index (offset 0) and data (offset 1), 16-bit registers.
struct DispiPorts(Arc<Mutex<VgaCore>>);

fn le16(data: &[u8]) -> u16 {
    match data {
        [a] => u16::from(*a),
        [a, b, ..] => u16::from_le_bytes([*a, *b]),
        [] => 0,
    }
}

fn put_le(data: &mut [u8], v: u32) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = v.checked_shr(8 * i as u32).unwrap_or(0) as u8;
    }
}

impl BusDevice for DispiPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let c = lock(&self.0);
        let v = match offset {
            0 => c.dispi.index,
            1 => c.dispi_read(),
            _ => 0xffff,
        };
        put_le(data, u32::from(v));
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut c = lock(&self.0);
        match offset {
            0 => c.dispi.index = le16(data),
            1 => c.dispi_write(le16(data)),
            _ => {}
        }
    }
}

/// The 0xA0000..=0xBFFFF window.
struct VgaWindow(Arc<Mutex<VgaCore>>);

impl BusDevice for VgaWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut c = lock(&self.0);
        for (i, b) in data.iter_mut().enumerate() {
            *b = c.window_read(offset + i as u64);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut c = lock(&self.0);
        for (i, &b) in data.iter().enumerate() {
            c.window_write(offset + i as u64, b);
        }
    }
}

/// The device as the VMM holds it: bus attachment, the PCI function, refresh.
#[derive(Clone)]
pub struct Vga {
    core: Arc<Mutex<VgaCore>>,
    /// Drawing state, apart from the device so a render does not hold the device lock
    /// (lock order: this, then `core`).
    renderer: Arc<Mutex<render::Renderer>>,
    pci: Arc<Mutex<pci::VgaPci>>,
    epoch: Instant,
}

impl Vga {
    /// A VGA drawing into `surface`, with `rom` (the VGA BIOS) behind its ROM BAR.
    pub fn new(surface: Arc<Surface>, rom: Option<Vec<u8>>) -> Result<Vga, VgaError> {
        let core = Arc::new(Mutex::new(VgaCore::new()?));
        let pci = Arc::new(Mutex::new(pci::VgaPci::new(core.clone(), rom)));
        Ok(Vga {
            core,
            renderer: Arc::new(Mutex::new(render::Renderer::new(surface))),
            pci,
            epoch: Instant::now(),
        })
    }

    /// Puts the legacy ports, the DISPI ports and the 0xA0000 window on the buses. (The
    /// BARs go on through the PCI root: add [`Vga::pci_function`] to the chipset.)
    pub fn attach(&self, pio: &Bus, mmio: &Bus) -> Result<(), VgaError> {
        pio.insert(
            VGA_PORTS_BASE,
            VGA_PORTS_LEN,
            shared(VgaPorts(self.core.clone())),
        )?;
        pio.insert(
            DISPI_PORTS_BASE,
            DISPI_PORTS_LEN,
            shared(DispiPorts(self.core.clone())),
        )?;
        mmio.insert(
            VGA_WINDOW_BASE,
            VGA_WINDOW_LEN,
            shared(VgaWindow(self.core.clone())),
        )?;
        Ok(())
    }

    /// The PCI function, for `PcChipset::add`.
    pub fn pci_function(&self) -> Arc<Mutex<pci::VgaPci>> {
        self.pci.clone()
    }

    /// Lets the linear framebuffer live in a hypervisor memory slot with dirty logging.
    /// Call before the guest runs: an LFB the guest already placed stays plain MMIO.
    pub fn set_ram_mapper(&self, mapper: Arc<dyn RamMapper>) {
        lock(&self.core).lfb.mapper = Some(mapper);
        let want = lock(&self.pci).lfb_address();
        lock(&self.core).map_lfb(want);
    }

    /// Counts guest writes to VGA registers and memory (LFB writes through a hypervisor
    /// mapping are not seen until the next refresh reads the dirty log).
    pub fn generation(&self) -> u64 {
        lock(&self.core).generation.load(Ordering::Acquire)
    }

    /// Calls `f` (from a vCPU thread, so keep it short: wake a thread) the first time the
    /// guest writes VGA state after each refresh; lets the VMM refresh at once instead of
    /// waiting for its next tick.
    pub fn set_notifier(&self, f: Notifier) {
        let mut c = lock(&self.core);
        c.notifier = Some(f);
        c.notified = false;
    }

    /// Draws what changed into the surface and marks it dirty. The VMM calls this at about
    /// 60 Hz and when the notifier fires.
    pub fn refresh(&self) {
        self.refresh_at(self.epoch.elapsed().as_millis() as u64);
    }

    /// [`Vga::refresh`] at a given time in milliseconds (blink phases follow it).
    pub fn refresh_at(&self, now_ms: u64) {
        render::refresh(&self.core, &mut lock(&self.renderer), now_ms);
    }

    /// How long until the picture changes by itself (a cursor or character blink flips),
    /// so a refresh loop can sleep that long; `None` when only a guest write can change it
    /// (or a linear framebuffer mode is shown, whose writes need polling anyway).
    pub fn until_blink(&self) -> Option<std::time::Duration> {
        let now = self.epoch.elapsed().as_millis() as u64;
        render::until_blink_ms(&lock(&self.renderer), now).map(std::time::Duration::from_millis)
    }

    /// The text a text mode shows, read back from the surface's pixels with the font the
    /// guest loaded (see [`render::read_text`]); `None` in graphics modes.
    pub fn screen_text(&self) -> Option<Vec<String>> {
        let r = lock(&self.renderer);
        render::screen_text(&lock(&self.core), &r)
    }

    /// Sets a DISPI linear mode the way firmware leaves one for an OS (direct kernel boot,
    /// where no VGA BIOS runs); false when the mode is not one the device can show.
    pub fn set_linear_mode(&self, xres: u16, yres: u16, bpp: u16) -> bool {
        let mut c = lock(&self.core);
        for (index, v) in [
            (dispi::INDEX_ENABLE, 0),
            (dispi::INDEX_BPP, bpp),
            (dispi::INDEX_XRES, xres),
            (dispi::INDEX_YRES, yres),
            (dispi::INDEX_BANK, 0),
            (dispi::INDEX_ENABLE, dispi::ENABLED | dispi::LFB_ENABLED),
        ] {
            c.dispi.index = index;
            c.dispi_write(v);
        }
        c.dispi
            .mode()
            .is_some_and(|m| (m.xres, m.yres, m.bpp) == (xres.into(), yres.into(), bpp.into()))
    }

    /// The linear framebuffer as the guest can use it now (DISPI on with its LFB, BAR0
    /// decoding): what `boot_params.screen_info` describes for a kernel.
    pub fn linear_framebuffer(&self) -> Option<LinearFramebuffer> {
        let base = lock(&self.pci).lfb_address()?;
        let c = lock(&self.core);
        let m = c.dispi.mode()?;
        if !c.dispi.lfb_enabled() || m.bpp < 8 {
            return None;
        }
        Some(LinearFramebuffer {
            base: base + u64::from(m.start),
            size: VRAM_SIZE as u64,
            width: m.xres,
            height: m.yres,
            stride: m.line_offset,
            bpp: m.bpp,
        })
    }

    /// Video memory size in bytes.
    pub fn vram_size(&self) -> usize {
        VRAM_SIZE
    }
}
