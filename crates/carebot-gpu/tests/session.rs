//! `GpuSession`, the awaiting generation loop the browser worker runs, against the model crate's
//! blocking `Session` on the CPU reference: the same tokens over two chat turns (the second
//! reusing the KV cache), with seeded sampling, and a stop requested mid-answer. Natively and in
//! the browser, where the worker runs this loop.

mod common;

use carebot_gpu::{EngineOptions, GpuModel, GpuOptions, GpuSession, KvFormat};
use carebot_model::generate::{Session, StopReason};
use carebot_model::gguf::GgufFile;
use carebot_model::quant::GgmlType;
use carebot_model::reference::CpuModel;
use carebot_model::rng::SplitMix64;
use carebot_model::sampler::{Sampler, SamplerConfig};
use carebot_model::synthetic::SyntheticSpec;
use common::*;
use std::ops::ControlFlow;

const CONTEXT: usize = 128;

fn tokens(rng: &mut SplitMix64, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn gpu_session_generates_what_the_cpu_session_does_over_two_turns() {
    let mut rng = SplitMix64::new(seed("gpu_session"));
    let spec = SyntheticSpec::tiny_llama3();
    let bytes = spec.to_gguf(GgmlType::Q4_K);
    let f = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let engine = EngineOptions { context: CONTEXT, kv: KvFormat::F32, ..Default::default() };
    let mut gpu = GpuModel::new(ctx, &f, &engine).await.unwrap();
    gpu.upload(0, &bytes).unwrap();
    gpu.finish_upload().unwrap();
    let cpu =
        CpuModel::load(&f, CONTEXT, |t| Ok(bytes[t.byte_range().start as usize..t.byte_range().end as usize].to_vec()))
            .unwrap();

    let config = SamplerConfig {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.9,
        repeat_penalty: 1.1,
        repeat_last_n: 64,
        seed: rng.next_u64(),
    };
    let (mut gpu_sampler, mut cpu_sampler) = (Sampler::new(config.clone()), Sampler::new(config));
    let mut on_gpu = GpuSession::new(gpu);
    let mut on_cpu = Session::new(cpu);
    let go = |_| ControlFlow::Continue(());

    let mut prompt = tokens(&mut rng, 11, spec.vocab);
    for turn in 0..2 {
        let g = on_gpu.generate(&prompt, &mut gpu_sampler, &[], 12, go).await.unwrap();
        let c = on_cpu.generate(&prompt, &mut cpu_sampler, &[], 12, go).unwrap();
        assert_eq!(g, c, "turn {turn}");
        assert_eq!(on_gpu.tokens, on_cpu.tokens);
        prompt.extend(&g.tokens);
        prompt.extend(tokens(&mut rng, 5, spec.vocab));
    }
    // Only the new turn ran the second time.
    assert_eq!(on_gpu.tokens.len(), on_gpu.model.len());

    // A stop after three tokens ends the answer there.
    let mut seen = 0;
    let g = on_gpu
        .generate(&prompt, &mut gpu_sampler, &[], 20, |_| {
            seen += 1;
            if seen == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .await
        .unwrap();
    assert_eq!((g.tokens.len(), g.stop), (3, StopReason::Cancelled));
}
