//! The backend-agnostic generation loop: a [`Backend`] runs the model (the CPU reference here, the
//! GPU engine elsewhere); a [`Session`] keeps what is in the backend's KV cache so that each chat
//! turn only runs the tokens that are new.

use crate::config::LlamaConfig;
use crate::reference::{CpuModel, ModelError};
use crate::sampler::{Candidates, Sampler, SelectRequest};
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
    /// Like [`Backend::prefill`], but may answer with just what `request` asks for (a few
    /// candidates instead of the whole vocabulary's logits, which a GPU would have to read back).
    fn prefill_select(&mut self, tokens: &[u32], request: &SelectRequest) -> Result<StepLogits, BackendError> {
        let _ = request;
        Ok(StepLogits::Full(self.prefill(tokens)?))
    }
    /// The full logits of the last step that answered with [`StepLogits::Candidates`], for when
    /// the candidates cannot decide the token.
    fn last_logits(&mut self) -> Result<Vec<f32>, BackendError> {
        Err(BackendError::Device("this backend keeps no logits".into()))
    }
}

/// What a step gives the sampler: all logits, or the candidates a [`SelectRequest`] asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum StepLogits {
    Full(Vec<f32>),
    Candidates(Candidates),
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

/// How many leading tokens of `prompt` a KV cache holding `cached` can keep: their shared prefix,
/// less the prompt's last token, which must run to produce logits.
pub fn reusable_prefix(cached: &[u32], prompt: &[u32]) -> usize {
    cached.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len().saturating_sub(1))
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
        let keep = self.prepare_prompt(prompt)?;
        let logits = self.backend.prefill(&prompt[keep..])?;
        self.tokens.extend_from_slice(&prompt[keep..]);
        Ok((logits, prompt.len() - keep))
    }

    /// [`Session::feed_prompt`] through [`Backend::prefill_select`]: the backend answers with what
    /// `sampler` needs to choose the token after the prompt.
    pub fn feed_prompt_select(
        &mut self,
        prompt: &[u32],
        sampler: &Sampler,
    ) -> Result<(StepLogits, usize), BackendError> {
        let keep = self.prepare_prompt(prompt)?;
        let step = self.backend.prefill_select(&prompt[keep..], &sampler.request(prompt))?;
        self.tokens.extend_from_slice(&prompt[keep..]);
        Ok((step, prompt.len() - keep))
    }

    /// Checks `prompt` and rewinds the cache to its longest shared prefix (leaving at least the
    /// prompt's last token to run); returns that prefix's length.
    fn prepare_prompt(&mut self, prompt: &[u32]) -> Result<usize, BackendError> {
        if prompt.is_empty() {
            return Err(BackendError::EmptyPrompt);
        }
        if prompt.len() > self.backend.capacity() {
            return Err(BackendError::ContextFull { needed: prompt.len(), capacity: self.backend.capacity() });
        }
        let keep = reusable_prefix(&self.tokens, prompt);
        self.backend.truncate(keep);
        self.tokens.truncate(keep);
        Ok(keep)
    }

    /// The token `sampler` chooses after the cached tokens, from the candidates when they decide
    /// it and from the backend's full logits otherwise.
    fn choose(&mut self, step: StepLogits, sampler: &mut Sampler) -> Result<u32, BackendError> {
        let logits = match step {
            StepLogits::Full(logits) => logits,
            StepLogits::Candidates(c) => match sampler.sample_candidates(&c) {
                Some(token) => return Ok(token),
                None => self.backend.last_logits()?,
            },
        };
        Ok(sampler.sample(&logits, &self.tokens))
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
        let (mut step, prompt_tokens_run) = self.feed_prompt_select(prompt, sampler)?;
        let mut out = Vec::new();
        let finish = |tokens, stop| Ok(Generation { tokens, stop, prompt_tokens_run });
        for i in 0..max_tokens {
            let token = self.choose(step, sampler)?;
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
            // The request is for the step after `token`, so its history includes `token`.
            self.tokens.push(token);
            step = match self.backend.prefill_select(&[token], &sampler.request(&self.tokens)) {
                Ok(step) => step,
                Err(e) => {
                    self.tokens.pop();
                    return Err(e);
                }
            };
        }
        finish(out, StopReason::MaxTokens)
    }
}
