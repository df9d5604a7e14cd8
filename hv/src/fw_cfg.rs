//! QEMU's firmware configuration device: how the host hands the hypervisor its guests.
//!
//! The host passes named files on QEMU's command line (`-fw_cfg name=opt/traplab/…`);
//! the hypervisor reads them through the fw_cfg DMA interface (QEMU `docs/specs/fw_cfg.rst`):
//! it writes the physical address of a 16-byte request, big-endian, to I/O ports
//! 0x514 (high half) and 0x518 (low half, which starts the transfer), and QEMU copies the
//! file into memory. One transfer per file instead of one port read per byte.
//!
//! The files traplab uses:
//!
//! | name                        | content                                            |
//! |-----------------------------|----------------------------------------------------|
//! | `opt/traplab/trace`         | `ring` (a host reads the trace: wait when full), `lossy` (drop and count), `off` |
//! | `opt/traplab/control`       | `run` or `pause`: the host may pause, step and break us (`control.rs`) |
//! | `opt/traplab/timer-hz`      | the hypervisor's own timer (`timer.rs`): ticks per second, 0 = off |
//! | `opt/traplab/settings`      | lab settings, comma-separated (`settings.rs`, `traplab_abi::settings`) |
//! | `opt/traplab/ring-kib`      | the trace ring's size in KiB (default 16384; small rings test the lossy mode) |
//! | `opt/traplab/tsc-hz`        | the TSC's rate in Hz (at least 1 MHz), taken instead of measured (`tools/qemu-cost.sh`) |
//! | `opt/traplab/start`         | `in-turn` (each domain when the one before has ended) or `together` (side by side) |
//! | `opt/traplab/gdb`           | the id of the domain gdb debugs (its session is on COM2) |
//! | `opt/traplab/disk-owner`    | the domain that owns the disk controller (`device/ata.rs`); absent: no disk |
//! | `opt/traplab/domN/name`     | the guest's name, for domain N: 0 the control domain (when the lab has one), 1, 2, … the others |
//! | `opt/traplab/domN/image`    | the guest's kernel image: a lab guest's ELF64, or a multiboot v1 kernel (`traplab_hv::image`) |
//! | `opt/traplab/domN/cmdline`  | a multiboot kernel's command line (optional)       |
//! | `opt/traplab/domN/initrd`   | a multiboot kernel's first module (optional)       |
//! | `opt/traplab/domN/input`    | bytes typed ahead on the domain's COM1: they wait in its receiver (optional) |
//! | `opt/traplab/domN/memory-mib` | the domain's RAM in MiB, 2 to 2048 (default 16)  |

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{Ordering, compiler_fence};
use x86_64::instructions::port::Port;

const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = 0x511;
const DMA_PORT_HIGH: u16 = 0x514;
const DMA_PORT_LOW: u16 = 0x518;

const KEY_SIGNATURE: u16 = 0x0000;
const KEY_FEATURES: u16 = 0x0001;
const KEY_FILE_DIR: u16 = 0x0019;
const FEATURE_DMA: u32 = 1 << 1;

const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SELECT: u32 = 1 << 3;

/// A DMA request (all fields big-endian).
#[repr(C, align(16))]
struct DmaAccess {
    control: u32,
    length: u32,
    address: u64,
}

/// One entry of the file directory.
#[derive(Debug, Clone)]
pub struct File {
    pub name: String,
    pub size: u32,
    key: u16,
}

/// The fw_cfg device, checked to be there and to support DMA.
pub struct FwCfg {
    files: Vec<File>,
}

impl FwCfg {
    pub fn open() -> Result<FwCfg, &'static str> {
        let mut signature = [0u8; 4];
        select(KEY_SIGNATURE);
        for byte in &mut signature {
            // SAFETY: 0x511 is fw_cfg's data port (we checked nothing else can be there:
            // this is QEMU's PC machine).
            *byte = unsafe { Port::<u8>::new(DATA_PORT).read() };
        }
        if &signature != b"QEMU" {
            return Err("no QEMU fw_cfg device");
        }
        let mut features = [0u8; 4];
        select(KEY_FEATURES);
        for byte in &mut features {
            // SAFETY: as above.
            *byte = unsafe { Port::<u8>::new(DATA_PORT).read() };
        }
        if u32::from_le_bytes(features) & FEATURE_DMA == 0 {
            return Err("fw_cfg without DMA (QEMU older than 2.9)");
        }
        let mut count = [0u8; 4];
        read_dma(KEY_FILE_DIR, &mut count)?;
        let count = u32::from_be_bytes(count) as usize;
        // The directory: a count, then 64-byte entries (size, key, reserved, name[56]).
        let mut directory = vec![0u8; 4 + count * 64];
        read_dma(KEY_FILE_DIR, &mut directory)?;
        let files = directory[4..]
            .chunks_exact(64)
            .map(|entry| {
                let name = &entry[8..64];
                let name = &name[..name
                    .iter()
                    .position(|&byte| byte == 0)
                    .unwrap_or(name.len())];
                File {
                    name: String::from_utf8_lossy(name).into_owned(),
                    size: u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]),
                    key: u16::from_be_bytes([entry[4], entry[5]]),
                }
            })
            .collect();
        Ok(FwCfg { files })
    }

    pub fn find(&self, name: &str) -> Option<&File> {
        self.files.iter().find(|file| file.name == name)
    }

    /// The whole file, or `None` if there is no such file.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, &'static str> {
        let Some(file) = self.find(name) else {
            return Ok(None);
        };
        let mut data = vec![0u8; file.size as usize];
        read_dma(file.key, &mut data)?;
        Ok(Some(data))
    }

    /// A text file, without surrounding whitespace.
    pub fn read_text(&self, name: &str) -> Result<Option<String>, &'static str> {
        Ok(self
            .read(name)?
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().into()))
    }
}

fn select(key: u16) {
    // SAFETY: 0x510 is fw_cfg's selector port.
    unsafe { Port::<u16>::new(SELECTOR_PORT).write(key) };
}

/// Select `key` and read `buffer.len()` bytes of it by DMA.
fn read_dma(key: u16, buffer: &mut [u8]) -> Result<(), &'static str> {
    let request = DmaAccess {
        control: (((key as u32) << 16) | DMA_SELECT | DMA_READ).to_be(),
        length: (buffer.len() as u32).to_be(),
        // The heap and the stack are identity-mapped: virtual = physical.
        address: (buffer.as_mut_ptr() as u64).to_be(),
    };
    let address = &request as *const DmaAccess as u64;
    // The device must see the request and the buffer before we start it.
    compiler_fence(Ordering::SeqCst);
    // SAFETY: 0x514/0x518 are fw_cfg's DMA address ports; the request and the buffer stay
    // alive until QEMU clears the control word below.
    unsafe {
        Port::<u32>::new(DMA_PORT_HIGH).write(((address >> 32) as u32).to_be());
        Port::<u32>::new(DMA_PORT_LOW).write((address as u32).to_be());
    }
    loop {
        // SAFETY: `request` is live; QEMU writes its control word when done.
        let control = u32::from_be(unsafe { core::ptr::read_volatile(&request.control) });
        if control & DMA_ERROR != 0 {
            return Err("fw_cfg DMA error");
        }
        if control == 0 {
            compiler_fence(Ordering::SeqCst);
            return Ok(());
        }
        core::hint::spin_loop();
    }
}
