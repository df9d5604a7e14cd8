//! PCI configuration space, the PC way: configuration mechanism #1 (PCI Local Bus
//! Specification 3.0, 3.2.2.3.2), with one device on it, the host bridge.
//!
//! A kernel finds PCI devices by asking each bus/device/function for its configuration
//! registers: it writes an address to CONFIG_ADDRESS (port 0xcf8, 32 bits) —
//!
//! | bits  | 31     | 30:24    | 23:16 | 15:11  | 10:8     | 7:2      | 1:0 |
//! |-------|--------|----------|-------|--------|----------|----------|-----|
//! | field | enable | reserved | bus   | device | function | register | 0   |
//!
//! — then reads or writes CONFIG_DATA (ports 0xcfc–0xcff: the addressed dword, its bytes by
//! port). A function that is not there answers all ones: vendor ID 0xffff means "nothing
//! here", which is how every PCI scan ends.
//!
//! The one function here is 00:00.0, the host bridge, as the classic PC (QEMU's `pc`
//! machine) has it: an Intel 440FX, vendor 0x8086, device 0x1237, revision 2, class 06 00 00
//! ("bridge: host"). Its registers are read-only here: nothing behind it can be
//! configured, and the guest's writes are dropped (the trace says so).

use alloc::format;
use alloc::string::String;
use traplab_abi::x86::operand_mask;

/// The ports of configuration mechanism #1.
pub const CONFIG_ADDRESS: u16 = 0xcf8;
pub const CONFIG_DATA: u16 = 0xcfc;

/// CONFIG_ADDRESS bit 31: the next CONFIG_DATA access is a configuration access.
const ENABLE: u32 = 1 << 31;

/// The host bridge's configuration header (type 0), the first 16 bytes as dwords; every
/// register after them reads 0.
const HOST_BRIDGE: [u32; 4] = [
    0x1237_8086, // device ID, vendor ID (Intel 440FX)
    0x0000_0000, // status, command
    0x0600_0002, // class code 06 00 00 (host bridge), revision 2
    0x0000_0000, // BIST, header type 0, latency timer, cache line size
];

/// The configuration mechanism's one register, CONFIG_ADDRESS.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pci {
    address: u32,
}

/// Which function and register an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    /// The dword's offset in the function's 256-byte configuration space.
    pub register: u8,
}

impl Target {
    fn of(address: u32) -> Target {
        Target {
            bus: (address >> 16) as u8,
            device: ((address >> 11) & 0x1f) as u8,
            function: ((address >> 8) & 7) as u8,
            register: (address & 0xfc) as u8,
        }
    }

    fn is_host_bridge(self) -> bool {
        (self.bus, self.device, self.function) == (0, 0, 0)
    }
}

impl core::fmt::Display for Target {
    /// `00:00.0 register 0x8`, as `lspci` names a function.
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(
            formatter,
            "{:02x}:{:02x}.{} register {:#x}",
            self.bus, self.device, self.function, self.register
        )
    }
}

impl Pci {
    /// An IN of `size` bytes from one of the ports 0xcf8–0xcff.
    pub fn read(&self, port: u16, size: u8) -> u32 {
        match port {
            CONFIG_ADDRESS if size == 4 => self.address,
            CONFIG_DATA..=0xcff => match self.target() {
                Some(target) => {
                    let shift = 8 * (port - CONFIG_DATA) as u32;
                    let value = register(target) >> shift;
                    value & operand_mask(size) as u32
                }
                // Not a configuration access: nothing answers.
                None => operand_mask(size) as u32,
            },
            // A byte or word at 0xcf8–0xcfb is not CONFIG_ADDRESS. (On a PC, 0xcf9 is the
            // reset control register: a write that resets ends the domain before it gets
            // here, `exit/ioio.rs`; the register reads as nothing answers.)
            _ => operand_mask(size) as u32,
        }
    }

    /// An OUT of `value` (`size` bytes) to one of the ports 0xcf8–0xcff.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        if port == CONFIG_ADDRESS && size == 4 {
            // Bits 30:24 and 1:0 are read-only zeros (PCI 3.0, 3.2.2.3.2).
            self.address = value & 0x80ff_fffc;
        }
        // CONFIG_DATA writes reach the host bridge, whose registers are read-only here.
    }

    /// The function and register the next CONFIG_DATA access goes to, if it is one.
    pub fn target(&self) -> Option<Target> {
        (self.address & ENABLE != 0).then(|| Target::of(self.address))
    }

    /// What an access to `port` means, for the trace.
    pub fn describe(&self, port: u16, input: bool) -> String {
        match (port, self.target()) {
            (CONFIG_ADDRESS, _) => "PCI CONFIG_ADDRESS".into(),
            (_, None) => "PCI CONFIG_DATA, but CONFIG_ADDRESS is not enabled (bit 31)".into(),
            (_, Some(target)) if target.is_host_bridge() => format!(
                "PCI {target}: the host bridge{}",
                if input { "" } else { ", read-only: dropped" }
            ),
            (_, Some(target)) => format!("PCI {target}: no function there"),
        }
    }
}

/// The dword at `target`: the host bridge's, or all ones where no function is.
fn register(target: Target) -> u32 {
    if !target.is_host_bridge() {
        return u32::MAX;
    }
    HOST_BRIDGE
        .get(target.register as usize / 4)
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CONFIG_ADDRESS for bus/device/function/register, enabled.
    fn address(bus: u32, device: u32, function: u32, register: u32) -> u32 {
        ENABLE | bus << 16 | device << 11 | function << 8 | register
    }

    #[test]
    fn the_host_bridge_is_an_intel_440fx_at_00_00_0() {
        let mut pci = Pci::default();
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0));
        assert_eq!(pci.read(CONFIG_ADDRESS, 4), address(0, 0, 0, 0));
        assert_eq!(pci.read(CONFIG_DATA, 4), 0x1237_8086);
        // Word and byte reads pick their part of the dword by port.
        assert_eq!(pci.read(CONFIG_DATA, 2), 0x8086);
        assert_eq!(pci.read(CONFIG_DATA + 2, 2), 0x1237);
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 8));
        assert_eq!(pci.read(CONFIG_DATA + 3, 1), 0x06, "base class: bridge");
        assert_eq!(pci.read(CONFIG_DATA, 1), 0x02, "revision");
        assert_eq!(
            pci.describe(CONFIG_DATA, true),
            "PCI 00:00.0 register 0x8: the host bridge"
        );
    }

    #[test]
    fn every_other_function_is_absent_and_the_bridge_is_read_only() {
        let mut pci = Pci::default();
        pci.write(CONFIG_ADDRESS, 4, address(0, 1, 0, 0));
        assert_eq!(
            pci.read(CONFIG_DATA, 4),
            u32::MAX,
            "vendor 0xffff: nothing here"
        );
        assert_eq!(
            pci.describe(CONFIG_DATA, true),
            "PCI 00:01.0 register 0x0: no function there"
        );
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0));
        pci.write(CONFIG_DATA, 4, 0xdead_beef);
        assert_eq!(pci.read(CONFIG_DATA, 4), 0x1237_8086);
        // Without the enable bit, CONFIG_DATA is not a configuration access.
        pci.write(CONFIG_ADDRESS, 4, 0);
        assert_eq!(pci.read(CONFIG_DATA, 4), u32::MAX);
        // A byte write to 0xcf8 is not CONFIG_ADDRESS.
        pci.write(CONFIG_ADDRESS, 1, 0x80);
        assert_eq!(pci.read(CONFIG_ADDRESS, 4), 0);
    }
}
