//! Assembles WGSL modules from the files in `shaders/`: a kernel, the weight-format functions it
//! is instantiated with, and `#if` flags. Variants that differ only in a weight type, the KV cache
//! format or an epilogue come from one source file this way instead of copies.

use crate::ops::attention;
use crate::ops::matmul::{MatvecRows, PrefillTile};
use carebot_model::quant::GgmlType;
use std::collections::BTreeSet;

macro_rules! shader {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/", $name))
    };
}

const COMMON: &str = shader!("common.wgsl");
const EPILOGUE: &str = shader!("epilogue.wgsl");
const PRODUCT_IO: &str = shader!("product_io.wgsl");
const KV: &str = shader!("kv.wgsl");
const BYTES: &str = shader!("quant/bytes.wgsl");
const K_SCALES: &str = shader!("quant/k_scales.wgsl");
const FIFTH_BITS: &str = shader!("quant/fifth_bits.wgsl");
const FLOATS: &str = shader!("quant/floats.wgsl");
const HALF_FLOATS: &str = shader!("quant/half_floats.wgsl");
const MATVEC_ROW: &str = shader!("matvec_row.wgsl");
const MATVEC_CHUNK: &str = shader!("matvec_chunk.wgsl");
const MATVEC_CHUNK_INT8: &str = shader!("matvec_chunk_int8.wgsl");
const MATMUL_STEP: &str = shader!("matmul_step.wgsl");
const INT8: &str = shader!("int8.wgsl");
/// For the integer formats, which give their weights' bytes (`qbytes4_$W`: 4 weights q as bytes,
/// w = scale · (q − QOFFSET) + min; signed bytes where SIGNED): the same weights as floats.
const QUANTS4_FROM_BYTES: &str = "fn quants4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    if (SIGNED_$W) {
        // A signed byte with its top bit flipped is q + 128.
        return ints_to_f32(bytes4(qbytes4_$W(h, i) ^ 0x80808080u), 128.0);
    }
    return ints_to_f32(bytes4(qbytes4_$W(h, i)), f32(QOFFSET_$W));
}
";
/// For the formats whose chunk c is weights 32c .. 32c + 31 in order (the others define `x4_$W`).
const X4_IN_ORDER: &str = "fn x4_$W(chunk: u32, i: u32) -> u32 {\n    return chunk * 8u + i;\n}\n";
/// For the float formats, whose values need no scale (the others define `scales_$W`).
const UNSCALED: &str = "const MINS_$W: bool = false;
fn scales_$W(h: Head_$W) -> mat2x2<f32> {
    return mat2x2<f32>(1.0, 0.0, 1.0, 0.0);
}
";
/// Every format's weights from its unscaled values and their half's (scale, min).
const DEQUANT4: &str = "fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let sm = scales_$W(h)[i >> 2u];
    if (MINS_$W) {
        return sm.x * quants4_$W(h, i) + sm.y;
    }
    return sm.x * quants4_$W(h, i);
}
";

/// The kernels, one concern per file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    Embed,
    RmsNorm,
    Rope,
    MatVec,
    MatMul,
    /// The prefill product on cooperative matrices (GpuContext::coop_matrix).
    MatMulCoop,
    Attention,
    AttentionMerge,
    Select,
    SelectMerge,
    Bandwidth,
    FmaPeak,
    /// f32 → Q4_K, or Q6_K with the `Q6_K` flag, byte for byte like the CPU quantizer.
    QuantizeK,
    /// x → int8 blocks for the prefill products' int8 activations.
    RoundInt8,
}

