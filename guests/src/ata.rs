//! A polled ATA PIO driver for the disk controller a driver domain owns.
//!
//! The controller is the PC's primary IDE channel (`traplab_abi::ata`: ports 0x1f0–0x1f7
//! and 0x3f6), with the disk as drive 0. The hypervisor gives the whole controller to one
//! domain (`BootInfo::disk_owner`): the owner's IN and OUT go to the controller without an
//! exit, so this driver runs at the device's own speed. Any other domain's accesses exit and
//! are refused as an empty bus answers (all ones): for it, [`identify`] finds no drive.
//!
//! What it speaks: LBA28 (sectors 0 to 2^28 − 1), drive 0 only, one command at a time,
//! polled with nIEN set in the device control register, so the device never raises its
//! interrupt (IRQ 14, which reaches nobody: the hypervisor keeps it masked). Every wait
//! is a bounded loop ([`AtaError::Timeout`]).
//!
//! - [`identify`]: IDENTIFY DEVICE: the disk's size and model.
//! - [`read`]`(lba, buffer)`: READ SECTOR(S) into `buffer`, whose length is a multiple of
//!   512: as many sectors as it holds, from `lba` on.
//! - [`write`]`(lba, data)`: WRITE SECTOR(S) of `data` (a multiple of 512 bytes too), then
//!   FLUSH CACHE, so that the image file on the host holds the data when the run ends.
//!
//! A byte slice rather than an array of sectors: a block backend moves pages of 4 KiB, eight
//! sectors, and hands them over as they are.
//!
//! The protocol, for every command (ATA/ATAPI-6 "PIO data-in" and "PIO data-out"; the OSDev
//! wiki's "ATA PIO Mode"):
//!
//! 1. wait until BSY is clear: a busy device ignores its registers;
//! 2. select drive 0, in LBA mode, with LBA bits 27:24, and give it 400 ns to answer (four
//!    reads of the alternate status register);
//! 3. write the sector count and LBA bits 23:0, then the command;
//! 4. for each sector: wait until BSY is clear and DRQ is set (or ERR or DF: the command
//!    failed, and the error register says why), then move 256 words through the data port;
//! 5. wait until BSY is clear again: the command is done.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use traplab_abi::ata::{
    self, CONTROL, DATA, DEVICE, DEVICE_LBA_DRIVE_0, ERROR, LBA_HIGH, LBA_LOW, LBA_MID,
    LBA28_SECTORS, MAX_SECTORS_PER_COMMAND, NIEN, SECTOR_COUNT, STATUS, command, status,
};
use x86_64::instructions::port::Port;

/// Bytes in a sector.
pub const SECTOR_SIZE: usize = ata::SECTOR_SIZE;

/// How many times a wait reads the status register before it gives up. The owner's reads
/// do not exit: under QEMU's TCG one takes about 0.4 µs, and a sector read takes about
/// 2 ms from command to data (measured here, 2026-12), so this is about 8 s of patience.
const POLLS: u32 = 20_000_000;

/// Why a command did not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtaError {
    /// No drive answers: the status register reads all ones (no controller, or one this
    /// domain does not own) or zero (no drive 0).
    NoDevice { status: u8 },
    /// The device stayed busy, or never asked for data.
    Timeout {
        waiting_for: &'static str,
        status: u8,
    },
    /// The device refused or failed the command: ERR or DF in the status register, and
    /// the error register's reason.
    Device { status: u8, error: u8 },
    /// Sectors past the end of the disk (or of LBA28): refused before the device is asked.
    OutOfRange { lba: u64, sectors: u64, disk: u64 },
    /// A buffer whose length is not a multiple of 512.
    NotWholeSectors { length: usize },
}

impl fmt::Display for AtaError {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            AtaError::NoDevice { status } => {
                write!(formatter, "no drive answers (status {status:#04x})")
            }
            AtaError::Timeout {
                waiting_for,
                status,
            } => write!(
                formatter,
                "timed out waiting for {waiting_for} (status {status:#04x})"
            ),
            AtaError::Device { status, error } => write!(
                formatter,
                "the device failed the command (status {status:#04x}, error {error:#04x})"
            ),
            AtaError::OutOfRange { lba, sectors, disk } => write!(
                formatter,
                "sectors {lba} to {} are past the end of the disk ({disk} sectors)",
                lba + sectors - 1
            ),
            AtaError::NotWholeSectors { length } => {
                write!(formatter, "{length} bytes is not a whole number of sectors")
            }
        }
    }
}

