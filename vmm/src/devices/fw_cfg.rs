//! QEMU's firmware configuration device (fw_cfg) on x86 port I/O, as QEMU's
//! `docs/specs/fw_cfg.rst` documents it and SeaBIOS (`src/fw/paravirt.c`) drives it.
//!
//! Ports, relative to [`FW_CFG_BASE`] (0x510):
//! - offset 0, selector: a 16-bit little-endian write picks an item and rewinds it.
//! - offset 1, data: each byte read returns the next byte of the item; reads past its end
//!   (or of an unknown item) return 0. Writes are ignored, as in QEMU since 2.4.
//! - offsets 4..12, DMA address: two big-endian 32-bit halves. Writing the low half
//!   (offset 8), or all 64 bits at offset 4, starts a DMA transfer described by the
//!   `FWCfgDmaAccess` structure at that guest address. Reading these offsets returns the
//!   signature "QEMU CFG", which is how a guest may probe for DMA.
//!
//! Emulated: the traditional interface, DMA reads, skips and selects, the file directory,
//! any items and files the machine adds. Not emulated: guest writes to items (no item of
//! ours is writable; a DMA write sets the error bit, and data-port writes are ignored) and
//! the MMIO variant used on other architectures. DMA is performed synchronously inside
//! the triggering port write, so the guest always finds the control field already done.
//!
//! Everything the guest hands us (selectors, DMA addresses, lengths) is untrusted: an
//! out-of-range transfer sets the error bit, an unreadable descriptor is ignored.

use std::collections::BTreeMap;

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::bus::BusDevice;
use crate::memory::{E820Entry, GuestMem};

pub const FW_CFG_BASE: u64 = 0x510;
pub const FW_CFG_LEN: u64 = 0x0c;
/// Port offsets inside the device.
pub const FW_CFG_SELECTOR_OFFSET: u64 = 0;
pub const FW_CFG_DATA_OFFSET: u64 = 1;
pub const FW_CFG_DMA_OFFSET: u64 = 4;

// Item keys (QEMU's include/standard-headers/linux/qemu_fw_cfg.h numbering).
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
pub const FW_CFG_ID: u16 = 0x0001;
pub const FW_CFG_UUID: u16 = 0x0002;
pub const FW_CFG_RAM_SIZE: u16 = 0x0003;
pub const FW_CFG_NOGRAPHIC: u16 = 0x0004;
pub const FW_CFG_NB_CPUS: u16 = 0x0005;
pub const FW_CFG_MACHINE_ID: u16 = 0x0006;
pub const FW_CFG_KERNEL_ADDR: u16 = 0x0007;
pub const FW_CFG_KERNEL_SIZE: u16 = 0x0008;
pub const FW_CFG_KERNEL_CMDLINE: u16 = 0x0009;
pub const FW_CFG_INITRD_ADDR: u16 = 0x000a;
pub const FW_CFG_INITRD_SIZE: u16 = 0x000b;
pub const FW_CFG_BOOT_DEVICE: u16 = 0x000c;
pub const FW_CFG_NUMA: u16 = 0x000d;
pub const FW_CFG_BOOT_MENU: u16 = 0x000e;
pub const FW_CFG_MAX_CPUS: u16 = 0x000f;
pub const FW_CFG_FILE_DIR: u16 = 0x0019;
/// The first key handed to files added with [`FwCfg::add_file`].
pub const FW_CFG_FILE_FIRST: u16 = 0x0020;
/// Items 0x8000 and up are architecture-specific (x86: ACPI tables, SMBIOS, e820 …).
pub const FW_CFG_ARCH_LOCAL: u16 = 0x8000;
/// Bit 14 of a selector asked for write access in old QEMU; it never changes which item
/// is selected, so it is masked off.
const FW_CFG_WRITE_CHANNEL: u16 = 0x4000;

/// `FW_CFG_ID` feature bits.
pub const FW_CFG_VERSION_TRADITIONAL: u32 = 1 << 0;
pub const FW_CFG_VERSION_DMA: u32 = 1 << 1;

