//! The `carebot` binary end to end on a synthetic model: info, tokenize, generate (GPU engine and
//! CPU reference agree), chat over piped stdin, and one-line errors with a non-zero exit for bad
//! input. The GPU runs on whatever adapter wgpu finds (Mesa's lavapipe on CI); with
//! `CAREBOT_SKIP_GPU_TESTS=1` and no adapter the GPU runs are skipped.

use carebot_model::quant::GgmlType;
use carebot_model::synthetic::SyntheticSpec;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn carebot(args: &[&str]) -> (bool, String, String) {
    carebot_with_stdin(args, "")
}

fn carebot_with_stdin(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carebot"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A scratch directory holding the tiny synthetic model (one per test, removed on drop).
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str, spec: SyntheticSpec) -> (Self, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("carebot-cli-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = spec.to_gguf(GgmlType::Q4_K);
        std::fs::write(dir.join("tiny.gguf"), &bytes).unwrap();
        (Scratch(dir), bytes)
    }

    fn model(&self) -> String {
        self.0.join("tiny.gguf").to_str().unwrap().into()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the GPU runs can be tested: `info` found an adapter, or it found none and
/// `CAREBOT_SKIP_GPU_TESTS=1` says to skip them (without the variable, a missing adapter fails).
fn gpu_available(info: &str) -> bool {
    let gpu = info.lines().find(|l| l.starts_with("gpu ")).unwrap_or_else(|| panic!("no gpu line: {info}"));
    match gpu.split_once("none: ") {
        None => true,
        Some(_) if std::env::var(carebot_gpu::SKIP_GPU_TESTS_ENV).is_ok_and(|v| v == "1") => {
            eprintln!("skipping the GPU runs: {gpu}");
            false
        }
        Some((_, why)) => panic!("{why}\n(set {}=1 to skip GPU tests)", carebot_gpu::SKIP_GPU_TESTS_ENV),
    }
}

fn backends(model: &str) -> Vec<&'static str> {
    let (ok, info, err) = carebot(&["info", model]);
    assert!(ok, "{err}");
    if gpu_available(&info) { vec!["cpu", "gpu"] } else { vec!["cpu"] }
}

fn one_layer() -> SyntheticSpec {
    SyntheticSpec { n_layers: 1, ..SyntheticSpec::tiny_llama3() }
}

fn ids_line(out: &str) -> Vec<u32> {
    let line = out.lines().last().unwrap_or("");
    let ids = line.strip_prefix("ids: ").unwrap_or_else(|| panic!("no ids line in {out:?}"));
    ids.split(' ').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()
}

#[test]
fn info_tokenize_generate_and_errors() {
    let (dir, bytes) = Scratch::new("basic", one_layer());
    let m = &dir.model();

    let (ok, out, err) = carebot(&["info", m]);
    assert!(ok, "{err}");
    assert!(out.contains("1 layers, dim 256, 4 heads (2 KV") && out.contains("Q4_K"), "{out}");
    if gpu_available(&out) {
        assert!(out.contains("gpu memory    weights") && out.contains("gpu fit       yes"), "{out}");
    }
    let (ok, out, _) = carebot(&["info", "--backend", "cpu", m]);
    assert!(ok && !out.contains("\ngpu"), "{out}");

    let (ok, out, _) = carebot(&["tokenize", "--model", m, "Hi!"]);
    assert!(ok);
    assert_eq!(out.trim(), "72 105 33");

    for backend in backends(m) {
        let args = [
            "generate",
            "--model",
            m,
            "--backend",
            backend,
            "--prompt",
            "abc",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--print-ids",
        ];
        let (ok, out, err) = carebot(&args);
        assert!(ok, "{backend}: {err}");
        assert_eq!(ids_line(&out).len(), 6, "{out}");
        assert_eq!(carebot(&args).1, out, "{backend}: greedy is deterministic");
        let sampled = ["generate", "--model", m, "--backend", backend, "--prompt", "abc", "--max-tokens", "12"];
        let sampled = [&sampled[..], &["--seed", "3", "--print-ids"]].concat();
        let (_, sampled_a, _) = carebot(&sampled);
        let (_, sampled_b, _) = carebot(&sampled);
        assert_eq!(sampled_a, sampled_b, "{backend}: same seed, same tokens");
    }

    // Bad input: one line on stderr, non-zero exit.
    let truncated = dir.path("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let notgguf = dir.path("notes.txt");
    std::fs::write(&notgguf, "patient notes, not a model").unwrap();
    let (truncated, notgguf) = (truncated.to_str().unwrap(), notgguf.to_str().unwrap());
    for (args, needle) in [
        (vec!["info", "/nonexistent/model.gguf"], "No such file"),
        (vec!["info", truncated], "outside the file"),
        (vec!["tokenize", "--model", notgguf, "x"], "not a GGUF file"),
        (vec!["generate", "--model", truncated, "--prompt", "x"], "outside the file"),
        (vec!["chat", "--model", truncated], "outside the file"),
        (vec!["generate", "--model", notgguf, "--backend", "cpu", "--prompt", "x"], "not a GGUF file"),
    ] {
        let (ok, _, err) = carebot(&args);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
    }
}

/// Greedy decoding on the GPU engine picks the same tokens as the CPU reference.
#[test]
fn gpu_matches_cpu_greedy() {
    let (dir, _) = Scratch::new("greedy", SyntheticSpec::tiny_llama3());
    let m = &dir.model();
    if backends(m).len() < 2 {
        return;
    }
    let run = |backend: &str| {
        // f32 KV: the f16 cache could flip a near-tie against the f32 reference.
        let args =
            ["generate", "--model", m, "--backend", backend, "--kv", "f32", "--prompt", "The patient presents with"];
        let args = [&args[..], &["--max-tokens", "40", "--temperature", "0", "--print-ids"]].concat();
        let (ok, out, err) = carebot(&args);
        assert!(ok, "{backend}: {err}");
        (ids_line(&out), err)
    };
    let (cpu, _) = run("cpu");
    let (gpu, gpu_err) = run("gpu");
    assert!(gpu_err.starts_with("gpu: "), "the adapter is named first: {gpu_err}");
    assert!(cpu.len() >= 32, "{cpu:?}");
    assert_eq!(gpu, cpu);
}

/// `[N prompt tokens run, M generated, X tok/s; conversation T tokens]` → (N, M, T).
fn turn_stats(stderr: &str) -> Vec<(usize, usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix('[')?.strip_suffix(" tokens]")?;
            let (run, rest) = l.split_once(" prompt tokens run, ")?;
            let (generated, rest) = rest.split_once(" generated, ")?;
            let (_, total) = rest.split_once("; conversation ")?;
            Some((run.parse().ok()?, generated.parse().ok()?, total.parse().ok()?))
        })
        .collect()
}

