//! Top-k candidate selection on the GPU against the CPU reference (`Candidates::from_logits`):
//! the same ids and bit-identical penalized logits, max and normalizer within 1e-4, on awkward
//! data (ties, NaN, infinities, huge and subnormal values, sorted runs); and end to end, the
//! sampler choosing from GPU candidates the token it chooses from the CPU logits.

mod common;

use carebot_gpu::GpuContext;
use carebot_gpu::GpuOptions;
use carebot_gpu::ops::select::TopK;
use carebot_model::rng::SplitMix64;
use carebot_model::sampler::{Candidates, Sampler, SamplerConfig, SelectRequest};

struct Fixture {
    ctx: GpuContext,
}

struct Selector<'a> {
    ctx: &'a GpuContext,
    logits: wgpu::Buffer,
    topk: TopK,
    vocab: usize,
}

impl Fixture {
    async fn new() -> Option<Self> {
        common::context(GpuOptions::default()).await.map(|ctx| Fixture { ctx })
    }
    fn selector(&self, vocab: usize) -> Selector<'_> {
        let logits = self.ctx.storage("test logits", vocab as u64 * 4).unwrap();
        let topk = TopK::new(&self.ctx, &logits, vocab as u32).unwrap();
        Selector { ctx: &self.ctx, logits, topk, vocab }
    }
}

impl Selector<'_> {
    /// Uploads `logits` and runs the selection; `None` if `prepare` refuses the request.
    async fn select(&mut self, logits: &[f32], request: &SelectRequest) -> Option<Candidates> {
        assert_eq!(logits.len(), self.vocab);
        self.ctx.queue.write_buffer(&self.logits, 0, bytemuck::cast_slice(logits));
        if !self.topk.prepare(self.ctx, request) {
            return None;
        }
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.topk.encode(&mut pass);
        }
        self.topk.copy_result(&mut encoder);
        self.ctx.queue.submit([encoder.finish()]);
        let c = self.topk.read(self.ctx, carebot_gpu::context::ReadPace::new().deadline(1)).await.unwrap();
        self.ctx.check().unwrap();
        Some(c)
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(got: &Candidates, want: &Candidates, request: &SelectRequest, what: &str) {
    assert_eq!(got.ids, want.ids, "{what}: ids");
    assert_eq!(bits(&got.logits), bits(&want.logits), "{what}: logits {:?} vs {:?}", got.logits, want.logits);
    assert_eq!(got.max.to_bits(), want.max.to_bits(), "{what}: max {} vs {}", got.max, want.max);
    if request.temperature > 0.0 && want.max.is_finite() {
        let rel = ((got.sum_exp as f64 - want.sum_exp as f64) / want.sum_exp as f64).abs();
        assert!(rel <= 1e-4, "{what}: sum_exp {} vs {} (rel {rel:e})", got.sum_exp, want.sum_exp);
    } else if request.temperature <= 0.0 {
        assert_eq!(got.sum_exp, 0.0, "{what}: no normalizer when greedy");
    }
}

/// One of several kinds of awkward logits.
fn logits(rng: &mut SplitMix64, vocab: usize, kind: u32) -> Vec<f32> {
    let pick = |rng: &mut SplitMix64| (rng.next_u64() % vocab as u64) as usize;
    let mut l = common::random(rng, vocab, -12.0, 12.0);
    match kind {
        // Plain uniform.
        0 => {}
        // Coarse values: ties everywhere, across workgroup chunks too.
        1 => l.iter_mut().for_each(|v| *v = (*v * 0.5).round() * 2.0),
        // NaN of both signs and payloads, infinities, huge, subnormal and signed zeros.
        2 => {
            let specials = [
                f32::NAN,
                f32::from_bits(0xffc0_0000),
                f32::from_bits(0x7f80_0001),
                f32::NEG_INFINITY,
                3.0e38,
                -3.0e38,
                f32::MIN_POSITIVE / 4.0,
                -f32::MIN_POSITIVE / 8.0,
                0.0,
                -0.0,
                1.0e30,
                -1.0e30,
            ];
            for _ in 0..vocab / 8 + 3 {
                let i = pick(rng);
                l[i] = specials[(rng.next_u64() % specials.len() as u64) as usize];
            }
        }
        // Ascending: every round beats the threshold (the most flushes).
        3 => l.sort_by(|a, b| a.total_cmp(b)),
        // Descending, and a few huge peaks.
        4 => {
            l.sort_by(|a, b| b.total_cmp(a));
            for _ in 0..3 {
                let i = pick(rng);
                l[i] = 1.0e4 * rng.next_f32();
            }
        }
        // Flat: the top k are the lowest ids.
        5 => l.iter_mut().for_each(|v| *v = 0.5),
        // Random bit patterns: every exponent, subnormals, NaN and infinities.
        6 => l.iter_mut().for_each(|v| *v = f32::from_bits(rng.next_u64() as u32)),
        // Realistic: a peaked distribution (a few tokens far above a Gaussian-ish bulk).
        _ => {
            for v in l.iter_mut() {
                *v = (rng.next_signed() + rng.next_signed() + rng.next_signed()) * 2.0;
            }
            for _ in 0..5 {
                let i = pick(rng);
                l[i] = 12.0 + 4.0 * rng.next_f32();
            }
        }
    }
    l
}

