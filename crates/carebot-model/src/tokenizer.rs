//! Byte-level BPE tokenizer: from a Hugging Face `tokenizer.json` or from GGUF vocabulary metadata
//! (`tokenizer.ggml.model = "gpt2"`), built to give the same ids as llama.cpp.
//!
//! Encoding runs on the `tokenizers` crate; decoding is done here, from each token's bytes, so that
//! whole-text decoding and [`StreamDecoder`] agree byte for byte.

use crate::gguf::{Array, Metadata};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

/// Llama-3 pre-tokenizer as llama.cpp writes it: the `(?i:...)` contraction group of the original
/// regex spelled out, because case-insensitive matching would also accept `ſ` (U+017F) and `K`
/// (U+212A), which llama.cpp does not.
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's regex. llama.cpp omits the final `|\s+`; the spans that alternative would match are split
/// off as unmatched text there, so the pieces are the same.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Token names llama.cpp treats as end-of-generation and forces to control type.
const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|eom_id|>",
];

/// Vocabularies larger than this are rejected as corrupt (the largest real ones are ~260k).
const MAX_VOCAB: usize = 1 << 24;

/// Everything that can go wrong building or using a [`Tokenizer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer.json or tokenizer_config.json that does not parse.
    #[error("invalid tokenizer JSON: {0}")]
    InvalidJson(String),
    #[error("unsupported tokenizer.json: {0}")]
    UnsupportedJson(String),
    #[error("GGUF metadata has no {0:?}")]
    MissingKey(&'static str),
    #[error("GGUF metadata {key:?} should be {expected}")]
    WrongType { key: &'static str, expected: &'static str },
    #[error("unsupported tokenizer.ggml.model {0:?} (supported: \"gpt2\")")]
    UnsupportedModel(String),
    #[error(
        "unsupported tokenizer.ggml.pre {0:?} (supported: \"llama-bpe\" (also \"llama3\", \"llama-v3\"), \"smollm\", \
         \"gpt-2\" (also \"gpt2\"), \"default\")"
    )]
    UnsupportedPreTokenizer(String),
    #[error("GGUF metadata {key:?} has {len} entries but tokenizer.ggml.tokens has {vocab}")]
    LengthMismatch { key: &'static str, len: usize, vocab: usize },
    #[error("tokenizer.ggml.merges[{index}] = {merge:?}: {reason}")]
    BadMerge { index: usize, merge: String, reason: String },
    #[error("{key} = {id} is outside the vocabulary ({vocab_size} tokens)")]
    BadTokenId { key: String, id: u64, vocab_size: usize },
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("a vocabulary of {0} tokens is not plausible")]
    VocabTooLarge(usize),
    #[error("building the tokenizer failed: {0}")]
    Build(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("a BOS token was requested but the vocabulary defines none")]
    NoBosToken,
}

/// Token types, numbered as GGUF's `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    /// Unknown numbers map to `Undefined`, as llama.cpp does.
    pub fn from_gguf(v: i64) -> Self {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Tokens cut out of the text before BPE when they occur literally.
    fn is_added(self) -> bool {
        matches!(self, TokenType::Control | TokenType::UserDefined | TokenType::Unknown)
    }
}

/// The GGUF pre-tokenizer families this tokenizer implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreKind {
    Llama3,
    Smollm,
    Gpt2,
    Default,
}

impl PreKind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama-bpe" | "llama3" | "llama-v3" => PreKind::Llama3,
            "smollm" => PreKind::Smollm,
            "gpt-2" | "gpt2" => PreKind::Gpt2,
            "default" => PreKind::Default,
            _ => return None,
        })
    }

    /// llama.cpp's `regex_exprs` for this type, applied one after the other.
    fn regexes(self) -> &'static [&'static str] {
        match self {
            PreKind::Llama3 => &[LLAMA3_REGEX],
            PreKind::Smollm => &[r"\p{N}", GPT2_REGEX],
            PreKind::Gpt2 => &[GPT2_REGEX],
            PreKind::Default => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"],
        }
    }
}

struct Inner {
    hf: tokenizers::Tokenizer,
    /// Vocabulary strings by id: GPT-2 byte-to-unicode form for BPE tokens, plain text for added ones.
    pieces: Vec<String>,
    types: Vec<TokenType>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    add_bos: bool,
}

