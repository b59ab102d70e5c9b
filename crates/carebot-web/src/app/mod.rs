//! The chat page: state in one place ([`State`]), the link to the inference worker, and the Leptos
//! components in [`view`].

mod history;
mod kept;
mod offline;
mod view;

use crate::conversation::{Conversation, Turn};
use crate::i18n::Lang;
use crate::params::{LinkChange, LinkParams, default_model_url};
use crate::protocol::{Failure, FromWorker, HubRepo, ModelInfo, ModelSource, Phase, ProbeInfo, Settings, ToWorker};
use history::StoreError;
use leptos::prelude::*;
use std::cell::RefCell;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

/// Where the model is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelState {
    /// Waiting for the worker.
    Starting,
    NoWebGpu,
    Probing,
    /// Looked at, not loaded: the user decides to download.
    Probed(ProbeInfo),
    Loading {
        phase: Phase,
        done: u64,
        total: u64,
        bytes_per_second: f64,
        /// While a hub repository is prepared: download and quantization, each.
        prepare: Option<crate::protocol::PrepareProgress>,
    },
    Ready(ModelInfo),
    Failed(Failure),
}

impl ModelState {
    /// `data-state` of the `model-status` test hook.
    pub fn name(&self) -> &'static str {
        match self {
            ModelState::Starting => "starting",
            ModelState::NoWebGpu => "no-webgpu",
            ModelState::Probing => "probing",
            ModelState::Probed(_) => "probed",
            ModelState::Loading { .. } => "loading",
            ModelState::Ready(_) => "ready",
            ModelState::Failed(_) => "failed",
        }
    }
}

/// Everything the page shows, in one place.
#[derive(Clone, Copy)]
pub struct State {
    pub lang: RwSignal<Lang>,
    pub model: RwSignal<ModelState>,
    pub source: RwSignal<ModelSource>,
    pub settings: RwSignal<Settings>,
    pub conversation: RwSignal<Conversation>,
    pub saved: RwSignal<Vec<Conversation>>,
    /// The answer being written.
    pub answering: RwSignal<Option<u64>>,
    /// Text for the input box (set by "edit").
    pub draft: RwSignal<String>,
    /// A short message at the top (cache deleted, link parameters ignored, storage errors).
    pub notice: RwSignal<Option<String>>,
    pub show_disclaimer: RwSignal<bool>,
    pub show_settings: RwSignal<bool>,
    /// The history drawer, on screens too narrow to show the history beside the chat.
    pub show_history: RwSignal<bool>,
    /// Whether the browser granted persistent storage (asked before a download or preparation).
    pub persisted: RwSignal<Option<bool>>,
    /// A conversation another tab is writing an answer in: its unfinished answer is not shown
    /// as interrupted.
    pub written_elsewhere: RwSignal<Option<String>>,
    /// What the page's link asks to change, waiting for the user's yes or no: until then no
    /// model is looked at and nothing it sets applies.
    pub link_request: RwSignal<Option<LinkRequest>>,
    /// A link in an answer the user clicked: its full address is shown before leaving.
    pub leaving: RwSignal<Option<String>>,
    /// The model manager is open.
    pub show_models: RwSignal<bool>,
    /// What the cache holds, as the worker last listed it (None until it answers).
    pub cache_listing: RwSignal<Option<CacheListing>>,
    /// A service worker holds a newer version of the app, ready to replace this one whole.
    pub update_ready: RwSignal<bool>,
    /// The current model's cache is being deleted (it is looked at again after, or on failure).
    deleting_current: RwSignal<bool>,
}

/// The models in the browser's cache and the storage they share.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheListing {
    pub models: Vec<crate::protocol::CachedModel>,
    pub usage: Option<u64>,
    pub quota: Option<u64>,
}

/// A link's settings, held until the user accepts or declines them.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkRequest {
    /// What accepting changes, in the dialog's words.
    pub changes: Vec<LinkChange>,
    /// The model the link names (`None`: the default one).
    source: Option<ModelSource>,
    settings: Settings,
    /// What an acceptance is remembered by ([`LinkParams::canonical`]).
    canonical: String,
}

/// `localStorage` key of the links the user accepted (their canonical form), newest first: the
/// same link again (a bookmark, a reload) applies without asking; any other value asks again.
const ACCEPTED_LINKS_KEY: &str = "carebot.accepted-links";
const ACCEPTED_LINKS_KEPT: usize = 32;

fn accepted_links() -> Vec<String> {
    kept::get(ACCEPTED_LINKS_KEY).ok().flatten().unwrap_or_default()
}

fn remember_accepted_link(canonical: &str) {
    let mut links = accepted_links();
    links.retain(|l| l != canonical);
    links.insert(0, canonical.to_string());
    links.truncate(ACCEPTED_LINKS_KEPT);
    // Not remembered (storage full or off): the link asks again next time, nothing worse.
    let _ = kept::set(ACCEPTED_LINKS_KEY, &links);
}

/// `localStorage` key of the settings the user chose in the settings panel.
const SETTINGS_KEY: &str = "carebot.settings";

/// The user's saved settings; the defaults when none were saved, and also (with why, for a
/// notice) when what was saved cannot be read.
fn saved_settings() -> (Settings, Option<String>) {
    match kept::get::<Settings>(SETTINGS_KEY) {
        Ok(s) => (s.unwrap_or_default(), None),
        Err(e) => (Settings::default(), Some(e.to_string())),
    }
}

