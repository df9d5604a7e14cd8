//! gdb's watchpoints as the debug registers can hold them: a pure part of the stub
//! (`target.rs`), tested on the host.

use alloc::vec::Vec;

/// `length` bytes from `address` as the aligned pieces of 1, 2, 4 or 8 bytes a debug
/// register can watch, the largest first where alignment allows (at most 4: there are 4
/// slots; none for an empty range).
pub fn watch_pieces(address: u64, length: u64) -> Vec<(u64, u64)> {
    // In 128 bits: a range may end at the top of the address space, 2^64 (gdb's numbers are
    // input, and `0xffff_ffff_ffff_fff8, 8` is one aligned piece).
    let mut pieces = Vec::new();
    let (mut at, end) = (address as u128, address as u128 + length as u128);
    while at < end && pieces.len() <= 4 {
        let size = [8u128, 4, 2, 1]
            .into_iter()
            .find(|&size| at.is_multiple_of(size) && at + size <= end)
            .unwrap_or(1);
        pieces.push((at as u64, size as u64));
        at += size;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::watch_pieces;

    #[test]
    fn a_watch_at_the_top_of_the_address_space_is_split_without_wrapping() {
        // An aligned 8 bytes ending at 2^64: one slot. A range past the end: what lies below it.
        assert_eq!(
            watch_pieces(0xffff_ffff_ffff_fff8, 8),
            [(0xffff_ffff_ffff_fff8, 8)]
        );
        assert_eq!(
            watch_pieces(0xffff_ffff_ffff_ffff, 1),
            [(0xffff_ffff_ffff_ffff, 1)]
        );
        assert_eq!(watch_pieces(0x1006, 4), [(0x1006, 2), (0x1008, 2)]);
        assert_eq!(watch_pieces(0x1000, 0), []);
    }
}