impl Kernel {
    fn source(self) -> &'static str {
        match self {
            Kernel::Embed => shader!("embed.wgsl"),
            Kernel::RmsNorm => shader!("rms_norm.wgsl"),
            Kernel::Rope => shader!("rope.wgsl"),
            Kernel::MatVec => shader!("matvec.wgsl"),
            Kernel::MatMul => shader!("matmul.wgsl"),
            Kernel::MatMulCoop => shader!("matmul_coop.wgsl"),
            Kernel::Attention => concat!(shader!("attention_params.wgsl"), shader!("attention.wgsl")),
            Kernel::AttentionMerge => concat!(shader!("attention_params.wgsl"), shader!("attention_merge.wgsl")),
            Kernel::Select => shader!("select.wgsl"),
            // Phase two shares phase one's helpers; its variants carry the SELECT_MERGE flag,
            // which leaves out phase one's entry point.
            Kernel::SelectMerge => concat!(shader!("select.wgsl"), shader!("select_merge.wgsl")),
            Kernel::Bandwidth => shader!("bandwidth.wgsl"),
            Kernel::FmaPeak => shader!("fma_peak.wgsl"),
            // Exact division, sqrt and f16 conversion first, then the quantizer.
            Kernel::QuantizeK => concat!(shader!("quant/ieee.wgsl"), shader!("quantize_k.wgsl")),
            Kernel::RoundInt8 => shader!("round_int8.wgsl"),
        }
    }
}

/// The WGSL that decodes one weight format, or `None` for a type the engine cannot read:
/// `BLOCK_ELEMS_$W`, `BLOCK_BYTES_$W`; `chunk_$W`, the head of 32 weights (their bytes, scales);
/// 4 of its weights before scaling: `qbytes4_$W` (as bytes, with `QOFFSET_$W` and `SIGNED_$W`)
/// in the integer formats, `quants4_$W` (as floats) in the float ones; `scales_$W`, the (scale,
/// min) of each half of the chunk (weights 0–15, 16–31), so that w = scale · q + min and the
/// matrix–vector product can scale whole sums of q · x, and `MINS_$W`, whether the mins are not
/// all 0 (both left out by the float formats); `x4_$W` where a chunk's weights are not 32 in a
/// row (a half's 16 weights always multiply 16 consecutive x values starting at a multiple of
/// 16, the blocks of the int8 activations). Formats may read the kernel's `p.cols`.
pub fn weight_format(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => shader!("quant/f32.wgsl"),
        GgmlType::F16 => shader!("quant/f16.wgsl"),
        GgmlType::BF16 => shader!("quant/bf16.wgsl"),
        GgmlType::Q4_0 => shader!("quant/q4_0.wgsl"),
        GgmlType::Q4_1 => shader!("quant/q4_1.wgsl"),
        GgmlType::Q5_0 => shader!("quant/q5_0.wgsl"),
        GgmlType::Q5_1 => shader!("quant/q5_1.wgsl"),
        GgmlType::Q8_0 => shader!("quant/q8_0.wgsl"),
        GgmlType::Q4_K => shader!("quant/q4_k.wgsl"),
        GgmlType::Q5_K => shader!("quant/q5_k.wgsl"),
        GgmlType::Q6_K => shader!("quant/q6_k.wgsl"),
        _ => return None,
    })
}

/// The WGSL parts that describe weight format `ty` to the kernels (`$W` for its letter): its
/// decoder and the shared pieces it builds on, with the defaults it does not define itself.
fn format_parts(ty: GgmlType) -> Vec<&'static str> {
    let format = weight_format(ty).expect("weight types are checked at load");
    let mut parts = vec![BYTES];
    if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K) {
        parts.push(K_SCALES);
    }
    if matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1) {
        parts.push(FIFTH_BITS);
    }
    if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        parts.push(FLOATS);
    }
    if matches!(ty, GgmlType::F16 | GgmlType::BF16) {
        parts.push(HALF_FLOATS);
    }
    parts.push(format);
    if !parts.iter().any(|part| part.contains("fn x4_$W")) {
        parts.push(X4_IN_ORDER);
    }
    if !parts.iter().any(|part| part.contains("fn scales_$W")) {
        parts.push(UNSCALED);
    }
    if ty.has_integer_quants() {
        parts.push(QUANTS4_FROM_BYTES);
    }
    parts.push(DEQUANT4);
    parts
}

/// Which x values a format's chunks multiply: the WGSL part that defines its `x4_$W`. Formats
/// with the same one can share one pass over x (the cooperative-matrix SwiGLU product stages x
/// once for gate and up).
pub fn chunk_order(ty: GgmlType) -> &'static str {
    format_parts(ty).into_iter().find(|part| part.contains("fn x4_$W")).expect("X4_IN_ORDER is the default")
}

