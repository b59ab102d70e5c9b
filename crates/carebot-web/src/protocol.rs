//! The typed messages between the page and the inference worker (sent as JSON strings; a local
//! model file travels beside the message as a `File`, which the worker reads in place).

pub use crate::hub::HubRepo;
use carebot_model::chat::ChatMessage;
use serde::{Deserialize, Serialize};

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A GGUF file on a server that answers HTTP Range requests; cached in the Origin Private File
    /// System.
    Url { url: String },
    /// A `.gguf` the user picked or dropped, read in place (never uploaded, never copied).
    File { name: String, size: u64 },
    /// A Llama repository on the Hugging Face hub, prepared (downloaded and quantized to Q4_K_M
    /// on the GPU) once into the Origin Private File System.
    Hub(HubRepo),
}

impl ModelSource {
    /// The name of its copy in the browser's cache (a local file has none).
    pub fn cache_key(&self) -> Option<String> {
        match self {
            ModelSource::Url { url } => Some(url.clone()),
            ModelSource::Hub(repo) => Some(repo.cache_key()),
            ModelSource::File { .. } => None,
        }
    }
}

/// The name of a model's files in the browser's cache (`<key>.gguf` and `<key>.json`), from its
/// [`ModelSource::cache_key`].
pub fn cache_file_key(cache_key: &str) -> String {
    format!("{:016x}", carebot_model::rng::fnv1a64(cache_key.as_bytes()))
}

/// A model in the browser's cache, as the model manager lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedModel {
    /// Its files' name ([`cache_file_key`]): what [`ToWorker::DeleteCached`] names.
    pub key: String,
    /// `general.name` (or the file name), once a probe read its header.
    pub name: Option<String>,
    /// The GGUF URL or hub repository ([`ModelSource::cache_key`]) it came from; None for a file
    /// no record explains.
    pub source: Option<String>,
    /// The whole model's size, when the record says.
    pub size: Option<u64>,
    /// Bytes of the model here (all of them when complete).
    pub cached: u64,
    /// What its files take in the browser's storage.
    pub stored: u64,
    pub complete: bool,
    /// Last loaded, in milliseconds since 1970.
    pub last_used: Option<f64>,
}

impl CachedModel {
    /// Where it came from, for people: a hub repository as `OWNER/NAME @ commit (hub)` (its
    /// cache key is `ENDPOINT/OWNER/NAME@REVISION#q4_k_m`), a URL as itself.
    pub fn source_label(&self) -> Option<String> {
        let source = self.source.as_deref()?;
        let Some(rest) = source.strip_suffix("#q4_k_m") else { return Some(source.to_string()) };
        let (location, revision) = rest.rsplit_once('@')?;
        let mut parts = location.rsplitn(3, '/');
        let (name, owner, endpoint) = (parts.next()?, parts.next()?, parts.next()?);
        let short: String = revision.chars().take(12).collect();
        let hub =
            if endpoint == crate::hub::default_endpoint() { "hub".to_string() } else { format!("hub {endpoint}") };
        Some(format!("{owner}/{name} @ {short} ({hub})"))
    }
}

/// The answer settings a user can change (and a link can preset).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Empty: no system message.
    pub system: String,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: usize,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { system: DEFAULT_SYSTEM.into(), temperature: 0.7, top_p: 0.9, max_tokens: 512, seed: 0 }
    }
}

pub const DEFAULT_SYSTEM: &str = "You are CareBot, a careful medical assistant. Give general health information, say when \
    something needs a doctor, and never claim to diagnose. 你是 CareBot，一名谨慎的医疗助手。";

impl Settings {
    /// What the settings panel and a link may set, one source for both (and for the panel's
    /// `min`/`max`).
    pub const TEMPERATURE: std::ops::RangeInclusive<f32> = 0.0..=2.0;
    pub const TOP_P: std::ops::RangeInclusive<f32> = 0.01..=1.0;
    pub const MAX_TOKENS: std::ops::RangeInclusive<usize> = 1..=8192;

