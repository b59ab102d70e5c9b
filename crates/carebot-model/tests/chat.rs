//! Chat template tests against prompts rendered by transformers' `apply_chat_template`
//! (tests/fixtures/chat/gen_chat_expected.py). Needs no downloaded files.

use carebot_model::chat::{ChatError, ChatMessage, ChatTemplate, LLAMA3_TEMPLATE, stop_token_ids, strftime};
use carebot_model::gguf::{Metadata, Value};
use carebot_model::tokenizer::Tokenizer;
use serde::Deserialize;
use std::collections::BTreeMap;

const CHAT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/chat");

#[derive(Deserialize)]
struct Expected {
    bos_token: String,
    eos_token: String,
    conversations: BTreeMap<String, Vec<ChatMessage>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    conversation: String,
    add_generation_prompt: bool,
    #[serde(default)]
    extra: Option<serde_json::Value>,
    #[serde(default)]
    expected: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn expected() -> Expected {
    serde_json::from_slice(&std::fs::read(format!("{CHAT}/expected.json")).unwrap()).unwrap()
}

fn template_source(name: &str) -> String {
    std::fs::read_to_string(format!("{CHAT}/templates/{name}.jinja")).unwrap()
}

#[test]
fn renders_byte_identical_to_transformers() {
    let exp = expected();
    let mut checked = BTreeMap::<String, usize>::new();
    for case in &exp.cases {
        let tpl = ChatTemplate::new(
            &template_source(&case.template),
            Some(exp.bos_token.clone()),
            Some(exp.eos_token.clone()),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.template));
        let messages = &exp.conversations[&case.conversation];
        let extra = case.extra.clone().unwrap_or(serde_json::json!({}));
        let got = tpl.render_with(messages, case.add_generation_prompt, &extra);
        let what =
            format!("{} / {} / add_generation_prompt={}", case.template, case.conversation, case.add_generation_prompt);
        match (&case.expected, &case.error) {
            (Some(want), None) => {
                let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(&got, want, "{what}");
            }
            (None, Some(msg)) => assert_eq!(got, Err(ChatError::Raised(msg.clone())), "{what}"),
            _ => panic!("bad fixture case {what}"),
        }
        *checked.entry(case.template.clone()).or_default() += 1;
    }
    assert_eq!(checked.values().sum::<usize>(), 50);
    // Every template in the fixture directory was exercised, with and without the generation prompt.
    for name in [
        "llama3_instruct_npm",
        "llama3_instruct",
        "chatml",
        "smollm2_instruct",
        "stress",
        "tojson_values",
        "raise_exception",
    ] {
        assert!(checked.get(name).copied().unwrap_or(0) >= 2, "{name} not covered");
    }
}

#[test]
fn add_generation_prompt_appends_the_assistant_header() {
    let tpl = ChatTemplate::llama3(Some("<|begin_of_text|>".into()), Some("<|eot_id|>".into())).unwrap();
    let msgs = [ChatMessage::system("You are a careful medical assistant."), ChatMessage::user("我发烧了。")];
    let without = tpl.render(&msgs, false).unwrap();
    let with = tpl.render(&msgs, true).unwrap();
    assert_eq!(
        without,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a careful medical assistant.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n我发烧了。<|eot_id|>"
    );
    assert_eq!(with, format!("{without}<|start_header_id|>assistant<|end_header_id|>\n\n"));
}

#[test]
fn builtin_llama3_template_is_the_official_one() {
    assert_eq!(LLAMA3_TEMPLATE, template_source("llama3_instruct"));
}