// The worker and the CLI share a tokenizer (and its stream decoder) across threads: checked by the
// compiler, not a test.
const _: () = {
    fn shareable<T: Send + Sync + Clone>() {}
    let _ = shareable::<Tokenizer>;
    let _ = shareable::<StreamDecoder>;
};

/// A byte-level BPE tokenizer. Cheap to clone (shared, immutable).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.inner.bos)
            .field("eos", &self.inner.eos)
            .field("eot", &self.inner.eot)
            .field("add_bos", &self.inner.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. BOS/EOS come from its `TemplateProcessing`
    /// post-processor when it has one, else from well-known token names; see [`Self::from_hf`] to
    /// take them from `tokenizer_config.json` instead.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TokenizerError> {
        Self::from_hf(bytes, None)
    }

    /// Loads a Hugging Face `tokenizer.json`, with `tokenizer_config.json` (if given) deciding
    /// `bos_token`, `eos_token` and `add_bos_token`.
    pub fn from_hf(tokenizer_json: &[u8], tokenizer_config_json: Option<&[u8]>) -> Result<Self, TokenizerError> {
        let mut hf = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| TokenizerError::InvalidJson(e.to_string()))?;
        if !is_byte_level(hf.get_decoder()) {
            return Err(TokenizerError::UnsupportedJson(
                "only byte-level BPE tokenizers (decoder \"ByteLevel\") are supported".into(),
            ));
        }
        // A tokenizer.json may carry truncation/padding settings; ids must never be cut or padded.
        hf.with_truncation(None).map_err(|e| TokenizerError::InvalidJson(e.to_string()))?;
        hf.with_padding(None);

        let vocab = hf.get_vocab(true);
        let n = vocab.values().map(|&id| (id as usize).saturating_add(1)).max().ok_or(TokenizerError::EmptyVocab)?;
        if n > MAX_VOCAB {
            return Err(TokenizerError::VocabTooLarge(n));
        }
        let mut pieces = vec![String::new(); n];
        let mut types = vec![TokenType::Unused; n];
        for (piece, id) in vocab {
            pieces[id as usize] = piece;
            types[id as usize] = TokenType::Normal;
        }
        for (id, tok) in hf.get_added_tokens_decoder() {
            if let Some(i) = usize::try_from(id).ok().filter(|&i| i < n) {
                pieces[i] = tok.content.clone();
                types[i] = if tok.special { TokenType::Control } else { TokenType::UserDefined };
            }
        }

        let probe: JsonProbe = serde_json::from_slice(tokenizer_json).unwrap_or_default();
        let template_bos = probe.post_processor.as_ref().and_then(template_bos_token);
        let config: ConfigProbe = match tokenizer_config_json {
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| TokenizerError::InvalidJson(format!("tokenizer_config.json: {e}")))?,
            None => ConfigProbe::default(),
        };
        let id_of = |name: &str| hf.token_to_id(name);
        let bos = match config.bos_token.as_ref().and_then(token_content) {
            Some(name) => id_of(name),
            None => {
                template_bos.as_deref().and_then(id_of).or_else(|| first_present(&hf, &["<|begin_of_text|>", "<s>"]))
            }
        };
        let eos = match config.eos_token.as_ref().and_then(token_content) {
            Some(name) => id_of(name),
            None => first_present(&hf, &["<|end_of_text|>", "<|endoftext|>", "</s>"]),
        };
        let add_bos = config.add_bos_token.unwrap_or(template_bos.is_some());
        let eot = EOG_NAMES.iter().find_map(|t| id_of(t));

        Ok(Tokenizer { inner: Arc::new(Inner { hf, pieces, types, bos, eos, eot, add_bos }) })
    }

    /// Builds the tokenizer llama.cpp would build from GGUF metadata with
    /// `tokenizer.ggml.model = "gpt2"`.
    pub fn from_gguf(meta: &Metadata) -> Result<Self, TokenizerError> {
        const MODEL: &str = "tokenizer.ggml.model";
        const PRE: &str = "tokenizer.ggml.pre";
        const TOKENS: &str = "tokenizer.ggml.tokens";
        const TYPES: &str = "tokenizer.ggml.token_type";
        const MERGES: &str = "tokenizer.ggml.merges";

        let model = meta.get(MODEL).ok_or(TokenizerError::MissingKey(MODEL))?;
        let model = model.as_str().ok_or(TokenizerError::WrongType { key: MODEL, expected: "a string" })?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        // llama.cpp falls back to "default" (with a loud warning) when the key is missing.
        let pre = match meta.get(PRE) {
            None => "default",
            Some(v) => v.as_str().ok_or(TokenizerError::WrongType { key: PRE, expected: "a string" })?,
        };
        let pre = PreKind::from_name(pre).ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(pre.to_string()))?;

        let tokens = string_array(meta, TOKENS)?.ok_or(TokenizerError::MissingKey(TOKENS))?;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n > MAX_VOCAB {
            return Err(TokenizerError::VocabTooLarge(n));
        }
        let pieces: Vec<String> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| if t.is_empty() { format!("[EMPTY_{i}]") } else { t.to_string() })
            .collect();

        let mut types = match meta.get(TYPES) {
            None => vec![TokenType::Normal; n],
            Some(v) => {
                let arr = v.as_array().ok_or(TokenizerError::WrongType { key: TYPES, expected: "an integer array" })?;
                if arr.len() != n {
                    return Err(TokenizerError::LengthMismatch { key: TYPES, len: arr.len(), vocab: n });
                }
                arr.iter()
                    .map(|t| t.as_i64().map(TokenType::from_gguf))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(TokenizerError::WrongType { key: TYPES, expected: "an integer array" })?
            }
        };

        // Later duplicates win, as in llama.cpp's token_to_id map.
        let mut vocab = Vocab::default();
        for (i, piece) in pieces.iter().enumerate() {
            vocab.insert(piece.clone(), i as u32);
        }

        let raw_merges = string_array(meta, MERGES)?.ok_or(TokenizerError::MissingKey(MERGES))?;
        let mut merges = Vec::with_capacity(raw_merges.len());
        let mut seen = HashSet::with_capacity(raw_merges.len());
        for (index, m) in raw_merges.iter().enumerate() {
            let bad = |reason: String| TokenizerError::BadMerge { index, merge: m.to_string(), reason };
            // llama.cpp splits at the first space after the first byte, so "  a" style merges work.
            let pos = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1).ok_or_else(|| bad("no space".into()))?;
            let (a, b) = (&m[..pos], &m[pos + 1..]);
            for part in [a, b] {
                if !vocab.contains_key(part) {
                    return Err(bad(format!("{part:?} is not in the vocabulary")));
                }
            }
            let joined = format!("{a}{b}");
            if !vocab.contains_key(&joined) {
                return Err(bad(format!("the merged token {joined:?} is not in the vocabulary")));
            }
            // The first occurrence keeps its rank, as in llama.cpp.
            if seen.insert((a, b)) {
                merges.push((a.to_string(), b.to_string()));
            }
        }

        let special_id = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            let Some(v) = meta.get(key) else { return Ok(None) };
            let id = v.as_u64().ok_or(TokenizerError::WrongType { key, expected: "a non-negative integer" })?;
            if id >= n as u64 {
                return Err(TokenizerError::BadTokenId { key: key.to_string(), id, vocab_size: n });
            }
            Ok(Some(id as u32))
        };
        let bos = special_id("tokenizer.ggml.bos_token_id")?;
        let eos = special_id("tokenizer.ggml.eos_token_id")?;
        let mut eot = special_id("tokenizer.ggml.eot_token_id")?;

        // llama.cpp forces end-of-generation tokens found by name to control type.
        for name in EOG_NAMES {
            if let Some(&id) = vocab.get(*name) {
                types[id as usize] = TokenType::Control;
                if eot.is_none() && *name != "<|eom_id|>" {
                    eot = Some(id);
                }
            }
        }

        let add_bos = match meta.get("tokenizer.ggml.add_bos_token") {
            None => pre == PreKind::Llama3,
            Some(v) => v
                .as_bool()
                .ok_or(TokenizerError::WrongType { key: "tokenizer.ggml.add_bos_token", expected: "a bool" })?,
        };

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre == PreKind::Llama3)
            .build()
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let mut hf = tokenizers::Tokenizer::new(bpe);
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for re in pre.regexes() {
            let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| TokenizerError::Build(e.to_string()))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        hf.with_pre_tokenizer(Some(Sequence::new(steps)));
        hf.with_decoder(Some(ByteLevelDecoder::default()));

        // Control, user-defined and unknown tokens are matched literally in the text before BPE
        // (llama.cpp's tokenizer_st_partition with parse_special = true). Their ids already exist in
        // the BPE vocabulary, so the added tokens keep the GGUF ids.
        let added: Vec<AddedToken> = pieces
            .iter()
            .zip(&types)
            .filter(|(_, t)| t.is_added())
            .map(|(p, t)| AddedToken::from(p.clone(), *t != TokenType::UserDefined).normalized(false))
            .collect();
        hf.add_special_tokens(added).map_err(|e| TokenizerError::Build(e.to_string()))?;

        // `pieces`, not the BPE model, stays authoritative for ids: duplicate names hide ids there.
        Ok(Tokenizer { inner: Arc::new(Inner { hf, pieces, types, bos, eos, eot, add_bos }) })
    }

    /// Encodes text; special tokens written in the text (e.g. `<|eot_id|>`) become their ids.
    /// `add_bos` prepends the BOS token (see [`Self::add_bos`] for the model's own rule).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if add_bos {
            ids.push(self.inner.bos.ok_or(TokenizerError::NoBosToken)?);
        }
        let enc = self.inner.hf.encode_fast(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text, control tokens included as their text (so `decode(encode(s)) == s`).
    /// Ids outside the vocabulary are skipped; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.push_token_bytes(id, false, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Like [`Self::decode`] but without control tokens: the text a user should see.
    pub fn decode_text(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.push_token_bytes(id, true, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes a token stands for (a BPE token may hold part of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.push_token_bytes(id, false, &mut out);
        out
    }

    fn push_token_bytes(&self, id: u32, skip_control: bool, out: &mut Vec<u8>) {
        let (Some(piece), Some(&ty)) = (self.inner.pieces.get(id as usize), self.inner.types.get(id as usize)) else {
            return;
        };
        // As llama.cpp's token_to_piece for BPE vocabularies: added tokens are plain text, normal
        // tokens are in byte-to-unicode form, other types render nothing.
        match ty {
            TokenType::Control | TokenType::Unknown if skip_control => {}
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => out.extend_from_slice(piece.as_bytes()),
            TokenType::Normal => {
                for c in piece.chars() {
                    match unicode_to_byte(c) {
                        Some(b) => out.push(b),
                        // Not byte-level form: keep the character itself rather than lose it.
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
            }
            TokenType::Unused | TokenType::Byte | TokenType::Undefined => {}
        }
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.inner.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.inner.eos
    }

    /// End-of-turn token (`tokenizer.ggml.eot_token_id`, else found by name like `<|eot_id|>`).
    pub fn eot_id(&self) -> Option<u32> {
        self.inner.eot
    }

    /// Whether the model expects a BOS token at the start of a prompt.
    pub fn add_bos(&self) -> bool {
        self.inner.add_bos
    }

    /// Number of ids (the highest id + 1).
    pub fn vocab_size(&self) -> usize {
        self.inner.pieces.len()
    }

    /// The id of a vocabulary string (byte-to-unicode form for BPE tokens, e.g. `"Ġthe"`).
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.hf.token_to_id(piece)
    }

    /// The vocabulary string of an id, as stored (byte-to-unicode form for BPE tokens).
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.inner.pieces.get(id as usize).map(String::as_str)
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.inner.types.get(id as usize).copied()
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.token_type(id) == Some(TokenType::Control)
    }

    /// A decoder for generated ids, one at a time.
    pub fn stream(&self) -> StreamDecoder {
        StreamDecoder { tokenizer: self.clone(), pending: Vec::new(), skip_control: false }
    }
}

/// Incremental decoding: returns only complete UTF-8 text, holding back the bytes of a character
/// that is split across tokens until the rest arrives. The concatenation of everything
/// [`push`](Self::push) and [`flush`](Self::flush) return equals [`Tokenizer::decode`] of all ids.
#[derive(Clone, Debug)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    pending: Vec<u8>,
    skip_control: bool,
}

impl StreamDecoder {
    /// Drop control tokens from the output (then the text matches [`Tokenizer::decode_text`]).
    pub fn skip_control(mut self, yes: bool) -> Self {
        self.skip_control = yes;
        self
    }

    /// Adds one token; returns the text completed by it (often empty mid-character).
    pub fn push(&mut self, id: u32) -> String {
        self.tokenizer.push_token_bytes(id, self.skip_control, &mut self.pending);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // The prefix is valid UTF-8, so this is a plain copy.
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        // Bytes that can never become valid: same replacement as from_utf8_lossy.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + len;
                        }
                        // A character cut short at the end: wait for the next token.
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Bytes held back for an unfinished character (they are still owed by [`Self::flush`]).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Ends the stream: whatever is left, an unfinished character becoming U+FFFD.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68 bytes for
/// U+0100.. in order.
const fn byte_to_unicode_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut next = 256u16;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        if printable {
            table[b] = b as u16;
        } else {
            table[b] = next;
            next += 1;
        }
        b += 1;
    }
    table
}

