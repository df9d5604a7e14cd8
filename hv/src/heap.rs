//! The hypervisor's heap: 16 MiB at a fixed place ([`crate::frames`]).
//!
//! The heap serves the instruction decoder's tables (iced-x86 needs about 1.5 MiB),
//! domain bookkeeping and event text. Talc allocates in constant time, which matters on
//! the exit path: a handler may format a line of text for the trace at every exit.

use crate::frames::{HEAP_SIZE, HEAP_START};
use talc::TalcLock;
use talc::source::Claim;

#[global_allocator]
static HEAP: TalcLock<spinning_top::RawSpinlock, Claim> =
    // SAFETY: the heap range is RAM that `frames.rs` reserves for the heap alone; Talc claims
    // it at the first allocation, after `frames::init` has checked the memory map.
    TalcLock::new(unsafe { Claim::new(HEAP_START as *mut u8, HEAP_SIZE as usize) });