/// What IDENTIFY DEVICE says about the disk.
#[derive(Debug, Clone, Copy)]
pub struct Identify {
    /// How many sectors LBA28 commands reach (words 60–61).
    pub sectors: u64,
    /// The model number (words 27–46), space-padded ASCII.
    pub model: [u8; 40],
}

impl Identify {
    /// The model without its padding: "QEMU HARDDISK".
    pub fn model(&self) -> &str {
        core::str::from_utf8(&self.model)
            .unwrap_or("(not ASCII)")
            .trim_end_matches([' ', '\0'])
    }
}

/// The disk's size in sectors once [`identify`] has run (0 before): [`read`] and [`write`]
/// check every request against it.
static DISK_SECTORS: AtomicU64 = AtomicU64::new(0);

/// The status register, read once: what a program finds at port 0x1f7. All ones when no
/// controller answers (or the hypervisor refuses this domain the one there is).
pub fn status() -> u8 {
    inb(STATUS)
}

/// IDENTIFY DEVICE: the disk's size and model.
pub fn identify() -> Result<Identify, AtaError> {
    start(0, 0, command::IDENTIFY_DEVICE)?;
    // A status of 0 right after the command: nothing is attached as drive 0.
    let after = inb(STATUS);
    if after == 0 {
        return Err(AtaError::NoDevice { status: after });
    }
    let mut words = [0u16; 256];
    wait_for_data()?;
    for word in &mut words {
        *word = inw(DATA);
    }
    wait_until_done()?;
    let mut model = [0u8; 40];
    for (pair, &word) in model.chunks_exact_mut(2).zip(&words[ata::identify::MODEL]) {
        // ATA strings put the first character of each pair in the word's high byte.
        pair.copy_from_slice(&word.to_be_bytes());
    }
    let low = words[ata::identify::LBA28_SECTORS] as u64;
    let high = words[ata::identify::LBA28_SECTORS + 1] as u64;
    let identified = Identify {
        sectors: (high << 16) | low,
        model,
    };
    DISK_SECTORS.store(identified.sectors, Ordering::Relaxed);
    Ok(identified)
}

/// Read `buffer.len() / 512` sectors from `lba` on into `buffer`. The first read or write
/// identifies the disk, to learn its size.
pub fn read(lba: u64, buffer: &mut [u8]) -> Result<(), AtaError> {
    check(lba, buffer.len())?;
    for (index, piece) in buffer
        .chunks_mut(MAX_SECTORS_PER_COMMAND * SECTOR_SIZE)
        .enumerate()
    {
        let first = lba + (index * MAX_SECTORS_PER_COMMAND) as u64;
        let sectors = piece.len() / SECTOR_SIZE;
        start(first, sectors, command::READ_SECTORS)?;
        for sector in piece.chunks_exact_mut(SECTOR_SIZE) {
            wait_for_data()?;
            for bytes in sector.chunks_exact_mut(2) {
                bytes.copy_from_slice(&inw(DATA).to_le_bytes());
            }
        }
        wait_until_done()?;
    }
    Ok(())
}

/// Write `data` (`data.len() / 512` sectors) from `lba` on, then flush the disk's cache.
pub fn write(lba: u64, data: &[u8]) -> Result<(), AtaError> {
    check(lba, data.len())?;
    for (index, piece) in data
        .chunks(MAX_SECTORS_PER_COMMAND * SECTOR_SIZE)
        .enumerate()
    {
        let first = lba + (index * MAX_SECTORS_PER_COMMAND) as u64;
        let sectors = piece.len() / SECTOR_SIZE;
        start(first, sectors, command::WRITE_SECTORS)?;
        for sector in piece.chunks_exact(SECTOR_SIZE) {
            wait_for_data()?;
            for bytes in sector.chunks_exact(2) {
                outw(DATA, u16::from_le_bytes([bytes[0], bytes[1]]));
            }
        }
        wait_until_done()?;
    }
    // The device may hold written sectors in its cache; QEMU's holds them in its own
    // buffers. FLUSH CACHE returns once they are on the medium: in the image file.
    start(0, 0, command::FLUSH_CACHE)?;
    wait_until_done()
}

