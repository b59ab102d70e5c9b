//! Chat prompts: Jinja chat templates rendered with minijinja the way transformers'
//! `apply_chat_template` renders them with Jinja2, so a prompt is byte-identical to the one the
//! model was trained and evaluated with.

use crate::gguf::Metadata;
use crate::tokenizer::Tokenizer;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Meta-Llama-3-8B-Instruct's chat template, used when a model ships none: the Llama-3 header format
/// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`.
pub const LLAMA3_TEMPLATE: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat_template";

/// Template instructions one render may run. A chat template comes with the model, from anywhere a
/// link points, and rendering cannot be interrupted (in the page it runs in the worker that Stop
/// talks to). The Llama-3 template spends 513 steps on 20 turns, a 200-turn conversation of 350 KB
/// renders through it well within the budget, and a hostile loop (CVE-2024-34359's class) spends it in about 0.1 s natively (both in
/// `tests/chat.rs`).
pub const TEMPLATE_FUEL: u64 = 4_000_000;
/// Bytes a prompt may have beyond four times what the conversation brings to it.
pub const TEMPLATE_OUTPUT_SLACK: usize = 1 << 20;
/// `now` value meaning "no clock set".
const NO_CLOCK: i64 = i64::MIN;

/// Tokens that end an assistant turn in the chat formats CareBot knows.
const STOP_NAMES: &[&str] = &["<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end_of_text|>", "<|endoftext|>"];

/// One chat turn. Serialized to the template as `{"role": ..., "content": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("the chat template does not compile: {0}")]
    Syntax(String),
    #[error("rendering the chat template failed: {0}")]
    Render(String),
    /// The template called `raise_exception(message)`, e.g. to reject an unsupported role order.
    #[error("the chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("the chat template calls strftime_now but no clock is available here: call ChatTemplate::set_now")]
    NoClock,
    #[error("invalid tokenizer_config.json: {0}")]
    InvalidConfig(String),
    /// The template ran longer than any chat format needs ([`TEMPLATE_FUEL`]).
    #[error("the chat template runs too long: it used up its budget of {0} steps")]
    TooCostly(u64),
    /// The prompt grew far past what the conversation holds ([`TEMPLATE_OUTPUT_SLACK`]).
    #[error("the chat template writes too much: over {0} bytes for this conversation")]
    TooLarge(usize),
}

/// Carried as the source of a minijinja error so that `raise_exception` comes back typed.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

#[derive(Debug)]
struct NoClock;

impl std::fmt::Display for NoClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no clock")
    }
}

impl std::error::Error for NoClock {}

// A chat template is shared across threads like the tokenizer: checked by the compiler.
const _: () = {
    fn shareable<T: Send + Sync>() {}
    let _ = shareable::<ChatTemplate>;
};

