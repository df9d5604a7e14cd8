//! The I/O permission map (IOPM): which ports a guest reaches without an exit.
//!
//! AMD APM vol. 2, 15.10.1 "I/O Permissions Map": 12 KiB of physical memory, one bit per
//! port (bit `port % 8` of byte `port / 8`), the VMCB's IOPM_BASE_PA pointing to it. With
//! the IOIO_PROT intercept on, an IN, OUT, INS or OUTS whose bit is set exits (IOIO, exit
//! code 0x7B); one whose bit is clear goes straight to the device. An access of 2 or 4 bytes
//! checks the bit of every port it touches: it exits when any of them is set. The map is
//! 12 KiB, not 8, because a 4-byte access at port 0xFFFF reads bits past the 65,536th.
//!
//! Each vCPU has its own map (`intercepts.rs` allocates it): every bit set, so every port
//! exits, then the ports a domain owns cleared (`device/ata.rs`: the driver domain's disk
//! controller). This module is only the bits, so the host tests check the same code that
//! fills the real map.

/// The map's size in bytes: three 4 KiB pages.
pub const SIZE: usize = 12 * 1024;

/// An I/O permission map in memory the caller owns.
pub struct IoPermissionMap<'a> {
    bits: &'a mut [u8; SIZE],
}

impl<'a> IoPermissionMap<'a> {
    /// The map in `bits`, as it is.
    pub fn new(bits: &'a mut [u8; SIZE]) -> IoPermissionMap<'a> {
        IoPermissionMap { bits }
    }

    /// Every port exits: "the hypervisor always takes all traps".
    pub fn intercept_all(&mut self) {
        self.bits.fill(0xff);
    }

    /// `port` goes straight to the device, without an exit.
    pub fn pass_through(&mut self, port: u16) {
        self.bits[port as usize / 8] &= !(1 << (port % 8));
    }

    /// Does an access of one byte at `port` exit?
    pub fn intercepts(&self, port: u16) -> bool {
        self.bits[port as usize / 8] & (1 << (port % 8)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_through_port_clears_its_own_bit_and_no_other() {
        let mut bits = [0u8; SIZE];
        let mut map = IoPermissionMap::new(&mut bits);
        map.intercept_all();
        map.pass_through(0x1f7);
        assert!(!map.intercepts(0x1f7));
        assert!(map.intercepts(0x1f6) && map.intercepts(0x1f8));
        // Port 0x1f7 is bit 7 of byte 0x3e (APM vol. 2, 15.10.1).
        assert_eq!(bits[0x3e], 0x7f);
        assert!(
            bits.iter()
                .enumerate()
                .all(|(at, &byte)| at == 0x3e || byte == 0xff)
        );
    }
}
