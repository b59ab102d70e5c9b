// The layout F32, F16 and BF16 share: plain values in order (BLOCK_BYTES_$W each, given by the
// format), 32 to a chunk; rows are a multiple of 32 long, so chunks are 16-byte aligned.
const BLOCK_ELEMS_$W: u32 = 1u;

struct Head_$W {
    b: u32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    return Head_$W(row_byte + chunk * 32u * BLOCK_BYTES_$W);
}
