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

/// Most candidates a [`SelectRequest`] asks for.
pub const MAX_CANDIDATES: usize = 64;

/// What the backend should compute over the logits before the sampler chooses (on the GPU).
#[derive(Clone, Debug, PartialEq)]
pub struct SelectRequest {
    /// How many of the best tokens to return (1..=[`MAX_CANDIDATES`]).
    pub k: usize,
    /// The softmax temperature of `sum_exp` (≤ 0: greedy, no normalizer needed).
    pub temperature: f32,
    pub repeat_penalty: f32,
    /// Distinct ids whose logits get the repetition penalty (those past the vocabulary are ignored).
    pub penalized: Vec<u32>,
}

/// The k best tokens after the penalty, best first (ties: lower id first), plus the softmax
/// normalizer over the whole vocabulary so top-p can be decided without all logits.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidates {
    /// At most `k`; fewer only when fewer logits are not NaN (NaN is never a candidate).
    pub ids: Vec<u32>,
    /// Their penalized logits, exactly (bit for bit what the penalty gives on the CPU).
    pub logits: Vec<f32>,
    /// The largest penalized logit (`-inf` when there is none).
    pub max: f32,
    /// Σ over the whole vocabulary of exp((l' − max) / T), NaN and −∞ logits left out; only
    /// meaningful when T > 0 and `max` is finite (0 otherwise).
    pub sum_exp: f32,
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

    /// The distinct ids of the last `repeat_last_n` tokens of `history`, in order of first
    /// appearance: the ones [`Sampler::sample`] penalizes (empty when the penalty is off).
    pub fn penalized(&self, history: &[u32]) -> Vec<u32> {
        let c = &self.config;
        if c.repeat_penalty == 1.0 || c.repeat_last_n == 0 {
            return Vec::new();
        }
        let recent = &history[history.len().saturating_sub(c.repeat_last_n)..];
        let mut seen = std::collections::HashSet::new();
        recent.iter().copied().filter(|&t| seen.insert(t)).collect()
    }

    /// What a backend should compute over the logits so that [`Sampler::sample_candidates`] can
    /// choose the token after `history` (every token in the cache, the newest last).
    pub fn request(&self, history: &[u32]) -> SelectRequest {
        let c = &self.config;
        SelectRequest {
            k: if c.temperature <= 0.0 { 1 } else { MAX_CANDIDATES },
            temperature: c.temperature,
            repeat_penalty: c.repeat_penalty,
            penalized: self.penalized(history),
        }
    }

    /// Chooses the next token. `history` is every token so far (prompt and generated).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        apply_penalty(&mut logits, &self.penalized(history), self.config.repeat_penalty);
        if self.config.temperature <= 0.0 {
            return argmax(&logits) as u32;
        }
        // Candidates sorted by logit, cut by top-k, turned into probabilities, cut by top-p.
        let mut cand: Vec<(u32, f32)> =
            logits.iter().enumerate().filter(|(_, l)| !l.is_nan()).map(|(i, &l)| (i as u32, l)).collect();
        if cand.is_empty() {
            return argmax(&logits) as u32;
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.config.top_k > 0 {
            cand.truncate(self.config.top_k);
        }
        self.sample_sorted(cand, None)
    }

    /// The token [`Sampler::sample`] would choose from the full logits, decided from `c`, the
    /// backend's answer to [`Sampler::request`] (fewer ids than the request's `k` means every
    /// non-NaN logit is among them). Consumes the generator exactly as `sample` does.
    ///
    /// Exact (same token) for greedy and whenever the candidates hold the whole top-k set: top_k
    /// ≤ their number, or all non-NaN logits. Otherwise (top_k == 0, or top_k beyond the
    /// candidates) the nucleus is decided with the normalizer `c.sum_exp`: the answer is `Some`
    /// only if the candidates reach `top_p` with the same number of tokens under any normalizer
    /// within 0.1% of it (and, for top_k beyond the candidates, any the missing tokens allow),
    /// and the token is then the same as `sample`'s up to f32 rounding of the probabilities.
    /// `None` means the caller must read the full logits and call `sample`; the generator is then
    /// untouched. Also `None` for the rare greedy tie that total order and `argmax` break
    /// differently (a maximum of exactly +0.0) and when there are no candidates (all NaN).
    pub fn sample_candidates(&mut self, c: &Candidates) -> Option<u32> {
        let cfg = &self.config;
        let n = c.ids.len().min(c.logits.len());
        if n == 0 {
            return None;
        }
        if cfg.temperature <= 0.0 {
            // `argmax` treats -0.0 and +0.0 as equal, total order does not.
            return (c.logits[0].to_bits() != 0).then_some(c.ids[0]);
        }
        let complete = n < MAX_CANDIDATES;
        let mut cand: Vec<(u32, f32)> = c.ids[..n].iter().copied().zip(c.logits[..n].iter().copied()).collect();
        if cfg.top_k > 0 && cfg.top_k <= n {
            cand.truncate(cfg.top_k);
            return Some(self.sample_sorted(cand, None));
        }
        if complete {
            return Some(self.sample_sorted(cand, None));
        }
        // The normalizer is not known exactly: bound it and keep the answer only if the nucleus
        // is the same for every normalizer in the bounds.
        let t = cfg.temperature;
        let max = cand[0].1;
        if !(t.is_finite() && max.is_finite() && c.sum_exp.is_finite() && c.sum_exp > 0.0) {
            return None;
        }
        let weights: Vec<f32> = cand.iter().map(|&(_, l)| weight(l, max, t)).collect();
        let known: f64 = weights.iter().map(|&w| w as f64).sum();
        const MARGIN: f64 = 1e-3;
        let all = c.sum_exp as f64;
        let (lo, hi) = if cfg.top_k == 0 {
            ((all * (1.0 - MARGIN)).max(known), all * (1.0 + MARGIN))
        } else {
            // top_k > n: the missing top_k − n tokens weigh at most as much as the last candidate.
            let missing = (cfg.top_k - n) as f64 * *weights.last().unwrap() as f64;
            (known, (known + missing).min(all * (1.0 + MARGIN)))
        };
        if lo > hi {
            return None;
        }
        let kept_lo = nucleus(&weights, lo, cfg.top_p)?;
        let kept_hi = nucleus(&weights, hi, cfg.top_p)?;
        if kept_lo != kept_hi {
            return None;
        }
        cand.truncate(kept_hi);
        Some(self.sample_sorted(cand, Some(all.clamp(lo, hi))))
    }

    /// Temperature sampling over `cand` (sorted best first, non-empty, already cut by top-k),
    /// as [`Sampler::sample`] does it: probabilities, top-p cut, one draw. `normalizer` replaces
    /// the sum of the candidates' weights when they are not all the tokens that count, in which
    /// case `cand` must already be cut to the nucleus.
    fn sample_sorted(&mut self, mut cand: Vec<(u32, f32)>, normalizer: Option<f64>) -> u32 {
        let c = &self.config;
        let max = cand[0].1;
        let mut sum = 0.0f64;
        for (_, l) in cand.iter_mut() {
            *l = weight(*l, max, c.temperature);
            sum += *l as f64;
        }
        let sum = normalizer.unwrap_or(sum);
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

/// exp((l − max) / T) as [`Sampler::sample`] computes it (f32 arithmetic, f64 exp).
fn weight(l: f32, max: f32, temperature: f32) -> f32 {
    (((l - max) / temperature) as f64).exp() as f32
}

/// How many of `weights` (sorted, heaviest first) the top-p cut keeps under `normalizer`,
/// rounding as [`Sampler::sample`] does, or `None` if they do not reach `top_p`.
fn nucleus(weights: &[f32], normalizer: f64, top_p: f32) -> Option<usize> {
    let mut cum = 0.0f64;
    for (i, &w) in weights.iter().enumerate() {
        cum += (w as f64 / normalizer) as f32 as f64;
        if cum >= top_p as f64 {
            return Some(i + 1);
        }
    }
    None
}

/// llama.cpp's repetition penalty on `ids` (distinct; those past the vocabulary are ignored).
pub fn apply_penalty(logits: &mut [f32], ids: &[u32], penalty: f32) {
    for &t in ids {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = penalize(*l, penalty);
        }
    }
}