macro_rules! flags {
    ($($(#[$doc:meta])* $flag:ident => $name:literal,)*) => {
        /// The `#if` flags of the WGSL sources (`shaders/`), typed: a misspelt flag does not
        /// compile, where a misspelt string would silently select the other branch.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Flag { $($(#[$doc])* $flag),* }

        impl Flag {
            pub const ALL: &[Flag] = &[$(Flag::$flag),*];

            /// The name the sources' `#if` lines use.
            pub fn name(self) -> &'static str {
                match self { $(Flag::$flag => $name),* }
            }
        }
    };
}

flags! {
    /// A product adds its result to the output (the residual).
    Add => "ADD",
    /// A product binds the model's `consts` buffer (set with `NormNext` and `Qkv`).
    Consts => "CONSTS",
    /// The FMA peak kernel in f16.
    F16 => "F16",
    /// The KV cache in f16 (`KvStorage::F16`).
    KvF16 => "KV_F16",
    /// The KV cache in f32 (`KvStorage::F32`).
    KvF32 => "KV_F32",
    /// A product scales x by the RMSNorm a `NormNext` product prepared.
    Norm => "NORM",
    /// A product also sums the squares of its output for the next RMSNorm.
    NormNext => "NORM_NEXT",
    /// The quantizer makes Q6_K (else Q4_K).
    Q6K => "Q6_K",
    /// The fused q, k, v projection with RoPE and the KV append.
    Qkv => "QKV",
    /// Phase two of the top-k selection.
    SelectMerge => "SELECT_MERGE",
    /// Sums across lanes with `subgroupAdd` (only where the adapter has subgroups).
    Subgroups => "SUBGROUPS",
    /// A product of two matrices whose outputs meet in SwiGLU (gate and up).
    Swiglu => "SWIGLU",
    /// The decode products read x as int8 blocks (packed integer dot products).
    XInt8 => "X_INT8",
    /// The prefill products read x rounded to int8 by `Kernel::RoundInt8`.
    XRounded => "X_ROUNDED",
}

/// How the KV cache holds keys and values; the kernels that write or read it are compiled for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvStorage {
    F32,
    /// f16 in WGSL's own type (needs `shader-f16`).
    F16,
    /// f16 bit patterns packed two to a u32, for adapters without `shader-f16`.
    Packed,
}

impl KvStorage {
    /// The flag that selects its branch (`Packed` is the one with neither).
    pub fn flag(self) -> Option<Flag> {
        match self {
            KvStorage::F32 => Some(Flag::KvF32),
            KvStorage::F16 => Some(Flag::KvF16),
            KvStorage::Packed => None,
        }
    }

    /// Bytes of one stored value.
    pub fn value_bytes(self) -> usize {
        match self {
            KvStorage::F32 => 4,
            KvStorage::F16 | KvStorage::Packed => 2,
        }
    }
}

/// Everything that selects one compiled variant of a kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub kernel: Kernel,
    /// Weight formats bound as `weights_a`, `weights_b`, `weights_c`.
    pub weights: Vec<GgmlType>,
    /// `#if` flags that are on.
    pub flags: BTreeSet<Flag>,
    /// The KV cache's storage, for the kernels that read or write it.
    pub kv: Option<KvStorage>,
    /// The matmul's register tile.
    pub tile: PrefillTile,
    /// Rows per matvec workgroup (each invocation sums two adjacent rows against the same x
    /// values, so (ROWS / 2) × LANES = 256 invocations).
    pub matvec_rows: MatvecRows,
    /// Query heads per attention workgroup.
    pub attention_heads: u32,
    /// The side of the cooperative matrices (`Kernel::MatMulCoop`).
    pub coop_side: u32,
}

