//! Picking the next token from logits: repetition penalty, then greedy or temperature sampling
//! restricted by top-k and top-p, driven by a seeded generator.

use crate::rng::SplitMix64;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1.0 keeps all.
    pub top_p: f32,
    /// llama.cpp's repetition penalty over the last `repeat_last_n` tokens; 1.0 disables it.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.7, top_k: 40, top_p: 0.9, repeat_penalty: 1.1, repeat_last_n: 64, seed: 0 }
    }
}

impl SamplerConfig {
    pub fn greedy() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, repeat_penalty: 1.0, repeat_last_n: 0, seed: 0 }
    }
}

pub struct Sampler {
    pub config: SamplerConfig,
    rng: SplitMix64,
}

/// Index of the largest value (the first one on ties); NaN never wins.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        let rng = SplitMix64::new(config.seed);
        Sampler { config, rng }
    }

    /// Chooses the next token. `history` is every token so far (prompt and generated).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let c = &self.config;
        let mut logits = logits.to_vec();
        if c.repeat_penalty != 1.0 && c.repeat_last_n > 0 {
            let recent = &history[history.len().saturating_sub(c.repeat_last_n)..];
            let mut seen = std::collections::HashSet::new();
            for &t in recent {
                if let Some(l) = logits.get_mut(t as usize).filter(|_| seen.insert(t)) {
                    *l = if *l > 0.0 { *l / c.repeat_penalty } else { *l * c.repeat_penalty };
                }
            }
        }
        if c.temperature <= 0.0 {
            return argmax(&logits) as u32;
        }
        // Candidates sorted by logit, cut by top-k, turned into probabilities, cut by top-p.
        let mut cand: Vec<(u32, f32)> =
            logits.iter().enumerate().filter(|(_, l)| !l.is_nan()).map(|(i, &l)| (i as u32, l)).collect();
        if cand.is_empty() {
            return argmax(&logits) as u32;
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if c.top_k > 0 {
            cand.truncate(c.top_k);
        }
        let max = cand[0].1;
        let mut sum = 0.0f64;
        for (_, l) in cand.iter_mut() {
            *l = (((*l - max) / c.temperature) as f64).exp() as f32;
            sum += *l as f64;
        }
        let mut kept = 0;
        let mut cum = 0.0f64;
        for (_, p) in cand.iter_mut() {
            *p = (*p as f64 / sum) as f32;
            cum += *p as f64;
            kept += 1;
            if cum >= c.top_p as f64 {
                break;
            }
        }
        cand.truncate(kept.max(1));
        let total: f32 = cand.iter().map(|(_, p)| p).sum();
        let mut r = self.rng.next_f32() * total;
        for &(id, p) in &cand {
            if r < p {
                return id;
            }
            r -= p;
        }
        cand[cand.len() - 1].0
    }
}
