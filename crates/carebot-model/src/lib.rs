//! CareBot's model crate: GGUF files, ggml weight formats, Llama-3 hyperparameters, tokenizer,
//! chat prompt, sampler, the generation loop and the f32 CPU reference forward that every GPU kernel
//! is checked against. Pure Rust; also builds for `wasm32-unknown-unknown`.

pub mod chat;
pub mod config;
pub mod convert;
pub mod generate;
pub mod gguf;
pub mod offsets;
pub mod quant;
pub mod reference;
pub mod rng;
pub mod sampler;
pub mod synthetic;
pub mod tokenizer;