fn chat_turns(m: &Path, backend: &str, extra: &[&str], stdin: &str) -> (String, Vec<(usize, usize, usize)>, String) {
    let m = m.to_str().unwrap();
    let args = ["chat", "--model", m, "--backend", backend, "--temperature", "0", "--max-tokens", "8"];
    let (ok, out, err) = carebot_with_stdin(&[&args[..], extra].concat(), stdin);
    assert!(ok, "{backend}: {err}");
    let stats = turn_stats(&err);
    (out, stats, err)
}

/// Two turns on one Session: the second only runs what the cache lacks.
#[test]
fn chat_reuses_the_cache() {
    // Room for a few turns: each message costs ~50 tokens of headers in this byte-level vocabulary.
    let (dir, _) = Scratch::new("chat", SyntheticSpec { context: 1024, ..one_layer() });
    let m = dir.path("tiny.gguf");
    for backend in backends(&dir.model()) {
        let (out, stats, err) = chat_turns(&m, backend, &["--system", "Be brief."], "hi\nmore\n");
        assert_eq!(stats.len(), 2, "{backend}: two answers: {err}");
        assert!(!err.contains("dropped"), "{err}");
        assert_eq!(out.matches("> ").count(), 3, "two prompts answered, then end of input: {out:?}");
        let (first, second) = (stats[0], stats[1]);
        assert_eq!(first.0, first.2, "{backend}: the first turn runs the whole prompt");
        assert!(first.1 > 0 && second.1 > 0, "{err}");
        assert!(second.2 > first.2 && second.0 < second.2, "{backend}: the second turn reuses the cache: {err}");
    }

    // /reset starts over; /exit ends before the last line.
    let (_, stats, err) = chat_turns(&m, "cpu", &[], "hi\n/reset\nhi\n/exit\nnever sent\n");
    assert_eq!(stats.len(), 2, "{err}");
    assert!(err.contains("[conversation cleared]"), "{err}");
    assert_eq!(stats[0].2, stats[1].2, "same conversation after /reset: {err}");

    // A context too small for three turns: the oldest are dropped, the chat goes on.
    let (_, stats, err) = chat_turns(&m, "cpu", &["--context", "200"], "first\nsecond\nthird\n");
    assert_eq!(stats.len(), 3, "{err}");
    assert!(err.contains("dropped the oldest"), "{err}");
    assert!(stats.iter().all(|s| s.2 + 8 <= 200), "{err}");
}