    /// The sampler the CLI's `generate` uses with the same temperature, top-p and seed (its
    /// defaults for the rest), so a link reproduces `carebot generate --chat` exactly.
    pub fn sampler(&self) -> carebot_model::sampler::SamplerConfig {
        carebot_model::sampler::SamplerConfig {
            temperature: self.temperature,
            top_k: 40,
            top_p: self.top_p,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: self.seed,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Look at the source without downloading it: cached? size? a llama GGUF? room to store it?
    Probe { source: ModelSource },
    /// Load the probed source onto the GPU (downloading what the cache lacks).
    Load { source: ModelSource },
    /// Answer the conversation (the last message is the user's new one).
    Generate { id: u64, messages: Vec<ChatMessage>, settings: Settings },
    /// End the current answer after the token being computed.
    Stop,
    /// Delete a cached model (whole or partial), named by [`cache_file_key`].
    DeleteCached { key: String },
    /// List every model in the cache, with the storage used and allowed.
    ListCache,
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub size: u64,
    /// Bytes already in the cache (equal to `size` when complete).
    pub cached: u64,
    /// Whether an earlier visit left part of it here (the probe's own first read does not count:
    /// a first visit is never told that a download "continues").
    #[serde(default)]
    pub resumed: bool,
    /// What the browser says this origin may still store (None: it would not say).
    pub available: Option<u64>,
    /// `general.name`, else the file name.
    pub name: String,
    pub architecture: String,
    pub parameters: u64,
    /// For a hub repository not prepared yet: what the one-time preparation costs.
    #[serde(default)]
    pub preparation: Option<PrepareInfo>,
}

/// The one-time preparation of a hub repository, as explained before it starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareInfo {
    /// Bytes of weights to download (bf16), and how many of them an earlier visit already did.
    pub download: u64,
    pub downloaded: u64,
    /// The commit being read.
    pub revision: String,
    /// Repository page, for the user to see what is being downloaded.
    pub page: String,
}

/// Progress of a preparation: the download, and the GPU quantization writing the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareProgress {
    pub downloaded: u64,
    pub download_total: u64,
    /// Bytes of the prepared model written so far.
    pub written: u64,
    pub write_total: u64,
    /// Source bytes per second over the network, and through the GPU quantizer.
    pub download_rate: f64,
    pub quantize_rate: f64,
    /// The tensor being prepared.
    pub tensor: String,
}

/// What a finished preparation measured (source bytes, and seconds spent waiting on each side).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareStats {
    pub source_bytes: u64,
    pub download_seconds: f64,
    pub quantize_seconds: f64,
    pub total_seconds: f64,
    /// Bytes of the prepared model written in this visit.
    pub written: u64,
}

/// Where a load's time went, in seconds: each piece of the file is read, written to the cache
/// where it came from the network, and handed to the GPU, one after another.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadTimes {
    /// Waiting for the network (a download) or for the picked file (`Blob.slice`).
    pub source_seconds: f64,
    /// Writing downloaded pieces into the Origin Private File System.
    pub cache_write_seconds: f64,
    /// Reading cached pieces back.
    pub cache_read_seconds: f64,
    /// Handing pieces to the GPU (`GpuModel::upload`, repacking included) and finishing.
    pub upload_seconds: f64,
    /// Opening the device, parsing the header and tokenizer, allocating the model: before the
    /// first piece.
    pub setup_seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    /// What the loader read that changes the math (`LlamaConfig::summary`, as `carebot info`
    /// prints it).
    pub summary: String,
    pub context: usize,
    pub adapter: String,
    pub software_adapter: bool,
    pub from_cache: bool,
    pub load_seconds: f64,
    /// Size of the worker's wasm memory after loading: the peak, as wasm memory never shrinks.
    pub wasm_heap_bytes: u64,
    /// Set when the model was prepared from a hub repository in this visit.
    #[serde(default)]
    pub prepared: Option<PrepareStats>,
    #[serde(default)]
    pub times: LoadTimes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Downloading a hub repository's weights and quantizing them on the GPU.
    Prepare,
    Download,
    Cache,
    LocalFile,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnswerStats {
    pub generated: usize,
    pub prompt_tokens: usize,
    /// Prompt tokens that had to run (the rest came from the KV cache).
    pub prompt_tokens_run: usize,
    pub tokens_per_second: f64,
    /// From the request to the first token: reading the prompt (`prompt_tokens_run` of it).
    #[serde(default)]
    pub prompt_seconds: f64,
    pub stop: AnswerEnd,
    /// Positions of the context in use after the answer, and its size.
    pub context_used: usize,
    pub context_size: usize,
    /// Oldest turns left out so the conversation fits the context.
    pub dropped_turns: usize,
}

/// Why an answer ended (saved with it, and sent as `stop`, `max_tokens`, `cancelled` or
/// `context_full`, as before it was typed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerEnd {
    /// The model wrote a stop token.
    Stop,
    MaxTokens,
    /// The user pressed Stop.
    Cancelled,
    /// The context is full.
    ContextFull,
}

impl From<carebot_model::generate::StopReason> for AnswerEnd {
    fn from(reason: carebot_model::generate::StopReason) -> Self {
        use carebot_model::generate::StopReason;
        match reason {
            StopReason::StopToken(_) => AnswerEnd::Stop,
            StopReason::MaxTokens => AnswerEnd::MaxTokens,
            StopReason::Cancelled => AnswerEnd::Cancelled,
            StopReason::ContextFull => AnswerEnd::ContextFull,
        }
    }
}

/// How often the worker says it is alive.
pub const HEARTBEAT_MS: u32 = 2_000;
/// A busy worker (loading, or writing an answer) silent this long is stuck in its own code
/// (a GPU that never returns ends its readback with a typed timeout instead) and is replaced.
/// Far above the longest step a worker takes without yielding (a piece of an 8B model handed to
/// the GPU: well under a second, BENCHMARKS.md).
pub const SILENCE_LIMIT_MS: f64 = 30_000.0;

