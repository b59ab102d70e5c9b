//! Sampling from a few candidates (what the GPU reads back) against sampling from all logits:
//! the same token and the same use of the generator whenever the candidates can decide, and a
//! generation loop that falls back to the full logits when they cannot.

use carebot_model::config::LlamaConfig;
use carebot_model::generate::{Backend, BackendError, Session, StepLogits};
use carebot_model::gguf::GgufFile;
use carebot_model::quant::GgmlType;
use carebot_model::reference::CpuModel;
use carebot_model::rng::SplitMix64;
use carebot_model::sampler::{Candidates, MAX_CANDIDATES, Sampler, SamplerConfig, SelectRequest};
use carebot_model::synthetic::SyntheticSpec;
use std::ops::ControlFlow;

/// Random logits of one of a few shapes: uniform, peaked (a few large ones), with ties and NaN.
fn logits(rng: &mut SplitMix64, vocab: usize) -> Vec<f32> {
    let scale = [1.0, 4.0, 12.0][(rng.next_u64() % 3) as usize];
    let mut l: Vec<f32> = (0..vocab).map(|_| rng.next_signed() * scale).collect();
    match rng.next_u64() % 4 {
        // A few tokens far above the rest: the nucleus is small.
        0 => {
            for _ in 0..4 {
                let i = (rng.next_u64() % vocab as u64) as usize;
                l[i] = 20.0 + 5.0 * rng.next_f32();
            }
        }
        // Coarse values: many exact ties.
        1 => l.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0),
        // Some NaN.
        2 => {
            for _ in 0..vocab / 10 + 1 {
                let i = (rng.next_u64() % vocab as u64) as usize;
                l[i] = f32::NAN;
            }
        }
        _ => {}
    }
    l
}

fn configs() -> Vec<SamplerConfig> {
    let mut out = Vec::new();
    for (temperature, top_k, top_p) in [
        (0.0, 0, 1.0),
        (0.0, 40, 0.9),
        (0.7, 40, 0.9),
        (1.0, 1, 1.0),
        (1.5, 64, 1.0),
        (0.3, 5, 0.5),
        (0.7, 0, 0.9),
        (0.5, 0, 0.5),
        (1.0, 0, 1.0),
        (0.8, 100, 0.8),
        (0.7, 200, 0.95),
    ] {
        for (repeat_penalty, repeat_last_n) in [(1.0, 64), (1.1, 64), (1.3, 8), (0.8, 64)] {
            out.push(SamplerConfig { temperature, top_k, top_p, repeat_penalty, repeat_last_n, seed: 0 });
        }
    }
    out
}

#[test]
fn candidates_choose_what_the_full_logits_choose() {
    let mut decided_by_normalizer = 0;
    let mut fell_back = 0;
    for (ci, config) in configs().into_iter().enumerate() {
        for seed in 0..12u64 {
            let mut rng = SplitMix64::new(seed * 1000 + ci as u64);
            let vocab = [37, 300, 1000, 4000][(seed % 4) as usize];
            let config = SamplerConfig { seed: seed ^ 0x5eed, ..config.clone() };
            let mut full = Sampler::new(config.clone());
            let mut cand = Sampler::new(config.clone());
            let mut history: Vec<u32> = (0..20).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
            // Several steps, so a generator used differently would show in later tokens.
            for step in 0..6 {
                let l = logits(&mut rng, vocab);
                let request = cand.request(&history);
                assert_eq!(request.k, if config.temperature <= 0.0 { 1 } else { MAX_CANDIDATES });
                let c = Candidates::from_logits(&l, &request);
                let expected = full.sample(&l, &history);
                let got = cand.sample_candidates(&c);
                let exact = config.temperature <= 0.0 || (config.top_k > 0 && config.top_k <= MAX_CANDIDATES);
                let what = format!("config {config:?}, vocab {vocab}, step {step}");
                match got {
                    Some(token) => {
                        assert_eq!(token, expected, "{what}");
                        if !exact && vocab > MAX_CANDIDATES {
                            decided_by_normalizer += 1;
                        }
                    }
                    None => {
                        assert!(!exact, "{what}: greedy and top_k ≤ {MAX_CANDIDATES} must be decided");
                        fell_back += 1;
                        assert_eq!(cand.sample(&l, &history), expected, "{what}: fallback");
                    }
                }
                history.push(expected);
            }
        }
    }
    eprintln!("decided by the normalizer: {decided_by_normalizer}, fell back: {fell_back}");
    // Both branches of the undecided configurations were exercised.
    assert!(decided_by_normalizer > 20, "{decided_by_normalizer}");
    assert!(fell_back > 20, "{fell_back}");
}

#[test]
fn reference_candidates_are_the_sorted_top_k_after_the_penalty() {
    let l = [1.0, 3.0, f32::NAN, 3.0, -2.0, 2.0, f32::NEG_INFINITY];
    let request = SelectRequest { k: 4, temperature: 1.0, repeat_penalty: 2.0, penalized: vec![1, 4, 99] };
    let c = Candidates::from_logits(&l, &request);
    assert_eq!(c.ids, vec![3, 5, 1, 0]);
    assert_eq!(c.logits, vec![3.0, 2.0, 1.5, 1.0]);
    assert_eq!(c.max, 3.0);
    // Penalized: [1, 1.5, NaN, 3, -4, 2, -inf]; NaN and -inf add nothing.
    let expected: f64 = [-2.0f64, -1.5, 0.0, -7.0, -1.0].iter().map(|d| d.exp()).sum();
    assert!((c.sum_exp as f64 - expected).abs() < 1e-6 * expected, "{} vs {expected}", c.sum_exp);

    let all_nan = Candidates::from_logits(&[f32::NAN; 3], &request);
    assert!(all_nan.ids.is_empty());
    assert_eq!(all_nan.max, f32::NEG_INFINITY);
    assert_eq!(Sampler::new(SamplerConfig::default()).sample_candidates(&all_nan), None);
}

