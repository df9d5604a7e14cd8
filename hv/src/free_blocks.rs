//! A few heap blocks, freed and kept for the next allocation of the same layout.
//!
//! Every trap allocates and frees the same small blocks: a decision's effects (`Vec` with
//! room for six, `decision.rs`), and, traced, the `emulate` event's changes (`apply.rs`).
//! Talc finds a free block in constant time, but constant is about a hundred instructions
//! for an allocation and sixty for a free, under TCG a tenth of an untraced trap. So the
//! program's allocator (`heap.rs`) puts this cache in front of Talc: a freed small block
//! waits here instead of going back to Talc (the one freed longest ago goes back in its
//! place), and the next allocation of exactly the same layout takes it back out — a few
//! comparisons each way.
//!
//! Why "exactly the same layout" (size *and* alignment), not "big enough": a block handed
//! out again is later freed with the layout of its second life, and Talc must get back
//! the layout it gave the block (`GlobalAlloc::dealloc`'s contract). With the same layout,
//! the block is what Talc would have handed out: the same size, at an address aligned as
//! the request asks. Nothing else is assumed, so it holds for any layout.
//!
//! The cache only holds addresses; it never reads or writes the blocks. It is pure data,
//! so the host tests it (below); `heap.rs` puts it behind a lock.

use core::alloc::Layout;
use core::num::NonZeroUsize;
use core::ptr::NonNull;

/// The largest block kept (bytes): the per-trap blocks are a few hundred bytes at most;
/// a large block (the decoder's tables) goes back to Talc at once, where it is of use.
pub const LARGEST_KEPT: usize = 512;

/// The last `N` small blocks freed, each with the layout it was allocated with.
#[derive(Debug)]
pub struct FreeBlocks<const N: usize> {
    /// An address, not a pointer: the cache is shared behind the allocator's lock (it must
    /// be `Send`), and it never dereferences what it keeps.
    slots: [Option<(NonZeroUsize, Layout)>; N],
    /// The slot the next freed block goes into: the one freed longest ago. (Always the
    /// newest `N`, so that a block freed once at boot and never asked for again does not
    /// hold a slot for ever.)
    next: usize,
}

impl<const N: usize> Default for FreeBlocks<N> {
    fn default() -> Self {
        FreeBlocks::new()
    }
}

impl<const N: usize> FreeBlocks<N> {
    /// No block kept yet.
    pub const fn new() -> FreeBlocks<N> {
        FreeBlocks {
            slots: [None; N],
            next: 0,
        }
    }

    /// A kept block allocated with exactly `layout`, now the caller's; `None` when there
    /// is none (the caller asks the allocator behind).
    #[inline]
    pub fn take(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let slot = self
            .slots
            .iter_mut()
            .find(|slot| slot.is_some_and(|(_, kept)| kept == layout))?;
        let (address, _) = slot.take()?;
        NonNull::new(address.get() as *mut u8)
    }

    /// Keep `block`, freed, which was allocated with `layout`. What comes back is for the
    /// allocator behind: nothing, the block itself when it is too large to keep, or the
    /// block freed longest ago, whose slot it takes.
    #[inline]
    pub fn keep(&mut self, block: NonNull<u8>, layout: Layout) -> Option<(NonNull<u8>, Layout)> {
        let address = NonZeroUsize::new(block.as_ptr() as usize)?;
        if layout.size() > LARGEST_KEPT || N == 0 {
            return Some((block, layout));
        }
        let index = self.next % N;
        self.next = (index + 1) % N;
        let oldest = self.slots[index].replace((address, layout))?;
        let (address, layout) = oldest;
        Some((NonNull::new(address.get() as *mut u8)?, layout))
    }