/// One logit under llama.cpp's repetition penalty.
pub fn penalize(l: f32, penalty: f32) -> f32 {
    if l > 0.0 { l / penalty } else { l * penalty }
}

impl Candidates {
    /// The CPU reference of what a backend computes for `request` from `logits` (raw, before the
    /// penalty): for backends that hold the logits anyway, and to check the GPU against.
    pub fn from_logits(logits: &[f32], request: &SelectRequest) -> Candidates {
        let mut l = logits.to_vec();
        apply_penalty(&mut l, &request.penalized, request.repeat_penalty);
        let mut cand: Vec<(u32, f32)> =
            l.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, &v)| (i as u32, v)).collect();
        let k = request.k.min(cand.len());
        if k > 0 && k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        cand.truncate(k);
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = cand.first().map_or(f32::NEG_INFINITY, |c| c.1);
        let t = request.temperature;
        let sum_exp = if t > 0.0 && max.is_finite() {
            let (m, t) = (max as f64, t as f64);
            l.iter()
                .filter(|v| !v.is_nan() && **v != f32::NEG_INFINITY)
                .map(|&v| ((v as f64 - m) / t).exp())
                .sum::<f64>() as f32
        } else {
            0.0
        };
        Candidates { ids: cand.iter().map(|c| c.0).collect(), logits: cand.iter().map(|c| c.1).collect(), max, sum_exp }
    }
}