#[test]
fn a_flat_distribution_needs_the_full_logits() {
    let config = SamplerConfig { temperature: 0.8, top_k: 0, top_p: 0.99, ..SamplerConfig::default() };
    let mut sampler = Sampler::new(config);
    let l = vec![0.25f32; 1000];
    let c = Candidates::from_logits(&l, &sampler.request(&[]));
    assert_eq!(c.ids.len(), MAX_CANDIDATES);
    assert_eq!(c.ids, (0..MAX_CANDIDATES as u32).collect::<Vec<_>>(), "ties: lower id first");
    assert_eq!(sampler.sample_candidates(&c), None);
    // A small vocabulary is covered whole.
    let c = Candidates::from_logits(&l[..50], &sampler.request(&[]));
    assert!(sampler.sample_candidates(&c).is_some());
}

#[test]
fn greedy_ties_between_signed_zeros_fall_back() {
    // argmax keeps the first of -0.0 and +0.0; total order puts +0.0 first.
    let l = [-0.0f32, 0.0, -1.0];
    let mut greedy = Sampler::new(SamplerConfig::greedy());
    let c = Candidates::from_logits(&l, &greedy.request(&[]));
    assert_eq!(c.ids, vec![1]);
    assert_eq!(greedy.sample_candidates(&c), None);
    assert_eq!(greedy.sample(&l, &[]), 0);
    let l = [-0.0f32, -1.0, -0.0];
    let c = Candidates::from_logits(&l, &greedy.request(&[]));
    assert_eq!(greedy.sample_candidates(&c), Some(0));
}

/// The CPU model answering with candidates, as a GPU backend does, counting fallbacks.
struct CandidateBackend {
    model: CpuModel,
    last: Vec<f32>,
    fallbacks: usize,
}

impl Backend for CandidateBackend {
    fn config(&self) -> &LlamaConfig {
        self.model.config()
    }
    fn capacity(&self) -> usize {
        self.model.capacity()
    }
    fn len(&self) -> usize {
        self.model.len()
    }
    fn truncate(&mut self, len: usize) {
        self.model.truncate(len)
    }
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        self.model.prefill(tokens)
    }
    fn prefill_select(&mut self, tokens: &[u32], request: &SelectRequest) -> Result<StepLogits, BackendError> {
        self.last = self.model.prefill(tokens)?;
        Ok(StepLogits::Candidates(Candidates::from_logits(&self.last, request)))
    }
    fn last_logits(&mut self) -> Result<Vec<f32>, BackendError> {
        self.fallbacks += 1;
        Ok(self.last.clone())
    }
}

fn model(bytes: &[u8]) -> CpuModel {
    let f = GgufFile::parse(bytes, bytes.len() as u64).unwrap();
    CpuModel::load(&f, 256, |t| Ok(bytes[t.byte_range().start as usize..t.byte_range().end as usize].to_vec())).unwrap()
}

#[test]
fn generation_from_candidates_equals_generation_from_logits() {
    let spec = SyntheticSpec { n_layers: 1, ..SyntheticSpec::tiny_llama3() };
    let bytes = spec.to_gguf(GgmlType::Q8_0);
    let prompt: Vec<u32> = (1..30).collect();
    let mut total_fallbacks = 0;
    for (i, config) in [
        SamplerConfig::greedy(),
        SamplerConfig { seed: 3, ..SamplerConfig::default() },
        SamplerConfig { temperature: 1.2, top_k: 0, top_p: 0.9, repeat_penalty: 1.3, repeat_last_n: 16, seed: 5 },
        SamplerConfig { temperature: 2.0, top_k: 0, top_p: 1.0, repeat_penalty: 1.1, repeat_last_n: 64, seed: 9 },
    ]
    .into_iter()
    .enumerate()
    {
        let mut plain = Session::new(model(&bytes));
        let mut select = Session::new(CandidateBackend { model: model(&bytes), last: Vec::new(), fallbacks: 0 });
        let go = |s: &mut dyn FnMut(&[u32], &mut Sampler) -> Vec<u32>, config: &SamplerConfig| {
            let mut sampler = Sampler::new(config.clone());
            let first = s(&prompt, &mut sampler);
            // A second turn on the same session reuses the cache and continues the generator.
            let mut turn2 = prompt.clone();
            turn2.extend(&first);
            turn2.extend([40, 41, 42]);
            let second = s(&turn2, &mut sampler);
            (first, second)
        };
        let a = go(
            &mut |p, sampler| plain.generate(p, sampler, &[], 12, |_| ControlFlow::Continue(())).unwrap().tokens,
            &config,
        );
        let b = go(
            &mut |p, sampler| select.generate(p, sampler, &[], 12, |_| ControlFlow::Continue(())).unwrap().tokens,
            &config,
        );
        assert_eq!(a, b, "config {i}: {config:?}");
        assert_eq!(plain.tokens, select.tokens);
        if config.temperature <= 0.0 || config.top_k == 40 {
            assert_eq!(select.backend.fallbacks, 0, "config {i}");
        }
        total_fallbacks += select.backend.fallbacks;
    }
    assert!(total_fallbacks > 0, "the full-logits fallback was never taken");
}