/// Kinds of failure the page explains in the user's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NoWebGpu,
    GpuTooSmall,
    DeviceLost,
    /// A GPU operation did not finish within its deadline (the GPU hangs without being lost).
    GpuHung,
    /// The GPU reported a validation or internal error while running: its results are not
    /// trusted.
    GpuFault,
    OutOfMemory,
    NotFound,
    Http,
    NoRange,
    Network,
    NotGguf,
    /// The file changed on its server mid-download; what was downloaded was dropped.
    SourceChanged,
    WrongArchitecture,
    StorageFull,
    Model,
    Busy,
    Internal,
}

impl ErrorKind {
    /// Failures after which the model must be loaded again (the conversation is kept): the
    /// worker has dropped the model and its device (`GpuError::is_fatal`).
    pub fn needs_reload(self) -> bool {
        matches!(self, ErrorKind::DeviceLost | ErrorKind::GpuHung | ErrorKind::GpuFault | ErrorKind::OutOfMemory)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: ErrorKind,
    /// The precise reason, in English (numbers, URLs, the driver's words).
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's wasm is running and listening.
    Started,
    /// Sent every [`HEARTBEAT_MS`]: the worker's event loop runs (while it awaits the GPU too).
    Alive,
    Probed {
        info: ProbeInfo,
    },
    Progress {
        phase: Phase,
        done: u64,
        total: u64,
        bytes_per_second: f64,
        #[serde(default)]
        prepare: Option<PrepareProgress>,
    },
    Loaded {
        info: ModelInfo,
    },
    /// Text of answer `id` (already decoded; may be empty while a character's bytes are incomplete).
    Token {
        id: u64,
        text: String,
    },
    Done {
        id: u64,
        stats: AnswerStats,
    },
    CacheDeleted {
        key: String,
        bytes: u64,
    },
    /// Listing or deleting cached models failed (the loaded model is not affected).
    CacheFailed {
        failure: Failure,
    },
    CacheList {
        models: Vec<CachedModel>,
        /// This origin's storage in use and allowed, when the browser says.
        usage: Option<u64>,
        quota: Option<u64>,
    },
    /// `id`: the answer that failed, if it was one.
    Failed {
        id: Option<u64>,
        failure: Failure,
    },
}

impl ToWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages serialize")
    }
}

impl FromWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let m = ToWorker::Generate {
            id: 7,
            messages: vec![ChatMessage::user("头痛 <b>")],
            settings: Settings { system: String::new(), ..Settings::default() },
        };
        assert_eq!(serde_json::from_str::<ToWorker>(&m.to_json()).unwrap(), m);
        let f = FromWorker::Failed { id: None, failure: Failure { kind: ErrorKind::NoRange, detail: "x".into() } };
        assert!(f.to_json().contains(r#""kind":"no_range""#));
        assert_eq!(serde_json::from_str::<FromWorker>(&f.to_json()).unwrap(), f);
        let hub = ToWorker::Probe { source: ModelSource::Hub(HubRepo::carebot()) };
        assert!(hub.to_json().contains(r#""kind":"hub""#), "{}", hub.to_json());
        assert_eq!(serde_json::from_str::<ToWorker>(&hub.to_json()).unwrap(), hub);
    }

    #[test]
    fn an_answer_end_keeps_its_saved_words() {
        for (end, word) in [
            (AnswerEnd::Stop, "stop"),
            (AnswerEnd::MaxTokens, "max_tokens"),
            (AnswerEnd::Cancelled, "cancelled"),
            (AnswerEnd::ContextFull, "context_full"),
        ] {
            assert_eq!(serde_json::to_string(&end).unwrap(), format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<AnswerEnd>(&format!("\"{word}\"")).unwrap(), end);
        }
        assert!(serde_json::from_str::<AnswerEnd>("\"finished\"").is_err());
    }

    #[test]
    fn cached_models_say_where_they_came_from() {
        let hub = HubRepo { revision: "0123456789abcdef0123".into(), ..HubRepo::carebot() };
        let model = |source: Option<String>| CachedModel {
            key: cache_file_key(source.as_deref().unwrap_or("")),
            name: None,
            source,
            size: Some(10),
            cached: 3,
            stored: 200,
            complete: false,
            last_used: None,
        };
        assert_eq!(
            model(Some(hub.cache_key())).source_label().unwrap(),
            format!("{} @ 0123456789ab (hub)", crate::hub::CAREBOT_REPO)
        );
        let mirror = HubRepo { endpoint: "https://hf-mirror.example".into(), ..hub };
        assert_eq!(
            model(Some(mirror.cache_key())).source_label().unwrap(),
            format!("{} @ 0123456789ab (hub https://hf-mirror.example)", crate::hub::CAREBOT_REPO)
        );
        let url = "https://example.org/models/a@b.gguf";
        assert_eq!(model(Some(url.into())).source_label().unwrap(), url);
        assert_eq!(model(None).source_label(), None);
        // Pinned: models cached by earlier versions keep their files' names (FNV-1a 64 of the URL).
        assert_eq!(cache_file_key(url), "e706ea0c3227ccc0");
        let list = FromWorker::CacheList { models: vec![model(Some(url.into()))], usage: Some(5), quota: None };
        assert_eq!(serde_json::from_str::<FromWorker>(&list.to_json()).unwrap(), list);
    }
}
