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
    /// The backend's own failure (the GPU engine's `GpuError`), kept whole so that a caller can
    /// downcast it and branch on its kind.
    #[error(transparent)]
    Device(Box<dyn std::error::Error + Send + Sync>),
    /// [`Backend::last_logits`] of a backend that keeps none (it never answers with candidates).
    #[error("this backend keeps no logits")]
    NoLogitsKept,
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
        Err(BackendError::NoLogitsKept)
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
        let keep = rewind_for_prompt(&mut self.tokens, prompt, self.backend.capacity())?;
        self.backend.truncate(keep);
        Ok(keep)
    }

    /// The token `sampler` chooses after the cached tokens, from the candidates when they decide
    /// it and from the backend's full logits otherwise.
    fn choose(&mut self, step: StepLogits, sampler: &mut Sampler) -> Result<u32, BackendError> {
        match choose_from_step(step, sampler, &self.tokens) {
            Some(token) => Ok(token),
            None => Ok(sampler.sample(&self.backend.last_logits()?, &self.tokens)),
        }
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
        let mut turn = Turn::new(stop_tokens, max_tokens, prompt_tokens_run);
        while turn.wants_token() {
            let token = self.choose(step, sampler)?;
            if let ControlFlow::Break(stop) =
                turn.take(token, self.tokens.len(), self.backend.capacity(), &mut on_token)
            {
                return Ok(turn.finish(stop));
            }
            // The request is for the step after `token`, so its history includes `token`.
            self.tokens.push(token);
            step = self.backend.prefill_select(&[token], &sampler.request(&self.tokens)).inspect_err(|_| {
                self.tokens.pop();
            })?;
        }
        Ok(turn.finish(StopReason::MaxTokens))
    }
}

/// Checks that `prompt` fits a KV cache of `capacity` positions, and cuts `cached` (the tokens
/// the cache holds) to what the prompt can reuse ([`reusable_prefix`]); returns that length, to
/// which the caller truncates the cache itself.
pub fn rewind_for_prompt(cached: &mut Vec<u32>, prompt: &[u32], capacity: usize) -> Result<usize, BackendError> {
    if prompt.is_empty() {
        return Err(BackendError::EmptyPrompt);
    }
    if prompt.len() > capacity {
        return Err(BackendError::ContextFull { needed: prompt.len(), capacity });
    }
    let keep = reusable_prefix(cached, prompt);
    cached.truncate(keep);
    Ok(keep)
}

/// The token `sampler` chooses after `history` from what a step answered, or `None` when that
/// was candidates that cannot decide it: the caller then samples the step's full logits.
pub fn choose_from_step(step: StepLogits, sampler: &mut Sampler, history: &[u32]) -> Option<u32> {
    match step {
        StepLogits::Full(logits) => Some(sampler.sample(&logits, history)),
        StepLogits::Candidates(c) => sampler.sample_candidates(&c),
    }
}

/// One generation loop's bookkeeping: the tokens chosen so far and when to stop. Shared by
/// [`Session::generate`] and the loops that await their backend instead of blocking on it (the
/// GPU engine's in the browser), so that both stop alike.
pub struct Turn<'a> {
    stop_tokens: &'a [u32],
    max_tokens: usize,
    prompt_tokens_run: usize,
    tokens: Vec<u32>,
}

impl<'a> Turn<'a> {
    pub fn new(stop_tokens: &'a [u32], max_tokens: usize, prompt_tokens_run: usize) -> Self {
        Turn { stop_tokens, max_tokens, prompt_tokens_run, tokens: Vec::new() }
    }

    /// Whether the loop is to choose a token (false from the start only when none was asked for:
    /// after that, [`Turn::take`] says when the turn ends).
    pub fn wants_token(&self) -> bool {
        self.tokens.len() < self.max_tokens
    }

    /// Takes `token`, chosen after the `cached` tokens of a cache of `capacity`, and hands it to
    /// `on_token` unless it is a stop token. `Break` with the reason when the turn ends here;
    /// `Continue` when the caller is to run `token` and choose the next.
    pub fn take(
        &mut self,
        token: u32,
        cached: usize,
        capacity: usize,
        on_token: &mut impl FnMut(u32) -> ControlFlow<()>,
    ) -> ControlFlow<StopReason> {
        if self.stop_tokens.contains(&token) {
            return ControlFlow::Break(StopReason::StopToken(token));
        }
        self.tokens.push(token);
        if on_token(token).is_break() {
            return ControlFlow::Break(StopReason::Cancelled);
        }
        if self.tokens.len() >= self.max_tokens {
            return ControlFlow::Break(StopReason::MaxTokens);
        }
        if cached >= capacity {
            return ControlFlow::Break(StopReason::ContextFull);
        }
        ControlFlow::Continue(())
    }

    pub fn finish(self, stop: StopReason) -> Generation {
        Generation { tokens: self.tokens, stop, prompt_tokens_run: self.prompt_tokens_run }
    }
}

#[cfg(test)]
mod tests {
    use super::{StopReason, Turn};
    use std::ops::ControlFlow;

    /// Runs a turn over `chosen` (the tokens a sampler would choose, one per step) with a cache
    /// that holds `cached` tokens before the first; returns the generation and what `on_token` saw.
    fn run(
        chosen: &[u32],
        stops: &[u32],
        max: usize,
        cached: usize,
        capacity: usize,
        cancel_at: u32,
    ) -> (super::Generation, Vec<u32>) {
        let mut seen = Vec::new();
        let mut on_token = |t| {
            seen.push(t);
            if t == cancel_at { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        };
        let mut turn = Turn::new(stops, max, 5);
        // Each token taken is run, so the cache holds one more before the next.
        for (cached, &token) in (cached..).zip(chosen) {
            if !turn.wants_token() {
                break;
            }
            if let ControlFlow::Break(stop) = turn.take(token, cached, capacity, &mut on_token) {
                return (turn.finish(stop), seen);
            }
        }
        (turn.finish(StopReason::MaxTokens), seen)
    }

    #[test]
    fn a_turn_stops_for_each_reason_with_the_tokens_it_took() {
        let chosen = [17, 4, 99, 23, 8, 61];
        // A stop token ends the turn and is neither kept nor handed on.
        let (g, seen) = run(&chosen, &[99, 1], 10, 0, 100, u32::MAX);
        assert_eq!((g.tokens, g.stop, g.prompt_tokens_run), (vec![17, 4], StopReason::StopToken(99), 5));
        assert_eq!(seen, [17, 4]);
        // The caller's Break keeps the token it was handed.
        let (g, seen) = run(&chosen, &[], 10, 0, 100, 23);
        assert_eq!((g.tokens, g.stop), (vec![17, 4, 99, 23], StopReason::Cancelled));
        assert_eq!(seen, [17, 4, 99, 23]);
        // The count ends it, even where the cache is also full.
        let (g, _) = run(&chosen, &[], 3, 97, 100, u32::MAX);
        assert_eq!((g.tokens, g.stop), (vec![17, 4, 99], StopReason::MaxTokens));
        // A full cache ends it once a token cannot be run: 98 cached + 2 run fill 100.
        let (g, _) = run(&chosen, &[], 10, 98, 100, u32::MAX);
        assert_eq!((g.tokens, g.stop), (vec![17, 4, 99], StopReason::ContextFull));
        // Nothing asked for: no token is chosen.
        let (g, seen) = run(&chosen, &[], 0, 0, 100, u32::MAX);
        assert_eq!((g.tokens.len(), g.stop, seen.len()), (0, StopReason::MaxTokens, 0));
    }
}
