//! The Intel 440FX host bridge (PMC) at 00.0, as QEMU's `pc` machine presents it:
//! 8086:1237 revision 2, class 0600 (host bridge), subsystem 1af4:1100 so SeaBIOS
//! recognises a QEMU northbridge and runs its QEMU paths.
//!
//! Emulated: the PAM registers (0x59..=0x5F) and SMRAM (0x72) are stored and read back,
//! because SeaBIOS programs them while it shadows itself (src/fw/shadow.c) and checks what
//! it wrote. Not emulated: what they control. In our memory model the BIOS area
//! 0xC0000..0xFFFFF is always plain RAM the VMM loads the firmware into, so a PAM change
//! needs no remapping (reads and writes always reach RAM, the state PAM "read/write"
//! describes); there is no SMM, so SMRAM's open/close/lock bits change nothing. Byte 0x57
//! holds the RAM size in 8 MiB units as QEMU puts it there (for coreboot); the other
//! memory-controller registers read as zero.

use super::regs::*;
use super::{PciConfig, PciFunction, PciRegion};

pub const I440FX_DEVICE_ID: u16 = 0x1237;
pub const I440FX_REVISION: u8 = 0x02;
const CLASS_HOST_BRIDGE: u32 = 0x06_00_00;

/// PAM0 (0x59) holds only the high nibble (0xF0000 segment); PAM1..PAM6 hold two segments.
pub const PAM0: u16 = 0x59;
pub const PAM_LAST: u16 = 0x5f;
const PAM0_MASK: u8 = 0x30;
const PAM_MASK: u8 = 0x33;
pub const SMRAM: u16 = 0x72;
const RAM_SIZE_8M: u16 = 0x57;
/// SMRAM at reset: C_BASE_SEG = 010 (the 0xA0000 segment).
const SMRAM_DEFAULT: u8 = 0x02;
/// D_OPEN, D_CLS, D_LCK, G_SMRAME.
const SMRAM_MASK: u8 = 0x78;

pub struct I440fx {
    config: PciConfig,
}

impl I440fx {
    pub fn new() -> I440fx {
        let mut config = PciConfig::new(
            VENDOR_INTEL,
            I440FX_DEVICE_ID,
            CLASS_HOST_BRIDGE,
            I440FX_REVISION,
        );
        config.set_subsystem(SUBSYSTEM_VENDOR_QEMU, SUBSYSTEM_ID_QEMU);
        config.set_wmask_u8(PAM0, PAM0_MASK);
        for off in PAM0 + 1..=PAM_LAST {
            config.set_wmask_u8(off, PAM_MASK);
        }
        config.set_u8(SMRAM, SMRAM_DEFAULT);
        config.set_wmask_u8(SMRAM, SMRAM_MASK);
        I440fx { config }
    }

    /// Records the RAM size where QEMU's i440FX keeps it for coreboot (0x57, in 8 MiB
    /// units, at most 255); SeaBIOS does not read it.
    pub fn set_ram_size(&mut self, ram_size: u64) {
        self.config
            .set_u8(RAM_SIZE_8M, (ram_size / (8 << 20)).min(255) as u8);
    }

    /// The PAM register bytes 0x59..=0x5F as the guest last wrote them.
    pub fn pam(&self) -> [u8; 7] {
        std::array::from_fn(|i| self.config.u8(PAM0 + i as u16))
    }
}

impl Default for I440fx {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for I440fx {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn reset(&mut self) {
        self.config.reset();
    }

    fn regions(&self) -> Vec<PciRegion> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_pam_as_seabios_shadow_sees_them() {
        let mut h = I440fx::new();
        let mut d = [0; 4];
        h.config_read(0, &mut d);
        assert_eq!(d, [0x86, 0x80, 0x37, 0x12]);
        h.config_read(0x08, &mut d);
        assert_eq!(d, [0x02, 0x00, 0x00, 0x06]);
        h.config_read(0x2c, &mut d);
        assert_eq!(d, [0xf4, 0x1a, 0x00, 0x11]);
        // make_bios_writable_intel: 0x30 to PAM0, 0x33 to PAM1..6; then read-only again.
        h.config_write(PAM0, &[0xff]);
        for off in PAM0 + 1..=PAM_LAST {
            h.config_write(off, &[0x33]);
        }
        assert_eq!(h.pam(), [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        h.config_write(PAM0, &[0x10]);
        let mut b = [0];
        h.config_read(PAM0, &mut b);
        assert_eq!(b, [0x10]);
        // Dword write across 0x5c..0x5f.
        h.config_write(0x5c, &[0x11, 0x11, 0x11, 0x11]);
        assert_eq!(&h.pam()[3..], &[0x11; 4]);
        h.config_read(SMRAM, &mut b);
        assert_eq!(b, [0x02]);
        h.set_ram_size(512 << 20);
        h.config_read(0x57, &mut b);
        assert_eq!(b, [0x40]);
        h.set_ram_size(4 << 30);
        h.config_read(0x57, &mut b);
        assert_eq!(b, [0xff]);
        h.config_write(SMRAM, &[0x4a]);
        h.config_read(SMRAM, &mut b);
        assert_eq!(b, [0x4a]);
        assert!(h.regions().is_empty());
    }
}