    /// How many blocks are kept now.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, System};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("a valid layout")
    }

    fn block(address: usize) -> NonNull<u8> {
        NonNull::new(address as *mut u8).expect("not null")
    }

    #[test]
    fn a_kept_block_comes_back_for_the_same_layout_only() {
        let mut blocks = FreeBlocks::<4>::new();
        assert_eq!(blocks.keep(block(0x1000), layout(96, 8)), None);
        assert_eq!(blocks.take(layout(96, 16)), None, "another alignment");
        assert_eq!(
            blocks.take(layout(80, 8)),
            None,
            "smaller: freed later as 80"
        );
        assert_eq!(blocks.take(layout(128, 8)), None, "larger");
        assert_eq!(blocks.take(layout(96, 8)), Some(block(0x1000)));
        assert_eq!(blocks.take(layout(96, 8)), None, "handed out once");
        assert!(blocks.is_empty());
    }

    #[test]
    fn it_keeps_the_last_n_small_blocks_and_gives_back_the_rest() {
        let mut blocks = FreeBlocks::<2>::new();
        let large = layout(LARGEST_KEPT + 1, 8);
        assert_eq!(
            blocks.keep(block(0x8000), large),
            Some((block(0x8000), large))
        );
        assert_eq!(blocks.keep(block(0x1000), layout(16, 8)), None);
        assert_eq!(blocks.keep(block(0x2000), layout(32, 8)), None);
        assert_eq!(
            blocks.keep(block(0x3000), layout(16, 8)),
            Some((block(0x1000), layout(16, 8))),
            "full: the block freed longest ago goes back"
        );
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks.take(layout(16, 8)), Some(block(0x3000)));
        assert_eq!(blocks.take(layout(32, 8)), Some(block(0x2000)));
        assert!(blocks.is_empty());
        assert_eq!(
            blocks.keep(block(0x4000), layout(16, 8)),
            None,
            "room again"
        );
    }

    /// The cache in front of a real allocator, as `heap.rs` puts it in front of Talc.
    struct Cached {
        blocks: Mutex<FreeBlocks<4>>,
    }

    // SAFETY: every block comes from `System` with the layout it is freed with: a kept
    // block is handed out again only for a request of that same layout.
    unsafe impl GlobalAlloc for Cached {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if let Some(block) = self.blocks.lock().expect("lock").take(layout) {
                return block.as_ptr();
            }
            // SAFETY: the caller's layout has a nonzero size.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let Some(block) = NonNull::new(ptr) else {
                return;
            };
            let back = self.blocks.lock().expect("lock").keep(block, layout);
            if let Some((block, layout)) = back {
                // SAFETY: `block` came from `System` with `layout` (see the impl).
                unsafe { System.dealloc(block.as_ptr(), layout) }
            }
        }
    }

    /// Many allocations and frees of mixed sizes and alignments, interleaved: every block
    /// handed out is aligned as asked, overlaps no other live block, and keeps what was
    /// written to it until it is freed.
    #[test]
    fn mixed_layouts_are_always_aligned_and_never_overlap() {
        let heap = Cached {
            blocks: Mutex::new(FreeBlocks::new()),
        };
        let layouts = [
            layout(8, 8),
            layout(96, 8),
            layout(96, 16),
            layout(96, 64),
            layout(100, 4),
            layout(512, 128),
            layout(4096, 4096),
            layout(1, 1),
        ];
        // A small linear congruential generator: the same sequence at every run.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % bound
        };
        let mut live: BTreeMap<usize, (Layout, u8)> = BTreeMap::new();
        for round in 0..20_000usize {
            if live.is_empty() || next(3) != 0 {
                let layout = layouts[next(layouts.len())];
                // SAFETY: every layout above has a nonzero size.
                let ptr = unsafe { heap.alloc(layout) };
                assert!(!ptr.is_null());
                let address = ptr as usize;
                assert_eq!(address % layout.align(), 0, "{layout:?} at {address:#x}");
                let end = address + layout.size();
                if let Some((&before, &(other, _))) = live.range(..end).next_back() {
                    assert!(before + other.size() <= address, "overlaps {before:#x}");
                }
                let mark = round as u8;
                // SAFETY: the block is ours, `layout.size()` bytes.
                unsafe { ptr.write_bytes(mark, layout.size()) };
                live.insert(address, (layout, mark));
            } else {
                let index = next(live.len());
                let (&address, &(layout, mark)) = live.iter().nth(index).expect("a live block");
                let ptr = address as *mut u8;
                // SAFETY: a live block of ours, `layout.size()` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
                assert!(bytes.iter().all(|&byte| byte == mark), "its bytes changed");
                live.remove(&address);
                // SAFETY: allocated by `heap` with `layout`, freed once.
                unsafe { heap.dealloc(ptr, layout) };
            }
        }
        for (address, (layout, _)) in live {
            // SAFETY: as above.
            unsafe { heap.dealloc(address as *mut u8, layout) };
        }
        // What the cache still keeps goes back to `System`.
        let mut blocks = heap.blocks.lock().expect("lock");
        for layout in layouts {
            while let Some(block) = blocks.take(layout) {
                // SAFETY: a block `System` gave out with `layout`, now free.
                unsafe { System.dealloc(block.as_ptr(), layout) };
            }
        }
        assert!(blocks.is_empty());
    }
}
