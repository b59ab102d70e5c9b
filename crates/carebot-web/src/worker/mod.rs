//! The inference worker. It owns the GPU engine, the tokenizer and the model cache; the page talks
//! to it only through [`crate::protocol`] messages. Each token's GPU readback is awaited, so a
//! `Stop` message is handled between two tokens.

mod js;
mod prepare;
mod source;
mod store;

use crate::protocol::{
    AnswerStats, ErrorKind, Failure, FromWorker, LoadTimes, ModelInfo, ModelSource, Phase, ProbeInfo, Settings,
    ToWorker,
};
use carebot_gpu::{EngineOptions, GpuContext, GpuError, GpuModel, GpuOptions, GpuSession};
use carebot_model::chat::{ChatMessage, ChatTemplate, FitError, fit_conversation, stop_token_ids};
use carebot_model::config::LlamaConfig;
use carebot_model::gguf::{GgufError, GgufFile};
use carebot_model::offsets::piece_len;
use carebot_model::sampler::Sampler;
use carebot_model::tokenizer::Tokenizer;
use js::{now_ms, wasm_heap_bytes};
use source::Remote;
use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::rc::Rc;
use store::CachedFile;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// Bytes per read from the network, the cache or a local file: the wasm heap holds one piece
/// (plus the header while it is parsed), whatever the model's size.
const PIECE: usize = 8 << 20;
/// First bytes read to look at a file; GGUF headers with a big vocabulary need more (read on demand).
const PROBE_BYTES: usize = 1 << 20;
/// The most bytes of GGUF header (metadata and tensor directory) read into the heap: a Llama-3
/// header with its 128k-token vocabulary and merges is ≈ 8 MB. A bigger one is refused unread.
const MAX_HEADER_BYTES: usize = 64 << 20;
/// Longest context the browser engine allocates a KV cache for.
const MAX_CONTEXT: usize = 4096;

/// A model on the GPU with what it takes to chat with it.
struct Loaded {
    session: GpuSession,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stops: Vec<u32>,
}

/// The model file's bytes: from the cache where it has them, else from the source (and then
/// into the cache).
struct Bytes {
    remote: Option<Remote>,
    cache: Option<CachedFile>,
    size: u64,
    /// Some bytes came over the network during this visit.
    fetched: Cell<bool>,
    /// Time spent reading the source, and writing and reading the cache.
    times: RefCell<LoadTimes>,
}

/// A source looked at by `Probe`, ready for `Load`.
struct Probed {
    source: ModelSource,
    bytes: Bytes,
    file: GgufFile,
    /// A hub repository still to prepare (into `bytes.cache`).
    prepare: Option<prepare::Plan>,
}

#[derive(Default)]
struct Worker {
    probed: RefCell<Option<Probed>>,
    loaded: RefCell<Option<Loaded>>,
    /// Set by `Stop`, read between tokens.
    stop: Cell<bool>,
    /// An answer is being written (the model is out of `loaded` meanwhile).
    answering: Cell<bool>,
    /// A probe or load is running (they hold the cache file open).
    loading: Cell<bool>,
    /// A local file posted with the last `Probe`.
    file: RefCell<Option<web_sys::File>>,
}

fn post(msg: &FromWorker) {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    // Only fails if the page is gone.
    let _ = scope.post_message(&JsValue::from_str(&msg.to_json()));
}

fn fail(id: Option<u64>, failure: Failure) {
    post(&FromWorker::Failed { id, failure });
}

fn failure(kind: ErrorKind, detail: impl Into<String>) -> Failure {
    Failure { kind, detail: detail.into() }
}