fn tiny_vocab_meta(chat_template: Option<&str>) -> Metadata {
    let mut m = Metadata::default();
    let tokens = ["<|begin_of_text|>", "<|eot_id|>", "a"];
    m.insert("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.insert("tokenizer.ggml.tokens", Value::Array(tokens.map(String::from).to_vec().into()));
    m.insert("tokenizer.ggml.bos_token_id", Value::U32(0));
    m.insert("tokenizer.ggml.eos_token_id", Value::U32(1));
    if let Some(t) = chat_template {
        m.insert("tokenizer.chat_template", Value::String(t.into()));
    }
    m
}

#[test]
fn gguf_without_template_uses_llama3_header_format() {
    let tpl = ChatTemplate::from_gguf(&tiny_vocab_meta(None)).unwrap();
    assert_eq!(tpl.source(), LLAMA3_TEMPLATE);
    assert_eq!((tpl.bos_token(), tpl.eos_token()), (Some("<|begin_of_text|>"), Some("<|eot_id|>")));
    let out = tpl.render(&[ChatMessage::user("  hi  "), ChatMessage::assistant("hello")], true).unwrap();
    assert_eq!(
        out,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nhello<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // Even with no vocabulary at all.
    let tpl = ChatTemplate::from_gguf(&Metadata::default()).unwrap();
    assert!(tpl.render(&[ChatMessage::user("x")], false).unwrap().starts_with("<|begin_of_text|><|start_header_id|>"));
}

#[test]
fn gguf_template_sees_its_bos_and_eos() {
    let tpl = ChatTemplate::from_gguf(&tiny_vocab_meta(Some("{{ bos_token }}|{{ eos_token }}|{{ messages|length }}")))
        .unwrap();
    assert_eq!(tpl.render(&[ChatMessage::user("x")], false).unwrap(), "<|begin_of_text|>|<|eot_id|>|1");
    // A template without BOS/EOS defined sees them undefined (empty), as in Jinja2.
    let tpl = ChatTemplate::new("[{{ bos_token }}]", None, None).unwrap();
    assert_eq!(tpl.render(&[], false).unwrap(), "[]");
}

#[test]
fn raise_exception_is_a_typed_error() {
    let tpl = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok",
        None,
        None,
    )
    .unwrap();
    assert_eq!(tpl.render(&[ChatMessage::user("hi")], false).unwrap(), "ok");
    let err = tpl.render(&[ChatMessage::assistant("hi")], false).unwrap_err();
    assert_eq!(err, ChatError::Raised("first message must be from the user".into()));
    assert!(err.to_string().contains("first message must be from the user"));
}

#[test]
fn template_errors_are_typed() {
    assert!(matches!(ChatTemplate::new("{% for x in %}", None, None), Err(ChatError::Syntax(_))));
    assert!(matches!(ChatTemplate::new("{% if x %}", None, None), Err(ChatError::Syntax(_))));
    // One that cannot render any conversation fails when it is loaded.
    assert!(matches!(ChatTemplate::new("{{ messages[0].content.nope() }}", None, None), Err(ChatError::Render(_))));
    let tpl = ChatTemplate::new("{{ messages[1].content.nope() if messages | length > 4 }}", None, None).unwrap();
    let five = vec![ChatMessage::user("x"); 5];
    assert!(matches!(tpl.render(&five, false), Err(ChatError::Render(_))));
    // `{% generation %}` (transformers' assistant mask tag) renders its body.
    let tpl = ChatTemplate::new(
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",
        None,
        None,
    )
    .unwrap();
    assert_eq!(tpl.render(&[ChatMessage::assistant("a"), ChatMessage::user("b")], false).unwrap(), "ab");
}

#[test]
fn strftime_now_reads_the_clock() {
    let mut tpl = ChatTemplate::new("Today Date: {{ strftime_now('%d %b %Y') }}", None, None).unwrap();
    // Native builds fall back to the system clock.
    let now = tpl.render(&[], false).unwrap();
    let year: i64 = now.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(year >= 2024, "{now}");
    tpl.set_now(1_721_952_000); // 2024-07-26 00:00:00
    assert_eq!(tpl.render(&[], false).unwrap(), "Today Date: 26 Jul 2024");
    assert_eq!(strftime("%Y-%m-%dT%H:%M:%S", 1_721_952_000 + 3_661), "2024-07-26T01:01:01");
}

#[test]
fn hf_config_template() {
    let cfg = br#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
                   "chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]}"#;
    let tpl = ChatTemplate::from_hf_config(cfg).unwrap();
    assert_eq!(tpl.render(&[ChatMessage::user("hi")], false).unwrap(), "<s>hi</s>");
    let tpl = ChatTemplate::from_hf_config(br#"{"bos_token": "<|begin_of_text|>"}"#).unwrap();
    assert_eq!(tpl.source(), LLAMA3_TEMPLATE);
    assert!(matches!(ChatTemplate::from_hf_config(b"nope"), Err(ChatError::InvalidConfig(_))));
}

#[test]
fn stop_tokens_come_from_the_vocabulary() {
    let mut m = tiny_vocab_meta(None);
    m.insert("tokenizer.ggml.merges", Value::Array(Vec::<String>::new().into()));
    m.insert("tokenizer.ggml.pre", Value::String("llama-bpe".into()));
    m.insert("tokenizer.ggml.token_type", Value::Array(vec![3i32, 3, 1].into()));
    let tok = Tokenizer::from_gguf(&m).unwrap();
    assert_eq!(stop_token_ids(&tok), [1]);
    let tpl = ChatTemplate::from_gguf(&m).unwrap();
    let prompt = tpl.render(&[ChatMessage::user("a")], false).unwrap();
    assert_eq!(&tok.encode(&prompt, false).unwrap()[..1], [0]);
}

/// A chat template comes with the model, from wherever a link points: one that loops for ever or
/// writes without end fails when the model loads, quickly, with a typed error.
#[test]
fn hostile_templates_fail_at_load_in_bounded_time() {
    let started = std::time::Instant::now();
    // CVE-2024-34359's class: nested loops (10^10 steps).
    let nested = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    assert_eq!(
        ChatTemplate::new(nested, None, None).unwrap_err(),
        ChatError::TooCostly(carebot_model::chat::TEMPLATE_FUEL)
    );
    // Output without end: 10^5 × 10^4 bytes, far past the conversation.
    let flood = "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}";
    assert!(matches!(
        ChatTemplate::new(flood, None, None).unwrap_err(),
        ChatError::TooLarge(_) | ChatError::TooCostly(_)
    ));
    // Recursion: a macro calling itself.
    let recursive = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    assert!(ChatTemplate::new(recursive, None, None).is_err());
    // A template that fails on every conversation fails the load, not the first message.
    assert!(matches!(
        ChatTemplate::new("{{ messages[0].content | nosuchfilter }}", None, None),
        Err(ChatError::Syntax(_) | ChatError::Render(_))
    ));
    assert!(matches!(ChatTemplate::new("{{ undefined_function() }}", None, None), Err(ChatError::Render(_))));
    let elapsed = started.elapsed();
    assert!(elapsed.as_secs() < 30, "{elapsed:?}");
    eprintln!("hostile templates refused in {elapsed:?}");

    // A template that refuses some conversations (here: system turns), or wants a clock, loads.
    let picky = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}{% endif %}{{ m.content }}{% endfor %}";
    let t = ChatTemplate::new(picky, None, None).unwrap();
    assert!(matches!(t.render(&[ChatMessage::system("s")], false), Err(ChatError::Raised(_))));
    assert!(ChatTemplate::new("{{ strftime_now('%d %b %Y') }}", None, None).is_ok());
    // Long real conversations stay well within the budget.
    let long: Vec<ChatMessage> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                ChatMessage::user("症状 ".repeat(200))
            } else {
                ChatMessage::assistant("answer ".repeat(300))
            }
        })
        .collect();
    let prompt = ChatTemplate::new(LLAMA3_TEMPLATE, Some("<|begin_of_text|>".into()), None)
        .unwrap()
        .render(&long, true)
        .unwrap();
    assert!(prompt.len() > 300_000, "{}", prompt.len());
}
