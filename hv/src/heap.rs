//! The hypervisor's heap: 16 MiB at a fixed place ([`crate::frames`]).
//!
//! The heap serves the instruction decoder's tables (iced-x86 needs about 1.5 MiB),
//! domain bookkeeping and event text. Talc allocates in constant time, which matters on
//! the exit path: a handler may format a line of text for the trace at every exit.
//!
//! In front of Talc, a few small blocks just freed wait for the next allocation of the
//! same layout ([`FreeBlocks`]): every trap allocates and frees the same ones (a decision's
//! effects), and taking one back is a few comparisons where Talc's allocate and free are
//! about 160 instructions together.

use crate::frames::{HEAP_SIZE, HEAP_START};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use spinning_top::Spinlock;
use talc::TalcLock;
use talc::source::Claim;
use traplab_hv::free_blocks::FreeBlocks;

/// How many freed blocks wait in front of Talc: the blocks of one trap, with room to spare.
const KEPT: usize = 4;

struct Heap {
    talc: TalcLock<spinning_top::RawSpinlock, Claim>,
    /// Its own lock, taken alone on the fast path. Like Talc's, it is never contended: one
    /// CPU, and the only interrupt the hypervisor takes, its timer's tick (`timer.rs`),
    /// does not allocate.
    recent: Spinlock<FreeBlocks<KEPT>>,
}

#[global_allocator]
static HEAP: Heap = Heap {
    // SAFETY: the heap range is RAM that `frames.rs` reserves for the heap alone; Talc claims
    // it at the first allocation, after `frames::init` has checked the memory map.
    talc: TalcLock::new(unsafe { Claim::new(HEAP_START as *mut u8, HEAP_SIZE as usize) }),
    recent: Spinlock::new(FreeBlocks::new()),
};

// SAFETY: every block comes from Talc, and goes back to Talc with the layout it was
// allocated with: a block kept in `recent` is handed out again only for a request of
// exactly that layout (`free_blocks.rs`), so it is the size and alignment the request asks,
// and its later free names the same layout again.
unsafe impl GlobalAlloc for Heap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(block) = self.recent.lock().take(layout) {
            return block.as_ptr();
        }
        // SAFETY: the caller's contract (a layout of nonzero size) is Talc's.
        unsafe { self.talc.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(block) = NonNull::new(ptr) else {
            return;
        };
        // The lock is let go before Talc's is taken.
        let back = self.recent.lock().keep(block, layout);
        if let Some((block, layout)) = back {
            // SAFETY: `block` is one Talc gave out with `layout` (see the impl): this one,
            // or one kept before and now pushed out.
            unsafe { self.talc.dealloc(block.as_ptr(), layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`; a fresh block from Talc, zeroed there.
        unsafe { self.talc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live block Talc gave out with `layout`, kept or not on the
        // way: Talc grows it in place or moves it.
        unsafe { self.talc.realloc(ptr, layout, new_size) }
    }
}