/// Refuse a request the disk cannot hold, before the device sees it.
fn check(lba: u64, length: usize) -> Result<(), AtaError> {
    if !length.is_multiple_of(SECTOR_SIZE) {
        return Err(AtaError::NotWholeSectors { length });
    }
    let sectors = (length / SECTOR_SIZE) as u64;
    if sectors == 0 {
        return Ok(());
    }
    let disk = match DISK_SECTORS.load(Ordering::Relaxed) {
        0 => identify()?.sectors,
        known => known,
    }
    .min(LBA28_SECTORS);
    match lba.checked_add(sectors) {
        Some(end) if end <= disk => Ok(()),
        _ => Err(AtaError::OutOfRange { lba, sectors, disk }),
    }
}

/// Steps 1–3: wait until the device is free, select drive 0 at `lba`, and give it
/// `command` for `sectors` sectors (at most 256; 256 is written as 0).
fn start(lba: u64, sectors: usize, command: u8) -> Result<(), AtaError> {
    // Polled: the device's interrupt stays off.
    outb(CONTROL, NIEN);
    wait_until_free()?;
    outb(DEVICE, DEVICE_LBA_DRIVE_0 | ((lba >> 24) & 0x0f) as u8);
    settle();
    wait_until_free()?;
    outb(SECTOR_COUNT, sectors as u8);
    outb(LBA_LOW, lba as u8);
    outb(LBA_MID, (lba >> 8) as u8);
    outb(LBA_HIGH, (lba >> 16) as u8);
    outb(ata::COMMAND, command);
    settle();
    Ok(())
}

/// 400 ns for the device to set BSY after a command or a drive selection: the status read
/// before then may be stale. Each read of the alternate status register (which, unlike the
/// status register, acknowledges nothing) takes at least 100 ns on the ISA bus.
fn settle() {
    for _ in 0..4 {
        inb(CONTROL);
    }
}

/// Steps 1 and 2: wait until BSY is clear. The other bits may still tell of the last
/// command (an ERR stays until the next one): they do not matter here.
fn wait_until_free() -> Result<(), AtaError> {
    let mut last = 0;
    for _ in 0..POLLS {
        last = inb(STATUS);
        if last == 0xff {
            return Err(AtaError::NoDevice { status: last });
        }
        if last & status::BSY == 0 {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(AtaError::Timeout {
        waiting_for: "the device to be free",
        status: last,
    })
}

/// Step 4: wait until the device asks for (or offers) a sector.
fn wait_for_data() -> Result<(), AtaError> {
    wait_until(status::DRQ, "a sector")
}

/// Step 5: wait until the command is over.
fn wait_until_done() -> Result<(), AtaError> {
    wait_until(0, "the command to end")
}

/// Wait until BSY is clear and the bits of `wanted` are set. ERR or DF end the wait with
/// the device's error; all ones (nothing answers) with `NoDevice`.
fn wait_until(wanted: u8, waiting_for: &'static str) -> Result<(), AtaError> {
    let mut last = 0;
    for _ in 0..POLLS {
        last = inb(STATUS);
        if last == 0xff {
            return Err(AtaError::NoDevice { status: last });
        }
        if last & status::BSY != 0 {
            core::hint::spin_loop();
            continue;
        }
        if last & (status::ERR | status::DF) != 0 {
            return Err(AtaError::Device {
                status: last,
                error: inb(ERROR),
            });
        }
        if last & wanted == wanted {
            return Ok(());
        }
    }
    Err(AtaError::Timeout {
        waiting_for,
        status: last,
    })
}

fn inb(port: u16) -> u8 {
    // SAFETY: reading an ATA register has no effect on memory; the ports are the
    // controller's (or nobody's, and read all ones).
    unsafe { Port::<u8>::new(port).read() }
}

fn outb(port: u16, value: u8) {
    // SAFETY: writing an ATA register has no effect on memory: the controller moves data
    // only through the data port, by PIO, never by DMA.
    unsafe { Port::<u8>::new(port).write(value) }
}

fn inw(port: u16) -> u16 {
    // SAFETY: as `inb`; the data port is 16 bits wide.
    unsafe { Port::<u16>::new(port).read() }
}

fn outw(port: u16, value: u16) {
    // SAFETY: as `outb`.
    unsafe { Port::<u16>::new(port).write(value) }
}
