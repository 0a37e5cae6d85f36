//! PCI MSI-X for one function, as the PCI Local Bus Specification (3.0, 6.8.2) defines it:
//! the capability in configuration space, the vector table, the pending-bit array (PBA),
//! and delivery of messages through an [`MsiSink`] (KVM_SIGNAL_MSI in the VMM, a recorder
//! in tests).
//!
//! A device owns a [`Msix`] and wires it up itself: it writes the capability into its
//! [`PciConfig`] with [`Msix::write_capability`] (and links it into the capability list),
//! forwards guest writes that touch message control to [`Msix::write_control`], places the
//! table and the PBA in one of its memory BARs and routes accesses there to
//! [`Msix::table_read`], [`Msix::table_write`] and [`Msix::pba_read`], and calls
//! [`Msix::notify`] where it would otherwise raise INTx.
//!
//! Emulated:
//! - 1 to 2048 table entries of 16 bytes: message address (lower dword, whose reserved
//!   bits 1:0 are stored as written, and upper dword), message data (32 bits) and vector
//!   control, of which only the mask bit (bit 0) sticks. Every entry starts masked.
//! - Message control: table size, function mask (bit 14), MSI-X enable (bit 15).
//! - Pending bits: a vector the device asks for while MSI-X is enabled but the function or
//!   its entry is masked becomes pending; it is delivered once, with the entry's address and
//!   data as they are then, as soon as neither mask holds it (entry unmasked, function
//!   unmasked, or MSI-X enabled again), lowest vector first, and its pending bit clears.
//! - Table accesses of any width at any offset. The specification only defines aligned
//!   dword and qword accesses; Linux uses dwords, other guests qwords, and anything else is
//!   taken byte by byte rather than refused. Accesses past the table read zeros and write
//!   nothing.
//!
//! Not emulated:
//! - MSI (capability id 0x05) and its per-vector masking: a device has MSI-X or INTx.
//! - Table and PBA in different BARs: [`Msix::write_capability`] takes one BIR for both.
//! - PBA writes: the PBA is read-only, so the device drops them; there is no call for them.
//! - A device withdrawing a request: a pending bit clears only when its message is
//!   delivered or on reset. Disabling MSI-X keeps pending bits (as QEMU does); while it is
//!   disabled, requests are ignored rather than made pending (the device uses INTx then).
//! - Any check of what a message means: address and data go to the sink as the guest wrote
//!   them; an address outside the APIC's window is the platform's to drop.
//!
//! The sink is called while the caller holds `&mut Msix` (typically under the device's
//! lock), so it must not call back into the device.

use std::sync::{Arc, Mutex};

use super::PciConfig;
use super::config::CONFIG_SIZE;

/// Where a message goes: the address/data pair of one table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Delivers messages to the platform's interrupt controllers (KVM_SIGNAL_MSI in the VMM; a
/// recorder in tests).
pub trait MsiSink: Send + Sync {
    fn send(&self, msg: MsiMessage);
}

/// A sink that keeps what it is sent: for tests, as [`crate::irq::RecordingIrq`] is for
/// lines.
#[derive(Default)]
pub struct RecordingMsi(Mutex<Vec<MsiMessage>>);

impl RecordingMsi {
    /// The messages sent since the last call.
    pub fn take(&self) -> Vec<MsiMessage> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The data words of [`RecordingMsi::take`].
    pub fn take_data(&self) -> Vec<u32> {
        self.take().iter().map(|m| m.data).collect()
    }
}

impl MsiSink for RecordingMsi {
    fn send(&self, msg: MsiMessage) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    }
}

pub const PCI_CAP_ID_MSIX: u8 = 0x11;
/// Bytes of the capability: id, next, message control, table offset/BIR, PBA offset/BIR.
pub const MSIX_CAP_LEN: u16 = 12;
pub const MSIX_ENTRY_SIZE: u64 = 16;

/// The most vectors a table may have (an 11-bit table size field holding N - 1).
const MAX_VECTORS: u16 = 2048;

/// Message control bits.
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const CONTROL_TABLE_SIZE: u16 = 0x07ff;

/// Capability field offsets from its start.
const CAP_CONTROL: u16 = 2;
const CAP_TABLE: u16 = 4;
const CAP_PBA: u16 = 8;
/// The low three bits of the table and PBA dwords hold the BIR; the offset is above them.
const BIR_MASK: u32 = 0x7;

/// Vector control: only the mask bit is defined.
const VECTOR_MASKED: u32 = 1;
/// Dword index of vector control inside an entry.
const WORD_VECTOR_CONTROL: usize = 3;

/// One table entry as four little-endian dwords: address low, address high, data, vector
/// control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry([u32; 4]);

impl Entry {
    /// Power-on state: everything zero but the mask bit.
    const MASKED: Entry = Entry([0, 0, 0, VECTOR_MASKED]);