/// The model the page uses when no (accepted) link names one.
fn default_source() -> ModelSource {
    match default_model_url() {
        Some(url) => ModelSource::Url { url: absolute(url) },
        None => ModelSource::Hub(HubRepo::carebot()),
    }
}

/// What scrolls the answers: their own box on a wide screen, the page itself on a narrow one.
fn scrollers() -> Vec<web_sys::Element> {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else { return Vec::new() };
    [document.query_selector(".messages").ok().flatten(), document.scrolling_element()].into_iter().flatten().collect()
}

/// Whether the answers are scrolled to (within a line of) their end.
fn reading_the_end() -> bool {
    scrollers().iter().all(|m| m.scroll_height() - m.scroll_top() - m.client_height() <= 48)
}

/// Scrolls the answers to their end once the page has drawn what was just added, unless the
/// user has scrolled away from the end by then (see [`follow_the_end`]).
fn scroll_to_end() {
    let Some(window) = web_sys::window() else { return };
    let scroll = Closure::once_into_js(|| {
        if FOLLOW.get() {
            for m in scrollers() {
                m.set_scroll_top(m.scroll_height());
            }
        }
    });
    let _ = window.request_animation_frame(scroll.unchecked_ref());
}

/// A streaming answer keeps the end in view only while the user is there: every scroll (theirs
/// or ours) says whether it left the view at the end. Scroll events run before the frame's
/// scheduled scrolls, so a scroll up wins over one already scheduled.
fn follow_the_end() {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else { return };
    let on_scroll = Closure::<dyn Fn()>::new(|| FOLLOW.set(reading_the_end()));
    // Capturing: scroll events do not bubble, and the answers' own box scrolls on wide screens.
    let _ = document.add_event_listener_with_callback_and_bool("scroll", on_scroll.as_ref().unchecked_ref(), true);
    on_scroll.forget();
}

/// Whether `url` (absolute) is on this page's own origin, as the browser parses it; a URL it
/// cannot parse counts as one (so a model-written link to it stays text).
pub fn leads_into_app(url: &str) -> bool {
    let own = web_sys::window().and_then(|w| w.location().origin().ok());
    match (web_sys::Url::new(url), own) {
        (Ok(u), Some(own)) => u.origin() == own,
        _ => true,
    }
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
    static SAVER: RefCell<Saver> = RefCell::default();
    static CHANNEL: RefCell<Option<web_sys::BroadcastChannel>> = const { RefCell::new(None) };
    /// When the worker last crashed, and whether its replacement waits for the user instead of
    /// loading the model by itself (a second crash within a minute: no crash loop).
    static CRASHED_AT: std::cell::Cell<f64> = const { std::cell::Cell::new(f64::NEG_INFINITY) };
    static HOLD_AFTER_CRASH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// When the worker last said anything (a heartbeat at least every `HEARTBEAT_MS`).
    static HEARD_AT: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
    /// The answer being written: when its last token came, and the longest wait between two.
    static PACE: std::cell::Cell<(f64, f64)> = const { std::cell::Cell::new((0.0, 0.0)) };
    /// Whether new words scroll the answers on: the user is at their end (see `follow_the_end`).
    static FOLLOW: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// How long Stop waits for the worker at least: the worker reads Stop between tokens, so a
/// worker that has not stopped after this (and after twice its slowest token) is hung, on a GPU
/// that never returns or in its own code, and is replaced.
const STOP_GRACE_MS: f64 = 10_000.0;

/// How often a streaming answer is saved to IndexedDB. Each token also goes to a rescue copy in
/// `localStorage`, which the next start saves: a closed tab or a crash loses no word shown.
const SAVE_EVERY_MS: f64 = 1000.0;
/// `localStorage` keys of rescue copies written on `pagehide`, one per conversation.
const RESCUE_PREFIX: &str = "carebot.rescue.";

/// Saves run one at a time, so each compares against the `rev` the one before it wrote.
#[derive(Default)]
struct Saver {
    busy: bool,
    /// Another save was asked for while one ran.
    again: bool,
    last_ms: f64,
}

/// 64 random bits from `crypto.getRandomValues` (conversation ids).
fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    let crypto = web_sys::window().and_then(|w| w.crypto().ok());
    if crypto.is_none_or(|c| c.get_random_values_with_u8_array(&mut bytes).is_err()) {
        // No Web Crypto: still random enough that two tabs' ids differ.
        bytes = (js_sys::Math::random() * 9_007_199_254_740_992.0).to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}

fn new_conversation() -> Conversation {
    Conversation::new(now_ms(), nonce())
}

/// Applies the outcome of [`Conversation::rebase_onto`] to `c`: the `rev` to save at, or
/// (`None`) a fresh id, as a conversation of its own.
fn settle(c: &mut Conversation, base: Option<u64>) {
    match base {
        Some(rev) => c.rev = rev,
        None => {
            c.id = Conversation::new_id(now_ms(), nonce());
            c.rev = 0;
        }
    }
}

/// What one tab tells the others on the `carebot` BroadcastChannel.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The conversation that changed in storage ("" for all of them).
    id: String,
    /// Whether that tab is still writing an answer in it.
    writing: bool,
}

/// Writes `c` where the next start finds and saves it (see [`State::recover_rescues`]).
fn keep_rescue_copy(c: &Conversation) {
    let _ = kept::set(&format!("{RESCUE_PREFIX}{}", c.id), c);
}

/// The rescue copy of `id` is no longer needed: a finished version is saved.
fn forget_rescue_copy(id: &str) {
    kept::delete(&format!("{RESCUE_PREFIX}{id}"));
}

