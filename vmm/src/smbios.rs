//! SMBIOS tables for the firmware, offered through fw_cfg as QEMU's i440FX `pc` machine
//! offers them: `etc/smbios/smbios-tables` holds the structures, each a formatted area
//! followed by its strings and a double NUL, and `etc/smbios/smbios-anchor` an entry
//! point that describes them. The firmware copies the structures to memory it chose and
//! publishes an entry point of its own for them: SeaBIOS (`smbios_romfile_setup`) in the
//! 0xF0000 segment, OVMF (`SmbiosPlatformDxe`) through its SMBIOS protocol, which is the
//! only way a UEFI guest gets any. Without these files SeaBIOS builds a small set of its
//! own and OVMF publishes none.
//!
//! Why the 32-bit "_SM_" (SMBIOS 2.8) entry point: QEMU 7.2, our reference, gives `-M pc`
//! that one (the 64-bit "_SM3_" became the default with its 8.1 machine types), and
//! both firmwares accept it. Its table length is 16 bits, far more than we need.
//!
//! The structures and their contents follow QEMU 7.2's defaults field for field (read from
//! a `-M pc` guest's memory), with our names in the strings: system information (type 1),
//! the chassis (3), one processor per socket (4; we have one socket of N cores with one
//! thread each), the physical memory array (16), one memory device per 16 GiB of RAM (17),
//! the address ranges RAM is mapped at (19: below 4 GiB and, when there is any, above),
//! the boot status (32) and the end marker (127). Handles are QEMU's too: 0x100 times the
//! type, plus the instance. Left out as QEMU leaves it out: BIOS information (type 0),
//! which only the firmware can fill truthfully; SeaBIOS adds its own ("SeaBIOS", its
//! version, "04/01/2014") and OVMF its own ("EFI Development Kit II / OVMF") when the
//! tables have none, and handle 0 stays free for it. No baseboard (type 2): QEMU makes one
//! only when asked.

use sha1::{Digest, Sha1};

use crate::acpi::checksum_of;

/// fw_cfg file names QEMU, SeaBIOS and OVMF agree on.
pub const SMBIOS_TABLES_FILE: &str = "etc/smbios/smbios-tables";
pub const SMBIOS_ANCHOR_FILE: &str = "etc/smbios/smbios-anchor";

/// What the guest reads as the system's maker, product and version (`dmidecode -t 1`, and
/// Linux's "DMI:" line).
pub const MANUFACTURER: &str = "vmdesk";
pub const PRODUCT: &str = "vmdesk-vmm";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// SMBIOS 2.8, the version QEMU 7.2's 2.x entry point announces.
const MAJOR: u8 = 2;
const MINOR: u8 = 8;
const ANCHOR_LEN: usize = 0x1F;
/// The intermediate ("_DMI_") part of the entry point starts here.
const INTERMEDIATE: usize = 0x10;

/// QEMU's memory devices are 16 GiB at most, the last one holding the remainder.
const MAX_DIMM: u64 = 16 << 30;
/// Above these, type 16 and 17 sizes move to their extended (64- and 32-bit) fields.
const MAX_T16_KIB: u64 = 0x8000_0000;
const MAX_T17_MIB: u64 = 0x7FFF;

/// Handles, as QEMU numbers them.
const HANDLE_SYSTEM: u16 = 0x100;
const HANDLE_CHASSIS: u16 = 0x300;
const HANDLE_PROCESSOR: u16 = 0x400;
const HANDLE_MEMORY_ARRAY: u16 = 0x1000;
const HANDLE_MEMORY_DEVICE: u16 = 0x1100;
const HANDLE_MAPPED_RANGE: u16 = 0x1300;
const HANDLE_BOOT: u16 = 0x2000;
const HANDLE_END: u16 = 0x7F00;
/// "No structure" in a handle field (type 16 and 17's error information).
const HANDLE_NONE: u16 = 0xFFFE;
const HANDLE_UNKNOWN: u16 = 0xFFFF;

/// Where the RAM starts above the 32-bit hole.
const FOUR_GIB: u64 = 1 << 32;

/// The namespace of the name-based UUIDs [`name_based_uuid`] makes (picked at random once).
const UUID_NAMESPACE: [u8; 16] = [
    0x4b, 0x49, 0x61, 0x81, 0x4c, 0xfa, 0x48, 0x4c, 0xb5, 0x99, 0x3c, 0xe6, 0x07, 0xbf, 0xe7, 0x54,
];

