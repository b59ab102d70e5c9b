//! File offsets and sizes stay `u64` everywhere: models pass 4 GiB, and in the browser `usize` is
//! 32 bits. An offset becomes a `usize` only as the length of a bounded piece, or as a position
//! inside bytes already in memory; these are those conversions, so none can silently wrap.
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

/// The length of the next piece: the `remaining` bytes, at most `cap`.
pub fn piece_len(remaining: u64, cap: usize) -> usize {
    usize::try_from(remaining).map_or(cap, |r| r.min(cap))
}

/// The bytes at file offsets `lo..hi` of `piece`, which holds the file from offset `start` on;
/// `None` where they are not all in it.
pub fn slice_at(piece: &[u8], start: u64, lo: u64, hi: u64) -> Option<&[u8]> {
    let from = usize::try_from(lo.checked_sub(start)?).ok()?;
    let to = usize::try_from(hi.checked_sub(start)?).ok()?;
    piece.get(from..to)
}

/// `bytes` as a length to allocate, or `None` where it cannot be one on this machine.
pub fn alloc_len(bytes: u64) -> Option<usize> {
    usize::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_past_four_gib_keep_their_length() {
        let size = (4u64 << 30) + 300;
        // The piece whose remainder crosses 2^32 (wrapped to 300 by an `as u32`-sized usize).
        assert_eq!(piece_len(size - (8 << 20), 8 << 20), 8 << 20);
        assert_eq!(piece_len(size - (4u64 << 30), 8 << 20), 300);
        assert_eq!(piece_len(0, 8 << 20), 0);
        assert_eq!(piece_len(u64::MAX, 5), 5);
    }

    #[test]
    fn slices_are_found_by_file_offset_or_not_at_all() {
        let piece = [1u8, 2, 3, 4];
        let start = 5u64 << 30;
        assert_eq!(slice_at(&piece, start, start + 1, start + 3), Some(&[2u8, 3][..]));
        assert_eq!(slice_at(&piece, start, start - 1, start + 3), None);
        assert_eq!(slice_at(&piece, start, start + 2, start + 5), None);
        assert_eq!(slice_at(&piece, start, start + 3, start + 2), None);
    }
}
