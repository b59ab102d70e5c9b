//! Numbers that cross from JavaScript, where sizes and counts are doubles. File offsets and sizes
//! stay `u64` in Rust (models pass 4 GiB, and `usize` is 32 bits in wasm32); this is the one place a
//! double becomes one, checked instead of cast.

/// A size or count JavaScript gives as a number (`File.size`, `getSize()`, bytes read or
/// written, a storage estimate): a whole number from 0 to 2^53, where doubles are exact; `None`
/// for anything else.
pub fn js_u64(x: f64) -> Option<u64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    // Checked just above: whole, not negative, and at most 2^53, so the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= EXACT).then_some(x as u64);
    n
}

/// Milliseconds for a timer (`setTimeout` takes a u32): rounded up, and at most about 49 days.
pub fn js_u32_ms(ms: f64) -> u32 {
    let ms = if ms.is_nan() { 0.0 } else { ms.ceil().clamp(0.0, f64::from(u32::MAX)) };
    // Clamped just above to 0..=u32::MAX and whole: the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = ms as u32;
    whole
}

#[cfg(test)]
mod tests {
    use super::{js_u32_ms, js_u64};

    #[test]
    fn timer_milliseconds_round_up_and_stay_in_range() {
        assert_eq!(js_u32_ms(10_000.2), 10_001);
        assert_eq!(js_u32_ms(-5.0), 0);
        assert_eq!(js_u32_ms(f64::NAN), 0);
        assert_eq!(js_u32_ms(1e300), u32::MAX);
    }

    #[test]
    fn sizes_past_four_gib_cross_exactly_and_nonsense_does_not() {
        assert_eq!(js_u64(4_902_135_808.0), Some(4_902_135_808));
        assert_eq!(js_u64(0.0), Some(0));
        assert_eq!(js_u64(9_007_199_254_740_992.0), Some(1 << 53));
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(js_u64(bad), None, "{bad}");
        }
    }
}