fn gpu_failure(e: GpuError) -> Failure {
    let kind = match &e {
        GpuError::NoAdapter(_) | GpuError::RequestDevice(_) => ErrorKind::NoWebGpu,
        // A device without a feature the engine needs is as unusable as one too small.
        GpuError::TooSmall { .. } | GpuError::MissingFeature(_) => ErrorKind::GpuTooSmall,
        GpuError::OutOfMemory { .. } => ErrorKind::OutOfMemory,
        GpuError::RanOutOfMemory(_) => ErrorKind::OutOfMemory,
        GpuError::DeviceLost(_) => ErrorKind::DeviceLost,
        GpuError::Timeout { .. } => ErrorKind::GpuHung,
        GpuError::Validation(_) | GpuError::Internal(_) | GpuError::WrongResult(_) => ErrorKind::GpuFault,
        GpuError::Config(_)
        | GpuError::Gguf(_)
        | GpuError::Tensor { .. }
        | GpuError::Unsupported(_)
        | GpuError::File { .. }
        | GpuError::ContextFull { .. } => ErrorKind::Model,
        GpuError::Wgpu(_) | GpuError::BadInput(_) | GpuError::Usage(_) => ErrorKind::Internal,
    };
    failure(kind, e.to_string())
}

pub fn start() {
    console_error_panic_hook::set_once();
    let worker = Rc::new(Worker::default());
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |event: MessageEvent| {
        let data = event.data();
        // A message is a JSON string, or [JSON string, File] for a local model.
        let (text, file) = match data.dyn_ref::<js_sys::Array>() {
            Some(a) => (a.get(0).as_string(), a.get(1).dyn_into::<web_sys::File>().ok()),
            None => (data.as_string(), None),
        };
        let msg = match text.as_deref().map(serde_json::from_str::<ToWorker>) {
            Some(Ok(msg)) => msg,
            other => {
                fail(None, failure(ErrorKind::Internal, format!("unreadable message: {other:?}")));
                return;
            }
        };
        if file.is_some() {
            *worker.file.borrow_mut() = file;
        }
        // Stop must not wait behind the answer it stops.
        if msg == ToWorker::Stop {
            worker.stop.set(true);
            return;
        }
        let worker = worker.clone();
        wasm_bindgen_futures::spawn_local(async move { worker.handle(msg).await });
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(&FromWorker::Started);
    // gloo's timer: a setInterval owning its closure, for the worker's whole life.
    gloo_timers::callback::Interval::new(crate::protocol::HEARTBEAT_MS, || post(&FromWorker::Alive)).forget();
}

impl Worker {
    async fn handle(&self, msg: ToWorker) {
        match msg {
            ToWorker::Probe { .. } | ToWorker::Load { .. } if self.loading.get() => {
                fail(None, failure(ErrorKind::Busy, "the model is already being loaded"))
            }
            ToWorker::Probe { source } => {
                self.loading.set(true);
                let result = self.probe(source).await;
                self.loading.set(false);
                match result {
                    Ok(info) => post(&FromWorker::Probed { info }),
                    Err(f) => fail(None, f),
                }
            }
            ToWorker::Load { source } => {
                self.loading.set(true);
                let result = self.load(source).await;
                self.loading.set(false);
                if let Err(f) = result {
                    fail(None, f)
                }
            }
            ToWorker::Generate { id, messages, settings } => {
                // After a lost device the model is dropped; the page offers to load again.
                if let Err(f) = self.generate(id, messages, &settings).await {
                    fail(Some(id), f)
                }
            }
            ToWorker::DeleteCached { key } => {
                // A probed model holds its cache file open: let it go (a load in progress is
                // refused by the store as busy).
                if !self.loading.get() {
                    self.probed.borrow_mut().take();
                }
                match store::delete(&key).await {
                    Ok(bytes) => post(&FromWorker::CacheDeleted { key, bytes }),
                    Err(failure) => post(&FromWorker::CacheFailed { failure }),
                }
            }
            ToWorker::ListCache => match store::list().await {
                Ok(models) => {
                    let estimate = store::estimate().await;
                    post(&FromWorker::CacheList {
                        models,
                        usage: estimate.map(|(usage, _)| usage),
                        quota: estimate.map(|(_, quota)| quota),
                    })
                }
                Err(failure) => post(&FromWorker::CacheFailed { failure }),
            },
            ToWorker::Stop => self.stop.set(true),
        }
    }

    /// Looks at a source: its size, whether it is cached, and whether its header is a llama GGUF,
    /// reading only the header (from the cache when it is there, so a cached model needs no network).
    async fn probe(&self, source: ModelSource) -> Result<ProbeInfo, Failure> {
        self.probed.borrow_mut().take();
        let mut plan = None;
        // Whether the cache held any of it before this probe read the first piece.
        let (remote, cache, size, fetched, resumed) = match &source {
            ModelSource::Hub(repo) => {
                let key = repo.cache_key();
                match CachedFile::peek(&key).await {
                    Some(p) if p.complete => {
                        (None, Some(CachedFile::open(&key, p.size, &p.version).await?), p.size, false, true)
                    }
                    _ => {
                        // Resumed only from the same commit: one that moved on starts over.
                        let p = prepare::Plan::fetch(repo).await?;
                        let cache = CachedFile::open(&key, p.size, p.version()).await?;
                        let size = p.size;
                        plan = Some(p);
                        let resumed = cache.cached()? > 0;
                        (None, Some(cache), size, true, resumed)
                    }
                }
            }
            ModelSource::File { name, size } => {
                let file = self
                    .file
                    .borrow()
                    .clone()
                    .ok_or_else(|| failure(ErrorKind::Internal, format!("{name}: no file given")))?;
                (Some(Remote::File(file)), None, *size, false, false)
            }
            ModelSource::Url { url } => match CachedFile::peek(url).await {
                Some(p) if p.complete => {
                    (None, Some(CachedFile::open(url, p.size, &p.version).await?), p.size, false, true)
                }
                _ => {
                    // Resumed only from the version the server names now (its ETag or date).
                    let remote = Remote::url(url.clone());
                    let mut first = vec![0; PROBE_BYTES];
                    let size = remote.read(0, &mut first).await?;
                    let cache = CachedFile::open(url, size, &remote.version().unwrap_or_default()).await?;
                    let resumed = cache.cached()? > 0;
                    if !resumed {
                        cache.append(0, &first[..piece_len(size, PROBE_BYTES)])?;
                    }
                    (Some(remote), Some(cache), size, true, resumed)
                }
            },
        };
        let bytes = Bytes { remote, cache, size, fetched: Cell::new(fetched), times: RefCell::default() };
        let file = match &plan {
            Some(p) => GgufFile::parse(&p.header, size).map_err(|e| failure(ErrorKind::Internal, e.to_string()))?,
            None => bytes.read_header().await?,
        };
        LlamaConfig::from_gguf(&file).map_err(|e| {
            let kind =
                if file.architecture() != Some("llama") { ErrorKind::WrongArchitecture } else { ErrorKind::Model };
            failure(kind, e.to_string())
        })?;
        // A chat template that cannot render, or runs or writes without end, is refused before
        // anything is downloaded (ChatTemplate checks it, within a bounded cost).
        ChatTemplate::from_gguf(&file.metadata).map_err(|e| failure(ErrorKind::Model, e.to_string()))?;
        let name = match (&source, file.metadata.get_str("general.name")) {
            (_, Some(n)) => n.to_string(),
            (ModelSource::File { name, .. }, None) => name.clone(),
            (ModelSource::Url { url }, None) => url.rsplit('/').next().unwrap_or(url).to_string(),
            (ModelSource::Hub(repo), None) => repo.repo.clone(),
        };
        if let Some(cache) = &bytes.cache {
            cache.remember_name(&name).await?;
        }
        let cached = bytes.cached()?;
        let available = match source {
            ModelSource::File { .. } => None,
            _ => store::estimate().await.map(|(usage, quota)| quota.saturating_sub(usage)),
        };
        let info = ProbeInfo {
            size,
            cached,
            resumed,
            available,
            name,
            architecture: file.architecture().unwrap_or_default().to_string(),
            parameters: file.tensors.iter().map(|t| t.n_elements()).sum(),
            preparation: plan.as_ref().map(|p| p.info(cached)),
        };
        let probed = Probed { source, bytes, file, prepare: plan };
        *self.probed.borrow_mut() = Some(probed);
        Ok(info)
    }

    /// Loads the probed source onto the GPU: each piece comes from the cache, or from the network
    /// into the cache, and on into the GPU's buffers.
    async fn load(&self, source: ModelSource) -> Result<(), Failure> {
        let t0 = now_ms();
        self.loaded.borrow_mut().take();
        let same = self.probed.borrow().as_ref().is_some_and(|p| p.source == source);
        if !same {
            self.probe(source).await?;
        }
        let probed = self.probed.borrow_mut().take().ok_or_else(|| failure(ErrorKind::Internal, "nothing probed"))?;
        let cfg = LlamaConfig::from_gguf(&probed.file).map_err(|e| failure(ErrorKind::Model, e.to_string()))?;
        let tokenizer =
            Tokenizer::from_gguf(&probed.file.metadata).map_err(|e| failure(ErrorKind::Model, e.to_string()))?;
        let template =
            ChatTemplate::from_gguf(&probed.file.metadata).map_err(|e| failure(ErrorKind::Model, e.to_string()))?;
        let stops = stop_token_ids(&tokenizer);

        let size = probed.bytes.size;
        let cached_at_start = probed.bytes.cached()?;
        if let (Some(_), Some((usage, quota))) = (&probed.bytes.cache, store::estimate().await) {
            let needed = size - cached_at_start;
            let available = quota.saturating_sub(usage);
            if needed > available {
                return Err(failure(
                    ErrorKind::StorageFull,
                    format!(
                        "the model needs {needed} more bytes of browser storage; this site may use {available} more"
                    ),
                ));
            }
        }

        let ctx = GpuContext::new(&GpuOptions::default()).await.map_err(gpu_failure)?;
        let mut prepared = None;
        if let (Some(plan), Some(cache)) = (&probed.prepare, &probed.bytes.cache)
            && cached_at_start < size
        {
            let mut last_report = 0.0;
            let stats = plan
                .run(&ctx, cache, |p| {
                    let now = now_ms();
                    if now - last_report >= 250.0 || p.written == p.write_total {
                        last_report = now;
                        post(&FromWorker::Progress {
                            phase: Phase::Prepare,
                            done: p.written,
                            total: p.write_total,
                            bytes_per_second: p.download_rate,
                            prepare: Some(p),
                        });
                    }
                })
                .await?;
            cache.finish().await?;
            probed.bytes.fetched.set(true);
            prepared = Some(stats);
        }
        let cached_at_start = probed.bytes.cached()?;
        let adapter = ctx.describe();
        let software_adapter = ctx.is_software();
        let summary = cfg.summary();
        let options = EngineOptions { context: cfg.context_length.clamp(1, MAX_CONTEXT), ..EngineOptions::default() };
        let mut model = GpuModel::new(ctx, &probed.file, &options).await.map_err(gpu_failure)?;

        // Every byte from the end of the header on, in order, from wherever it is.
        let data_start = probed.file.tensors.iter().map(|t| t.offset).min().unwrap_or(size);
        let phase = match (&probed.source, cached_at_start == size) {
            (ModelSource::File { .. }, _) => Phase::LocalFile,
            (_, true) => Phase::Cache,
            _ => Phase::Download,
        };
        let mut piece = vec![0u8; PIECE];
        let mut at = data_start;
        let (mut last_report, mut last_done, mut rate) = (now_ms(), at, 0.0f64);
        *probed.bytes.times.borrow_mut() =
            LoadTimes { setup_seconds: (last_report - t0) / 1000.0, ..LoadTimes::default() };
        let mut upload_ms = 0.0;
        while at < size {
            let n = piece_len(size - at, PIECE);
            probed.bytes.read(at, &mut piece[..n]).await?;
            let t = now_ms();
            model.upload(at, &piece[..n]).map_err(gpu_failure)?;
            upload_ms += now_ms() - t;
            at += n as u64;
            let now = now_ms();
            if now - last_report >= 250.0 || at == size {
                let instant = (at - last_done) as f64 / ((now - last_report).max(1.0) / 1000.0);
                rate = if rate == 0.0 { instant } else { 0.7 * rate + 0.3 * instant };
                post(&FromWorker::Progress { phase, done: at, total: size, bytes_per_second: rate, prepare: None });
                (last_report, last_done) = (now, at);
            }
        }
        // Every byte is in the cache now: from here on it is a model, not a download to resume.
        if let Some(cache) = &probed.bytes.cache {
            cache.finish().await?;
            cache.remember_use().await?;
        }
        let t = now_ms();
        model.finish_upload().map_err(gpu_failure)?;
        upload_ms += now_ms() - t;
        let context = model.capacity();
        drop(piece);
        *self.loaded.borrow_mut() = Some(Loaded { session: GpuSession::new(model), tokenizer, template, stops });
        post(&FromWorker::Loaded {
            info: ModelInfo {
                name: probed.file.metadata.get_str("general.name").unwrap_or("model").to_string(),
                summary,
                context,
                adapter,
                software_adapter,
                from_cache: phase == Phase::Cache && !probed.bytes.fetched.get(),
                load_seconds: (now_ms() - t0) / 1000.0,
                wasm_heap_bytes: wasm_heap_bytes(),
                prepared,
                times: LoadTimes { upload_seconds: upload_ms / 1000.0, ..probed.bytes.times.take() },
            },
        });
        Ok(())
    }

    /// Answers with the loaded model, which is taken out of `self.loaded` meanwhile (so no
    /// borrow is held across the awaits) and put back unless the device is gone.
    async fn generate(&self, id: u64, messages: Vec<ChatMessage>, settings: &Settings) -> Result<(), Failure> {
        let Some(mut loaded) = self.loaded.borrow_mut().take() else {
            return Err(if self.answering.get() {
                failure(ErrorKind::Busy, "an answer is still being written")
            } else {
                failure(ErrorKind::Model, "no model is loaded")
            });
        };
        self.answering.set(true);
        let result = self.answer(&mut loaded, id, messages, settings).await;
        self.answering.set(false);
        let lost = matches!(&result, Err(f) if f.kind.needs_reload());
        let mut slot = self.loaded.borrow_mut();
        if !lost && slot.is_none() {
            *slot = Some(loaded);
        }
        result
    }

    async fn answer(
        &self,
        loaded: &mut Loaded,
        id: u64,
        messages: Vec<ChatMessage>,
        settings: &Settings,
    ) -> Result<(), Failure> {
        self.stop.set(false);
        let mut conversation = Vec::with_capacity(messages.len() + 1);
        if !settings.system.trim().is_empty() {
            conversation.push(ChatMessage::system(&settings.system));
        }
        let keep = conversation.len();
        conversation.extend(messages);
        let capacity = loaded.session.model.capacity();
        let reserve = settings.max_tokens.min(capacity / 2);
        let fitted = fit_conversation(&loaded.template, &loaded.tokenizer, &conversation, keep, capacity, reserve)
            .map_err(|e: FitError| failure(ErrorKind::Model, e.to_string()))?;

        let mut sampler = Sampler::new(settings.sampler());
        let mut stream = loaded.tokenizer.stream().skip_control(true);
        let t0 = now_ms();
        let mut first_token_at = None;
        let stop = &self.stop;
        let g = loaded
            .session
            .generate(&fitted.ids, &mut sampler, &loaded.stops, settings.max_tokens, |token| {
                first_token_at.get_or_insert_with(now_ms);
                let text = stream.push(token);
                if !text.is_empty() {
                    post(&FromWorker::Token { id, text });
                }
                if stop.get() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            })
            .await
            .map_err(gpu_failure)?;
        let rest = stream.flush();
        if !rest.is_empty() {
            post(&FromWorker::Token { id, text: rest });
        }
        // Writing speed: the tokens after the first over the time since it (the first one
        // carries the prompt's prefill).
        let end = now_ms();
        let tokens_per_second = match first_token_at {
            Some(first) if g.tokens.len() > 1 => (g.tokens.len() - 1) as f64 / ((end - first) / 1000.0).max(1e-6),
            _ => g.tokens.len() as f64 / ((end - t0) / 1000.0).max(1e-6),
        };
        post(&FromWorker::Done {
            id,
            stats: AnswerStats {
                generated: g.tokens.len(),
                prompt_tokens: fitted.ids.len(),
                prompt_tokens_run: g.prompt_tokens_run,
                tokens_per_second,
                prompt_seconds: (first_token_at.unwrap_or(end) - t0) / 1000.0,
                stop: g.stop.into(),
                context_used: loaded.session.tokens.len() + 1,
                context_size: capacity,
                dropped_turns: fitted.dropped_turns,
            },
        });
        Ok(())
    }
}

impl Bytes {
    fn cached(&self) -> Result<u64, Failure> {
        self.cache.as_ref().map_or(Ok(0), CachedFile::cached)
    }

    /// Reads the file's first bytes until they hold the whole GGUF header, and parses it.
    async fn read_header(&self) -> Result<GgufFile, Failure> {
        let mut header = Vec::new();
        let mut want = piece_len(self.size, PROBE_BYTES);
        loop {
            if header.len() < want {
                let at = header.len();
                header.resize(want, 0);
                self.read(at as u64, &mut header[at..]).await?;
            }
            match GgufFile::parse(&header, self.size) {
                Ok(file) => return Ok(file),
                Err(GgufError::NeedMoreData { needed }) if needed <= self.size => {
                    if needed > MAX_HEADER_BYTES as u64 {
                        return Err(failure(
                            ErrorKind::Model,
                            format!(
                                "the GGUF header (metadata and tensor list) takes {needed} bytes; this app reads at most {MAX_HEADER_BYTES}"
                            ),
                        ));
                    }
                    // At least double what was read, so the rounds are few; never past the file.
                    let next = needed.max(2 * header.len() as u64).min(self.size);
                    let grown = piece_len(next, MAX_HEADER_BYTES);
                    if grown <= header.len() {
                        return Err(failure(
                            ErrorKind::Model,
                            format!("the GGUF header asks for {needed} bytes but does not parse with them"),
                        ));
                    }
                    want = grown;
                }
                Err(e @ (GgufError::BadMagic(_) | GgufError::UnsupportedVersion(_) | GgufError::BigEndian)) => {
                    return Err(failure(ErrorKind::NotGguf, e.to_string()));
                }
                Err(e) => return Err(failure(ErrorKind::Model, e.to_string())),
            }
        }
    }

    /// Fills `buf` with the file's bytes at `at`.
    async fn read(&self, at: u64, buf: &mut [u8]) -> Result<(), Failure> {
        let cached = self.cached()?;
        let timed =
            |add: fn(&mut LoadTimes, f64), since: f64| add(&mut self.times.borrow_mut(), (now_ms() - since) / 1000.0);
        let t = now_ms();
        match (&self.cache, &self.remote) {
            (Some(cache), _) if at + buf.len() as u64 <= cached => {
                cache.read(at, buf)?;
                timed(|t, s| t.cache_read_seconds += s, t);
                Ok(())
            }
            (Some(cache), Some(remote)) => {
                // Downloads go in order, so the cache ends inside (or at the start of) this piece.
                if cached < at {
                    return Err(failure(ErrorKind::Internal, "the cache has a gap"));
                }
                // The piece ends past `cached` (checked above), so this is inside `buf`.
                let split = piece_len(cached - at, buf.len());
                cache.read(at, &mut buf[..split])?;
                timed(|t, s| t.cache_read_seconds += s, t);
                let t = now_ms();
                if let Err(e) = remote.read(cached, &mut buf[split..]).await {
                    // Never a file of two versions: what came before the change goes.
                    if e.kind == ErrorKind::SourceChanged {
                        cache.restart().await?;
                    }
                    return Err(e);
                }
                timed(|t, s| t.source_seconds += s, t);
                self.fetched.set(true);
                let t = now_ms();
                cache.append(cached, &buf[split..])?;
                timed(|t, s| t.cache_write_seconds += s, t);
                Ok(())
            }
            (None, Some(remote)) => {
                remote.read(at, buf).await?;
                timed(|t, s| t.source_seconds += s, t);
                Ok(())
            }
            (_, None) => Err(failure(ErrorKind::Internal, "the cached model is incomplete")),
        }
    }
}