impl Variant {
    pub fn new(kernel: Kernel) -> Self {
        Variant {
            kernel,
            weights: Vec::new(),
            flags: BTreeSet::new(),
            kv: None,
            tile: PrefillTile::default(),
            matvec_rows: MatvecRows::default(),
            attention_heads: 1,
            coop_side: 16,
        }
    }
    pub fn weight(mut self, ty: GgmlType) -> Self {
        self.weights.push(ty);
        self
    }
    pub fn flag(mut self, flag: Flag) -> Self {
        self.flags.insert(flag);
        self
    }
    pub fn flag_if(self, on: bool, flag: Flag) -> Self {
        if on { self.flag(flag) } else { self }
    }
    pub fn kv(mut self, storage: KvStorage) -> Self {
        self.kv = Some(storage);
        self
    }
    pub fn tile(mut self, tile: PrefillTile) -> Self {
        self.tile = tile;
        self
    }
    pub fn matvec_rows(mut self, rows: MatvecRows) -> Self {
        self.matvec_rows = rows;
        self
    }
    pub fn coop_side(mut self, side: u32) -> Self {
        self.coop_side = side;
        self
    }
    pub fn attention_heads(mut self, heads: u32) -> Self {
        self.attention_heads = heads;
        self
    }

    /// The complete WGSL module.
    pub fn source(&self) -> String {
        let mut src = String::new();
        if self.kv == Some(KvStorage::F16) || self.flags.contains(&Flag::F16) || self.kernel == Kernel::MatMulCoop {
            // `enable` must precede every declaration.
            src.push_str("enable f16;\n");
        }
        if self.kernel == Kernel::MatMulCoop {
            src.push_str("enable wgpu_cooperative_matrix;\n");
        }
        // WebGPU requires the directive for subgroup operations, and naga (native) rejects it.
        // (wgpu 30 does not yet offer the WebGPU feature, so no browser gets here today.)
        if self.flags.contains(&Flag::Subgroups) && cfg!(target_arch = "wasm32") {
            src.push_str("enable subgroups;\n");
        }
        src.push_str(COMMON);
        let int8 = self.kernel == Kernel::MatVec && self.flags.contains(&Flag::XInt8);
        if int8 || self.flags.contains(&Flag::XRounded) || self.kernel == Kernel::RoundInt8 {
            src.push_str(INT8);
        }
        for (ty, name) in self.weights.iter().zip(["a", "b", "c"]) {
            src.push_str(&format!("const ROW_ALIGN_{name}: u32 = {}u;\n", crate::weights::row_align(*ty)));
            let mut parts = format_parts(*ty);
            if self.kernel == Kernel::MatVec {
                // X_INT8 is set only where every matrix has integer quants (matmul::int8_activations).
                parts.push(if int8 { MATVEC_CHUNK_INT8 } else { MATVEC_CHUNK });
                parts.push(MATVEC_ROW);
            }
            if self.kernel == Kernel::MatMul {
                parts.push(MATMUL_STEP);
            }
            for part in parts {
                src.push_str(&part.replace("$W", name));
            }
        }
        if self.kv.is_some() {
            src.push_str(KV);
        }
        let body = self.kernel.source();
        if matches!(self.kernel, Kernel::MatVec | Kernel::MatMul | Kernel::MatMulCoop) {
            src.push_str(PRODUCT_IO);
        }
        if body.contains("write_out(") {
            src.push_str(EPILOGUE);
        }
        src.push_str(body);
        // The matrix products bind the model's `consts` buffer when a fusion reads it.
        let mut flags = self.flags.clone();
        if flags.contains(&Flag::NormNext) || flags.contains(&Flag::Qkv) {
            flags.insert(Flag::Consts);
        }
        flags.extend(self.kv.and_then(KvStorage::flag));
        let swiglu = flags.contains(&Flag::Swiglu);
        let tile = self.tile;
        let rows = tile.invocation_rows(swiglu);
        preprocess(&src, &flags.iter().map(|f| f.name()).collect())
            .replace("{{MATVEC_ROWS}}", &self.matvec_rows.0.to_string())
            .replace("{{MATVEC_LANES}}", &self.matvec_rows.lanes().to_string())
            .replace("{{MATMUL_ROWS}}", &rows.to_string())
            .replace("{{MATMUL_TOKENS}}", &tile.tokens.to_string())
            .replace("{{COOP_ROWS}}", &crate::ops::matmul::coop_rows(swiglu).to_string())
            .replace("{{COOP}}", &self.coop_side.to_string())
            .replace("{{MATMUL_ACC}}", &(rows * tile.tokens / 4).to_string())
            .replace("{{ATTENTION_HEADS}}", &self.attention_heads.to_string())
            .replace("{{ATTENTION_KEYS_PER_SPLIT}}", &attention::KEYS_PER_SPLIT.to_string())
            .replace("{{ATTENTION_MAX_SPLITS}}", &attention::MAX_SPLITS.to_string())
    }
}