/// `FWCfgDmaAccess.control` bits.
pub const FW_CFG_DMA_CTL_ERROR: u32 = 0x01;
pub const FW_CFG_DMA_CTL_READ: u32 = 0x02;
pub const FW_CFG_DMA_CTL_SKIP: u32 = 0x04;
pub const FW_CFG_DMA_CTL_SELECT: u32 = 0x08;
pub const FW_CFG_DMA_CTL_WRITE: u32 = 0x10;

/// What a read of the DMA address register returns, byte for byte.
pub const FW_CFG_DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// Longest file name, without the NUL the 56-byte directory field needs.
pub const FW_CFG_MAX_FILE_NAME: usize = 55;
const FILE_NAME_FIELD: usize = 56;
/// Keys available to files: 0x20 up to (not including) the arch-local range, less the
/// write-channel bit, is far more than any machine of ours needs.
const FW_CFG_FILE_LAST: u16 = FW_CFG_WRITE_CHANNEL - 1;

/// Zero-filling a DMA read past an item's end is done in pieces this size so a guest that
/// asks for 4 GiB cannot make us allocate 4 GiB.
const ZERO_CHUNK: usize = 4096;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FwCfgError {
    #[error("fw_cfg file name {0:?} is empty or longer than 55 bytes")]
    BadName(String),
    #[error("fw_cfg file {0:?} already exists")]
    Duplicate(String),
    #[error("fw_cfg has no free file keys")]
    Full,
}

struct FwFile {
    name: String,
    key: u16,
}

/// The fw_cfg device: items by key, plus the file directory built from the named ones.
pub struct FwCfg {
    mem: GuestMem,
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<FwFile>,
    selected: u16,
    offset: usize,
    dma_addr: u64,
}

impl FwCfg {
    /// A device with the standard items: signature, id (traditional + DMA), a zero UUID,
    /// one CPU, no boot menu, and an empty file directory. The machine sets the rest.
    pub fn new(mem: GuestMem) -> Self {
        let mut fw = FwCfg {
            mem,
            items: BTreeMap::new(),
            files: Vec::new(),
            selected: FW_CFG_SIGNATURE,
            offset: 0,
            dma_addr: 0,
        };
        fw.add_item(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        fw.add_item(
            FW_CFG_ID,
            (FW_CFG_VERSION_TRADITIONAL | FW_CFG_VERSION_DMA)
                .to_le_bytes()
                .to_vec(),
        );
        fw.add_item(FW_CFG_UUID, vec![0; 16]);
        fw.add_item(FW_CFG_NOGRAPHIC, 0u16.to_le_bytes().to_vec());
        fw.add_item(FW_CFG_NB_CPUS, 1u16.to_le_bytes().to_vec());
        fw.add_item(FW_CFG_MAX_CPUS, 1u16.to_le_bytes().to_vec());
        fw.add_item(FW_CFG_BOOT_MENU, 0u16.to_le_bytes().to_vec());
        fw.rebuild_directory();
        fw
    }

    /// Sets (or replaces) the item at `key`. Numeric items are little-endian, as QEMU
    /// stores them. The file directory key is managed by [`FwCfg::add_file`].
    pub fn add_item(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key & !FW_CFG_WRITE_CHANNEL, data);
    }

    /// Convenience setters for the standard numeric items.
    pub fn set_ram_size(&mut self, bytes: u64) {
        self.add_item(FW_CFG_RAM_SIZE, bytes.to_le_bytes().to_vec());
    }
    pub fn set_cpus(&mut self, cpus: u16, max_cpus: u16) {
        self.add_item(FW_CFG_NB_CPUS, cpus.to_le_bytes().to_vec());
        self.add_item(FW_CFG_MAX_CPUS, max_cpus.max(cpus).to_le_bytes().to_vec());
    }
    pub fn set_boot_menu(&mut self, enabled: bool) {
        self.add_item(FW_CFG_BOOT_MENU, u16::from(enabled).to_le_bytes().to_vec());
    }
    pub fn set_nographic(&mut self, nographic: bool) {
        self.add_item(
            FW_CFG_NOGRAPHIC,
            u16::from(nographic).to_le_bytes().to_vec(),
        );
    }

