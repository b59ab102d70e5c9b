//! The backend-agnostic generation loop: a [`Backend`] runs the model (the CPU reference here, the
//! GPU engine elsewhere); a [`Session`] keeps what is in the backend's KV cache so that each chat
//! turn only runs the tokens that are new.

use crate::config::LlamaConfig;
use crate::reference::{CpuModel, ModelError};
use crate::sampler::Sampler;
use std::ops::ControlFlow;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Cpu(#[from] ModelError),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the conversation ({needed} tokens) does not fit the context of {capacity} tokens")]
    ContextFull { needed: usize, capacity: usize },
    #[error("{0}")]
    Device(String),
}

/// Something that runs the model one batch of tokens at a time over its own KV cache.
pub trait Backend {
    fn config(&self) -> &LlamaConfig;
    /// Positions the KV cache can hold.
    fn capacity(&self) -> usize;
    /// Positions filled so far.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forgets every position from `len` on (so a conversation can keep its shared prefix).
    fn truncate(&mut self, len: usize);
    /// Runs `tokens` after what the cache holds and returns the logits of the last one.
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, BackendError>;
    /// One decoding step: the logits after `token`.
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, BackendError> {
        self.prefill(&[token])
    }
}

impl Backend for CpuModel {
    fn config(&self) -> &LlamaConfig {
        &self.cfg
    }
    fn capacity(&self) -> usize {
        self.cache.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        let logits = self.forward(tokens)?;
        let vocab = logits.len() / tokens.len().max(1);
        Ok(logits[logits.len() - vocab..].to_vec())
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced this stop token (not included in the output).
    StopToken(u32),
    MaxTokens,
    /// The caller's callback asked to stop.
    Cancelled,
    /// The KV cache is full.
    ContextFull,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    /// Prompt tokens that had to be run (the rest were reused from the cache).
    pub prompt_tokens_run: usize,
}

/// A backend plus the tokens its cache holds.
pub struct Session<B: Backend> {
    pub backend: B,
    /// Exactly the tokens in the backend's KV cache, in order.
    pub tokens: Vec<u32>,
}

impl<B: Backend> Session<B> {
    pub fn new(mut backend: B) -> Self {
        backend.truncate(0);
        Session { backend, tokens: Vec::new() }
    }

    /// Makes the cache hold `prompt`, running only the part after the longest prefix it already
    /// holds, and returns the logits after the prompt's last token and how many tokens were run.
    pub fn feed_prompt(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize), BackendError> {
        if prompt.is_empty() {
            return Err(BackendError::EmptyPrompt);
        }
        if prompt.len() > self.backend.capacity() {
            return Err(BackendError::ContextFull { needed: prompt.len(), capacity: self.backend.capacity() });
        }
        // At least the last prompt token must run to produce logits.
        let keep = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        self.backend.truncate(keep);
        self.tokens.truncate(keep);
        let logits = self.backend.prefill(&prompt[keep..])?;
        self.tokens.extend_from_slice(&prompt[keep..]);
        Ok((logits, prompt.len() - keep))
    }

    /// Generates up to `max_tokens` after `prompt`, calling `on_token` with each new token as soon
    /// as it is chosen; `on_token` returning `Break` stops at once.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        stop_tokens: &[u32],
        max_tokens: usize,
        mut on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Generation, BackendError> {
        let (mut logits, prompt_tokens_run) = self.feed_prompt(prompt)?;
        let mut out = Vec::new();
        let finish = |tokens, stop| Ok(Generation { tokens, stop, prompt_tokens_run });
        for i in 0..max_tokens {
            let token = sampler.sample(&logits, &self.tokens);
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
            if self.tokens.len() >= self.backend.capacity() {
                return finish(out, StopReason::ContextFull);
            }
            logits = self.backend.decode(token)?;
            self.tokens.push(token);
        }
        finish(out, StopReason::MaxTokens)
    }
}