/// A compiled chat template plus the special-token strings transformers passes to it.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Local time in seconds since the epoch for `strftime_now`, or `NO_CLOCK` for the system clock.
    now: Arc<AtomicI64>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles a Jinja chat template. `bos_token`/`eos_token` are the strings the template sees
    /// (left undefined when `None`, as transformers does for tokens a tokenizer lacks).
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self, ChatError> {
        let now = Arc::new(AtomicI64::new(NO_CLOCK));
        let mut env = Environment::new();
        // transformers: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True), no
        // autoescape, Jinja's default of dropping one trailing newline of the template.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
        });
        let clock = Arc::clone(&now);
        env.add_function("strftime_now", move |format: String| -> Result<Value, Error> {
            let secs = match clock.load(Ordering::Relaxed) {
                NO_CLOCK => system_now().ok_or_else(|| {
                    Error::new(ErrorKind::InvalidOperation, "strftime_now: no clock").with_source(NoClock)
                })?,
                t => t,
            };
            Ok(Value::from(strftime(&format, secs)))
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source))
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        let template = ChatTemplate { env, source: source.to_string(), bos_token, eos_token, now };
        template.check()?;
        Ok(template)
    }

    /// The Llama-3 header format ([`LLAMA3_TEMPLATE`]).
    pub fn llama3(bos_token: Option<String>, eos_token: Option<String>) -> Result<Self, ChatError> {
        Self::new(LLAMA3_TEMPLATE, bos_token, eos_token)
    }

    /// The template in `tokenizer.chat_template`, or the Llama-3 header format when there is none.
    /// `bos_token`/`eos_token` are the vocabulary strings of the GGUF's BOS/EOS ids.
    pub fn from_gguf(meta: &Metadata) -> Result<Self, ChatError> {
        let token_text = |key: &str| -> Option<String> {
            let id = usize::try_from(meta.get_u64(key)?).ok()?;
            Some(meta.get_array("tokenizer.ggml.tokens")?.get(id)?.as_str()?.to_string())
        };
        let bos = token_text("tokenizer.ggml.bos_token_id");
        let eos = token_text("tokenizer.ggml.eos_token_id");
        match meta.get_str("tokenizer.chat_template") {
            Some(src) => Self::new(src, bos, eos),
            None => Self::llama3(bos.or_else(|| Some("<|begin_of_text|>".into())), eos),
        }
    }

    /// The template, BOS and EOS of a Hugging Face `tokenizer_config.json` (Llama-3 header format
    /// when it has no `chat_template`). A list of named templates uses the one named "default".
    pub fn from_hf_config(config_json: &[u8]) -> Result<Self, ChatError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Templates {
            One(String),
            Named(Vec<Named>),
        }
        #[derive(Deserialize)]
        struct Named {
            name: String,
            template: String,
        }
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            chat_template: Option<Templates>,
            #[serde(default)]
            bos_token: Option<serde_json::Value>,
            #[serde(default)]
            eos_token: Option<serde_json::Value>,
        }
        let config: Config =
            serde_json::from_slice(config_json).map_err(|e| ChatError::InvalidConfig(e.to_string()))?;
        let token = |v: Option<serde_json::Value>| -> Option<String> {
            match v? {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let (bos, eos) = (token(config.bos_token), token(config.eos_token));
        let source = match config.chat_template {
            Some(Templates::One(s)) => Some(s),
            Some(Templates::Named(list)) => {
                let pick = list.iter().position(|t| t.name == "default").unwrap_or(0);
                list.into_iter().nth(pick).map(|t| t.template)
            }
            None => None,
        };
        match source {
            Some(src) => Self::new(&src, bos, eos),
            None => Self::llama3(bos, eos),
        }
    }

    /// Renders a short sample conversation once, so that a template that cannot render, runs too
    /// long or writes too much fails when the model loads, not at the first message. A template
    /// may refuse a conversation (a system turn, say) or want a clock: those depend on the
    /// conversation or the place, and pass here.
    fn check(&self) -> Result<(), ChatError> {
        let turns = [
            ChatMessage::system("You are a careful medical assistant."),
            ChatMessage::user("I have a fever."),
            ChatMessage::assistant("How long have you had it?"),
            ChatMessage::user("Two days."),
        ];
        for messages in [&turns[..], &turns[1..]] {
            match self.render(messages, true) {
                Ok(_) | Err(ChatError::NoClock) => return Ok(()),
                Err(ChatError::Raised(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Sets the clock `strftime_now` reads: seconds since 1970-01-01 00:00 in the user's local time
    /// (UTC seconds plus the zone offset). Needed on wasm, where there is no system clock; elsewhere
    /// the default is the system clock in UTC.
    pub fn set_now(&mut self, local_unix_seconds: i64) {
        self.now.store(local_unix_seconds.max(NO_CLOCK + 1), Ordering::Relaxed);
    }

    /// Renders the conversation. With `add_generation_prompt` the prompt ends with the header of an
    /// assistant turn, ready for generation.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatError> {
        self.render_with(messages, add_generation_prompt, ())
    }

    /// [`Self::render`] with extra template variables (a map, e.g. `tools` or `date_string`); they
    /// override the defaults as `apply_chat_template(**kwargs)` does.
    pub fn render_with<S: Serialize>(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: S,
    ) -> Result<String, ChatError> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert("messages".into(), Value::from_serialize(messages));
        // transformers passes these as None; undefined would make `tools is not none` true.
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        if let Some(b) = &self.bos_token {
            ctx.insert("bos_token".into(), Value::from(b.as_str()));
        }
        if let Some(e) = &self.eos_token {
            ctx.insert("eos_token".into(), Value::from(e.as_str()));
        }
        let extra = Value::from_serialize(extra);
        if extra.kind() == ValueKind::Map {
            let keys = extra.try_iter().map_err(|e| ChatError::Render(e.to_string()))?;
            for key in keys {
                let value = extra.get_item(&key).map_err(|e| ChatError::Render(e.to_string()))?;
                ctx.insert(key.to_string(), value);
            }
        }
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| ChatError::Syntax(e.to_string()))?;
        let brought: usize = messages.iter().map(|m| m.content.len() + m.role.len()).sum::<usize>()
            + ctx.values().map(|v| v.to_string().len()).sum::<usize>();
        let mut out = Bounded { bytes: Vec::new(), limit: TEMPLATE_OUTPUT_SLACK.saturating_add(4 * brought) };
        match template.render_captured_to(Value::from_serialize(&ctx), &mut out) {
            Ok(_) => String::from_utf8(out.bytes).map_err(|e| ChatError::Render(e.to_string())),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(ChatError::TooCostly(TEMPLATE_FUEL)),
            Err(_) if out.bytes.len() >= out.limit => Err(ChatError::TooLarge(out.limit)),
            Err(e) => Err(classify(e)),
        }
    }
}

/// A render's output, refusing to grow past `limit` bytes.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.bytes.resize(self.limit, 0);
            return Err(std::io::Error::other("the prompt is too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The token ids that end an assistant turn: EOS, the end-of-turn token, and `<|eot_id|>`,
/// `<|eom_id|>`, `<|im_end|>`, `<|end_of_text|>`, `<|endoftext|>` where the vocabulary has them
/// as single tokens.
pub fn stop_token_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    let mut ids = Vec::new();
    let named = STOP_NAMES.iter().filter_map(|n| tokenizer.token_to_id(n));
    for id in tokenizer.eos_id().into_iter().chain(tokenizer.eot_id()).chain(named) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Why a conversation could not be made into a prompt.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("the message makes the prompt {tokens} tokens, more than the context of {capacity} holds")]
    TooLong { tokens: usize, capacity: usize },
}

/// A conversation as prompt tokens that fit the context.
#[derive(Clone, Debug, PartialEq)]
pub struct FittedPrompt {
    pub ids: Vec<u32>,
    /// Oldest turns (a user message and its answer) left out so the prompt fits.
    pub dropped_turns: usize,
    /// Index of the first message kept after the always-kept ones: `messages[keep..first_kept]`
    /// were left out.
    pub first_kept: usize,
}

/// Renders `messages` (ending with the new user message) for generation, leaving out the oldest
/// turns while the prompt leaves fewer than `reserve` positions of `capacity` for the answer. The
/// first `keep` messages (the system message) and the last one are never left out.
pub fn fit_conversation(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    keep: usize,
    capacity: usize,
    reserve: usize,
) -> Result<FittedPrompt, FitError> {
    let keep = keep.min(messages.len());
    let mut start = keep;
    let mut dropped_turns = 0;
    loop {
        let kept: Vec<ChatMessage> = messages[..keep].iter().chain(&messages[start..]).cloned().collect();
        // The template writes BOS itself when the model wants it.
        let ids = tokenizer.encode(&template.render(&kept, true)?, false)?;
        if ids.len() + reserve <= capacity || messages.len() - start <= 1 {
            if ids.len() >= capacity {
                return Err(FitError::TooLong { tokens: ids.len(), capacity });
            }
            return Ok(FittedPrompt { ids, dropped_turns, first_kept: start });
        }
        let answered = messages.get(start + 1).is_some_and(|m| m.role == "assistant");
        start += if answered { 2 } else { 1 };
        dropped_turns += 1;
    }
}

fn classify(err: Error) -> ChatError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<Raised>() {
            return ChatError::Raised(r.0.clone());
        }
        if e.downcast_ref::<NoClock>().is_some() {
            return ChatError::NoClock;
        }
        source = e.source();
    }
    ChatError::Render(err.to_string())
}