/// What the machine looks like, as far as SMBIOS tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbiosConfig {
    /// The cores of the machine's one socket, one thread each.
    pub cpus: u32,
    pub ram_size: u64,
    /// RAM mapped from 0 up (the legacy holes included, as QEMU counts it) and from 4 GiB up.
    pub ram_below_4g: u64,
    pub ram_above_4g: u64,
    /// The system's UUID in RFC 4122 byte order; all zero means none is set.
    pub uuid: [u8; 16],
    /// CPUID leaf 1's EAX (the processor's signature) and EDX (its feature flags): the
    /// processor ID of type 4, as QEMU fills it.
    pub cpuid_signature: u32,
    pub cpuid_features: u32,
}

/// The two fw_cfg files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbiosBlobs {
    /// `etc/smbios/smbios-anchor`: a 31-byte "_SM_" entry point, checksums valid, the
    /// table address 0 (the firmware puts the tables somewhere and sets it).
    pub anchor: Vec<u8>,
    /// `etc/smbios/smbios-tables`: the structures, type 127 last.
    pub tables: Vec<u8>,
}

/// One structure: the header's type and handle, the formatted area after the header,
/// and the strings its string fields number from 1.
struct Structure {
    kind: u8,
    handle: u16,
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Structure {
    fn new(kind: u8, handle: u16) -> Structure {
        Structure {
            kind,
            handle,
            formatted: Vec::new(),
            strings: Vec::new(),
        }
    }

    fn byte(mut self, v: u8) -> Structure {
        self.formatted.push(v);
        self
    }

    fn word(mut self, v: u16) -> Structure {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn dword(mut self, v: u32) -> Structure {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn qword(mut self, v: u64) -> Structure {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(mut self, v: &[u8]) -> Structure {
        self.formatted.extend_from_slice(v);
        self
    }

    /// A string field: its number in the string set, or 0 for none (an empty string
    /// cannot be stored: it would end the set).
    fn string(mut self, s: Option<&str>) -> Structure {
        let index = match s {
            Some(s) if !s.is_empty() => {
                self.strings.push(s.replace('\0', ""));
                self.strings.len() as u8
            }
            _ => 0,
        };
        self.byte(index)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.kind, (4 + self.formatted.len()) as u8];
        out.extend_from_slice(&self.handle.to_le_bytes());
        out.extend_from_slice(&self.formatted);
        for s in &self.strings {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        // The set ends with a second NUL; an empty set is two NULs of its own.
        if self.strings.is_empty() {
            out.push(0);
        }
        out.push(0);
        out
    }
}

impl SmbiosConfig {
    /// The files for fw_cfg: add them as [`SMBIOS_ANCHOR_FILE`] and [`SMBIOS_TABLES_FILE`].
    pub fn fw_cfg_blobs(&self) -> SmbiosBlobs {
        let structures: Vec<Vec<u8>> = self.structures().iter().map(Structure::to_bytes).collect();
        let max = structures.iter().map(Vec::len).max().unwrap_or(0);
        let tables = structures.concat();
        SmbiosBlobs {
            anchor: anchor(tables.len(), max, structures.len()),
            tables,
        }
    }

    fn structures(&self) -> Vec<Structure> {
        let dimms = self.dimm_sizes();
        let mut all = vec![self.system(), chassis(), self.processor(0)];
        all.push(self.memory_array(dimms.len() as u16));
        all.extend(
            dimms
                .iter()
                .enumerate()
                .map(|(i, &size)| memory_device(i as u16, size)),
        );
        all.extend(
            self.ram_ranges()
                .iter()
                .enumerate()
                .map(|(i, &(start, len))| mapped_range(i as u16, start, len)),
        );
        all.push(Structure::new(32, HANDLE_BOOT).bytes(&[0; 6]).byte(0));
        all.push(Structure::new(127, HANDLE_END));
        all
    }

    /// Type 1, System Information.
    fn system(&self) -> Structure {
        Structure::new(1, HANDLE_SYSTEM)
            .string(Some(MANUFACTURER))
            .string(Some(PRODUCT))
            .string(Some(VERSION))
            .string(None) // serial number
            .bytes(&smbios_uuid(&self.uuid))
            .byte(0x06) // woken by the power switch
            .string(None) // SKU
            .string(None) // family
    }

    /// Type 4, Processor Information, for socket `socket`: our one socket's cores.
    fn processor(&self, socket: u16) -> Structure {
        let cores = u8::try_from(self.cpus).unwrap_or(u8::MAX);
        Structure::new(4, HANDLE_PROCESSOR + socket)
            .string(Some(&format!("CPU{socket:2x}")))
            .byte(0x03) // central processor
            .byte(0x01) // family: other (the real one is in the processor ID)
            .string(Some(MANUFACTURER))
            .dword(self.cpuid_signature)
            .dword(self.cpuid_features)
            .string(Some(VERSION))
            .byte(0) // voltage
            .word(0) // external clock: unknown
            // Windows' SVVP wants speeds that are not "unknown"; QEMU says 2 GHz.
            .word(2000)
            .word(2000)
            .byte(0x41) // socket populated, CPU enabled
            .byte(0x01) // upgrade: other
            .word(HANDLE_UNKNOWN) // L1, L2, L3 caches: not described
            .word(HANDLE_UNKNOWN)
            .word(HANDLE_UNKNOWN)
            .string(None) // serial number
            .string(None) // asset tag
            .string(None) // part number
            .byte(cores) // cores
            .byte(cores) // cores enabled
            .byte(cores) // threads in the socket: one per core
            .word(0x02) // characteristics: unknown
            .word(0x01) // family 2: other
    }

    /// Type 16, Physical Memory Array: all of the RAM, on `devices` memory devices.
    fn memory_array(&self, devices: u16) -> Structure {
        let kib = self.ram_size.div_ceil(1 << 10);
        let (capacity, extended) = if kib < MAX_T16_KIB {
            (kib as u32, 0)
        } else {
            (MAX_T16_KIB as u32, self.ram_size)
        };
        Structure::new(16, HANDLE_MEMORY_ARRAY)
            .byte(0x01) // location: other
            .byte(0x03) // use: system memory
            // Multi-bit ECC, as QEMU and SeaBIOS say (Windows wants some error correction).
            .byte(0x06)
            .dword(capacity)
            .word(HANDLE_NONE)
            .word(devices)
            .qword(extended)
    }

    /// The sizes of the memory devices: 16 GiB each, the last one the rest.
    fn dimm_sizes(&self) -> Vec<u64> {
        let count = self.ram_size.div_ceil(MAX_DIMM);
        (0..count)
            .map(|i| {
                if i + 1 < count {
                    MAX_DIMM
                } else {
                    (self.ram_size - 1) % MAX_DIMM + 1
                }
            })
            .collect()
    }

    /// Where RAM is mapped: `(start, len)` below and above 4 GiB.
    fn ram_ranges(&self) -> Vec<(u64, u64)> {
        [(0, self.ram_below_4g), (FOUR_GIB, self.ram_above_4g)]
            .into_iter()
            .filter(|&(_, len)| len > 0)
            .collect()
    }
}

/// Type 3, System Enclosure or Chassis.
fn chassis() -> Structure {
    Structure::new(3, HANDLE_CHASSIS)
        .string(Some(MANUFACTURER))
        .byte(0x01) // type: other
        .string(Some(VERSION))
        .string(None) // serial number
        .string(None) // asset tag
        .byte(0x03) // boot-up, power supply and thermal states: safe
        .byte(0x03)
        .byte(0x03)
        .byte(0x02) // security: unknown
        .dword(0) // OEM-defined
        .byte(0) // height
        .byte(0) // power cords
        .byte(0) // contained elements, and their record length
        .byte(0)
        .string(None) // SKU
}

/// Type 17, Memory Device: DIMM `index`, `size` bytes.
fn memory_device(index: u16, size: u64) -> Structure {
    let mib = size.div_ceil(1 << 20);
    let (size, extended) = if mib < MAX_T17_MIB {
        (mib as u16, 0)
    } else {
        (MAX_T17_MIB as u16, mib as u32)
    };
    Structure::new(17, HANDLE_MEMORY_DEVICE + index)
        .word(HANDLE_MEMORY_ARRAY)
        .word(HANDLE_NONE) // error information
        .word(0xFFFF) // total and data width: unknown
        .word(0xFFFF)
        .word(size)
        .byte(0x09) // form factor: DIMM
        .byte(0) // not in a set
        .string(Some(&format!("DIMM {index}")))
        .string(None) // bank
        .byte(0x07) // type: RAM
        .word(0x02) // type detail: other
        .word(0) // speed: unknown
        .string(Some(MANUFACTURER))
        .string(None) // serial number
        .string(None) // asset tag
        .string(None) // part number
        .byte(0) // attributes: unknown
        .dword(extended)
        .word(0) // configured speed: unknown
        .word(0) // minimum, maximum and configured voltage: unknown
        .word(0)
        .word(0)
}

/// Type 19, Memory Array Mapped Address: `len` bytes of RAM at `start`, range `index`.
fn mapped_range(index: u16, start: u64, len: u64) -> Structure {
    let end = start + len - 1;
    let (start_kib, end_kib) = (start >> 10, end >> 10);
    let fits = start_kib < u64::from(u32::MAX) && end_kib < u64::from(u32::MAX);
    let (short, extended) = if fits {
        ((start_kib as u32, end_kib as u32), (0, 0))
    } else {
        ((u32::MAX, u32::MAX), (start, end))
    };
    Structure::new(19, HANDLE_MAPPED_RANGE + index)
        .dword(short.0)
        .dword(short.1)
        .word(HANDLE_MEMORY_ARRAY)
        .byte(1) // partition width: one device per row
        .qword(extended.0)
        .qword(extended.1)
}

/// The 2.1 (32-bit) entry point for `len` bytes of `count` structures, the largest `max`.
fn anchor(len: usize, max: usize, count: usize) -> Vec<u8> {
    let mut a = vec![0u8; ANCHOR_LEN];
    a[0..4].copy_from_slice(b"_SM_");
    a[5] = ANCHOR_LEN as u8;
    a[6] = MAJOR;
    a[7] = MINOR;
    a[8..10].copy_from_slice(&(max as u16).to_le_bytes());
    // 10: entry point revision 0, 11..16: its formatted area, reserved.
    a[16..21].copy_from_slice(b"_DMI_");
    a[22..24].copy_from_slice(&(len as u16).to_le_bytes());
    // 24..28: the table's address, which the firmware fills in.
    a[28..30].copy_from_slice(&(count as u16).to_le_bytes());
    a[30] = MAJOR << 4 | MINOR;
    // The firmware redoes both after setting the address; valid ones keep the file a
    // well-formed entry point on its own.
    a[21] = checksum_of(&a[INTERMEDIATE..]);
    a[4] = checksum_of(&a[..INTERMEDIATE]);
    a
}

/// The byte that makes `data` (whose checksum byte is still 0) sum to zero.
/// `uuid` as SMBIOS 2.6 and later store it: the first three fields little-endian.
fn smbios_uuid(uuid: &[u8; 16]) -> [u8; 16] {
    let mut u = *uuid;
    u[0..4].reverse();
    u[4..6].reverse();
    u[6..8].reverse();
    u
}

/// A version 5 (SHA-1, name-based) UUID for `name` in vmdesk's namespace, RFC 4122 byte
/// order: the same name always gives the same UUID.
pub fn name_based_uuid(name: &[u8]) -> [u8; 16] {
    let mut hash = Sha1::new();
    hash.update(UUID_NAMESPACE);
    hash.update(name);
    let digest = hash.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&digest[..16]);
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// `uuid` in its usual text form, as SeaBIOS's "Machine UUID" line and Linux's
/// `product_uuid` show it.
pub fn uuid_string(uuid: &[u8; 16]) -> String {
    let hex = |r: std::ops::Range<usize>| -> String {
        uuid[r].iter().map(|b| format!("{b:02x}")).collect()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// A structure read back: type, handle, formatted area (header included), strings.
    #[derive(Debug)]
    struct Parsed {
        kind: u8,
        handle: u16,
        formatted: Vec<u8>,
        strings: Vec<String>,
    }

    impl Parsed {
        fn byte(&self, at: usize) -> u8 {
            self.formatted[at]
        }
        fn word(&self, at: usize) -> u16 {
            u16::from_le_bytes(self.formatted[at..at + 2].try_into().unwrap())
        }
        fn dword(&self, at: usize) -> u32 {
            u32::from_le_bytes(self.formatted[at..at + 4].try_into().unwrap())
        }
        fn qword(&self, at: usize) -> u64 {
            u64::from_le_bytes(self.formatted[at..at + 8].try_into().unwrap())
        }
        /// The string a string field at `at` numbers; `None` for 0.
        fn string(&self, at: usize) -> Option<&str> {
            match self.byte(at) {
                0 => None,
                n => Some(&self.strings[n as usize - 1]),
            }
        }
    }

    /// Walks the table as a firmware or dmidecode does: header, formatted area, strings
    /// up to the double NUL. Panics on anything malformed.
    fn parse(tables: &[u8]) -> (Vec<Parsed>, usize) {
        let mut out = Vec::new();
        let mut max = 0;
        let mut at = 0;
        while at < tables.len() {
            let start = at;
            let (kind, len) = (tables[at], tables[at + 1] as usize);
            assert!(len >= 4, "structure at {at} is {len} bytes");
            let handle = u16::from_le_bytes([tables[at + 2], tables[at + 3]]);
            let formatted = tables[at..at + len].to_vec();
            at += len;
            let end = at
                + tables[at..]
                    .windows(2)
                    .position(|w| w == [0, 0])
                    .expect("no double NUL after the structure");
            let strings: Vec<String> = tables[at..end]
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect();
            at = end + 2;
            max = max.max(at - start);
            out.push(Parsed {
                kind,
                handle,
                formatted,
                strings,
            });
        }
        assert_eq!(at, tables.len(), "the last structure runs past the table");
        (out, max)
    }

    fn sum(data: &[u8]) -> u8 {
        data.iter().fold(0u8, |a, &b| a.wrapping_add(b))
    }

    fn config(ram: u64, cpus: u32) -> SmbiosConfig {
        let below = if ram >= 0xE000_0000 { 3 * GIB } else { ram };
        SmbiosConfig {
            cpus,
            ram_size: ram,
            ram_below_4g: below,
            ram_above_4g: ram - below,
            uuid: name_based_uuid(b"disk\0/vm/a.img\0"),
            cpuid_signature: 0x00b0_0f21,
            cpuid_features: 0x078b_fbff,
        }
    }

    /// Everything the brief of an SMBIOS table says must hold, for one configuration.
    fn check(cfg: &SmbiosConfig) -> Vec<Parsed> {
        let blobs = cfg.fw_cfg_blobs();
        let a = &blobs.anchor;
        // The entry point, as SeaBIOS's copy_smbios_21 and OVMF's DetectSmbiosVersion check it.
        assert_eq!(a.len(), 31);
        assert_eq!(&a[0..4], b"_SM_");
        assert_eq!(a[5], 31);
        assert_eq!((a[6], a[7], a[30]), (2, 8, 0x28));
        assert_eq!(&a[16..21], b"_DMI_");
        assert_eq!(sum(&a[..16]), 0, "entry point checksum");
        assert_eq!(sum(&a[16..]), 0, "intermediate checksum");
        assert_eq!(sum(a), 0);
        assert_eq!(u32::from_le_bytes(a[24..28].try_into().unwrap()), 0);
        let table_len = u16::from_le_bytes([a[22], a[23]]) as usize;
        assert_eq!(table_len, blobs.tables.len());

        let (structures, max) = parse(&blobs.tables);
        assert_eq!(
            u16::from_le_bytes([a[28], a[29]]) as usize,
            structures.len()
        );
        assert_eq!(u16::from_le_bytes([a[8], a[9]]) as usize, max);
        let handles: HashSet<u16> = structures.iter().map(|s| s.handle).collect();
        assert_eq!(handles.len(), structures.len(), "handles repeat");
        assert!(!handles.contains(&0), "handle 0 is the firmware's type 0's");
        assert_eq!(structures.last().unwrap().kind, 127);
        assert!(
            structures.iter().all(|s| s.kind != 0),
            "type 0 is the firmware's"
        );
        for s in &structures {
            // Every non-zero byte at a string field's offset must number a string: check
            // them all by count, and that no string is left unreferenced.
            let fields = string_fields(s.kind);
            let mut used: Vec<u8> = fields
                .iter()
                .map(|&f| s.byte(f))
                .filter(|&n| n != 0)
                .collect();
            used.sort();
            let want: Vec<u8> = (1..=s.strings.len() as u8).collect();
            assert_eq!(used, want, "type {} string fields {fields:?}", s.kind);
        }
        structures
    }

    /// Offsets of the string fields of each type we make (SMBIOS 2.8).
    fn string_fields(kind: u8) -> Vec<usize> {
        match kind {
            1 => vec![4, 5, 6, 7, 25, 26],
            3 => vec![4, 6, 7, 8, 21],
            4 => vec![4, 7, 16, 32, 33, 34],
            17 => vec![16, 17, 23, 24, 25, 26],
            _ => vec![],
        }
    }

    fn of_kind(s: &[Parsed], kind: u8) -> Vec<&Parsed> {
        s.iter().filter(|p| p.kind == kind).collect()
    }

    #[test]
    fn tables_are_well_formed_for_many_machines() {
        for ram in [
            2 * MIB,
            512 * MIB,
            3 * GIB + 512 * MIB,
            5 * GIB,
            40 * GIB + 3,
        ] {
            for cpus in [1, 2, 4, 255, 300] {
                let cfg = config(ram, cpus);
                let s = check(&cfg);
                let devices = of_kind(&s, 17);
                let total: u64 = devices.iter().map(|d| u64::from(d.word(12)) << 20).sum();
                assert_eq!(total, ram.div_ceil(MIB) * MIB, "{ram:#x}: DIMM sizes");
                assert_eq!(of_kind(&s, 16)[0].word(13) as usize, devices.len());
                let cores = cpus.min(255) as u8;
                let p = of_kind(&s, 4);
                assert_eq!(p.len(), 1, "one socket");
                assert_eq!(
                    (p[0].byte(35), p[0].byte(36), p[0].byte(37)),
                    (cores, cores, cores)
                );
            }
        }
    }

    /// The type 19 ranges, read back in bytes: RAM below 4 GiB from 0, the rest from 4 GiB.
    #[test]
    fn mapped_ranges_cover_ram_below_and_above_4g() {
        let ranges = |cfg: &SmbiosConfig| -> Vec<(u64, u64)> {
            of_kind(&check(cfg), 19)
                .iter()
                .map(|r| {
                    (
                        u64::from(r.dword(4)) << 10,
                        (u64::from(r.dword(8)) << 10) + 1023,
                    )
                })
                .collect()
        };
        assert_eq!(ranges(&config(512 * MIB, 1)), [(0, 512 * MIB - 1)]);
        assert_eq!(
            ranges(&config(5 * GIB, 2)),
            [(0, 3 * GIB - 1), (4 * GIB, 6 * GIB - 1)]
        );
        // Each points at the memory array.
        let s = check(&config(5 * GIB, 2));
        assert!(
            of_kind(&s, 19)
                .iter()
                .all(|r| r.word(12) == 0x1000 && r.byte(14) == 1)
        );
        assert_eq!(of_kind(&s, 16)[0].dword(7), 5 << 20, "capacity in KiB");
    }

    #[test]
    fn ram_above_16g_is_split_into_16g_devices() {
        let s = check(&config(40 * GIB, 1));
        let sizes: Vec<u16> = of_kind(&s, 17).iter().map(|d| d.word(12)).collect();
        assert_eq!(sizes, [16384, 16384, 8192]);
        let locators: Vec<&str> = of_kind(&s, 17)
            .iter()
            .map(|d| d.string(16).unwrap())
            .collect();
        assert_eq!(locators, ["DIMM 0", "DIMM 1", "DIMM 2"]);
        let handles: Vec<u16> = of_kind(&s, 17).iter().map(|d| d.handle).collect();
        assert_eq!(handles, [0x1100, 0x1101, 0x1102]);
    }

    /// Huge sizes move to the extended fields rather than wrap.
    #[test]
    fn extended_fields_for_sizes_the_short_ones_cannot_hold() {
        let device = memory_device(0, 40 * GIB).to_bytes();
        assert_eq!(u16::from_le_bytes([device[12], device[13]]), 0x7FFF);
        assert_eq!(
            u32::from_le_bytes(device[28..32].try_into().unwrap()),
            40 << 10
        );
        let range = mapped_range(1, 4 * GIB, 8192 * GIB).to_bytes();
        assert_eq!(
            u32::from_le_bytes(range[4..8].try_into().unwrap()),
            u32::MAX
        );
        assert_eq!(
            u64::from_le_bytes(range[15..23].try_into().unwrap()),
            4 * GIB
        );
        assert_eq!(
            u64::from_le_bytes(range[23..31].try_into().unwrap()),
            8196 * GIB - 1
        );
        let cfg = SmbiosConfig {
            ram_size: 3 << 40,
            ..config(512 * MIB, 1)
        };
        let array = cfg.memory_array(1).to_bytes();
        assert_eq!(
            u32::from_le_bytes(array[7..11].try_into().unwrap()),
            0x8000_0000
        );
        assert_eq!(
            u64::from_le_bytes(array[15..23].try_into().unwrap()),
            3 << 40
        );
    }

    /// What QEMU 7.2's `-M pc -m 512 -smp 2` guest has, field for field, but for our
    /// names in the strings (read from its memory after SeaBIOS placed the tables).
    #[test]
    fn contents_follow_qemu() {
        let s = check(&config(512 * MIB, 2));
        let kinds: Vec<(u8, u16, usize)> = s
            .iter()
            .map(|p| (p.kind, p.handle, p.formatted.len()))
            .collect();
        assert_eq!(
            kinds,
            [
                (1, 0x100, 27),
                (3, 0x300, 22),
                (4, 0x400, 42),
                (16, 0x1000, 23),
                (17, 0x1100, 40),
                (19, 0x1300, 31),
                (32, 0x2000, 11),
                (127, 0x7F00, 4),
            ]
        );
        let system = &s[0];
        assert_eq!(system.string(4), Some("vmdesk"));
        assert_eq!(system.string(5), Some("vmdesk-vmm"));
        assert_eq!(system.string(6), Some(VERSION));
        assert_eq!(system.byte(24), 6);
        assert_eq!(
            &system.formatted[8..24],
            &smbios_uuid(&config(512 * MIB, 2).uuid)
        );
        let chassis = &s[1];
        assert_eq!(
            &chassis.formatted[4..],
            [1, 1, 2, 0, 0, 3, 3, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let cpu = &s[2];
        assert_eq!(cpu.string(4), Some("CPU 0"));
        assert_eq!(cpu.string(7), Some("vmdesk"));
        assert_eq!((cpu.dword(8), cpu.dword(12)), (0x00b0_0f21, 0x078b_fbff));
        assert_eq!(
            (cpu.word(20), cpu.word(22), cpu.byte(24)),
            (2000, 2000, 0x41)
        );
        assert_eq!((cpu.word(38), cpu.word(40)), (2, 1));
        assert_eq!(
            &s[3].formatted[4..],
            [
                1, 3, 6, 0, 0, 8, 0, 0xfe, 0xff, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        let dimm = &s[4];
        assert_eq!(
            (dimm.word(4), dimm.word(6), dimm.word(12)),
            (0x1000, 0xFFFE, 512)
        );
        assert_eq!((dimm.byte(14), dimm.byte(18), dimm.word(19)), (9, 7, 2));
        assert_eq!(dimm.string(23), Some("vmdesk"));
        assert_eq!(dimm.qword(28) & 0xFFFF_FFFF, 0);
    }

    #[test]
    fn uuids_are_version_5_stable_and_stored_little_endian() {
        let a = name_based_uuid(b"disk\0/vm/a.img\0");
        assert_eq!(a, name_based_uuid(b"disk\0/vm/a.img\0"));
        assert_ne!(a, name_based_uuid(b"disk\0/vm/b.img\0"));
        assert_eq!(a[6] >> 4, 5, "version");
        assert_eq!(a[8] >> 6, 0b10, "RFC 4122 variant");
        // Python's uuid.uuid5(UUID("4b496181-4cfa-484c-b599-3ce607bfe754"), name) agrees.
        assert_eq!(uuid_string(&a), "fe3076b6-ed23-53b3-96ac-c3c17c9937cf");
        let u = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(uuid_string(&u), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(
            smbios_uuid(&u),
            [
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
    }

    #[test]
    fn strings_never_end_the_set_early() {
        let s = Structure::new(1, 1)
            .string(Some(""))
            .string(Some("a\0b"))
            .to_bytes();
        assert_eq!(s, [1, 6, 1, 0, 0, 1, b'a', b'b', 0, 0]);
        assert_eq!(Structure::new(127, 2).to_bytes(), [127, 4, 2, 0, 0, 0]);
    }
}
