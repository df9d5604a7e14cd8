//! QEMU's firmware configuration device, as the guest sees it: read-only, and only the
//! traditional interface (QEMU `docs/specs/fw_cfg.rst`).
//!
//! On QEMU a guest's firmware (or a kernel that looks) reads the machine's facts from it: it
//! writes a 16-bit *key* to the selector port 0x510, then reads the item's bytes one at a
//! time from the data port 0x511; past the item's end it reads zeros. The hypervisor's own
//! fw_cfg (the real device, through which the host hands it the guests: `hv/src/fw_cfg.rs`)
//! is another thing: this one is emulated per domain, and says what QEMU would say to a
//! machine with this domain's CPU and RAM.
//!
//! | key    | item        | here                                                    |
//! |--------|-------------|---------------------------------------------------------|
//! | 0x0000 | signature   | `QEMU`                                                  |
//! | 0x0001 | ID          | 1: the traditional interface, *no DMA* (bit 1 clear)    |
//! | 0x0003 | RAM size    | the domain's RAM, 64-bit little-endian                  |
//! | 0x0005 | CPU count   | 1                                                       |
//! | 0x000f | max CPUs    | 1                                                       |
//! | 0x0019 | file directory | no files (a count of 0, big-endian)                  |
//!
//! Never the DMA interface (ports 0x514 and 0x518): a DMA request names a guest-physical
//! address the device would write to, and the real device would write *host* memory — the
//! hypervisor's. The ID says there is none, and the ports are empty.

/// The selector (16-bit writes) and data (8-bit reads) ports.
pub const SELECTOR: u16 = 0x510;
pub const DATA: u16 = 0x511;

const SIGNATURE: u16 = 0x0000;
const ID: u16 = 0x0001;
const RAM_SIZE: u16 = 0x0003;
const CPU_COUNT: u16 = 0x0005;
const MAX_CPUS: u16 = 0x000f;
const FILE_DIR: u16 = 0x0019;

/// The device's state: the selected key and how far its item has been read, and the RAM
/// of the machine it describes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FwCfg {
    key: u16,
    offset: u32,
    ram: u64,
}

impl FwCfg {
    /// The device of a domain with `ram` bytes of RAM.
    pub fn new(ram: u64) -> FwCfg {
        FwCfg {
            ram,
            ..FwCfg::default()
        }
    }

    /// An OUT to the selector selects an item and rewinds it. (Bit 14, "write", and bit 15,
    /// "architecture-specific", are part of the key: no such item exists here.)
    pub fn select(&mut self, key: u16) {
        self.key = key;
        self.offset = 0;
    }

    /// An IN of one byte from the data port: the selected item's next byte, or 0 past its
    /// end (and for a key with no item).
    pub fn read_byte(&mut self) -> u8 {
        let byte = item_byte(self.key, self.offset as usize, self.ram);
        self.offset = self.offset.saturating_add(1);
        byte
    }

    /// The selected key's name, for the trace.
    pub fn item(&self) -> &'static str {
        match self.key {
            SIGNATURE => "signature",
            ID => "ID",
            RAM_SIZE => "RAM size",
            CPU_COUNT => "CPU count",
            MAX_CPUS => "max CPUs",
            FILE_DIR => "file directory",
            _ => "no such item",
        }
    }
}

/// Byte `offset` of item `key`.
fn item_byte(key: u16, offset: usize, ram: u64) -> u8 {
    let from = |bytes: &[u8]| bytes.get(offset).copied().unwrap_or(0);
    match key {
        SIGNATURE => from(b"QEMU"),
        ID => from(&1u32.to_le_bytes()),
        RAM_SIZE => from(&ram.to_le_bytes()),
        CPU_COUNT | MAX_CPUS => from(&1u16.to_le_bytes()),
        FILE_DIR => from(&0u32.to_be_bytes()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(device: &mut FwCfg, key: u16, length: usize) -> Vec<u8> {
        device.select(key);
        (0..length).map(|_| device.read_byte()).collect()
    }

    #[test]
    fn the_guest_reads_what_qemu_would_say_of_its_machine_without_dma() {
        let mut device = FwCfg::new(32 << 20);
        assert_eq!(
            read(&mut device, SIGNATURE, 6),
            b"QEMU\0\0",
            "zeros past the end"
        );
        assert_eq!(read(&mut device, ID, 4), [1, 0, 0, 0], "bit 1 (DMA) clear");
        assert_eq!(read(&mut device, RAM_SIZE, 8), (32u64 << 20).to_le_bytes());
        assert_eq!(read(&mut device, CPU_COUNT, 2), [1, 0]);
        assert_eq!(read(&mut device, FILE_DIR, 4), [0, 0, 0, 0]);
        assert_eq!(read(&mut device, 0x4000, 4), [0; 4], "no writable item");
        assert_eq!(device.item(), "no such item");
        // Selecting again starts the item over.
        assert_eq!(read(&mut device, SIGNATURE, 2), b"QE");
        assert_eq!(read(&mut device, SIGNATURE, 2), b"QE");
    }
}
