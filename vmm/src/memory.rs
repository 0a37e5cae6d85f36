//! Guest-physical memory layout of the PC we model, the same as QEMU's `pc` machine so
//! SeaBIOS and Linux find what they expect: RAM from 0 to 640 KiB, the VGA window at
//! 0xA0000, RAM again from 0xC0000 (the BIOS shadow area is RAM) up to the 32-bit PCI
//! hole, the firmware ROM just below 4 GiB, and any RAM that did not fit above 4 GiB.

use vm_memory::{GuestAddress, GuestMemoryMmap};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Guest memory as the VMM and DMA-capable devices see it.
pub type GuestMem = GuestMemoryMmap<()>;

/// The legacy VGA window: not RAM, the graphics device answers here.
pub const VGA_WINDOW_START: u64 = 0xA_0000;
pub const VGA_WINDOW_END: u64 = 0xC_0000;
/// Start of 32-bit MMIO (PCI BARs, IOAPIC, LAPIC, firmware) when RAM is large.
/// QEMU's `pc` ends low RAM at 3 GiB once RAM reaches 3.5 GiB (gigabyte alignment).
pub const LARGE_RAM_LOW_END: u64 = 0xC000_0000;
pub const LARGE_RAM_THRESHOLD: u64 = 0xE000_0000;
pub const FOUR_GIB: u64 = 4 * GIB;
/// KVM needs three pages for the TSS (Intel) and one for the identity map, inside the
/// 32-bit hole; QEMU uses the same place and reserves it in the e820 map.
pub const KVM_IDENTITY_MAP: u64 = 0xFEFF_C000;
pub const KVM_TSS: u64 = KVM_IDENTITY_MAP + 0x1000;
pub const KVM_RESERVED_LEN: u64 = 0x4000;

/// e820 entry types (ACPI spec, "Address Range Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub len: u64,
    pub kind: E820Kind,
}

/// Where the guest's RAM goes, for a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    pub ram_size: u64,
    /// RAM below 4 GiB (including the hole-punched VGA window).
    pub below_4g: u64,
    /// RAM from 4 GiB up.
    pub above_4g: u64,
}

impl MemoryLayout {
    pub fn new(ram_size: u64) -> Self {
        let below_4g = if ram_size >= LARGE_RAM_THRESHOLD {
            LARGE_RAM_LOW_END
        } else {
            ram_size
        };
        MemoryLayout {
            ram_size,
            below_4g,
            above_4g: ram_size - below_4g,
        }
    }

    /// Guest-physical RAM ranges `(start, len)`, the VGA window left out.
    pub fn ram_ranges(&self) -> Vec<(u64, u64)> {
        let mut r = vec![(0, self.below_4g.min(VGA_WINDOW_START))];
        if self.below_4g > VGA_WINDOW_END {
            r.push((VGA_WINDOW_END, self.below_4g - VGA_WINDOW_END));
        }
        if self.above_4g > 0 {
            r.push((FOUR_GIB, self.above_4g));
        }
        r
    }

    /// The e820 map handed to firmware through fw_cfg `etc/e820`, as QEMU builds it:
    /// RAM and the KVM pages. The firmware adds its own reservations (EBDA, BIOS).
    pub fn firmware_e820(&self) -> Vec<E820Entry> {
        let mut e = vec![E820Entry {
            addr: 0,
            len: self.below_4g,
            kind: E820Kind::Ram,
        }];
        if self.above_4g > 0 {
            e.push(E820Entry {
                addr: FOUR_GIB,
                len: self.above_4g,
                kind: E820Kind::Ram,
            });
        }
        e.push(E820Entry {
            addr: KVM_IDENTITY_MAP,
            len: KVM_RESERVED_LEN,
            kind: E820Kind::Reserved,
        });
        e
    }

    /// Allocates anonymous host memory for the RAM ranges.
    pub fn allocate(&self) -> Result<GuestMem, vm_memory::mmap::FromRangesError> {
        let ranges: Vec<_> = self
            .ram_ranges()
            .into_iter()
            .map(|(start, len)| (GuestAddress(start), len as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_all_below_4g_minus_vga() {
        let l = MemoryLayout::new(512 * MIB);
        assert_eq!(l.below_4g, 512 * MIB);
        assert_eq!(l.above_4g, 0);
        assert_eq!(
            l.ram_ranges(),
            vec![(0, 0xA_0000), (0xC_0000, 512 * MIB - 0xC_0000)]
        );
    }

    #[test]
    fn large_guest_splits_at_3g_like_qemu_pc() {
        let l = MemoryLayout::new(4 * GIB);
        assert_eq!(l.below_4g, 3 * GIB);
        assert_eq!(l.above_4g, GIB);
        assert_eq!(l.ram_ranges().last(), Some(&(FOUR_GIB, GIB)));
        // Just under the threshold stays below 4 GiB.
        let l = MemoryLayout::new(LARGE_RAM_THRESHOLD - MIB);
        assert_eq!(l.above_4g, 0);
    }

    #[test]
    fn e820_covers_ram_and_kvm_pages() {
        let e = MemoryLayout::new(4 * GIB).firmware_e820();
        assert_eq!(
            e[0],
            E820Entry {
                addr: 0,
                len: 3 * GIB,
                kind: E820Kind::Ram
            }
        );
        assert_eq!(
            e[1],
            E820Entry {
                addr: FOUR_GIB,
                len: GIB,
                kind: E820Kind::Ram
            }
        );
        assert_eq!(e[2].kind, E820Kind::Reserved);
    }
}
