//! The legacy ATA disk controller a lab may have: its ports, its interrupt, its registers
//! and the commands traplab's driver uses. The hypervisor hands the whole controller to one
//! domain, the driver domain (`hv/src/device/ata.rs`); the guests' driver is
//! `guests/src/ata.rs`.
//!
//! The controller is the PC's primary IDE channel: QEMU's `isa-ide` at the legacy
//! addresses, with one `ide-hd` as drive 0 (the master), backed by a raw image file. Its
//! registers are those of ATA/ATAPI-6 (T13 1410D), "Register descriptions"; how a driver
//! moves data through them is the PIO protocol of the same standard, as the OSDev wiki's
//! "ATA PIO Mode" page tells it.
//!
//! Why PIO: every byte goes through the data port, moved by the owner's own CPU with IN
//! and OUT. The device never writes memory by itself (no DMA), so no IOMMU is needed to
//! keep it inside its owner's memory: giving the owner the ports in its I/O permission map
//! is the whole assignment.

/// The command block: eight registers at 0x1f0–0x1f7 ([`DATA`] … [`COMMAND`]).
pub const COMMAND_BLOCK: u16 = 0x1f0;
/// The control block's one register (alternate status when read, device control when
/// written).
pub const CONTROL: u16 = 0x3f6;
/// The controller's interrupt line on the PC's 8259 PICs (the secondary PIC's IRQ 6).
/// traplab's driver never takes it: it sets [`NIEN`] and polls the status register.
pub const IRQ: u8 = 14;

/// Every port of the controller: the command block, then the control register.
pub const PORTS: [u16; 9] = [
    COMMAND_BLOCK,
    COMMAND_BLOCK + 1,
    COMMAND_BLOCK + 2,
    COMMAND_BLOCK + 3,
    COMMAND_BLOCK + 4,
    COMMAND_BLOCK + 5,
    COMMAND_BLOCK + 6,
    COMMAND_BLOCK + 7,
    CONTROL,
];

/// Is `port` one of the controller's?
pub const fn is_controller_port(port: u16) -> bool {
    matches!(port, 0x1f0..=0x1f7 | CONTROL)
}

// ---- The command block's registers (read / write) -----------------------------------------

/// Data, 16 bits wide: 256 reads or writes move one 512-byte sector, low byte first.
pub const DATA: u16 = COMMAND_BLOCK;
/// Error (read): why the last command failed, valid when the status has [`status::ERR`].
pub const ERROR: u16 = COMMAND_BLOCK + 1;
/// Sector count (write): how many sectors the command moves; 0 means 256.
pub const SECTOR_COUNT: u16 = COMMAND_BLOCK + 2;
/// LBA bits 7:0.
pub const LBA_LOW: u16 = COMMAND_BLOCK + 3;
/// LBA bits 15:8.
pub const LBA_MID: u16 = COMMAND_BLOCK + 4;
/// LBA bits 23:16.
pub const LBA_HIGH: u16 = COMMAND_BLOCK + 5;
/// Device: which drive, LBA mode, and LBA bits 27:24 in bits 3:0.
pub const DEVICE: u16 = COMMAND_BLOCK + 6;
/// Status (read; reading it also acknowledges the device's interrupt) and command (write).
pub const STATUS: u16 = COMMAND_BLOCK + 7;
pub const COMMAND: u16 = COMMAND_BLOCK + 7;

/// The device register for drive 0 in LBA mode: bit 6 (LBA), and bits 7 and 5, obsolete
/// but set by tradition (ATA/ATAPI-6 still shows them as ones).
pub const DEVICE_LBA_DRIVE_0: u8 = 0xe0;

/// Device control (written at [`CONTROL`]): bit 1, nIEN, keeps the device's interrupt
/// line quiet; bit 2, SRST, resets the drives on the channel.
pub const NIEN: u8 = 1 << 1;
pub const SRST: u8 = 1 << 2;

/// The status register's bits (ATA/ATAPI-6, "Status register").
pub mod status {
    /// The last command failed: the error register says why.
    pub const ERR: u8 = 1 << 0;
    /// Data request: the device waits for the host to move a sector through [`super::DATA`].
    pub const DRQ: u8 = 1 << 3;
    /// Device fault: the device cannot carry on.
    pub const DF: u8 = 1 << 5;
    /// Device ready.
    pub const DRDY: u8 = 1 << 6;
    /// Busy: the device owns the registers; every other bit is meaningless while it is set.
    pub const BSY: u8 = 1 << 7;
}

/// The error register's bits.
pub mod error {
    /// Aborted: the device refused the command (unknown, or not possible now).
    pub const ABRT: u8 = 1 << 2;
    /// ID not found: the sector is not on the disk.
    pub const IDNF: u8 = 1 << 4;
    /// Uncorrectable data error.
    pub const UNC: u8 = 1 << 6;
}

/// The commands traplab's driver uses (ATA/ATAPI-6, "Command descriptions").
pub mod command {
    /// READ SECTOR(S), LBA28, PIO data-in.
    pub const READ_SECTORS: u8 = 0x20;
    /// WRITE SECTOR(S), LBA28, PIO data-out.
    pub const WRITE_SECTORS: u8 = 0x30;
    /// FLUSH CACHE: everything written is on the medium (for QEMU: in the image file).
    pub const FLUSH_CACHE: u8 = 0xe7;
    /// IDENTIFY DEVICE: 256 words about the drive.
    pub const IDENTIFY_DEVICE: u8 = 0xec;
}

/// Bytes in a sector.
pub const SECTOR_SIZE: usize = 512;
/// LBA28 reaches sectors 0 to 2^28 − 1 (128 GiB).
pub const LBA28_SECTORS: u64 = 1 << 28;
/// The most sectors one LBA28 command moves (a sector count of 0).
pub const MAX_SECTORS_PER_COMMAND: usize = 256;

/// Words of the IDENTIFY DEVICE data.
pub mod identify {
    /// Words 27–46: the model number, 40 ASCII characters, two per word, the first in the
    /// word's *high* byte.
    pub const MODEL: core::ops::Range<usize> = 27..47;
    /// Words 60–61: the number of sectors LBA28 commands reach, low word first.
    pub const LBA28_SECTORS: usize = 60;
}