impl Variant {
    /// A file name for this variant's WGSL: the kernel, its formats, and a hash of the rest.
    pub fn file_name(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        let formats: Vec<&str> = self.weights.iter().map(|t| t.name()).collect();
        format!("{:?}-{}-{:016x}.wgsl", self.kernel, formats.join("-"), h.finish())
    }
}

/// With `CAREBOT_DUMP_WGSL=DIR`, writes the WGSL of `variant` into DIR (each variant the engine
/// compiles, for reading or for other tools; native only).
pub fn dump(variant: &Variant, source: &str) {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(dir) = std::env::var_os("CAREBOT_DUMP_WGSL") {
        let path = std::path::Path::new(&dir).join(variant.file_name());
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, source)) {
            eprintln!("CAREBOT_DUMP_WGSL: {}: {e}", path.display());
        }
    }
    #[cfg(target_arch = "wasm32")]
    let _ = (variant, source);
}

/// Every variant the engine can plan: each kernel with every weight format it takes (the
/// products also in the mixes a Q4_K_M file has), epilogue, fusion, KV storage, `#if` flag an
/// adapter can turn on, and workgroup shape. The cooperative-matrix kernel has its own test.
pub fn plannable_variants() -> Vec<Variant> {
    use carebot_model::quant::SUPPORTED_TYPES;
    let kv_storages = [KvStorage::F32, KvStorage::F16, KvStorage::Packed];
    let mut out = Vec::new();
    // (weights, whether int8 activations may be on for them)
    let mut products: Vec<Vec<GgmlType>> = SUPPORTED_TYPES.iter().map(|&t| vec![t]).collect();
    products.push(vec![GgmlType::Q4_K, GgmlType::Q6_K]);
    for weights in &products {
        let int8_options: &[bool] =
            if weights.iter().all(|t| t.has_integer_quants()) { &[false, true] } else { &[false] };
        // SwiGLU takes gate and up: the same format twice, or the formats given.
        let swiglu_weights = if weights.len() == 1 { vec![weights[0], weights[0]] } else { weights.clone() };
        for &int8 in int8_options {
            // The matrix–vector product (decode): every epilogue, folded norms, subgroups.
            for rows in MatvecRows::ALL {
                for subgroups in [false, true] {
                    for (epilogue, norm_next) in
                        [(None, false), (Some(Flag::Add), false), (Some(Flag::Add), true), (Some(Flag::Swiglu), false)]
                    {
                        for norm in [false, true] {
                            let ws =
                                if epilogue == Some(Flag::Swiglu) { &swiglu_weights } else { &weights[..1].to_vec() };
                            let mut v = Variant::new(Kernel::MatVec).matvec_rows(rows);
                            for &t in ws {
                                v = v.weight(t);
                            }
                            v = v
                                .flag_if(subgroups, Flag::Subgroups)
                                .flag_if(int8, Flag::XInt8)
                                .flag_if(norm, Flag::Norm);
                            if let Some(e) = epilogue {
                                v = v.flag(e);
                            }
                            out.push(v.flag_if(norm_next, Flag::NormNext));
                        }
                    }
                }
            }
            // The tiled matrix–matrix product (prefill): every tile and epilogue, x in f32 or
            // rounded to int8.
            for tile in PrefillTile::ALL {
                for epilogue in [None, Some(Flag::Add), Some(Flag::Swiglu)] {
                    let ws =
                        if epilogue == Some(Flag::Swiglu) { swiglu_weights.clone() } else { weights[..1].to_vec() };
                    let mut v = Variant::new(Kernel::MatMul).tile(tile);
                    for t in ws {
                        v = v.weight(t);
                    }
                    if let Some(e) = epilogue {
                        v = v.flag(e);
                    }
                    out.push(v.flag_if(int8, Flag::XRounded));
                }
            }
        }
    }
    // The fused q, k, v projection: one format for all three, or Q4_K_M's mix.
    let mut triples: Vec<[GgmlType; 3]> = SUPPORTED_TYPES.iter().map(|&t| [t; 3]).collect();
    triples.push([GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K]);
    for triple in triples {
        let int8_options: &[bool] =
            if triple.iter().all(|t| t.has_integer_quants()) { &[false, true] } else { &[false] };
        for &int8 in int8_options {
            for kv in kv_storages {
                for rows in MatvecRows::ALL {
                    for subgroups in [false, true] {
                        for norm in [false, true] {
                            let mut v = Variant::new(Kernel::MatVec).matvec_rows(rows).flag(Flag::Qkv).kv(kv);
                            for t in triple {
                                v = v.weight(t);
                            }
                            out.push(
                                v.flag_if(norm, Flag::Norm)
                                    .flag_if(subgroups, Flag::Subgroups)
                                    .flag_if(int8, Flag::XInt8),
                            );
                        }
                    }
                }
            }
        }
    }
    for kv in kv_storages {
        out.push(Variant::new(Kernel::Rope).kv(kv));
        for heads in [1, 2, 4, 8] {
            out.push(Variant::new(Kernel::Attention).kv(kv).attention_heads(heads));
        }
    }
    for ty in SUPPORTED_TYPES {
        out.push(Variant::new(Kernel::Embed).weight(ty));
    }
    out.extend([
        Variant::new(Kernel::AttentionMerge),
        Variant::new(Kernel::RmsNorm),
        Variant::new(Kernel::Select),
        Variant::new(Kernel::SelectMerge).flag(Flag::SelectMerge),
        Variant::new(Kernel::Bandwidth),
        Variant::new(Kernel::FmaPeak),
        Variant::new(Kernel::FmaPeak).flag(Flag::F16),
        Variant::new(Kernel::QuantizeK),
        Variant::new(Kernel::QuantizeK).flag(Flag::Q6K),
        Variant::new(Kernel::RoundInt8),
    ]);
    // The mixed pair also lists its first format's single-matrix variants again.
    let mut seen = std::collections::HashSet::new();
    out.retain(|v| seen.insert(v.clone()));
    out
}