/// transformers' `{% generation %}…{% endgeneration %}` marks assistant text for masks and renders
/// its body unchanged; minijinja has no such tag, so it becomes an always-true `if` (the same
/// whitespace handling, as both are block tags).
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start + 2..].find("%}") else { break };
        let tag = &rest[start..start + len + 4];
        let inner = tag[2..tag.len() - 2].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..start]);
        let body = &tag[2..tag.len() - 2];
        let lead = usize::from(body.starts_with(['-', '+']));
        let trail = usize::from(body.ends_with(['-', '+']));
        let (open, close) = (&tag[..2 + lead], &tag[tag.len() - 2 - trail..]);
        match inner {
            "generation" => out.push_str(&format!("{open} if true {close}")),
            "endgeneration" => out.push_str(&format!("{open} endif {close}")),
            _ => out.push_str(tag),
        }
        rest = &rest[start + len + 4..];
    }
    out.push_str(rest);
    out
}

#[cfg(not(target_arch = "wasm32"))]
fn system_now() -> Option<i64> {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_secs()).ok()
}

/// `SystemTime::now` panics on wasm32-unknown-unknown; the host must call `set_now`.
#[cfg(target_arch = "wasm32")]
fn system_now() -> Option<i64> {
    None
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, i.e. Python's spacing (`", "`, `": "`) and no HTML escaping, unlike
/// minijinja's built-in filter. Positional arguments follow that signature.
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let ensure_ascii = match kwargs.get::<Option<Value>>("ensure_ascii")?.or(ensure_ascii) {
        Some(v) => v.is_true(),
        None => false,
    };
    let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent) {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => " ".repeat(usize::try_from(v.as_i64().unwrap_or(0).clamp(0, 64)).unwrap_or(0)),
        }),
    };
    let sort_keys = kwargs.get::<Option<Value>>("sort_keys")?.is_some_and(|v| v.is_true());
    let separators = kwargs.get::<Option<Value>>("separators")?.or(separators);
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.filter(|v| !v.is_none() && !v.is_undefined()) {
        Some(seps) => {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match (parts.first().and_then(Value::as_str), parts.get(1).and_then(Value::as_str), parts.len()) {
                (Some(a), Some(b), 2) => (a.to_string(), b.to_string()),
                _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
            }
        }
        // Python's defaults: no trailing space after commas when indenting.
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonOpts { ensure_ascii, indent, sort_keys, item_sep, key_sep };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    sort_keys: bool,
    item_sep: String,
    key_sep: String,
}