/// `carebot bench` runs end to end on synthetic weights and reports sane numbers as JSON; bad
/// requests are one-line errors.
#[test]
fn bench_reports_json() {
    let (ok, out, err) =
        carebot(&["bench", "--synthetic", "tiny:q4_k", "--prompt-tokens", "20", "--gen-tokens", "4", "--json"]);
    if !ok && err.contains("no GPU adapter") && std::env::var(carebot_gpu::SKIP_GPU_TESTS_ENV).is_ok_and(|v| v == "1") {
        return;
    }
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let positive = |r: &serde_json::Value, keys: &[&str]| {
        for key in keys {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {r}"));
            assert!(v.is_finite() && v > 0.0, "{key} = {v}");
        }
    };
    let keys = ["load_s", "first_token_s", "prefill_tok_s", "decode_tok_s", "read_gb_s", "decode_roofline_pct"];
    positive(&r, &keys);
    positive(&r, &["fma_gflop_s", "prefill_gflop_s", "prefill_fma_pct"]);
    // The f16 peak where the device has shader-f16 (lavapipe has; a device without reports null).
    if r["fma16_gflop_s"].is_null() {
        assert!(r["prefill_fma16_pct"].is_null(), "{out}");
    } else {
        positive(&r, &["fma16_gflop_s", "prefill_fma16_pct"]);
        let pct = 100.0 * r["prefill_gflop_s"].as_f64().unwrap() / r["fma16_gflop_s"].as_f64().unwrap();
        assert!((pct / r["prefill_fma16_pct"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{out}");
    }
    assert!(r["file_read_s"].is_null(), "no file was read: {out}");
    assert_eq!(r["prompt_tokens"], 20);
    assert_eq!(r["gen_tokens"], 4);
    // The tiny model's weights minus all but one embedding row.
    let per_token = r["weight_bytes_per_token"].as_u64().unwrap();
    assert!(per_token > 600_000 && per_token < r["weight_bytes"].as_u64().unwrap(), "{per_token}");

    // Written to a file first: the same model as a GGUF on disk, loaded like a real one.
    let (scratch, _) = Scratch::new("bench", SyntheticSpec::tiny_llama3());
    let file = scratch.path("synthetic.gguf");
    let args = ["bench", "--synthetic", "tiny:q4_k", "--prompt-tokens", "4", "--gen-tokens", "2", "--json"];
    let (ok, out, err) = carebot(&[&args[..], &["--file", file.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    positive(&r, &["file_read_s", "first_token_vs_read"]);
    let header =
        carebot_model::gguf::read_header(&std::fs::File::open(&file).unwrap(), std::fs::metadata(&file).unwrap().len());
    assert_eq!(header.unwrap().tensors.len(), 22);
    let (ok, _, err) = carebot(&["bench", "--model", &scratch.model(), "--file", file.to_str().unwrap()]);
    assert!(!ok && err.contains("give --synthetic"), "{err}");

    let (ok, _, err) = carebot(&["bench", "--synthetic", "tiny:q4_k", "--prompt-tokens", "300"]);
    assert!(!ok && err.lines().any(|l| l.starts_with("error: ") && l.contains("context holds 256")), "{err}");
    let (ok, _, err) = carebot(&["bench", "--synthetic", "llama9:q4_k"]);
    assert!(!ok && err.contains("unknown shape"), "{err}");
}

/// A model whose chat template loops without end (CVE-2024-34359's class) is refused with a clear
/// message, quickly, by every command that would render it.
#[test]
fn a_hostile_chat_template_is_refused_quickly() {
    let (dir, _) = Scratch::new("hostile-template", one_layer());
    let template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let bytes = one_layer().to_gguf_with(
        GgmlType::Q4_K,
        vec![("tokenizer.chat_template".into(), carebot_model::gguf::Value::String(template.into()))],
    );
    let path = dir.path("hostile.gguf");
    std::fs::write(&path, bytes).unwrap();
    let m = path.to_str().unwrap();
    let started = std::time::Instant::now();
    for args in [
        vec!["generate", "--model", m, "--backend", "cpu", "--chat", "--prompt", "hi", "--max-tokens", "2"],
        vec!["chat", "--model", m, "--backend", "cpu"],
    ] {
        let (ok, _, err) = carebot(&args);
        assert!(!ok && err.contains("the chat template runs too long"), "{args:?}: {err}");
    }
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());

    // A 232 MB file whose metadata holds a 128 MiB array (4 GiB as parsed values): refused at
    // once, naming the key (the file is sparse: nothing past the header is written).
    let path = dir.path("big-metadata.gguf");
    let mut header = b"GGUF".to_vec();
    for word in [3u32.to_le_bytes().to_vec(), 0u64.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec()] {
        header.extend(word);
    }
    header.extend(4u64.to_le_bytes());
    header.extend(b"evil");
    header.extend(9u32.to_le_bytes());
    header.extend(0u32.to_le_bytes());
    header.extend((128u64 << 20).to_le_bytes());
    std::fs::write(&path, &header).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(232_000_000).unwrap();
    let started = std::time::Instant::now();
    let (ok, _, err) = carebot(&["info", path.to_str().unwrap()]);
    assert!(!ok && err.contains("the metadata would take over") && err.contains("\"evil\""), "{err}");
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}