const BYTE_TO_UNICODE: [u16; 256] = byte_to_unicode_table();

/// Inverse of [`BYTE_TO_UNICODE`]; -1 where a code point stands for no byte.
const UNICODE_TO_BYTE: [i16; 324] = {
    let mut table = [-1i16; 324];
    let mut b = 0usize;
    while b < 256 {
        table[BYTE_TO_UNICODE[b] as usize] = b as i16;
        b += 1;
    }
    table
};

fn unicode_to_byte(c: char) -> Option<u8> {
    UNICODE_TO_BYTE.get(c as usize).and_then(|&b| u8::try_from(b).ok())
}

/// A string array from GGUF metadata, or `WrongType` if the key holds something else.
fn string_array<'a>(meta: &'a Metadata, key: &'static str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    let Some(v) = meta.get(key) else { return Ok(None) };
    let wrong = TokenizerError::WrongType { key, expected: "a string array" };
    let strings = v.as_array().and_then(Array::strings).ok_or(wrong)?;
    Ok(Some(strings.iter().map(String::as_str).collect()))
}

fn is_byte_level(decoder: Option<&DecoderWrapper>) -> bool {
    match decoder {
        Some(DecoderWrapper::ByteLevel(_)) => true,
        Some(DecoderWrapper::Sequence(seq)) => {
            // Only look inside through serde: `Sequence` does not expose its decoders.
            serde_json::to_value(seq)
                .ok()
                .and_then(|v| v.get("decoders").cloned())
                .and_then(|d| d.as_array().cloned())
                .is_some_and(|ds| ds.iter().any(|d| d.get("type").and_then(|t| t.as_str()) == Some("ByteLevel")))
        }
        _ => false,
    }
}