fn penalized(rng: &mut SplitMix64, vocab: usize, n: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..n).map(|_| (rng.next_u64() % (vocab as u64 + 8)) as u32).collect();
    ids.sort();
    ids.dedup();
    // Shuffle back out of order: the order must not matter.
    for i in (1..ids.len()).rev() {
        ids.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    ids
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn gpu_candidates_equal_the_cpu_reference() {
    let Some(f) = Fixture::new().await else { return };
    let seed = common::seed("gpu_candidates_equal_the_cpu_reference");
    let mut rng = SplitMix64::new(seed);
    // One workgroup, two (a merge of two records), and Llama-3's 32 records in one merge.
    let vocabs: &[usize] = if common::WEB { &[37, 5000, 128_256] } else { &[37, 1000, 5000, 128_256] };
    for &vocab in vocabs {
        let mut sel = f.selector(vocab);
        for kind in 0..8 {
            for (k, temperature, repeat_penalty, n_pen) in [
                (1, 0.0, 1.0, 0),
                (64, 0.7, 1.1, 64),
                (40, 1.0, 1.0, 0),
                (13, 0.05, 1.3, 200),
                (64, 1.5, 0.7, 30),
                (1, -1.0, 1.25, 64),
                (64, 100.0, 1.1, 5),
            ] {
                let l = logits(&mut rng, vocab, kind);
                let request =
                    SelectRequest { k, temperature, repeat_penalty, penalized: penalized(&mut rng, vocab, n_pen) };
                let what = format!("vocab {vocab}, kind {kind}, k {k}, T {temperature}, penalty {repeat_penalty}");
                let got = sel.select(&l, &request).await.unwrap_or_else(|| panic!("{what}: refused"));
                assert_same(&got, &Candidates::from_logits(&l, &request), &request, &what);
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn every_logit_penalized_matches_the_cpu_bit_for_bit() {
    // The penalty's division is done in integers on the GPU; check it on every kind of value by
    // penalizing the whole vocabulary, with k = 64 over random bit patterns and normal values.
    let Some(f) = Fixture::new().await else { return };
    let seed = common::seed("every_logit_penalized_matches_the_cpu_bit_for_bit");
    let mut rng = SplitMix64::new(seed);
    // In the browser, 3 records (the last one partial) instead of Llama-3's 32.
    let vocab = if common::WEB { 9_000 } else { 128_256 };
    let mut sel = f.selector(vocab);
    let all: Vec<u32> = (0..vocab as u32).collect();
    for (kind, repeat_penalty) in [(6, 1.1f32), (6, 1.3), (6, 0.7), (6, 3.0e-3), (0, 1.1), (2, 1.7), (6, 7.5e5)] {
        let l = logits(&mut rng, vocab, kind);
        let request = SelectRequest { k: 64, temperature: 0.8, repeat_penalty, penalized: all.clone() };
        let what = format!("kind {kind}, penalty {repeat_penalty}");
        let got = sel.select(&l, &request).await.unwrap();
        assert_same(&got, &Candidates::from_logits(&l, &request), &request, &what);
        // The smallest values too: negate so the smallest positives rank first (negative values
        // are multiplied, which is exact in WGSL; the division only sees positive ones).
        let tiny: Vec<f32> = l.iter().map(|v| if v.is_nan() { *v } else { -v.abs() }).collect();
        let got = sel.select(&tiny, &request).await.unwrap();
        assert_same(&got, &Candidates::from_logits(&tiny, &request), &request, &format!("{what}, negated"));
    }
    // Results in every range (subnormal, overflowing, rounding up into the next binade): the
    // positive values of each run share a narrow exponent window, so the top k all fall in it.
    for repeat_penalty in [1.1f32, 0.3, 1.0e-30, 1.0e30, 1.5e-5] {
        for window in 0..16u64 {
            let e0 = ((rng.next_u64() + window * 16) % 252) as u32;
            let mut l = vec![-f32::MAX; vocab];
            for v in l.iter_mut().step_by(97) {
                let e = e0 + (rng.next_u64() % 3) as u32;
                let sign = (rng.next_u64() % 2) as u32;
                *v = f32::from_bits((sign << 31) | (e << 23) | (rng.next_u64() as u32 & 0x7f_ffff));
            }
            let k = if window % 4 == 0 { 1 } else { 64 };
            let request = SelectRequest { k, temperature: 0.0, repeat_penalty, penalized: all.clone() };
            let got = sel.select(&l, &request).await.unwrap();
            let what = format!("exponents {e0}.., penalty {repeat_penalty}, k {k}");
            assert_same(&got, &Candidates::from_logits(&l, &request), &request, &what);
            // Negated: the smallest magnitudes rank first, through the multiplication.
            let neg: Vec<f32> = l.iter().map(|v| if *v == -f32::MAX { *v } else { -v.abs() }).collect();
            let got = sel.select(&neg, &request).await.unwrap();
            assert_same(&got, &Candidates::from_logits(&neg, &request), &request, &format!("{what}, negated"));
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn large_vocabularies_merge_over_several_levels() {
    let Some(f) = Fixture::new().await else { return };
    let seed = common::seed("large_vocabularies_merge_over_several_levels");
    let mut rng = SplitMix64::new(seed);
    // 74 records → 2 → 1, and (natively) 245 → 4 → 1.
    let vocabs: &[usize] = if common::WEB { &[300_007] } else { &[300_007, 1_000_003] };
    for &vocab in vocabs {
        let mut sel = f.selector(vocab);
        assert_eq!(sel.topk.dispatches(), 3);
        for (kind, k, temperature, n_pen) in [(0, 64, 0.7, 64), (1, 64, 1.0, 0), (7, 1, 0.0, 64), (2, 40, 0.05, 500)] {
            let l = logits(&mut rng, vocab, kind);
            let request =
                SelectRequest { k, temperature, repeat_penalty: 1.2, penalized: penalized(&mut rng, vocab, n_pen) };
            let got = sel.select(&l, &request).await.unwrap();
            let what = format!("vocab {vocab}, kind {kind}, k {k}, T {temperature}");
            assert_same(&got, &Candidates::from_logits(&l, &request), &request, &what);
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn requests_the_gpu_cannot_run_are_refused() {
    let Some(f) = Fixture::new().await else { return };
    let mut sel = f.selector(100);
    let l = vec![1.0f32; 100];
    let ok = SelectRequest { k: 64, temperature: 1.0, repeat_penalty: 1.1, penalized: vec![3, 200] };
    assert!(sel.select(&l, &ok).await.is_some());
    assert!(sel.select(&l, &SelectRequest { k: 65, ..ok.clone() }).await.is_none());
    assert!(sel.select(&l, &SelectRequest { k: 0, ..ok.clone() }).await.is_none());
    assert!(sel.select(&l, &SelectRequest { repeat_penalty: 0.0, ..ok.clone() }).await.is_none());
    assert!(sel.select(&l, &SelectRequest { repeat_penalty: f32::NAN, ..ok.clone() }).await.is_none());
    // No id in the vocabulary penalized: the penalty value does not matter.
    let none = SelectRequest { repeat_penalty: f32::NAN, penalized: vec![100, 5000], ..ok.clone() };
    let got = sel.select(&l, &none).await.unwrap();
    assert_same(&got, &Candidates::from_logits(&l, &none), &none, "no penalized id in the vocabulary");
    // After refusals and other requests, the bitmap holds exactly the new ids.
    let again = SelectRequest { penalized: vec![7, 99, 0], ..ok };
    let got = sel.select(&l, &again).await.unwrap();
    assert_same(&got, &Candidates::from_logits(&l, &again), &again, "bitmap rewritten");
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn sampling_from_gpu_candidates_equals_sampling_from_cpu_logits() {
    let Some(f) = Fixture::new().await else { return };
    let seed = common::seed("sampling_from_gpu_candidates_equals_sampling_from_cpu_logits");
    let mut rng = SplitMix64::new(seed);
    let vocab = 128_256;
    let mut sel = f.selector(vocab);
    let configs = [
        SamplerConfig::greedy(),
        SamplerConfig { temperature: 0.0, repeat_penalty: 1.1, repeat_last_n: 64, ..SamplerConfig::greedy() },
        SamplerConfig::default(),
        SamplerConfig { temperature: 1.0, top_k: 40, top_p: 1.0, repeat_penalty: 1.3, repeat_last_n: 16, seed: 0 },
        SamplerConfig { temperature: 0.7, top_k: 0, top_p: 0.9, repeat_penalty: 1.1, repeat_last_n: 64, seed: 0 },
    ];
    let (mut undecided, mut steps) = (0, 0);
    let seeds = if common::WEB { 4 } else { 12 };
    for config in configs {
        for s in 0..seeds {
            let config = SamplerConfig { seed: seed ^ s, ..config.clone() };
            let mut on_cpu = Sampler::new(config.clone());
            let mut on_gpu = Sampler::new(config.clone());
            let mut history: Vec<u32> = (0..40).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
            for step in 0..3 {
                let l = logits(&mut rng, vocab, if step == 0 { 0 } else { 7 });
                let want = on_cpu.sample(&l, &history);
                let c = sel.select(&l, &on_gpu.request(&history)).await.unwrap();
                let what = format!("{config:?}, step {step}");
                let got = match on_gpu.sample_candidates(&c) {
                    Some(token) => token,
                    None => {
                        assert!(config.top_k == 0, "{what}: greedy and top_k = 40 must be decided");
                        undecided += 1;
                        on_gpu.sample(&l, &history)
                    }
                };
                assert_eq!(got, want, "{what}");
                history.push(want);
                steps += usize::from(config.top_k == 0 && config.temperature > 0.0);
            }
        }
    }
    common::note(&format!("top_k = 0 steps that needed the full logits: {undecided} of {steps}"));
}
