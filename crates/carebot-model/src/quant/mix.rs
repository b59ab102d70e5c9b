//! Weight-type presets: which ggml type each tensor of a llama model gets.

use super::GgmlType;

/// Which weight type each tensor gets, as llama.cpp's quantization presets choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeMix {
    Uniform(GgmlType),
    /// `Q4_K_M`: Q4_K, with Q6_K for the output and for `attn_v`/`ffn_down` in the layers
    /// llama.cpp's `use_more_bits` picks (the first and last eighth, and every third between).
    Q4KM,
    /// `Q4_0`: Q4_0, with Q6_K for the output.
    Q4_0,
}

impl TypeMix {
    pub fn type_of(self, name: &str, n_layers: usize) -> GgmlType {
        let layer = || name.strip_prefix("blk.")?.split('.').next()?.parse::<usize>().ok();
        let more_bits = |i: usize| i < n_layers / 8 || i >= 7 * n_layers / 8 || (i - n_layers / 8) % 3 == 2;
        match self {
            TypeMix::Uniform(ty) => ty,
            TypeMix::Q4_0 if name == "output.weight" => GgmlType::Q6_K,
            TypeMix::Q4_0 => GgmlType::Q4_0,
            TypeMix::Q4KM if name == "output.weight" => GgmlType::Q6_K,
            TypeMix::Q4KM
                if (name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight"))
                    && layer().is_some_and(more_bits) =>
            {
                GgmlType::Q6_K
            }
            TypeMix::Q4KM => GgmlType::Q4_K,
        }
    }
}