/// Tells other tabs that conversation `id` changed in storage.
fn announce(id: &str, writing: bool) {
    CHANNEL.with(|c| {
        if let (Some(channel), Ok(json)) =
            (c.borrow().as_ref(), serde_json::to_string(&Saved { id: id.into(), writing }))
        {
            let _ = channel.post_message(&JsValue::from_str(&json));
        }
    });
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Ids that tell one answer's messages from another's: this page's count of requests.
fn next_request_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

const DISCLAIMER_KEY: &str = "carebot.disclaimer-accepted";
const LANG_KEY: &str = "carebot.lang";

/// Sends a message to the worker (with a local file beside it when there is one).
pub fn send(msg: &ToWorker, file: Option<&web_sys::File>) {
    WORKER.with(|w| {
        if let Some(worker) = w.borrow().as_ref() {
            let json = JsValue::from_str(&msg.to_json());
            let data = match file {
                Some(f) => js_sys::Array::of2(&json, f).into(),
                None => json,
            };
            let _ = worker.post_message(&data);
        }
    });
}

/// The page's URL with `relative` resolved against it.
fn absolute(relative: &str) -> String {
    let base =
        web_sys::window().and_then(|w| w.document()).and_then(|d| d.base_uri().ok().flatten()).unwrap_or_default();
    web_sys::Url::new_with_base(relative, &base).map(|u| u.href()).unwrap_or_else(|_| relative.to_string())
}

/// Restricts what the page (and the worker, which inherits the policy) may load or contact: this
/// origin and the model's origins (a GGUF URL's, or the hub's). Nothing else, so nothing typed
/// can leave.
fn install_content_security_policy(model_origins: &[String]) {
    let connect =
        std::iter::once("'self'".to_string()).chain(model_origins.iter().cloned()).collect::<Vec<_>>().join(" ");
    let policy = format!(
        "default-src 'self'; connect-src {connect}; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; \
         form-action 'none'; frame-src 'none'"
    );
    let Some(document) = web_sys::window().and_then(|w| w.document()) else { return };
    if let (Ok(meta), Some(head)) = (document.create_element("meta"), document.head()) {
        let _ = meta.set_attribute("http-equiv", "Content-Security-Policy");
        let _ = meta.set_attribute("content", &policy);
        let _ = head.prepend_with_node_1(&meta);
    }
}

fn has_webgpu() -> bool {
    web_sys::window()
        .map(|w| js_sys::Reflect::get(&w.navigator(), &"gpu".into()).is_ok_and(|g| !g.is_undefined() && !g.is_null()))
        .unwrap_or(false)
}

/// A dedicated worker from a blob that imports trunk's worker script: a blob worker inherits this
/// page's Content-Security-Policy. (Not gloo-worker: the page sends a picked `File` beside the
/// JSON message, which gloo-worker's serialized messages cannot carry, and trunk builds the
/// worker as its own wasm.)
fn spawn_worker() -> Result<Worker, JsValue> {
    let js = absolute("carebot-worker.js");
    let wasm = absolute("carebot-worker_bg.wasm");
    let script = format!("importScripts({js:?}); wasm_bindgen({wasm:?});");
    let parts = js_sys::Array::of1(&JsValue::from_str(&script));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)?;
    Worker::new(&url)
}

impl State {
    fn new() -> Self {
        let lang = kept::text(LANG_KEY)
            .or_else(|| web_sys::window().and_then(|w| w.navigator().language()))
            .map(|t| Lang::from_tag(&t))
            .unwrap_or(Lang::En);
        let accepted = kept::text(DISCLAIMER_KEY).is_some();
        State {
            lang: RwSignal::new(lang),
            model: RwSignal::new(ModelState::Starting),
            source: RwSignal::new(ModelSource::Url { url: String::new() }),
            settings: RwSignal::new(Settings::default()),
            conversation: RwSignal::new(new_conversation()),
            saved: RwSignal::new(Vec::new()),
            answering: RwSignal::new(None),
            draft: RwSignal::new(String::new()),
            notice: RwSignal::new(None),
            show_disclaimer: RwSignal::new(!accepted),
            show_settings: RwSignal::new(false),
            show_history: RwSignal::new(false),
            persisted: RwSignal::new(None),
            written_elsewhere: RwSignal::new(None),
            link_request: RwSignal::new(None),
            leaving: RwSignal::new(None),
            show_models: RwSignal::new(false),
            cache_listing: RwSignal::new(None),
            update_ready: RwSignal::new(false),
            deleting_current: RwSignal::new(false),
        }
    }

    /// The user accepted what the page's link sets: it applies, and the same link is not asked
    /// about again.
    pub fn accept_link(&self) {
        let Some(request) = self.link_request.get_untracked() else { return };
        remember_accepted_link(&request.canonical);
        self.link_request.set(None);
        self.apply_link(request);
    }

