//! The generation loop of the model crate's `Session`, awaiting the GPU instead of blocking on it:
//! the browser's worker cannot block, and awaiting each token's readback is what lets it hear
//! "stop" between tokens.

use crate::{GpuError, GpuModel};
use carebot_model::generate::{Generation, StepLogits, StopReason, reusable_prefix};
use carebot_model::sampler::Sampler;
use std::ops::ControlFlow;

/// The GPU model plus exactly the tokens its KV cache holds, so each chat turn runs only what is new.
pub struct GpuSession {
    pub model: GpuModel,
    pub tokens: Vec<u32>,
}

impl GpuSession {
    pub fn new(mut model: GpuModel) -> Self {
        model.truncate(0);
        GpuSession { model, tokens: Vec::new() }
    }

    /// Forgets the cached conversation.
    pub fn reset(&mut self) {
        self.model.truncate(0);
        self.tokens.clear();
    }

    /// Generates up to `max_tokens` after `prompt` exactly as `Session::generate` does (same
    /// tokens for the same sampler), calling `on_token` with each token as soon as it is chosen;
    /// `on_token` returning `Break` stops at once.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        stop_tokens: &[u32],
        max_tokens: usize,
        mut on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Generation, GpuError> {
        if prompt.is_empty() {
            return Err(GpuError::Model("the prompt is empty".into()));
        }
        let capacity = self.model.capacity();
        if prompt.len() > capacity {
            return Err(GpuError::Model(format!(
                "the conversation ({} tokens) does not fit the context of {capacity} tokens",
                prompt.len()
            )));
        }
        let keep = reusable_prefix(&self.tokens, prompt);
        self.model.truncate(keep);
        self.tokens.truncate(keep);
        let mut step = self.model.forward_select(&prompt[keep..], &sampler.request(prompt)).await?;
        self.tokens.extend_from_slice(&prompt[keep..]);
        let prompt_tokens_run = prompt.len() - keep;
        let finish = |tokens, stop| Ok(Generation { tokens, stop, prompt_tokens_run });

        let mut out = Vec::new();
        for i in 0..max_tokens {
            let token = self.choose(step, sampler).await?;
            if stop_tokens.contains(&token) {
                return finish(out, StopReason::StopToken(token));
            }
            out.push(token);
            if on_token(token).is_break() {
                return finish(out, StopReason::Cancelled);
            }
            if i + 1 == max_tokens {
                break;
            }
            if self.tokens.len() >= capacity {
                return finish(out, StopReason::ContextFull);
            }
            self.tokens.push(token);
            step = match self.model.forward_select(&[token], &sampler.request(&self.tokens)).await {
                Ok(step) => step,
                Err(e) => {
                    self.tokens.pop();
                    return Err(e);
                }
            };
        }
        finish(out, StopReason::MaxTokens)
    }

    /// The sampler's token from the candidates when they decide it, else from the full logits.
    async fn choose(&mut self, step: StepLogits, sampler: &mut Sampler) -> Result<u32, GpuError> {
        let logits = match step {
            StepLogits::Full(logits) => logits,
            StepLogits::Candidates(c) => match sampler.sample_candidates(&c) {
                Some(token) => return Ok(token),
                None => self.model.read_logits().await?,
            },
        };
        Ok(sampler.sample(&logits, &self.tokens))
    }
}