    fn masked(&self) -> bool {
        self.0[WORD_VECTOR_CONTROL] & VECTOR_MASKED != 0
    }

    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.0[1]) << 32 | u64::from(self.0[0]),
            data: self.0[2],
        }
    }

    /// Byte `i` (0..16) of the entry.
    fn byte(&self, i: usize) -> u8 {
        (self.0[i / 4] >> (8 * (i % 4))) as u8
    }

    /// Sets byte `i` (0..16); in vector control only the mask bit sticks.
    fn set_byte(&mut self, i: usize, v: u8) {
        let word = &mut self.0[i / 4];
        let shift = 8 * (i % 4);
        *word = (*word & !(0xff << shift)) | u32::from(v) << shift;
        if i / 4 == WORD_VECTOR_CONTROL {
            *word &= VECTOR_MASKED;
        }
    }
}

/// One function's MSI-X state: the table, the pending-bit array and the two control bits.
pub struct Msix {
    table: Vec<Entry>,
    /// Bit n of word n / 64 is vector n's pending bit; bits at or past the table size stay 0.
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    sink: Arc<dyn MsiSink>,
}

impl std::fmt::Debug for Msix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Msix")
            .field("vectors", &self.vectors())
            .field("enabled", &self.enabled)
            .field("function_masked", &self.function_masked)
            .finish_non_exhaustive()
    }
}

impl Msix {
    /// A table of `vectors` entries, all masked, with MSI-X disabled and the function not
    /// masked. `vectors` is clamped to 1..=2048, the range the table size field can state;
    /// [`Msix::vectors`] tells what was taken.
    pub fn new(vectors: u16, sink: Arc<dyn MsiSink>) -> Msix {
        let vectors = vectors.clamp(1, MAX_VECTORS);
        Msix {
            table: vec![Entry::MASKED; usize::from(vectors)],
            pending: vec![0; usize::from(vectors.div_ceil(64))],
            enabled: false,
            function_masked: false,
            sink,
        }
    }

    pub fn vectors(&self) -> u16 {
        // At most 2048 entries, by construction.
        self.table.len() as u16
    }

    /// Message control bit 15.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Message control bit 14.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Message control as configuration space shows it: table size - 1 in bits 10:0,
    /// function mask bit 14, enable bit 15.
    pub fn control(&self) -> u16 {
        let mut v = (self.vectors() - 1) & CONTROL_TABLE_SIZE;
        if self.function_masked {
            v |= CONTROL_FUNCTION_MASK;
        }
        if self.enabled {
            v |= CONTROL_ENABLE;
        }
        v
    }

    /// The guest wrote message control (only bits 15 and 14 are taken). Unmasking the
    /// function (or enabling) delivers, once, every vector whose pending bit is set and
    /// whose own mask is clear, and clears those bits.
    pub fn write_control(&mut self, v: u16) {
        let enabled = v & CONTROL_ENABLE != 0;
        let function_masked = v & CONTROL_FUNCTION_MASK != 0;
        if (enabled, function_masked) != (self.enabled, self.function_masked) {
            tracing::debug!(
                "msix: enable {} -> {enabled}, function mask {} -> {function_masked}",
                self.enabled,
                self.function_masked
            );
        }
        self.enabled = enabled;
        self.function_masked = function_masked;
        self.deliver_pending(0..self.table.len());
    }

