//! The generation loop of the model crate's `Session`, awaiting the GPU instead of blocking on it:
//! the browser's worker cannot block, and awaiting each token's readback is what lets it hear
//! "stop" between tokens.

use crate::{GpuError, GpuModel};
use carebot_model::generate::{
    BackendError, Generation, StepLogits, StopReason, Turn, choose_from_step, rewind_for_prompt,
};
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
        let capacity = self.model.capacity();
        let keep = rewind_for_prompt(&mut self.tokens, prompt, capacity).map_err(|e| match e {
            BackendError::ContextFull { needed, capacity } => GpuError::ContextFull { needed, capacity },
            other => GpuError::BadInput(other.to_string()),
        })?;
        self.model.truncate(keep);
        let mut step = self.model.forward_select(&prompt[keep..], &sampler.request(prompt)).await?;
        self.tokens.extend_from_slice(&prompt[keep..]);
        let mut turn = Turn::new(stop_tokens, max_tokens, prompt.len() - keep);
        while turn.wants_token() {
            let token = self.choose(step, sampler).await?;
            if let ControlFlow::Break(stop) = turn.take(token, self.tokens.len(), capacity, &mut on_token) {
                return Ok(turn.finish(stop));
            }
            self.tokens.push(token);
            step = self.model.forward_select(&[token], &sampler.request(&self.tokens)).await.inspect_err(|_| {
                self.tokens.pop();
            })?;
        }
        Ok(turn.finish(StopReason::MaxTokens))
    }

    /// The sampler's token from the candidates when they decide it, else from the full logits.
    async fn choose(&mut self, step: StepLogits, sampler: &mut Sampler) -> Result<u32, GpuError> {
        match choose_from_step(step, sampler, &self.tokens) {
            Some(token) => Ok(token),
            None => Ok(sampler.sample(&self.model.read_logits().await?, &self.tokens)),
        }
    }
}