fn first_present(hf: &tokenizers::Tokenizer, names: &[&str]) -> Option<u32> {
    names.iter().find_map(|n| hf.token_to_id(n))
}

/// The fields of tokenizer.json read here besides what `tokenizers` parses.
#[derive(serde::Deserialize, Default)]
struct JsonProbe {
    #[serde(default)]
    post_processor: Option<serde_json::Value>,
}

/// The special token a `TemplateProcessing` post-processor puts first in a single sequence, i.e. BOS.
fn template_bos_token(pp: &serde_json::Value) -> Option<String> {
    let find = |pp: &serde_json::Value| -> Option<String> {
        if pp.get("type")?.as_str()? != "TemplateProcessing" {
            return None;
        }
        let first = pp.get("single")?.as_array()?.first()?;
        Some(first.get("SpecialToken")?.get("id")?.as_str()?.to_string())
    };
    match pp.get("type")?.as_str()? {
        "Sequence" => pp.get("processors")?.as_array()?.iter().find_map(find),
        _ => find(pp),
    }
}

#[derive(serde::Deserialize, Default)]
struct ConfigProbe {
    #[serde(default)]
    bos_token: Option<serde_json::Value>,
    #[serde(default)]
    eos_token: Option<serde_json::Value>,
    #[serde(default)]
    add_bos_token: Option<bool>,
}

/// tokenizer_config.json writes special tokens either as a string or as an AddedToken object.
fn token_content(v: &serde_json::Value) -> Option<&str> {
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips() {
        for b in 0..=255u8 {
            let c = char::from_u32(BYTE_TO_UNICODE[b as usize] as u32).unwrap();
            assert_eq!(unicode_to_byte(c), Some(b));
        }
        assert_eq!(BYTE_TO_UNICODE[b' ' as usize], 0x120); // 'Ġ'
        assert_eq!(BYTE_TO_UNICODE[b'\n' as usize], 0x10a); // 'Ċ'
        assert_eq!(unicode_to_byte('中'), None);
    }
}