    /// The user declined: the defaults apply, and the address bar loses the link's parameters
    /// (a reload or a bookmark of this page is the plain app).
    pub fn decline_link(&self) {
        if self.link_request.get_untracked().is_none() {
            return;
        }
        self.link_request.set(None);
        if let Some(window) = web_sys::window()
            && let (Ok(history), Ok(path)) = (window.history(), window.location().pathname())
        {
            let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&path));
        }
        self.source.set(default_source());
        self.settings.set(saved_settings().0);
        self.begin();
    }

    fn apply_link(&self, request: LinkRequest) {
        self.source.set(request.source.unwrap_or_else(default_source));
        self.settings.set(request.settings);
        self.begin();
    }

    /// With the model decided: the page's policy narrowed to its origins, and the worker started.
    fn begin(&self) {
        let origins = match &self.source.get_untracked() {
            ModelSource::Url { url } => {
                web_sys::Url::new(url).ok().map(|u| u.origin()).filter(|o| o != "null").into_iter().collect()
            }
            ModelSource::Hub(repo) => repo.connect_origins(),
            ModelSource::File { .. } => Vec::new(),
        };
        install_content_security_policy(&origins);
        if has_webgpu() {
            start_worker(*self);
        } else {
            self.model.set(ModelState::NoWebGpu);
        }
    }

    /// Keeps the settings as they are now for the next visits (the settings panel calls this
    /// after each change the user makes; what a link set is kept only if the user then edits).
    pub fn save_settings(&self) {
        if let Err(e) = kept::set(SETTINGS_KEY, self.settings.get_untracked()) {
            self.notice.set(Some(e.to_string()));
        }
    }

    /// Back to the defaults, now and on the next visits.
    pub fn reset_settings(&self) {
        kept::delete(SETTINGS_KEY);
        self.settings.set(Settings::default());
    }

    pub fn set_lang(&self, lang: Lang) {
        self.lang.set(lang);
        kept::set_text(LANG_KEY, lang.tag());
    }

    pub fn accept_disclaimer(&self) {
        self.show_disclaimer.set(false);
        kept::set_text(DISCLAIMER_KEY, "1");
    }

    /// Looks at the current source again (after an error or a cache deletion).
    pub fn probe(&self, file: Option<&web_sys::File>) {
        self.model.set(ModelState::Probing);
        send(&ToWorker::Probe { source: self.source.get_untracked() }, file);
    }

    pub fn load(&self) {
        // Shown at once, so the load button cannot be pressed twice.
        let phase = match self.source.get_untracked() {
            ModelSource::File { .. } => Phase::LocalFile,
            ModelSource::Url { .. } => Phase::Download,
            ModelSource::Hub(_) => Phase::Prepare,
        };
        self.model.set(ModelState::Loading { phase, done: 0, total: 0, bytes_per_second: 0.0, prepare: None });
        if phase != Phase::LocalFile {
            self.request_persistence();
        }
        send(&ToWorker::Load { source: self.source.get_untracked() }, None);
    }

    /// Opens the model manager: the cache listed afresh, and whether storage is persistent.
    pub fn open_models(&self) {
        self.show_models.set(true);
        send(&ToWorker::ListCache, None);
        // `persisted()` only reads the state (unlike `persist()`, which may ask the user).
        let promise = web_sys::window().and_then(|w| w.navigator().storage().persisted().ok());
        self.show_persistence(promise, None);
    }

    /// The model manager's listing, asked for again while it is open.
    fn refresh_models(&self) {
        if self.show_models.get_untracked() {
            send(&ToWorker::ListCache, None);
        }
    }

    /// The cache file key of the model this page uses, when it has one in the cache.
    fn current_cache_file(&self) -> Option<String> {
        self.source.with_untracked(|s| s.cache_key()).map(|k| crate::protocol::cache_file_key(&k))
    }

    /// Deletes a cached model (whole or partial). The current one is then looked at again, so
    /// the page offers its download.
    pub fn delete_cached(&self, key: String) {
        if self.current_cache_file().as_ref() == Some(&key) {
            self.deleting_current.set(true);
            self.model.set(ModelState::Probing);
        }
        send(&ToWorker::DeleteCached { key }, None);
    }

    /// Asks the browser not to evict this site's storage (the model, the conversations) under
    /// storage pressure, before gigabytes are written; the answer is shown beside the model.
    pub fn request_persistence(&self) {
        let promise = web_sys::window().and_then(|w| w.navigator().storage().persist().ok());
        self.show_persistence(promise, Some(false));
    }

    /// Shows what `promise` (`persist()` or `persisted()`) answers; `unanswered` is what a
    /// promise that fails or answers no boolean means (None: leave the state as it is).
    fn show_persistence(&self, promise: Option<js_sys::Promise>, unanswered: Option<bool>) {
        let Some(promise) = promise else { return };
        let state = *self;
        wasm_bindgen_futures::spawn_local(async move {
            let answer = wasm_bindgen_futures::JsFuture::from(promise).await.ok().and_then(|v| v.as_bool());
            if let Some(kept) = answer.or(unanswered) {
                state.persisted.set(Some(kept));
            }
        });
    }

    pub fn open_local_file(&self, file: web_sys::File) {
        // A browser's File.size is a whole number of bytes; a file past 2^53 bytes is not a model.
        let Some(size) = crate::numbers::js_u64(file.size()) else { return };
        self.source.set(ModelSource::File { name: file.name(), size });
        self.probe(Some(&file));
    }

    /// Sends the conversation for an answer: a new, empty assistant turn fills as tokens arrive.
    pub fn ask(&self) {
        if self.answering.get_untracked().is_some() {
            return;
        }
        let id = next_request_id();
        let messages = self.conversation.with_untracked(Conversation::messages);
        if messages.last().is_none_or(|m| m.role != "user") {
            return;
        }
        self.conversation.update(|c| {
            c.turns.push(Turn::assistant());
            c.retitle();
            c.updated = now_ms();
        });
        self.answering.set(Some(id));
        PACE.set((now_ms(), 0.0));
        // The question is kept from the moment it is sent, whatever happens to the answer.
        self.save();
        send(&ToWorker::Generate { id, messages, settings: self.settings.get_untracked() }, None);
    }

    pub fn submit(&self, text: String) {
        let text = text.trim().to_string();
        if text.is_empty() || self.answering.get_untracked().is_some() {
            return;
        }
        self.conversation.update(|c| c.turns.push(Turn::user(text)));
        FOLLOW.set(true);
        scroll_to_end();
        self.ask();
    }

    /// Drops the last answer and asks again.
    pub fn regenerate(&self) {
        if self.answering.get_untracked().is_some() {
            return;
        }
        self.conversation.update(|c| {
            if c.turns.last().is_some_and(|t| t.role == "assistant") {
                c.turns.pop();
            }
        });
        self.ask();
    }

    /// Takes user message `index` back into the input box, dropping it and all after it.
    pub fn edit(&self, index: usize) {
        if self.answering.get_untracked().is_some() {
            return;
        }
        let text = self.conversation.with_untracked(|c| c.turns.get(index).map(|t| t.content.clone()));
        if let Some(text) = text {
            self.conversation.update(|c| c.turns.truncate(index));
            self.draft.set(text);
        }
    }

    pub fn new_conversation(&self) {
        if self.answering.get_untracked().is_some() {
            return;
        }
        self.conversation.set(new_conversation());
    }

    /// Opens saved conversation `id` as it was last saved (a row's own copy may be older).
    pub fn open_conversation(&self, id: &str) {
        if self.answering.get_untracked().is_some() {
            return;
        }
        self.show_history.set(false);
        if let Some(c) = self.saved.with_untracked(|all| all.iter().find(|c| c.id == id).cloned()) {
            self.conversation.set(c);
        }
    }

    pub fn refresh_saved(&self) {
        let state = *self;
        wasm_bindgen_futures::spawn_local(async move { state.reload_saved().await });
    }

    async fn reload_saved(&self) {
        match history::list().await {
            Ok(listing) => {
                if listing.set_aside > 0 {
                    let lang = self.lang.get_untracked();
                    self.notice.set(Some(format!("{} {}", crate::i18n::Key::SetAside.text(lang), listing.set_aside)));
                }
                self.saved.set(listing.conversations);
            }
            Err(e) => self.notice.set(Some(e.to_string())),
        }
    }

    /// Saves the open conversation now, or right after the save in flight.
    fn save(&self) {
        let start = SAVER.with(|s| {
            let mut s = s.borrow_mut();
            s.again = true;
            s.last_ms = now_ms();
            !std::mem::replace(&mut s.busy, true)
        });
        if !start {
            return;
        }
        let state = *self;
        wasm_bindgen_futures::spawn_local(async move {
            while SAVER.with(|s| std::mem::take(&mut s.borrow_mut().again)) {
                state.save_once().await;
            }
            SAVER.with(|s| s.borrow_mut().busy = false);
            state.reload_saved().await;
        });
    }

    /// One compare-and-swap save. When another tab saved the conversation in between: if this
    /// copy holds everything stored, it is saved over it; otherwise it is saved as a new
    /// conversation, so neither tab's turns are erased.
    async fn save_once(&self) {
        let c = self.conversation.get_untracked();
        if c.turns.is_empty() {
            return;
        }
        let lang = self.lang.get_untracked();
        match history::put(&c).await {
            Ok(rev) => {
                if !c.turns.iter().any(|t| t.unfinished) {
                    forget_rescue_copy(&c.id);
                }
                self.conversation.update_untracked(|open| {
                    if open.id == c.id {
                        open.rev = rev;
                    }
                });
                announce(&c.id, self.answering.get_untracked().is_some());
            }
            Err(StoreError::Conflict(stored)) => {
                let base = c.rebase_onto(stored.as_deref());
                self.conversation.update(|open| {
                    if open.id == c.id {
                        settle(open, base);
                    }
                });
                if base.is_none() {
                    self.notice.set(Some(crate::i18n::Key::ChangedElsewhere.text(lang).into()));
                }
                SAVER.with(|s| s.borrow_mut().again = true);
            }
            Err(StoreError::Quota(detail)) => {
                // localStorage has its own small allowance: the next start saves this copy.
                keep_rescue_copy(&c);
                self.notice.set(Some(format!("{} ({detail})", crate::i18n::Key::HistoryFull.text(lang))));
            }
            Err(StoreError::Other(e)) => self.notice.set(Some(e)),
        }
    }

    /// Another tab saved conversation `id`: show the new list, and the new turns if it is open
    /// here and idle (only when the stored copy holds all of this one's).
    fn on_saved_elsewhere(&self, id: String) {
        let state = *self;
        wasm_bindgen_futures::spawn_local(async move {
            state.reload_saved().await;
            let idle = state.answering.get_untracked().is_none() && !SAVER.with(|s| s.borrow().busy);
            if !idle || !state.conversation.with_untracked(|c| c.id == id) {
                return;
            }
            if let Ok(Some(stored)) = history::get(&id).await
                && state.conversation.with_untracked(|open| stored.rev > open.rev && stored.contains(open))
            {
                state.conversation.set(stored);
            }
        });
    }

    /// On `pagehide`: IndexedDB is asynchronous and a closing tab may not finish a transaction,
    /// but `localStorage` is written before this returns. The next start saves the copy. (Each
    /// token already wrote one; this also covers a user's turn not yet saved.)
    fn write_rescue(&self) {
        let answering = self.answering.get_untracked().is_some();
        let c = self.conversation.get_untracked();
        if answering {
            announce(&c.id, false);
        }
        if (answering || SAVER.with(|s| s.borrow().busy)) && !c.turns.is_empty() {
            keep_rescue_copy(&c);
        }
    }

    /// Saves the rescue copies a closed tab left, settled as a save's conflict is
    /// ([`Conversation::rebase_onto`]); not at all when storage already has all of one.
    async fn recover_rescues(&self) {
        for key in kept::keys_starting_with(RESCUE_PREFIX) {
            let Ok(Some(mut rescued)) = kept::get::<Conversation>(&key) else {
                kept::delete(&key);
                continue;
            };
            let saved = match history::get(&rescued.id).await {
                Ok(Some(stored)) if stored.contains(&rescued) => Ok(stored.rev),
                Ok(stored) => {
                    let base = rescued.rebase_onto(stored.as_ref());
                    settle(&mut rescued, base);
                    history::put(&rescued).await
                }
                Err(e) => Err(e),
            };
            match saved {
                Ok(_) => kept::delete(&key),
                // Kept in localStorage for the next start.
                Err(e) => self.notice.set(Some(e.to_string())),
            }
        }
    }

    pub fn delete_saved(&self, id: String) {
        let state = *self;
        wasm_bindgen_futures::spawn_local(async move {
            match history::delete(&id).await {
                Ok(()) => announce(&id, false),
                Err(e) => state.notice.set(Some(e.to_string())),
            }
            if state.conversation.with_untracked(|c| c.id == id) && state.answering.get_untracked().is_none() {
                state.conversation.set(new_conversation());
            }
            state.refresh_saved();
        });
    }

    /// Every saved conversation, as one JSON file (a list: what "Import" reads back).
    pub fn export_all(&self) {
        let state = *self;
        wasm_bindgen_futures::spawn_local(async move {
            match history::list().await {
                Ok(listing) => match serde_json::to_string_pretty(&listing.conversations) {
                    Ok(json) => view::download("carebot-conversations.json", "application/json", &json),
                    Err(e) => state.notice.set(Some(e.to_string())),
                },
                Err(e) => state.notice.set(Some(e.to_string())),
            }
        });
    }

    /// Adds the conversations of an export file: one already here (all of it) is skipped, a
    /// longer version of one replaces it, one that differs is kept beside it (see
    /// [`Conversation::import_onto`]); importing the same file twice adds nothing.
    pub fn import(&self, file: web_sys::File) {
        use crate::conversation::{IMPORT_MAX_BYTES, Import, parse_import};
        let state = *self;
        let lang = self.lang.get_untracked();
        wasm_bindgen_futures::spawn_local(async move {
            let fail =
                |why: String| state.notice.set(Some(format!("{} {why}", crate::i18n::Key::ImportFailed.text(lang))));
            if file.size() > IMPORT_MAX_BYTES as f64 {
                return fail(format!("{}: more than {IMPORT_MAX_BYTES} bytes", file.name()));
            }
            let text = match wasm_bindgen_futures::JsFuture::from(file.text()).await.map(|t| t.as_string()) {
                Ok(Some(text)) => text,
                _ => return fail(format!("{}: not readable as text", file.name())),
            };
            let conversations = match parse_import(&text) {
                Ok(c) => c,
                Err(e) => return fail(format!("{}: {e}", file.name())),
            };
            let (mut added, mut here) = (0, 0);
            for mut c in conversations {
                let stored = match history::get(&c.id).await {
                    Ok(stored) => stored,
                    Err(e) => return fail(e.to_string()),
                };
                match c.import_onto(stored.as_ref()) {
                    Import::AlreadyHere => {
                        here += 1;
                        continue;
                    }
                    Import::Save { rev } => c.rev = rev,
                    Import::SaveAsNew => settle(&mut c, None),
                }
                if let Err(e) = history::put(&c).await {
                    return fail(e.to_string());
                }
                added += 1;
            }
            state.notice.set(Some(format!(
                "{} {added} · {} {here}",
                crate::i18n::Key::Imported.text(lang),
                crate::i18n::Key::AlreadyHere.text(lang)
            )));
            announce("", false);
            state.refresh_saved();
        });
    }

    pub fn delete_all_saved(&self) {
        let state = *self;
        wasm_bindgen_futures::spawn_local(async move {
            match history::clear().await {
                Ok(()) => announce("", false),
                Err(e) => state.notice.set(Some(e.to_string())),
            }
            if state.answering.get_untracked().is_none() {
                state.conversation.set(new_conversation());
            }
            state.refresh_saved();
        });
    }

    /// Stops the answer being written. Stop always works: if the worker has not stopped within
    /// the grace period, it is replaced (what was written stays, with why it stopped).
    pub fn stop(&self) {
        let Some(id) = self.answering.get_untracked() else { return };
        send(&ToWorker::Stop, None);
        let grace = STOP_GRACE_MS.max(2.0 * PACE.get().1);
        let state = *self;
        // gloo's timer: a one-shot setTimeout owning its closure.
        gloo_timers::callback::Timeout::new(crate::numbers::js_u32_ms(grace), move || {
            if state.answering.get_untracked() == Some(id) {
                let detail = format!(
                    "stopped: the inference worker did not stop within {:.0} s (a hung GPU?), so it was restarted",
                    grace / 1000.0
                );
                restart_worker(state, detail, false);
            }
        })
        .forget();
    }

    /// The answer being written failed: what it had written stays, with why it stopped.
    fn answer_failed(&self, detail: String) {
        self.finish_answer(|t| t.error = Some(detail));
    }

    /// Ends the answer being written (`mark` adds its numbers or its error) and saves it.
    fn finish_answer(&self, mark: impl FnOnce(&mut Turn)) {
        self.conversation.update(|c| {
            if let Some(t) = c.turns.last_mut() {
                mark(t);
                t.unfinished = false;
            }
            c.updated = now_ms();
        });
        self.answering.set(None);
        self.save();
    }

    fn on_worker_message(&self, msg: FromWorker) {
        match msg {
            FromWorker::Alive => {}
            FromWorker::Started => {
                if !HOLD_AFTER_CRASH.take() {
                    self.probe(None)
                }
            }
            FromWorker::Probed { info } => {
                let complete = info.cached == info.size;
                let local = matches!(self.source.get_untracked(), ModelSource::File { .. });
                self.model.set(ModelState::Probed(info));
                // Nothing to download: load at once.
                if complete || local {
                    self.load();
                }
            }
            FromWorker::Progress { phase, done, total, bytes_per_second, prepare } => {
                self.model.set(ModelState::Loading { phase, done, total, bytes_per_second, prepare })
            }
            FromWorker::Loaded { info } => {
                self.model.set(ModelState::Ready(info));
                self.refresh_models();
            }
            FromWorker::Token { id, text } => {
                if self.answering.get_untracked() == Some(id) {
                    self.conversation.update(|c| {
                        if let Some(t) = c.turns.last_mut() {
                            t.content.push_str(&text)
                        }
                    });
                    scroll_to_end();
                    // Every word on screen is also in localStorage at once (synchronous, unlike
                    // IndexedDB, and not dependent on `pagehide` reaching us as the tab closes).
                    self.conversation.with_untracked(keep_rescue_copy);
                    let (last, longest) = PACE.get();
                    PACE.set((now_ms(), longest.max(now_ms() - last)));
                    if now_ms() - SAVER.with(|s| s.borrow().last_ms) >= SAVE_EVERY_MS {
                        self.save();
                    }
                }
            }
            FromWorker::Done { id, stats } => {
                if self.answering.get_untracked() == Some(id) {
                    self.finish_answer(|t| t.stats = Some(stats));
                    // The numbers under the answer keep the end in view too.
                    scroll_to_end();
                }
            }
            FromWorker::CacheDeleted { key, bytes } => {
                let lang = self.lang.get_untracked();
                if self.current_cache_file().as_ref() == Some(&key) {
                    self.deleting_current.set(false);
                    self.notice.set(Some(crate::i18n::Key::CacheDeleted.text(lang).into()));
                    self.probe(None);
                } else {
                    let name = self.cache_listing.with_untracked(|l| {
                        l.as_ref()
                            .and_then(|l| l.models.iter().find(|m| m.key == key))
                            .and_then(|m| m.name.clone().or_else(|| m.source_label()))
                    });
                    let what = format!("{} ({})", name.unwrap_or(key), view::bytes(bytes));
                    self.notice.set(Some(format!("{} {what}", crate::i18n::Key::ModelDeleted.text(lang))));
                }
                self.refresh_models();
            }
            FromWorker::CacheList { models, usage, quota } => {
                self.cache_listing.set(Some(CacheListing { models, usage, quota }))
            }
            FromWorker::CacheFailed { failure } => {
                // The model on screen is not affected: only said, and the listing refreshed.
                self.notice.set(Some(failure.detail));
                if self.deleting_current.get_untracked() {
                    self.deleting_current.set(false);
                    self.probe(None);
                }
                self.refresh_models();
            }
            FromWorker::Failed { id: Some(id), failure } => {
                if self.answering.get_untracked() == Some(id) {
                    self.answer_failed(failure.detail.clone());
                }
                if failure.kind.needs_reload() {
                    self.model.set(ModelState::Failed(failure));
                }
            }
            FromWorker::Failed { id: None, failure } => self.model.set(ModelState::Failed(failure)),
        }
    }
}