    /// Adds a named file and returns its key. Keys are handed out in the order files are
    /// added (from 0x20); the directory lists them sorted by name, as QEMU does.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        if name.is_empty() || name.len() > FW_CFG_MAX_FILE_NAME || name.contains('\0') {
            return Err(FwCfgError::BadName(name.to_string()));
        }
        if self.files.iter().any(|f| f.name == name) {
            return Err(FwCfgError::Duplicate(name.to_string()));
        }
        let key = FW_CFG_FILE_FIRST
            .checked_add(self.files.len() as u16)
            .filter(|&k| k <= FW_CFG_FILE_LAST)
            .ok_or(FwCfgError::Full)?;
        self.items.insert(key, data);
        self.files.push(FwFile {
            name: name.to_string(),
            key,
        });
        self.rebuild_directory();
        Ok(key)
    }

    /// The key of a file added earlier.
    pub fn file_key(&self, name: &str) -> Option<u16> {
        self.files.iter().find(|f| f.name == name).map(|f| f.key)
    }

    /// The current contents of an item (for tests and the machine's own checks).
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.items.get(&key).map(Vec::as_slice)
    }

    fn rebuild_directory(&mut self) {
        let mut sorted: Vec<&FwFile> = self.files.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut dir = Vec::with_capacity(4 + sorted.len() * 64);
        dir.extend_from_slice(&(sorted.len() as u32).to_be_bytes());
        for f in sorted {
            let size = self.items.get(&f.key).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&f.key.to_be_bytes());
            dir.extend_from_slice(&0u16.to_be_bytes());
            let mut name = [0u8; FILE_NAME_FIELD];
            name[..f.name.len()].copy_from_slice(f.name.as_bytes());
            dir.extend_from_slice(&name);
        }
        self.items.insert(FW_CFG_FILE_DIR, dir);
    }

    fn select(&mut self, key: u16) {
        self.selected = key & !FW_CFG_WRITE_CHANNEL;
        self.offset = 0;
    }

    fn current(&self) -> &[u8] {
        self.items.get(&self.selected).map_or(&[], Vec::as_slice)
    }

    fn read_data_byte(&mut self) -> u8 {
        let b = self.current().get(self.offset).copied().unwrap_or(0);
        if self.offset < self.current().len() {
            self.offset += 1;
        }
        b
    }

    /// Runs the DMA request whose descriptor is at `desc_addr`.
    fn dma(&mut self, desc_addr: u64) {
        let mut desc = [0u8; 16];
        let desc_at = GuestAddress(desc_addr);
        if self.mem.read_slice(&mut desc, desc_at).is_err() {
            // Nowhere to report an error: QEMU drops such a request too.
            tracing::debug!("fw_cfg: DMA descriptor at {desc_addr:#x} is outside RAM");
            return;
        }
        let control = u32::from_be_bytes(desc[0..4].try_into().unwrap());
        let length = u32::from_be_bytes(desc[4..8].try_into().unwrap());
        let address = u64::from_be_bytes(desc[8..16].try_into().unwrap());

        if control & FW_CFG_DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & FW_CFG_DMA_CTL_READ != 0 {
            self.dma_read(address, length)
        } else if control & FW_CFG_DMA_CTL_WRITE != 0 {
            // None of our items is writable.
            tracing::debug!("fw_cfg: DMA write to item {:#x} refused", self.selected);
            false
        } else if control & FW_CFG_DMA_CTL_SKIP != 0 {
            self.offset = self.offset.saturating_add(length as usize);
            true
        } else {
            true
        };
        let done = if ok { 0 } else { FW_CFG_DMA_CTL_ERROR };
        if self.mem.write_slice(&done.to_be_bytes(), desc_at).is_err() {
            tracing::debug!("fw_cfg: cannot complete DMA descriptor at {desc_addr:#x}");
        }
    }

    /// Copies `length` bytes of the selected item (zeros past its end) to guest `address`.
    fn dma_read(&mut self, address: u64, length: u32) -> bool {
        let len = length as usize;
        let in_range = address.checked_add(length as u64).is_some_and(|_| {
            GuestMemoryBackend::check_range(&self.mem, GuestAddress(address), len)
        });
        if !in_range {
            tracing::debug!("fw_cfg: DMA read of {len:#x} bytes to {address:#x} is outside RAM");
            return false;
        }
        let data = self.current();
        let start = self.offset.min(data.len());
        let avail = (data.len() - start).min(len);
        let mut ok = self
            .mem
            .write_slice(&data[start..start + avail], GuestAddress(address))
            .is_ok();
        let zeros = [0u8; ZERO_CHUNK];
        let mut done = avail;
        while ok && done < len {
            let n = (len - done).min(ZERO_CHUNK);
            ok = self
                .mem
                .write_slice(&zeros[..n], GuestAddress(address + done as u64))
                .is_ok();
            done += n;
        }
        self.offset = self.offset.saturating_add(len);
        ok
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            FW_CFG_DATA_OFFSET => {
                // The data port is one byte wide; a wider read gets successive bytes.
                for b in data.iter_mut() {
                    *b = self.read_data_byte();
                }
            }
            o if (FW_CFG_DMA_OFFSET..FW_CFG_LEN).contains(&o) => {
                for (i, b) in data.iter_mut().enumerate() {
                    let at = (o - FW_CFG_DMA_OFFSET) as usize + i;
                    *b = FW_CFG_DMA_SIGNATURE.get(at).copied().unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (FW_CFG_SELECTOR_OFFSET, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (FW_CFG_DMA_OFFSET, 4) => {
                let high = u32::from_be_bytes(data.try_into().unwrap());
                self.dma_addr = u64::from(high) << 32;
            }
            (8, 4) => {
                let low = u32::from_be_bytes(data.try_into().unwrap());
                let addr = self.dma_addr | u64::from(low);
                // The register is consumed by each transfer, as in QEMU: a guest that
                // only writes the low half next time gets a 32-bit address.
                self.dma_addr = 0;
                self.dma(addr);
            }
            (FW_CFG_DMA_OFFSET, 8) => {
                let addr = u64::from_be_bytes(data.try_into().unwrap());
                self.dma_addr = 0;
                self.dma(addr);
            }
            _ => tracing::trace!("fw_cfg: ignored write of {data:?} at offset {offset}"),
        }
    }
}

/// The `etc/e820` file: one 20-byte record per entry (u64 address, u64 length, u32
/// type, little-endian), which SeaBIOS takes as the RAM map.
pub fn e820_bytes(entries: &[E820Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 20);
    for e in entries {
        out.extend_from_slice(&e.addr.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&(e.kind as u32).to_le_bytes());
    }
    out
}

/// The `bootorder` file: OpenFirmware device paths separated by newlines and ended by a
/// NUL, as QEMU builds it and SeaBIOS's `loadBootOrder` splits it.
pub fn bootorder_bytes(paths: &[&str]) -> Vec<u8> {
    let mut out = paths.join("\n").into_bytes();
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, shared};
    use crate::memory::E820Kind;

    fn mem() -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn machine() -> (Bus, GuestMem, std::sync::Arc<std::sync::Mutex<FwCfg>>) {
        let m = mem();
        let dev = shared(FwCfg::new(m.clone()));
        let bus = Bus::new();
        bus.insert(FW_CFG_BASE, FW_CFG_LEN, dev.clone()).unwrap();
        (bus, m, dev)
    }

    const PORT_SEL: u64 = FW_CFG_BASE;
    const PORT_DATA: u64 = FW_CFG_BASE + 1;
    const PORT_DMA_HI: u64 = FW_CFG_BASE + 4;
    const PORT_DMA_LO: u64 = FW_CFG_BASE + 8;

    /// SeaBIOS's `qemu_cfg_read_entry` without DMA: `outw(key, 0x510)` then `insb(0x511)`.
    fn pio_read(bus: &Bus, key: u16, len: usize) -> Vec<u8> {
        assert!(bus.write(PORT_SEL, &key.to_le_bytes()));
        (0..len)
            .map(|_| {
                let mut b = [0u8];
                assert!(bus.read(PORT_DATA, &mut b));
                b[0]
            })
            .collect()
    }

    /// SeaBIOS's `qemu_cfg_dma_transfer`: descriptor in memory, high then low half of its
    /// address (big-endian) to the DMA port; returns the control word written back.
    fn dma(bus: &Bus, m: &GuestMem, desc_at: u64, control: u32, len: u32, addr: u64) -> u32 {
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&addr.to_be_bytes());
        m.write_slice(&d, GuestAddress(desc_at)).unwrap();
        assert!(bus.write(PORT_DMA_HI, &((desc_at >> 32) as u32).to_be_bytes()));
        assert!(bus.write(PORT_DMA_LO, &(desc_at as u32).to_be_bytes()));
        let mut c = [0u8; 4];
        m.read_slice(&mut c, GuestAddress(desc_at)).unwrap();
        u32::from_be_bytes(c)
    }

    #[test]
    fn signature_and_id_like_qemu_cfg_detect() {
        let (bus, _, _) = machine();
        assert_eq!(pio_read(&bus, FW_CFG_SIGNATURE, 4), b"QEMU");
        let id = pio_read(&bus, FW_CFG_ID, 4);
        let id = u32::from_le_bytes(id.try_into().unwrap());
        assert_eq!(id, FW_CFG_VERSION_TRADITIONAL | FW_CFG_VERSION_DMA);
        // Reading past the end gives zeros; re-selecting rewinds.
        assert_eq!(pio_read(&bus, FW_CFG_SIGNATURE, 6), b"QEMU\0\0");
        // An unknown key reads as zeros.
        assert_eq!(pio_read(&bus, 0x1234, 3), [0, 0, 0]);
        // The DMA register reads back "QEMU CFG", bytewise and as one 64-bit read.
        let mut sig = [0u8; 8];
        assert!(bus.read(PORT_DMA_HI, &mut sig));
        assert_eq!(&sig, b"QEMU CFG");
        let mut lo = [0u8; 4];
        bus.read(PORT_DMA_LO, &mut lo);
        assert_eq!(&lo, b" CFG");
        // Data-port writes do nothing.
        bus.write(PORT_SEL, &FW_CFG_SIGNATURE.to_le_bytes());
        bus.write(PORT_DATA, &[0x55]);
        assert_eq!(pio_read(&bus, FW_CFG_SIGNATURE, 4), b"QEMU");
    }

    #[test]
    fn numeric_items_are_little_endian() {
        let (bus, _, dev) = machine();
        {
            let mut d = dev.lock().unwrap();
            d.set_ram_size(512 << 20);
            d.set_cpus(2, 4);
            d.set_boot_menu(true);
        }
        let ram = pio_read(&bus, FW_CFG_RAM_SIZE, 8);
        assert_eq!(u64::from_le_bytes(ram.try_into().unwrap()), 512 << 20);
        assert_eq!(pio_read(&bus, FW_CFG_NB_CPUS, 2), [2, 0]);
        assert_eq!(pio_read(&bus, FW_CFG_MAX_CPUS, 2), [4, 0]);
        assert_eq!(pio_read(&bus, FW_CFG_BOOT_MENU, 2), [1, 0]);
        assert_eq!(pio_read(&bus, FW_CFG_UUID, 16), [0; 16]);
    }

    /// Walks the directory as SeaBIOS's `qemu_romfile_init` does: count, then entries.
    fn read_dir(bus: &Bus) -> Vec<(String, u32, u16)> {
        let count = u32::from_be_bytes(pio_read(bus, FW_CFG_FILE_DIR, 4).try_into().unwrap());
        // Continue reading the same item (no re-select).
        let mut out = Vec::new();
        for _ in 0..count {
            let e: Vec<u8> = (0..64)
                .map(|_| {
                    let mut b = [0u8];
                    bus.read(PORT_DATA, &mut b);
                    b[0]
                })
                .collect();
            let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
            let key = u16::from_be_bytes(e[4..6].try_into().unwrap());
            let end = e[8..].iter().position(|&c| c == 0).unwrap();
            out.push((
                String::from_utf8(e[8..8 + end].to_vec()).unwrap(),
                size,
                key,
            ));
        }
        out
    }

    #[test]
    fn file_directory_is_sorted_and_files_read_back() {
        let (bus, _, dev) = machine();
        {
            let mut d = dev.lock().unwrap();
            assert_eq!(d.add_file("etc/e820", vec![1; 40]), Ok(0x20));
            assert_eq!(d.add_file("bootorder", b"/pci\n\0".to_vec()), Ok(0x21));
            assert_eq!(d.add_file("etc/acpi/rsdp", vec![7; 36]), Ok(0x22));
            assert_eq!(
                d.add_file("bootorder", vec![]),
                Err(FwCfgError::Duplicate("bootorder".into()))
            );
            let long = "x".repeat(56);
            assert!(matches!(
                d.add_file(&long, vec![]),
                Err(FwCfgError::BadName(_))
            ));
            assert!(d.add_file(&"y".repeat(55), vec![9]).is_ok());
            assert!(matches!(
                d.add_file("", vec![]),
                Err(FwCfgError::BadName(_))
            ));
        }
        let dir = read_dir(&bus);
        let names: Vec<&str> = dir.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["bootorder", "etc/acpi/rsdp", "etc/e820", &"y".repeat(55)]
        );
        assert_eq!(dir[0], ("bootorder".to_string(), 6, 0x21));
        assert_eq!(dir[2].1, 40);
        // The romfile loader then reads a file by the key the directory gave.
        let key = dir.iter().find(|e| e.0 == "etc/acpi/rsdp").unwrap().2;
        assert_eq!(pio_read(&bus, key, 36), vec![7; 36]);
    }

    #[test]
    fn dma_read_of_a_file_into_guest_memory() {
        let (bus, m, dev) = machine();
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let key = dev
            .lock()
            .unwrap()
            .add_file("etc/table-loader", data.clone())
            .unwrap();
        let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ | (u32::from(key) << 16);
        assert_eq!(dma(&bus, &m, 0x1000, ctl, 5000, 0x8000), 0);
        let mut got = vec![0u8; 5000];
        m.read_slice(&mut got, GuestAddress(0x8000)).unwrap();
        assert_eq!(got, data);

        // Past the end: zeros fill the rest and the transfer still succeeds.
        m.write_slice(&[0xaa; 16], GuestAddress(0x9000)).unwrap();
        let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ | (u32::from(FW_CFG_SIGNATURE) << 16);
        assert_eq!(dma(&bus, &m, 0x1000, ctl, 16, 0x9000), 0);
        let mut got = [0u8; 16];
        m.read_slice(&mut got, GuestAddress(0x9000)).unwrap();
        assert_eq!(&got[..4], b"QEMU");
        assert_eq!(&got[4..], &[0; 12]);
    }

    #[test]
    fn dma_skip_select_and_continue() {
        let (bus, m, dev) = machine();
        let data: Vec<u8> = (0..100u8).collect();
        let key = dev.lock().unwrap().add_file("f", data).unwrap();
        // Select + skip 10, then a plain read continues at offset 10.
        let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP | (u32::from(key) << 16);
        assert_eq!(dma(&bus, &m, 0x2000, ctl, 10, 0), 0);
        assert_eq!(dma(&bus, &m, 0x2000, FW_CFG_DMA_CTL_READ, 5, 0x3000), 0);
        let mut got = [0u8; 5];
        m.read_slice(&mut got, GuestAddress(0x3000)).unwrap();
        assert_eq!(got, [10, 11, 12, 13, 14]);
        // The port interface shares the same position.
        let mut b = [0u8];
        bus.read(PORT_DATA, &mut b);
        assert_eq!(b[0], 15);
        // Select alone rewinds.
        let ctl = FW_CFG_DMA_CTL_SELECT | (u32::from(key) << 16);
        assert_eq!(dma(&bus, &m, 0x2000, ctl, 0, 0), 0);
        bus.read(PORT_DATA, &mut b);
        assert_eq!(b[0], 0);
        // A write is refused with the error bit.
        let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_WRITE | (u32::from(key) << 16);
        assert_eq!(dma(&bus, &m, 0x2000, ctl, 4, 0x3000), FW_CFG_DMA_CTL_ERROR);
    }

    #[test]
    fn dma_outside_ram_sets_error_bit() {
        let (bus, m, _) = machine();
        let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        // Straddles the end of RAM.
        assert_eq!(
            dma(&bus, &m, 0x1000, ctl, 0x100, 0xF_FF80),
            FW_CFG_DMA_CTL_ERROR
        );
        // Far away, and a length that would wrap the address space.
        assert_eq!(dma(&bus, &m, 0x1000, ctl, 4, 1 << 40), FW_CFG_DMA_CTL_ERROR);
        assert_eq!(
            dma(&bus, &m, 0x1000, ctl, u32::MAX, u64::MAX - 8),
            FW_CFG_DMA_CTL_ERROR
        );
        // A huge in-range-start read fails without allocating it.
        assert_eq!(
            dma(&bus, &m, 0x1000, ctl, u32::MAX, 0),
            FW_CFG_DMA_CTL_ERROR
        );
    }

    #[test]
    fn dma_descriptor_outside_ram_is_ignored() {
        let (bus, _, _) = machine();
        // High half set, then low half: descriptor at 1 TiB + 0x10, nothing to read.
        assert!(bus.write(PORT_DMA_HI, &0x100u32.to_be_bytes()));
        assert!(bus.write(PORT_DMA_LO, &0x10u32.to_be_bytes()));
        // 64-bit trigger form, at the very end of the address space.
        assert!(bus.write(PORT_DMA_HI, &u64::MAX.to_be_bytes()));
        // Still works afterwards.
        assert_eq!(pio_read(&bus, FW_CFG_SIGNATURE, 4), b"QEMU");
    }

    #[test]
    fn dma_address_high_half_is_consumed() {
        let (bus, m, _) = machine();
        let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        let mut d = Vec::new();
        d.extend_from_slice(&ctl.to_be_bytes());
        d.extend_from_slice(&4u32.to_be_bytes());
        d.extend_from_slice(&0x4000u64.to_be_bytes());
        m.write_slice(&d, GuestAddress(0x1000)).unwrap();
        // High half 1: the descriptor would be at 4 GiB + 0x1000, outside RAM: ignored.
        bus.write(PORT_DMA_HI, &1u32.to_be_bytes());
        bus.write(PORT_DMA_LO, &0x1000u32.to_be_bytes());
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            ctl.to_be()
        );
        // A low-half write alone now means 0x1000: the stale high half was consumed.
        bus.write(PORT_DMA_LO, &0x1000u32.to_be_bytes());
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0);
        let mut got = [0u8; 4];
        m.read_slice(&mut got, GuestAddress(0x4000)).unwrap();
        assert_eq!(&got, b"QEMU");
    }

    /// Whatever a guest writes, wherever, the device neither panics nor writes outside RAM.
    #[test]
    fn random_guest_accesses_never_panic() {
        let m = mem();
        let mut fw = FwCfg::new(m.clone());
        fw.add_file("f", vec![1; 300]).unwrap();
        let mut noise = crate::noise::Noise::new(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let r = noise.next();
            let offset = r % 16;
            let size = [1usize, 2, 4, 8][(r >> 8) as usize % 4];
            let bytes = noise.next().to_le_bytes();
            if r & (1 << 20) != 0 {
                // Plant a random descriptor where the low-half write will point.
                let at = (noise.next() % 0x10_0000) & !0xf;
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&noise.next().to_be_bytes());
                d[8..].copy_from_slice(&noise.next().to_be_bytes());
                m.write_slice(&d, GuestAddress(at)).unwrap();
                fw.write(8, &(at as u32).to_be_bytes());
            } else if r & (1 << 21) != 0 {
                let mut buf = vec![0u8; size];
                fw.read(offset, &mut buf);
            } else {
                fw.write(offset, &bytes[..size]);
            }
        }
    }

    #[test]
    fn e820_and_bootorder_formats() {
        let e = e820_bytes(&[
            E820Entry {
                addr: 0,
                len: 0x9fc00,
                kind: E820Kind::Ram,
            },
            E820Entry {
                addr: 0xfeffc000,
                len: 0x4000,
                kind: E820Kind::Reserved,
            },
        ]);
        assert_eq!(e.len(), 40);
        assert_eq!(u64::from_le_bytes(e[8..16].try_into().unwrap()), 0x9fc00);
        assert_eq!(u32::from_le_bytes(e[16..20].try_into().unwrap()), 1);
        assert_eq!(
            u64::from_le_bytes(e[20..28].try_into().unwrap()),
            0xfeffc000
        );
        assert_eq!(u32::from_le_bytes(e[36..40].try_into().unwrap()), 2);
        assert_eq!(
            bootorder_bytes(&["/pci@i0cf8/ide@1,1/drive@1/disk@0", "HALT"]),
            b"/pci@i0cf8/ide@1,1/drive@1/disk@0\nHALT\0"
        );
    }
}