/// Nesting deeper than this is refused (Python would hit its recursion limit).
const MAX_JSON_DEPTH: usize = 256;

fn write_json(out: &mut String, v: &Value, o: &JsonOpts, depth: usize) -> Result<(), Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(Error::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
    }
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
        ValueKind::Number => out.push_str(&python_float_repr(f64::try_from(v.clone())?)),
        ValueKind::String => write_json_str(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, o, depth, '[', ']', &items, |out, item, d| write_json(out, item, o, d))?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in v.try_iter()? {
                let value = v.get_item(&key)?;
                entries.push((json_key(&key)?, value));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, o, depth, '{', '}', &entries, |out, (k, val), d| {
                write_json_str(out, k, o.ensure_ascii);
                out.push_str(&o.key_sep);
                write_json(out, val, o, d)
            })?;
        }
        kind => {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: {kind} is not JSON serializable")));
        }
    }
    Ok(())
}

fn write_container<T>(
    out: &mut String,
    o: &JsonOpts,
    depth: usize,
    open: char,
    close: char,
    items: &[T],
    mut each: impl FnMut(&mut String, &T, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&o.item_sep);
        }
        newline(out, depth + 1);
        each(out, item, depth + 1)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// Python's json converts str, int, float, bool and None keys to strings.
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
        ValueKind::None | ValueKind::Undefined => "null".into(),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number if key.is_integer() => key.to_string(),
        ValueKind::Number => python_float_repr(f64::try_from(key.clone())?),
        kind => return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: {kind} keys are not allowed"))),
    })
}

/// A JSON string as Python's json module writes it.
fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation below 1e-4 and from
/// 1e16 on (`1e-05`, `1.5e+16`), otherwise positional with at least one decimal (`2.0`).
fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.2345e-7".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let s = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            format!("{}.{}", &digits[..(exp + 1) as usize], &digits[(exp + 1) as usize..])
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// Python's `strftime` for the codes chat templates use (`%d %b %Y`, `%Y-%m-%d`, `%H:%M` …) plus
/// glibc's `%-d` style unpadded forms. Unknown codes are copied through.
pub fn strftime(format: &str, local_unix_seconds: i64) -> String {
    const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = local_unix_seconds.div_euclid(86_400);
    let secs = local_unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month - 1).clamp(0, 11) as usize];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let num = |v: i64, width: usize| if unpadded { v.to_string() } else { format!("{v:0width$}") };
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&num(year.rem_euclid(100), 2)),
            Some('m') => out.push_str(&num(month, 2)),
            Some('d') => out.push_str(&num(day, 2)),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('H') => out.push_str(&num(hour, 2)),
            Some('I') => out.push_str(&num(hour12, 2)),
            Some('M') => out.push_str(&num(minute, 2)),
            Some('S') => out.push_str(&num(second, 2)),
            Some('j') => out.push_str(&num(yday, 3)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('w') => out.push_str(&weekday.to_string()),
            Some('b') | Some('h') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('R') => out.push_str(&format!("{hour:02}:{minute:02}")),
            Some('D') => out.push_str(&format!("{month:02}/{day:02}/{:02}", year.rem_euclid(100))),
            Some('z') => out.push_str("+0000"),
            Some('Z') => {}
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.2345e-7, "1.2345e-07"),
            (123.456, "123.456"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn strftime_dates() {
        // 2024-07-26 13:05:09 (a Friday), day 208 of a leap year.
        let t = days_from_civil(2024, 7, 26) * 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(strftime("%A %B %-d, %Y %I:%M:%S %p %j %%", t), "Friday July 26, 2024 01:05:09 PM 208 %");
        assert_eq!(strftime("%F %T %y %w %q", t), "2024-07-26 13:05:09 24 5 %q");
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
        assert_eq!(strftime("%Y-%m-%d %H", -1), "1969-12-31 23");
    }

    #[test]
    fn generation_tags_become_ifs() {
        assert_eq!(
            strip_generation_tags("a{% generation %}b{%- endgeneration -%}c{% if x %}"),
            "a{% if true %}b{%- endif -%}c{% if x %}"
        );
        for odd in ["{%}", "{%-%}", "{%", "%}", "{%%}", "x{%}{% generation", "{{ '{%' }}"] {
            assert_eq!(strip_generation_tags(odd), odd);
        }
    }
}