pub fn start() {
    console_error_panic_hook::set_once();
    let state = State::new();

    let query = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    let params = web_sys::UrlSearchParams::new_with_str(&query).ok();
    let pairs: Vec<(String, String)> = params
        .map(|p| {
            let entries = js_sys::try_iter(&p).ok().flatten();
            entries
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    let e: js_sys::Array = e.ok()?.unchecked_into();
                    Some((e.get(0).as_string()?, e.get(1).as_string()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let (saved, unreadable) = saved_settings();
    if let Some(e) = unreadable {
        let lang = state.lang.get_untracked();
        state.notice.set(Some(format!("{} {e}", crate::i18n::Key::SettingsUnreadable.text(lang))));
    }
    let link = LinkParams::from_pairs_over(saved, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut ignored = link.ignored.clone();
    let source = link.source(&absolute).unwrap_or_else(|e| {
        ignored.push(e);
        None
    });
    if !ignored.is_empty() {
        let lang = state.lang.get_untracked();
        state.notice.set(Some(format!("{} {}", crate::i18n::Key::LinkIgnored.text(lang), ignored.join("; "))));
    }
    let request = LinkRequest {
        changes: link.changes(source.as_ref()),
        source,
        settings: link.settings.clone(),
        canonical: link.canonical(),
    };
    if !has_webgpu() {
        state.model.set(ModelState::NoWebGpu);
    }
    // (A link whose only parameters were unusable changes nothing: the notice says why.)
    if link.changes_anything() && !request.changes.is_empty() && !accepted_links().contains(&request.canonical) {
        // Nothing starts until the user answers (see `accept_link`, `decline_link`).
        state.link_request.set(Some(request));
    } else {
        state.apply_link(request);
    }
    listen_for_other_tabs(state);
    offline::register(state);
    keep_on_leaving(state);
    follow_the_end();
    watch_worker(state);
    // A reload continues the most recent conversation, with what a closed tab left saved first.
    wasm_bindgen_futures::spawn_local(async move {
        state.recover_rescues().await;
        state.reload_saved().await;
        if let Some(latest) = state.saved.with_untracked(|l| l.first().cloned())
            && state.conversation.with_untracked(|c| c.turns.is_empty())
        {
            state.conversation.set(latest);
        }
    });
    leptos::mount::mount_to_body(move || {
        provide_context(state);
        view! { <view::App/> }
    });
}

/// Other tabs announce each save on the `carebot` BroadcastChannel.
fn listen_for_other_tabs(state: State) {
    let Ok(channel) = web_sys::BroadcastChannel::new("carebot") else { return };
    let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |e: MessageEvent| {
        let Some(saved) = e.data().as_string().and_then(|s| serde_json::from_str::<Saved>(&s).ok()) else { return };
        if saved.writing {
            state.written_elsewhere.set(Some(saved.id.clone()));
        } else if state.written_elsewhere.with_untracked(|w| w.as_ref() == Some(&saved.id)) {
            state.written_elsewhere.set(None);
        }
        state.on_saved_elsewhere(saved.id);
    });
    channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    CHANNEL.with(|c| *c.borrow_mut() = Some(channel));
}

/// Saves when the tab is hidden (it may never come back) and writes a rescue copy when it closes.
fn keep_on_leaving(state: State) {
    let Some(window) = web_sys::window() else { return };
    let on_hide = Closure::<dyn Fn()>::new(move || state.write_rescue());
    let _ = window.add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
    on_hide.forget();
    let on_visibility = Closure::<dyn Fn()>::new(move || {
        let hidden = web_sys::window().and_then(|w| w.document()).is_some_and(|d| d.hidden());
        if hidden && state.conversation.with_untracked(|c| !c.turns.is_empty()) {
            state.save();
        }
    });
    let _ = window.add_event_listener_with_callback("visibilitychange", on_visibility.as_ref().unchecked_ref());
    on_visibility.forget();
}

/// Starts the inference worker, or a fresh one in place of one that crashed. A crashed worker's
/// answer keeps what it wrote, with the reason; the new worker looks at the model again (from the
/// cache, with no download) so the user can go on.
fn start_worker(state: State) {
    let worker = match spawn_worker() {
        Ok(worker) => worker,
        Err(e) => {
            return state.model.set(ModelState::Failed(Failure {
                kind: crate::protocol::ErrorKind::Internal,
                detail: format!("could not start the inference worker: {e:?}"),
            }));
        }
    };
    HEARD_AT.set(now_ms());
    let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |e: MessageEvent| {
        HEARD_AT.set(now_ms());
        if let Some(msg) = e.data().as_string().and_then(|s| serde_json::from_str::<FromWorker>(&s).ok()) {
            state.on_worker_message(msg);
        }
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let on_error = Closure::<dyn Fn(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        // An uncaught error (a wasm trap, a panic) leaves the worker in an unknown state: replace it.
        restart_worker(state, format!("the inference worker failed: {}", e.message()), true);
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    WORKER.with(|w| *w.borrow_mut() = Some(worker));
}

/// Replaces a worker that is busy (loading, or writing an answer) but has said nothing, not even
/// its heartbeat, for `SILENCE_LIMIT_MS`: it is stuck in its own code. While the tab is hidden
/// the browser may slow the worker's timers, so silence counts only while it is shown.
fn watch_worker(state: State) {
    use crate::protocol::SILENCE_LIMIT_MS;
    gloo_timers::callback::Interval::new(crate::numbers::js_u32_ms(SILENCE_LIMIT_MS / 6.0), move || {
        let hidden = web_sys::window().and_then(|w| w.document()).is_none_or(|d| d.hidden());
        let busy = state.answering.get_untracked().is_some()
            || state.model.with_untracked(|m| matches!(m, ModelState::Loading { .. }));
        if hidden || !busy {
            return HEARD_AT.set(now_ms());
        }
        let silent = now_ms() - HEARD_AT.get();
        if silent >= SILENCE_LIMIT_MS {
            let detail =
                format!("the inference worker stopped responding for {:.0} s, so it was restarted", silent / 1000.0);
            restart_worker(state, detail, true);
        }
    })
    .forget();
}

/// Ends the worker (crashed or hung) and starts a new one; the answer it was writing keeps its
/// words, with `detail` as the reason. `crashed`: the worker failed by itself (not stopped by
/// the user), which counts towards the crash-loop guard.
fn restart_worker(state: State, detail: String, crashed: bool) {
    if state.answering.get_untracked().is_some() {
        state.answer_failed(detail.clone());
    }
    if let Some(old) = WORKER.with(|w| w.borrow_mut().take()) {
        // Whatever the old worker still says while it is torn down is not about the new one.
        old.set_onmessage(None);
        old.set_onerror(None);
        old.terminate();
    }
    if crashed {
        let now = now_ms();
        HOLD_AFTER_CRASH.set(now - CRASHED_AT.replace(now) < 60_000.0);
    }
    state.model.set(ModelState::Failed(Failure { kind: crate::protocol::ErrorKind::Internal, detail }));
    start_worker(state);
}