    /// Table accesses, `offset` from the table start; any width 1..=8 at any offset inside
    /// the table (Linux does 32-bit, some do 64-bit); outside the table reads 0 and writes
    /// are dropped. Clearing an entry's mask bit delivers its pending message if the
    /// function is enabled and not masked.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = match self.table_byte(offset, i) {
                Some((entry, byte)) => self.table[entry].byte(byte),
                None => 0,
            };
        }
    }

    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        let mut touched: Option<(usize, usize)> = None;
        for (i, &v) in data.iter().enumerate() {
            let Some((entry, byte)) = self.table_byte(offset, i) else {
                continue;
            };
            self.table[entry].set_byte(byte, v);
            touched = Some(match touched {
                Some((first, _)) => (first, entry),
                None => (entry, entry),
            });
        }
        // An entry whose mask is clear now may have a message waiting. The new address and
        // data are in place already, so a write that sets both and unmasks in one go
        // delivers to the new destination.
        if let Some((first, last)) = touched {
            self.deliver_pending(first..last + 1);
        }
    }

    /// Vectors * 16.
    pub fn table_len(&self) -> u64 {
        self.table.len() as u64 * MSIX_ENTRY_SIZE
    }

    /// Pending-bit array: reads as 64-bit words, bit n = vector n; writes are ignored
    /// (read-only). Past the array reads 0.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let word = offset
                .checked_add(i as u64)
                .and_then(|o| Some((self.pending.get(usize::try_from(o / 8).ok()?)?, o % 8)));
            *b = match word {
                Some((w, byte)) => (w >> (8 * byte)) as u8,
                None => 0,
            };
        }
    }

    /// ceil(vectors / 64) * 8.
    pub fn pba_len(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// The device asks for `vector`. Delivered through the sink if MSI-X is enabled, the
    /// function not masked and the entry not masked; else, if enabled, its pending bit is
    /// set (delivered later on unmask). Ignored when disabled or out of range (returns
    /// false). Returns whether a message was sent now.
    pub fn notify(&mut self, vector: u16) -> bool {
        let Some(entry) = self.table.get(usize::from(vector)) else {
            tracing::debug!(
                "msix: notify of vector {vector} ignored (table has {})",
                self.table.len()
            );
            return false;
        };
        if !self.enabled {
            return false;
        }
        if self.function_masked || entry.masked() {
            self.pending[usize::from(vector / 64)] |= 1 << (vector % 64);
            return false;
        }
        self.sink.send(entry.message());
        true
    }

    /// Whether `vector` is in range and, with MSI-X enabled, would be delivered or made
    /// pending (for the transport's vector-register validation, it accepts vectors <
    /// vectors()).
    pub fn is_valid_vector(&self, vector: u16) -> bool {
        usize::from(vector) < self.table.len()
    }

    /// Back to power-on state (as after new).
    pub fn reset(&mut self) {
        self.table.fill(Entry::MASKED);
        self.pending.fill(0);
        self.enabled = false;
        self.function_masked = false;
    }

    /// Writes the capability into `config` at `at` (dword aligned) with next pointer
    /// `next`: id, next, control(), table at `table_offset` in BAR `bir`, PBA at
    /// `pba_offset` in BAR `bir`; makes only message-control bits 15:14 writable
    /// (PciConfig::set_wmask_u16). The caller links `at` into the capability list itself
    /// and forwards config writes touching at+2..at+4 to write_control(config.u16(at + 2)).
    ///
    /// The offsets must be 8-byte aligned (their low three bits are where the BIR goes) and
    /// `bir` 0..=5; debug builds assert that, others drop the stray bits.
    ///
    /// # Panics
    ///
    /// If the capability does not fit in the 256 bytes of configuration space (a device
    /// bug, the same in every run).
    pub fn write_capability(
        &self,
        config: &mut PciConfig,
        at: u16,
        next: u8,
        bir: u8,
        table_offset: u32,
        pba_offset: u32,
    ) {
        assert!(
            usize::from(at) + usize::from(MSIX_CAP_LEN) <= CONFIG_SIZE,
            "MSI-X capability at {at:#x} runs past configuration space"
        );
        debug_assert!(
            at.is_multiple_of(4),
            "capability at {at:#x} is not dword aligned"
        );
        debug_assert!(bir < 6, "BAR {bir} does not exist");
        debug_assert!(
            table_offset & BIR_MASK == 0 && pba_offset & BIR_MASK == 0,
            "table ({table_offset:#x}) and PBA ({pba_offset:#x}) must be 8-byte aligned"
        );
        let bir = u32::from(bir) & BIR_MASK;
        config.set_u8(at, PCI_CAP_ID_MSIX);
        config.set_u8(at + 1, next);
        config.set_u16(at + CAP_CONTROL, self.control());
        config.set_u32(at + CAP_TABLE, table_offset & !BIR_MASK | bir);
        config.set_u32(at + CAP_PBA, pba_offset & !BIR_MASK | bir);
        config.set_wmask_u16(at, 0);
        config.set_wmask_u16(at + CAP_CONTROL, CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        config.set_wmask_u32(at + CAP_TABLE, 0);
        config.set_wmask_u32(at + CAP_PBA, 0);
    }

    /// Which entry and which of its bytes the table byte at `offset + i` is, if it is in
    /// the table.
    fn table_byte(&self, offset: u64, i: usize) -> Option<(usize, usize)> {
        let o = offset.checked_add(i as u64)?;
        if o >= self.table_len() {
            return None;
        }
        // Below 2048 * 16, so both fit.
        Some((
            (o / MSIX_ENTRY_SIZE) as usize,
            (o % MSIX_ENTRY_SIZE) as usize,
        ))
    }

    /// Delivers, lowest first, the pending vectors in `vectors` that no mask holds any more,
    /// and clears their pending bits; nothing while MSI-X is disabled or the function
    /// masked.
    fn deliver_pending(&mut self, vectors: std::ops::Range<usize>) {
        if !self.enabled || self.function_masked {
            return;
        }
        for v in vectors {
            let (word, bit) = (v / 64, 1u64 << (v % 64));
            let Some(entry) = self.table.get(v) else {
                break;
            };
            if self.pending[word] & bit != 0 && !entry.masked() {
                self.pending[word] &= !bit;
                tracing::debug!("msix: vector {v} was pending, delivered on unmask");
                self.sink.send(entry.message());
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::noise::Noise;

    fn msix(vectors: u16) -> (Msix, Arc<RecordingMsi>) {
        let sink = Arc::new(RecordingMsi::default());
        (Msix::new(vectors, sink.clone()), sink)
    }

    const ENABLE: u16 = CONTROL_ENABLE;
    const FMASK: u16 = CONTROL_FUNCTION_MASK;

    /// Offsets of an entry's fields.
    fn addr_lo(v: u64) -> u64 {
        v * MSIX_ENTRY_SIZE
    }
    fn addr_hi(v: u64) -> u64 {
        v * MSIX_ENTRY_SIZE + 4
    }
    fn data(v: u64) -> u64 {
        v * MSIX_ENTRY_SIZE + 8
    }
    fn ctrl(v: u64) -> u64 {
        v * MSIX_ENTRY_SIZE + 12
    }

    fn rd32(m: &Msix, off: u64) -> u32 {
        let mut b = [0; 4];
        m.table_read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn wr32(m: &mut Msix, off: u64, v: u32) {
        m.table_write(off, &v.to_le_bytes());
    }
    fn rd64(m: &Msix, off: u64) -> u64 {
        let mut b = [0; 8];
        m.table_read(off, &mut b);
        u64::from_le_bytes(b)
    }
    fn wr64(m: &mut Msix, off: u64, v: u64) {
        m.table_write(off, &v.to_le_bytes());
    }
    fn pba(m: &Msix, word: u64) -> u64 {
        let mut b = [0; 8];
        m.pba_read(word * 8, &mut b);
        u64::from_le_bytes(b)
    }

    /// Points `vector` at `msg` with 32-bit writes, as Linux does, leaving its mask alone.
    fn program(m: &mut Msix, vector: u64, msg: MsiMessage) {
        wr32(m, addr_lo(vector), msg.address as u32);
        wr32(m, addr_hi(vector), (msg.address >> 32) as u32);
        wr32(m, data(vector), msg.data);
    }
    fn mask(m: &mut Msix, vector: u64, masked: bool) {
        wr32(m, ctrl(vector), u32::from(masked));
    }

    fn msg(address: u64, data: u32) -> MsiMessage {
        MsiMessage { address, data }
    }

    #[test]
    fn capability_bytes_and_write_mask() {
        let (m, _) = msix(3);
        let mut c = PciConfig::new(0x1af4, 0x1041, 0, 1);
        let at = c
            .add_capability(PCI_CAP_ID_MSIX, usize::from(MSIX_CAP_LEN) - 2)
            .unwrap();
        m.write_capability(&mut c, at, 0x00, 2, 0x2000, 0x3000);
        assert_eq!(c.u8(crate::pci::regs::CAPABILITIES), at as u8);
        assert_eq!(c.u8(at), 0x11);
        assert_eq!(c.u8(at + 1), 0x00);
        assert_eq!(
            c.u16(at + 2),
            0x0002,
            "table size - 1, disabled, not masked"
        );
        assert_eq!(c.u32(at + 4), 0x2002, "table offset | BIR");
        assert_eq!(c.u32(at + 8), 0x3002, "PBA offset | BIR");

        // All ones over the whole capability: only enable and function mask stick.
        for off in (at..at + MSIX_CAP_LEN).step_by(4) {
            c.write(off, &[0xff; 4]);
        }
        assert_eq!(c.u8(at), 0x11);
        assert_eq!(c.u8(at + 1), 0x00);
        assert_eq!(c.u16(at + 2), 0xc002);
        assert_eq!(c.u32(at + 4), 0x2002);
        assert_eq!(c.u32(at + 8), 0x3002);
        // A byte write to the high half of message control, as some guests do.
        c.write(at + 3, &[0x80]);
        assert_eq!(c.u16(at + 2), 0x8002);

        // The next pointer and the largest table.
        let (big, _) = msix(2048);
        let mut c = PciConfig::new(0x1af4, 0x1041, 0, 1);
        big.write_capability(&mut c, 0x50, 0x60, 4, 0, 0x8000);
        assert_eq!(c.u8(0x51), 0x60);
        assert_eq!(c.u16(0x52), 0x07ff);
        assert_eq!(c.u32(0x54), 0x0004);
        assert_eq!(c.u32(0x58), 0x8004);
    }

    #[test]
    fn capability_reflects_the_state_it_is_written_from() {
        let (mut m, _) = msix(8);
        m.write_control(ENABLE | FMASK);
        let mut c = PciConfig::new(0x1af4, 0x1041, 0, 1);
        m.write_capability(&mut c, 0x40, 0, 1, 0, 0x800);
        assert_eq!(c.u16(0x42), 0xc007);
    }

    #[test]
    fn config_writes_forwarded_to_write_control() {
        let (mut m, _) = msix(4);
        let mut c = PciConfig::new(0x1af4, 0x1041, 0, 1);
        let at = c.add_capability(PCI_CAP_ID_MSIX, 10).unwrap();
        m.write_capability(&mut c, at, 0, 0, 0, 0x800);
        c.write(at + 2, &0xffffu16.to_le_bytes());
        m.write_control(c.u16(at + 2));
        assert!(m.enabled() && m.function_masked());
        assert_eq!(m.control(), c.u16(at + 2));
        c.write(at + 2, &0x8000u16.to_le_bytes());
        m.write_control(c.u16(at + 2));
        assert!(m.enabled() && !m.function_masked());
        assert_eq!(m.control(), c.u16(at + 2));
    }

    #[test]
    fn power_on_state() {
        for vectors in [1, 3, 64, 65, 2048] {
            let (m, sink) = msix(vectors);
            assert_eq!(m.vectors(), vectors);
            assert!(!m.enabled());
            assert!(!m.function_masked());
            assert_eq!(m.control(), vectors - 1);
            assert_eq!(m.table_len(), u64::from(vectors) * 16);
            assert_eq!(m.pba_len(), u64::from(vectors).div_ceil(64) * 8);
            for v in 0..u64::from(vectors) {
                assert_eq!(rd64(&m, addr_lo(v)), 0);
                assert_eq!(rd32(&m, data(v)), 0);
                assert_eq!(rd32(&m, ctrl(v)), 1, "vector {v} starts masked");
            }
            for w in 0..m.pba_len() / 8 {
                assert_eq!(pba(&m, w), 0);
            }
            assert!(sink.take().is_empty());
        }
    }

    #[test]
    fn pba_and_table_lengths() {
        let cases = [
            (1, 16, 8),
            (63, 1008, 8),
            (64, 1024, 8),
            (65, 1040, 16),
            (2048, 32768, 256),
        ];
        for (vectors, table, pba) in cases {
            let (m, _) = msix(vectors);
            assert_eq!(
                (m.table_len(), m.pba_len()),
                (table, pba),
                "{vectors} vectors"
            );
        }
    }

    #[test]
    fn vector_count_is_clamped_to_what_the_capability_can_state() {
        assert_eq!(msix(0).0.vectors(), 1);
        assert_eq!(msix(2049).0.vectors(), 2048);
        assert_eq!(msix(u16::MAX).0.control(), 0x07ff);
    }

    #[test]
    fn control_takes_only_enable_and_function_mask() {
        let (mut m, _) = msix(5);
        m.write_control(0xffff);
        assert!(m.enabled());
        assert!(m.function_masked());
        assert_eq!(m.control(), 0xc004);
        m.write_control(0x3fff);
        assert!(!m.enabled());
        assert!(!m.function_masked());
        assert_eq!(m.control(), 0x0004);
        m.write_control(ENABLE);
        assert_eq!(m.control(), 0x8004);
        m.write_control(FMASK);
        assert_eq!(m.control(), 0x4004);
    }

    #[test]
    fn table_dword_accesses() {
        let (mut m, _) = msix(4);
        wr32(&mut m, addr_lo(2), 0xfee0_100f);
        wr32(&mut m, addr_hi(2), 0x0000_0001);
        wr32(&mut m, data(2), 0xdead_beef);
        assert_eq!(
            rd32(&m, addr_lo(2)),
            0xfee0_100f,
            "reserved bits 1:0 stored"
        );
        assert_eq!(rd32(&m, addr_hi(2)), 1);
        assert_eq!(rd32(&m, data(2)), 0xdead_beef);
        // Neighbours untouched.
        assert_eq!(rd32(&m, addr_lo(1)), 0);
        assert_eq!(rd32(&m, ctrl(1)), 1);
        assert_eq!(rd32(&m, addr_lo(3)), 0);

        // Vector control: only the mask bit sticks.
        wr32(&mut m, ctrl(2), 0xffff_fffe);
        assert_eq!(rd32(&m, ctrl(2)), 0);
        wr32(&mut m, ctrl(2), 0xffff_ffff);
        assert_eq!(rd32(&m, ctrl(2)), 1);
        wr32(&mut m, ctrl(2), 0);
        assert_eq!(rd32(&m, ctrl(2)), 0);
    }

    #[test]
    fn table_qword_accesses() {
        let (mut m, _) = msix(4);
        wr64(&mut m, addr_lo(1), 0x0000_0002_fee0_3000);
        wr64(&mut m, data(1), 0xffff_ffff_0000_0041);
        assert_eq!(rd64(&m, addr_lo(1)), 0x0000_0002_fee0_3000);
        assert_eq!(
            rd64(&m, data(1)),
            0x0000_0001_0000_0041,
            "control keeps bit 0 only"
        );
        assert_eq!(rd32(&m, addr_hi(1)), 2);
        wr64(&mut m, data(1), 0x41);
        assert_eq!(rd32(&m, ctrl(1)), 0);
    }

    #[test]
    fn table_narrow_and_unaligned_accesses() {
        let (mut m, _) = msix(4);
        m.table_write(data(0) + 1, &[0xaa]);
        m.table_write(data(0) + 2, &[0xbb, 0xcc]);
        assert_eq!(rd32(&m, data(0)), 0xccbb_aa00);
        let mut b = [0; 2];
        m.table_read(data(0) + 1, &mut b);
        assert_eq!(b, [0xaa, 0xbb]);

        // A qword across two entries: control of 0, then address low of 1.
        wr64(&mut m, ctrl(0), 0x1234_5678_ffff_fffe);
        assert_eq!(rd32(&m, ctrl(0)), 0);
        assert_eq!(rd32(&m, addr_lo(1)), 0x1234_5678);
        assert_eq!(rd64(&m, ctrl(0)), 0x1234_5678_0000_0000);
        // A byte of control with bits above the mask.
        m.table_write(ctrl(3), &[0xff]);
        assert_eq!(rd32(&m, ctrl(3)), 1);
        m.table_write(ctrl(3) + 1, &[0xff, 0xff, 0xff]);
        assert_eq!(rd32(&m, ctrl(3)), 1, "the upper bytes leave the mask alone");
        m.table_write(ctrl(3), &[0xfe]);
        assert_eq!(rd32(&m, ctrl(3)), 0);
    }

    #[test]
    fn accesses_outside_the_table() {
        let (mut m, sink) = msix(2);
        let end = m.table_len();
        let mut b = [0xff; 8];
        m.table_read(end, &mut b);
        assert_eq!(b, [0; 8]);
        m.table_write(end, &[0xff; 8]);
        m.table_write(u64::MAX - 3, &[0xff; 8]);
        m.table_read(u64::MAX, &mut b);
        assert_eq!(b, [0; 8]);
        // Straddling the end: the bytes inside count, the rest read 0.
        wr64(&mut m, end - 4, 0xffff_ffff_1122_3344);
        assert_eq!(rd32(&m, ctrl(1)), 0);
        m.table_read(end - 4, &mut b);
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 0]);
        wr32(&mut m, data(1), 0x1122_3344);
        m.table_read(end - 6, &mut b);
        assert_eq!(b, [0x22, 0x11, 0, 0, 0, 0, 0, 0]);
        // Empty and oversized accesses.
        m.table_write(0, &[]);
        m.table_read(0, &mut []);
        let mut big = [0xff; 64];
        m.table_read(0, &mut big);
        assert_eq!(&big[32..], &[0; 32]);
        m.table_write(0, &[0; 64]);
        assert_eq!(rd32(&m, ctrl(1)), 0);

        // The PBA past its end and at absurd offsets.
        m.pba_read(m.pba_len(), &mut b);
        assert_eq!(b, [0; 8]);
        m.pba_read(u64::MAX, &mut b);
        assert_eq!(b, [0; 8]);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn notify_while_disabled_does_nothing() {
        let (mut m, sink) = msix(4);
        program(&mut m, 1, msg(0xfee0_0000, 0x31));
        mask(&mut m, 1, false);
        assert!(!m.notify(1));
        assert!(!m.notify(2), "masked and disabled: not even pending");
        assert_eq!(pba(&m, 0), 0);
        assert!(sink.take().is_empty());
        // Enabling later has nothing to deliver.
        m.write_control(ENABLE);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn notify_enabled_and_unmasked_sends_the_entry_message() {
        let (mut m, sink) = msix(4);
        program(&mut m, 3, msg(0x1_fee0_200c, 0x4041));
        mask(&mut m, 3, false);
        m.write_control(ENABLE);
        assert!(m.notify(3));
        assert_eq!(sink.take(), vec![msg(0x1_fee0_200c, 0x4041)]);
        assert_eq!(pba(&m, 0), 0);
        // The entry as it is at each notify.
        wr32(&mut m, data(3), 0x42);
        assert!(m.notify(3));
        assert!(m.notify(3));
        assert_eq!(sink.take(), vec![msg(0x1_fee0_200c, 0x42); 2]);
    }

    #[test]
    fn masked_entry_pends_and_unmasking_delivers_once() {
        let (mut m, sink) = msix(4);
        program(&mut m, 2, msg(0xfee0_0000, 0x50));
        m.write_control(ENABLE);
        assert!(!m.notify(2));
        assert!(
            !m.notify(2),
            "a second request while masked is the same pending bit"
        );
        assert_eq!(pba(&m, 0), 1 << 2);
        assert!(sink.take().is_empty());
        // Reprogrammed while masked: the message goes where the entry points on unmask.
        program(&mut m, 2, msg(0xfee0_1000, 0x51));
        assert!(sink.take().is_empty());
        mask(&mut m, 2, false);
        assert_eq!(sink.take(), vec![msg(0xfee0_1000, 0x51)]);
        assert_eq!(pba(&m, 0), 0);
        // Masking and unmasking again delivers nothing more.
        mask(&mut m, 2, true);
        mask(&mut m, 2, false);
        assert!(sink.take().is_empty());
        // Writes that keep the mask clear do not deliver either.
        wr32(&mut m, data(2), 0x52);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn unmasking_with_a_qword_write_uses_the_new_data() {
        let (mut m, sink) = msix(2);
        program(&mut m, 0, msg(0xfee0_0000, 0x60));
        m.write_control(ENABLE);
        assert!(!m.notify(0));
        // Data and vector control in one write, mask cleared.
        wr64(&mut m, data(0), 0x61);
        assert_eq!(sink.take(), vec![msg(0xfee0_0000, 0x61)]);
        assert_eq!(pba(&m, 0), 0);
    }

    #[test]
    fn function_mask_pends_and_unmasking_the_function_delivers() {
        let (mut m, sink) = msix(8);
        for v in [0, 3, 5] {
            program(&mut m, v, msg(0xfee0_0000 + (v << 12), 0x70 + v as u32));
        }
        mask(&mut m, 0, false);
        mask(&mut m, 5, false);
        m.write_control(ENABLE | FMASK);
        for v in [5, 3, 0] {
            assert!(!m.notify(v));
        }
        assert_eq!(pba(&m, 0), 1 << 0 | 1 << 3 | 1 << 5);
        assert!(sink.take().is_empty());
        // Unmasking an entry while the function is masked delivers nothing.
        mask(&mut m, 0, true);
        mask(&mut m, 0, false);
        assert!(sink.take().is_empty());

        m.write_control(ENABLE);
        assert_eq!(
            sink.take(),
            vec![msg(0xfee0_0000, 0x70), msg(0xfee0_5000, 0x75)],
            "lowest vector first; vector 3 is still masked"
        );
        assert_eq!(pba(&m, 0), 1 << 3);
        m.write_control(ENABLE);
        assert!(sink.take().is_empty(), "once");
        mask(&mut m, 3, false);
        assert_eq!(sink.take(), vec![msg(0xfee0_3000, 0x73)]);
        assert_eq!(pba(&m, 0), 0);
    }

    #[test]
    fn pending_bits_survive_disabling_and_deliver_on_enable() {
        let (mut m, sink) = msix(4);
        program(&mut m, 1, msg(0xfee0_0000, 0x80));
        m.write_control(ENABLE);
        assert!(!m.notify(1));
        m.write_control(0);
        assert_eq!(pba(&m, 0), 1 << 1);
        // Unmasked while disabled: still held.
        mask(&mut m, 1, false);
        assert!(sink.take().is_empty());
        assert_eq!(pba(&m, 0), 1 << 1);
        // Enabling with the function masked: still held.
        m.write_control(ENABLE | FMASK);
        assert!(sink.take().is_empty());
        m.write_control(ENABLE);
        assert_eq!(sink.take(), vec![msg(0xfee0_0000, 0x80)]);
        assert_eq!(pba(&m, 0), 0);
    }

    #[test]
    fn pba_words_map_vectors_to_bits() {
        let (mut m, _) = msix(130);
        m.write_control(ENABLE);
        for v in [0, 63, 64, 127, 129] {
            assert!(!m.notify(v));
        }
        assert_eq!(pba(&m, 0), 1 | 1 << 63);
        assert_eq!(pba(&m, 1), 1 | 1 << 63);
        assert_eq!(pba(&m, 2), 1 << 1);
        assert_eq!(m.pba_len(), 24);
        // Narrow and unaligned reads see the same bytes.
        let mut b = [0; 2];
        m.pba_read(7, &mut b);
        assert_eq!(b, [0x80, 0x01]);
        let mut b = [0; 4];
        m.pba_read(16, &mut b);
        assert_eq!(b, [0x02, 0, 0, 0]);
    }

    #[test]
    fn out_of_range_vectors() {
        let (mut m, sink) = msix(65);
        for v in 0..65 {
            mask(&mut m, v, false);
        }
        m.write_control(ENABLE | FMASK);
        assert!(!m.notify(65));
        assert!(!m.notify(2048));
        assert!(!m.notify(u16::MAX));
        assert_eq!((pba(&m, 0), pba(&m, 1)), (0, 0));
        m.write_control(ENABLE);
        assert!(!m.notify(65));
        assert!(m.notify(64));
        assert_eq!(sink.take().len(), 1);

        assert!(m.is_valid_vector(0));
        assert!(m.is_valid_vector(64));
        assert!(!m.is_valid_vector(65));
        assert!(!m.is_valid_vector(0xffff), "virtio's NO_VECTOR");
        // In range whether or not MSI-X is enabled (drivers may set vectors first).
        m.write_control(0);
        assert!(m.is_valid_vector(64));
    }

    #[test]
    fn reset_returns_to_power_on_state() {
        let (mut m, sink) = msix(70);
        let (fresh, _) = msix(70);
        program(&mut m, 69, msg(0xfee0_0000, 0x90));
        program(&mut m, 0, msg(0xfee0_0000, 0x91));
        mask(&mut m, 0, false);
        m.write_control(ENABLE | FMASK);
        assert!(!m.notify(69));
        assert!(!m.notify(0));
        m.reset();
        assert_eq!(m.control(), fresh.control());
        assert!(!m.enabled() && !m.function_masked());
        let (mut a, mut b) = (vec![0; 70 * 16], vec![0; 70 * 16]);
        m.table_read(0, &mut a);
        fresh.table_read(0, &mut b);
        assert_eq!(a, b);
        let (mut a, mut b) = ([0; 16], [0; 16]);
        m.pba_read(0, &mut a);
        fresh.pba_read(0, &mut b);
        assert_eq!(a, b);
        // Nothing was pending any more, so enabling and unmasking delivers nothing.
        m.write_control(ENABLE);
        mask(&mut m, 0, false);
        mask(&mut m, 69, false);
        assert!(sink.take().is_empty());
    }

    /// A guest that pokes the table, the PBA and message control at random, and a device
    /// that asks for any vector, never panic it; the PBA never shows a vector past the
    /// table, vector control never more than the mask bit, and whenever MSI-X is enabled
    /// and the function unmasked no unmasked vector is left pending.
    #[test]
    fn random_accesses_never_panic() {
        for (k, vectors) in [1u16, 3, 64, 65, 100, 2048].into_iter().enumerate() {
            let mut n = Noise::new(0x6d73_6978_0000_0001 + k as u64);
            let (mut m, sink) = msix(vectors);
            let table_len = m.table_len();
            // What the run reached, so the test cannot pass by never getting anywhere.
            let (mut sent_now, mut sent_later, mut pending_seen) = (0, 0, 0);
            let offset = |n: &mut Noise, len: u64| match n.next() % 8 {
                0 => n.next(),
                1 => len + n.next() % 64,
                _ => n.next() % len,
            };
            for _ in 0..20_000 {
                let width = 1 + (n.next() % 8) as usize;
                match n.next() % 16 {
                    0..=5 => {
                        // Mostly mask bits, where the interesting paths are.
                        let off = if n.next().is_multiple_of(2) {
                            (n.next() % u64::from(vectors)) * 16 + 12
                        } else {
                            offset(&mut n, table_len)
                        };
                        let bytes = n.next().to_le_bytes();
                        m.table_write(off, &bytes[..width]);
                    }
                    6 | 7 => {
                        let mut b = [0; 8];
                        m.table_read(offset(&mut n, table_len), &mut b[..width]);
                    }
                    8 => {
                        let mut b = [0; 8];
                        m.pba_read(offset(&mut n, m.pba_len()), &mut b[..width]);
                    }
                    9 | 10 => m.write_control(n.next() as u16),
                    11 => {
                        let _ = m.is_valid_vector(n.next() as u16);
                    }
                    15 if n.next().is_multiple_of(50) => m.reset(),
                    _ => {
                        let v = if n.next().is_multiple_of(10) {
                            n.next() as u16
                        } else {
                            (n.next() % u64::from(vectors)) as u16
                        };
                        let sent = m.notify(v);
                        assert_eq!(sink.take().len(), usize::from(sent));
                        assert!(!sent || (m.enabled() && !m.function_masked()));
                        sent_now += usize::from(sent);
                    }
                }
                sent_later += sink.take().len();

                let words = m.pba_len() / 8;
                for w in 0..words {
                    let bits = pba(&m, w);
                    pending_seen += usize::from(bits != 0);
                    let first = w * 64;
                    for bit in 0..64 {
                        if bits & 1 << bit == 0 {
                            continue;
                        }
                        let v = first + bit;
                        assert!(
                            v < u64::from(vectors),
                            "PBA bit for vector {v} of {vectors}"
                        );
                        if m.enabled() && !m.function_masked() {
                            assert_eq!(rd32(&m, ctrl(v)), 1, "vector {v} pending but unmasked");
                        }
                    }
                }
                if n.next().is_multiple_of(64) {
                    for v in 0..u64::from(vectors) {
                        assert!(rd32(&m, ctrl(v)) <= 1);
                    }
                }
            }
            assert!(sent_now > 0 && sent_later > 0 && pending_seen > 0);
        }
    }
}