/// Keeps the lines selected by `#if FLAG` / `#elif FLAG` / `#else` / `#endif` (nestable).
pub fn preprocess(src: &str, flags: &BTreeSet<&'static str>) -> String {
    // Per open `#if`: (is this branch on, has any branch been taken, was the enclosing text on).
    let mut stack: Vec<(bool, bool, bool)> = Vec::new();
    let mut on = true;
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let t = line.trim();
        if let Some(flag) = t.strip_prefix("#if ") {
            let hit = flags.contains(flag.trim());
            stack.push((hit, hit, on));
            on = on && hit;
        } else if let Some(flag) = t.strip_prefix("#elif ") {
            let top = stack.last_mut().expect("#elif without #if");
            let hit = !top.1 && flags.contains(flag.trim());
            top.0 = hit;
            top.1 |= hit;
            on = top.2 && hit;
        } else if t == "#else" {
            let top = stack.last_mut().expect("#else without #if");
            top.0 = !top.1;
            top.1 = true;
            on = top.2 && top.0;
        } else if t == "#endif" {
            let top = stack.pop().expect("#endif without #if");
            on = top.2;
        } else if on {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(stack.is_empty(), "unclosed #if");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cooperative-matrix prefill kernel at both sides, every format and epilogue, through
    /// naga's WGSL front end, validator and SPIR-V back end (what wgpu does before Vulkan sees
    /// it): lavapipe runs only the 8×8 one (tests/ops.rs), GPUs the 16×16 one. With
    /// `CAREBOT_SPIRV_OUT` set, the SPIR-V goes into that folder.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn the_cooperative_matrix_kernel_compiles_at_both_sides() {
        use naga::valid::{Capabilities, ValidationFlags, Validator};
        for side in [8, 16] {
            for ty in carebot_model::quant::SUPPORTED_TYPES {
                for epilogue in ["STORE", "ADD", "SWIGLU"] {
                    let mut v = Variant::new(Kernel::MatMulCoop).coop_side(side).weight(ty);
                    if epilogue == "SWIGLU" {
                        v = v.weight(ty).flag(Flag::Swiglu);
                    }
                    if epilogue == "ADD" {
                        v = v.flag(Flag::Add);
                    }
                    let src = v.source();
                    let what = format!("{side}×{side} {} {epilogue}", ty.name());
                    let module = naga::front::wgsl::parse_str(&src)
                        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
                    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
                        .validate(&module)
                        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
                    let options = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
                    let words = naga::back::spv::write_vec(&module, &info, &options, None)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    // scripts/test-coop.sh checks these with a SPIR-V validator that knows the
                    // cooperative-matrix extension.
                    if let Some(dir) = std::env::var_os("CAREBOT_SPIRV_OUT") {
                        let path = std::path::Path::new(&dir).join(format!("{side}-{}-{epilogue}.spv", ty.name()));
                        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    }
                }
            }
        }
    }

    /// Every `#if` / `#elif` in `shaders/` names a [`Flag`], and every flag is used: a name the
    /// Rust side does not know would silently select the other branch.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn every_shader_flag_is_a_known_flag() {
        fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "wgsl") {
                    out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let mut files = Vec::new();
        sources(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders"), &mut files);
        assert!(files.len() > 20, "{} shader files", files.len());
        let known: BTreeSet<&str> = Flag::ALL.iter().map(|f| f.name()).collect();
        let mut used = BTreeSet::new();
        for (path, text) in &files {
            for line in text.lines() {
                let t = line.trim();
                if let Some(name) = t.strip_prefix("#if ").or_else(|| t.strip_prefix("#elif ")) {
                    assert!(known.contains(name.trim()), "{path}: `{t}` names no shader::Flag");
                    used.insert(name.trim().to_string());
                }
            }
        }
        for flag in Flag::ALL {
            assert!(used.contains(flag.name()), "Flag::{flag:?} ({}) is in no shader", flag.name());
        }
    }

    /// Every variant the engine can plan, built and checked the way wgpu checks it before a
    /// driver sees it — naga's WGSL front end and validator, then its SPIR-V back end — with no
    /// GPU; and no template placeholder survives. `CAREBOT_DUMP_WGSL=DIR` keeps them all.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn every_plannable_variant_is_valid_wgsl() {
        use naga::valid::{Capabilities, ValidationFlags, Validator};
        let variants = plannable_variants();
        assert!(variants.len() > 1000, "{} variants", variants.len());
        for v in &variants {
            let src = v.source();
            dump(v, &src);
            for placeholder in ["{{", "}}", "$W", "#if", "#else", "#endif"] {
                assert!(!src.contains(placeholder), "{v:?}: `{placeholder}` left in the source");
            }
            let module =
                naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{v:?}: {}", e.emit_to_string(&src)));
            let info = Validator::new(ValidationFlags::all(), Capabilities::all())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{v:?}: {}", e.emit_to_string(&src)));
            let options = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
            naga::back::spv::write_vec(&module, &info, &options, None).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        }
    }

    #[test]
    fn preprocess_picks_one_branch() {
        let src = "a\n#if X\nb\n#elif Y\nc\n#else\nd\n#endif\ne\n";
        let f = |fl: &[&'static str]| preprocess(src, &fl.iter().copied().collect());
        assert_eq!(f(&["X", "Y"]), "a\nb\ne\n");
        assert_eq!(f(&["Y"]), "a\nc\ne\n");
        assert_eq!(f(&[]), "a\nd\ne\n");
        let nested = "#if X\n#if Y\nxy\n#else\nx\n#endif\n#else\n#if Y\ny\n#endif\n#endif\n";
        assert_eq!(preprocess(nested, &["X"].into_iter().collect()), "x\n");
        assert_eq!(preprocess(nested, &["Y"].into_iter().collect()), "y\n");
    }
}
