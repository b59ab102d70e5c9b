//! ggml weight formats: which ones exist, their block layout, and CPU dequantize/quantize for the
//! ones CareBot reads. Layouts and rounding follow llama.cpp's `ggml-quants.c` so that bytes and
//! floats match llama.cpp exactly (checked against fixtures from llama.cpp's own quantizer and the
//! `gguf` Python package).

mod float;
mod kquants;
mod legacy;
mod mix;

pub use float::{dequantize_bf16, dequantize_f16, dequantize_f32, quantize_bf16, quantize_f16, quantize_f32};
pub use kquants::{
    check_k_block, dequantize_q4_k, dequantize_q5_k, dequantize_q6_k, quantize_q4_k, quantize_q5_k, quantize_q6_k,
};
pub use legacy::{
    dequantize_q4_0, dequantize_q4_1, dequantize_q5_0, dequantize_q5_1, dequantize_q8_0, quantize_q4_0, quantize_q4_1,
    quantize_q5_0, quantize_q5_1, quantize_q8_0,
};
pub use mix::TypeMix;

/// Super-block size of the k-quants.
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block:expr, $bytes:expr;)*) => {
        /// Every tensor type a GGUF file may name (ggml's `enum ggml_type`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum GgmlType { $($variant),* }

        impl GgmlType {
            /// The type for a GGUF type id, `None` for ids ggml never defined (or removed).
            pub fn from_id(id: u32) -> Option<Self> {
                match id { $($id => Some(Self::$variant),)* _ => None }
            }
            pub fn id(self) -> u32 {
                match self { $(Self::$variant => $id),* }
            }
            /// The name llama.cpp prints, e.g. `Q4_K`.
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
            /// Elements per block.
            pub fn block_size(self) -> usize {
                match self { $(Self::$variant => $block),* }
            }
            /// Bytes per block.
            pub fn block_bytes(self) -> usize {
                match self { $(Self::$variant => $bytes),* }
            }
            pub fn from_name(name: &str) -> Option<Self> {
                match name.to_ascii_uppercase().as_str() { $($name => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 36;
    Q2_K = 10, "Q2_K", QK_K, 84;
    Q3_K = 11, "Q3_K", QK_K, 110;
    Q4_K = 12, "Q4_K", QK_K, 144;
    Q5_K = 13, "Q5_K", QK_K, 176;
    Q6_K = 14, "Q6_K", QK_K, 210;
    Q8_K = 15, "Q8_K", QK_K, 292;
    IQ2_XXS = 16, "IQ2_XXS", QK_K, 66;
    IQ2_XS = 17, "IQ2_XS", QK_K, 74;
    IQ3_XXS = 18, "IQ3_XXS", QK_K, 98;
    IQ1_S = 19, "IQ1_S", QK_K, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", QK_K, 110;
    IQ2_S = 22, "IQ2_S", QK_K, 82;
    IQ4_XS = 23, "IQ4_XS", QK_K, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", QK_K, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", QK_K, 54;
    TQ2_0 = 35, "TQ2_0", QK_K, 66;
    MXFP4 = 39, "MXFP4", 32, 17;
}

/// The weight types CareBot can dequantize (and quantize), in the order `carebot info` lists them.
pub const SUPPORTED_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Errors from converting between f32 and a weight format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error(
        "weight type {0} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
    )]
    Unsupported(&'static str),
    #[error("{ty}: {elements} values is not a whole number of {block}-value blocks")]
    NotBlockAligned { ty: &'static str, elements: usize, block: usize },
    #[error("{ty}: {bytes} bytes do not hold {elements} values (need {expected} bytes)")]
    SizeMismatch { ty: &'static str, bytes: usize, elements: usize, expected: usize },
}

impl GgmlType {
    pub fn is_supported(self) -> bool {
        SUPPORTED_TYPES.contains(&self)
    }

    /// Whether the values are small integers times scales (every supported type but the floats),
    /// so that a product can multiply them with integer activations ([`round_to_int8_blocks`]).
    pub fn has_integer_quants(self) -> bool {
        self.is_supported() && !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// Bytes needed for `n` values, or `None` if `n` is not a whole number of blocks (or overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n.is_multiple_of(block) {
            return None;
        }
        (n / block).checked_mul(self.block_bytes() as u64)
    }

    fn check(self, bytes: usize, elements: usize) -> Result<(), QuantError> {
        if !self.is_supported() {
            return Err(QuantError::Unsupported(self.name()));
        }
        if !elements.is_multiple_of(self.block_size()) {
            return Err(QuantError::NotBlockAligned { ty: self.name(), elements, block: self.block_size() });
        }
        let expected = elements / self.block_size() * self.block_bytes();
        if bytes != expected {
            return Err(QuantError::SizeMismatch { ty: self.name(), bytes, elements, expected });
        }
        Ok(())
    }
}

/// Values per block of [`round_to_int8_blocks`]: half of a 32-weight chunk, whose 16 weights share
/// one scale in every integer format.
pub const INT8_BLOCK: usize = 16;

/// Rounds `x` in place to what the GPU's int8 activations represent (`x_int8` in
/// `shaders/int8.wgsl`): each aligned block of 16 values becomes d · q with
/// d = max |x| / 127 and q = round(x / d) (to nearest, ties to even), q in −127 ..= 127. A tail
/// shorter than 16 is a block of its own. Computed as the GPU does (d = max · (1 / 127), then
/// x · (1 / d)), so the two agree except where a value falls within an f32 rounding of a tie.
pub fn round_to_int8_blocks(x: &mut [f32]) {
    for block in x.chunks_mut(INT8_BLOCK) {
        let d = block.iter().fold(0f32, |m, v| m.max(v.abs())) * (1.0 / 127.0);
        let inv_d = if d > 0.0 { 1.0 / d } else { 0.0 };
        for v in block {
            *v = (*v * inv_d).round_ties_even() * d;
        }
    }
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst`; `dst.len()` says how many values.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    ty.check(src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => dequantize_f32(src, dst),
        GgmlType::F16 => dequantize_f16(src, dst),
        GgmlType::BF16 => dequantize_bf16(src, dst),
        GgmlType::Q8_0 => dequantize_q8_0(src, dst),
        GgmlType::Q4_0 => dequantize_q4_0(src, dst),
        GgmlType::Q4_1 => dequantize_q4_1(src, dst),
        GgmlType::Q5_0 => dequantize_q5_0(src, dst),
        GgmlType::Q5_1 => dequantize_q5_1(src, dst),
        GgmlType::Q4_K => dequantize_q4_k(src, dst),
        GgmlType::Q5_K => dequantize_q5_k(src, dst),
        GgmlType::Q6_K => dequantize_q6_k(src, dst),
        _ => unreachable!("check() rejects unsupported types"),
    }
    Ok(())
}

/// Quantizes `src` into `ty` blocks with llama.cpp's reference quantizers (no importance matrix).
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let n = src.len();
    if !ty.is_supported() {
        return Err(QuantError::Unsupported(ty.name()));
    }
    if !n.is_multiple_of(ty.block_size()) {
        return Err(QuantError::NotBlockAligned { ty: ty.name(), elements: n, block: ty.block_size() });
    }
    let mut dst = vec![0u8; n / ty.block_size() * ty.block_bytes()];
    match ty {
        GgmlType::F32 => quantize_f32(src, &mut dst),
        GgmlType::F16 => quantize_f16(src, &mut dst),
        GgmlType::BF16 => quantize_bf16(src, &mut dst),
        GgmlType::Q8_0 => quantize_q8_0(src, &mut dst),
        GgmlType::Q4_0 => quantize_q4_0(src, &mut dst),
        GgmlType::Q4_1 => quantize_q4_1(src, &mut dst),
        GgmlType::Q5_0 => quantize_q5_0(src, &mut dst),
        GgmlType::Q5_1 => quantize_q5_1(src, &mut dst),
        GgmlType::Q4_K => quantize_q4_k(src, &mut dst),
        GgmlType::Q5_K => quantize_q5_k(src, &mut dst),
        GgmlType::Q6_K => quantize_q6_k(src, &mut dst),
        _ => unreachable!("rejected above"),
    }
    Ok(dst)
}

/// f16 stored little-endian at `b[0..2]`, widened to f32.
#[inline]
pub(crate) fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

#[inline]
pub(crate) fn put_f16(b: &mut [u8], v: f32) {
    b[..2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// ggml's `nearest_int`: round half to even through the float-magic trick (valid for |x| < 2^22).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}
