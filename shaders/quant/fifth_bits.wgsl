// Shared by Q5_0 and Q5_1, which keep the fifth bit of weight e of a block in bit e of a word.

// The 4 fifth bits of weights 4i .. 4i + 3, each moved to bit 4 of its byte.
fn fifth_bits4_$W(qh: u32, i: u32) -> u32 {
    let b = qh >> (4u * i);
    return ((b & 1u) | ((b & 2u) << 7u) | ((b & 4u) << 14u) | ((b & 8u) << 21u)) << 4u;
}
