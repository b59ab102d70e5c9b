//! `carebot convert` against llama.cpp: a tiny random Llama-3 checkpoint in Hugging Face layout
//! (bf16, two safetensors shards, the real Llama-3 tokenizer) is built here from the same recipe as
//! `tests/fixtures/convert/gen_convert_fixtures.py`, converted, and compared with what llama.cpp's
//! `convert_hf_to_gguf.py` + `llama-quantize` wrote for it (`tests/fixtures/convert/`). Also: bad
//! checkpoints fail with a message naming the file or tensor and leave no output behind.

use carebot_model::gguf::{GgufFile, Value, read_header, read_tensor_data};
use carebot_model::quant::{self, GgmlType};
use carebot_model::rng::fnv1a64;
use carebot_model::synthetic::{SyntheticSpec, permute_rows_for_rope};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/convert")
}

fn carebot(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_carebot")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The tiny checkpoint: the tiny test model's shapes with Llama-3's vocabulary.
fn spec() -> SyntheticSpec {
    SyntheticSpec { vocab: 128_256, ..SyntheticSpec::tiny_llama3() }
}

/// The tiny checkpoint in `dir` (two shards, the Llama-3 tokenizer).
fn write_checkpoint(dir: &Path) {
    write_checkpoint_of(dir, &spec(), 2);
}

fn write_checkpoint_of(dir: &Path, spec: &SyntheticSpec, n_shards: usize) {
    spec.write_hf_checkpoint(dir, &tokenizer_dir(), n_shards).unwrap();
}

/// The Llama-3 tokenizer fetched by `scripts/fetch-test-data.sh`.
fn tokenizer_dir() -> PathBuf {
    let path = std::env::var("CAREBOT_LLAMA3_TOKENIZER").unwrap_or_else(|_| {
        panic!("CAREBOT_LLAMA3_TOKENIZER is not set: run `eval \"$(scripts/fetch-test-data.sh)\"`")
    });
    let p = PathBuf::from(path);
    if p.is_dir() { p } else { p.parent().unwrap().to_path_buf() }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("carebot-convert-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn skip_without_tokenizer() -> bool {
    std::env::var("CAREBOT_LLAMA3_TOKENIZER").is_err()
        && std::env::var("CAREBOT_SKIP_NETWORK_FIXTURES").as_deref() == Ok("1")
}

fn fnv_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a64(bytes))
}

/// The converted file loads in our CPU reference and runs; its RoPE factors, permutation and
/// tokenizer are right (the reference's greedy tokens on it equal those on the GGUF the synthetic
/// model writes directly, whose q/k permutation and vocabulary are llama.cpp's by construction).
#[test]
fn converted_files_run_in_the_reference() {
    if skip_without_tokenizer() {
        return;
    }
    let scratch = Scratch::new("run");
    let hf = scratch.0.join("hf");
    write_checkpoint(&hf);
    for quant in ["f16", "q8_0", "q4_k_m", "q4_0"] {
        let out = scratch.0.join(format!("ours-{quant}.gguf"));
        let (ok, _, err) =
            carebot(&["convert", "--hf", hf.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quant", quant]);
        assert!(ok, "{quant}: {err}");
        let (ok, info, err) = carebot(&["info", out.to_str().unwrap(), "--backend", "cpu"]);
        assert!(ok, "{err}");
        assert!(info.contains("RoPE scaling Llama-3.1 (rope_freqs)"), "{info}");
        assert!(info.contains("stop tokens   128001 128009") || info.contains("128009"), "{info}");
        let (ok, out_text, err) = carebot(&[
            "generate",
            "--model",
            out.to_str().unwrap(),
            "--backend",
            "cpu",
            "--prompt",
            "Fever and cough",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--print-ids",
            "--context",
            "64",
        ]);
        assert!(ok, "{quant}: {err}");
        assert!(out_text.lines().last().unwrap().starts_with("ids: "), "{out_text}");
    }
}

/// Bad checkpoints: a clear message naming the file or tensor, a non-zero exit, no output file.
#[test]
fn bad_checkpoints_fail_cleanly() {
    if skip_without_tokenizer() {
        return;
    }
    let scratch = Scratch::new("bad");
    let out = scratch.0.join("out.gguf");
    let convert = |hf: &Path| {
        carebot(&["convert", "--hf", hf.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quant", "q8_0"])
    };
    let fresh = |name: &str| {
        let dir = scratch.0.join(name);
        write_checkpoint(&dir);
        dir
    };

    let dir = fresh("missing-shard");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let (ok, _, err) = convert(&dir);
    assert!(!ok && err.contains("model-00002-of-00002.safetensors"), "{err}");

    let dir = fresh("not-llama");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("LlamaForCausalLM", "MistralForCausalLM").replace("\"llama\"", "\"mistral\""),
    )
    .unwrap();
    let (ok, _, err) = convert(&dir);
    assert!(!ok && err.contains("not a llama model"), "{err}");

    let dir = fresh("wrong-shape");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config.replace("\"intermediate_size\":512", "\"intermediate_size\":768"))
        .unwrap();
    let (ok, _, err) = convert(&dir);
    assert!(!ok && err.contains("mlp.gate_proj") && err.contains("shape"), "{err}");

    let dir = fresh("missing-tensor");
    let index = std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        index.replace("\"model.norm.weight\"", "\"model.norm_renamed\""),
    )
    .unwrap();
    let (ok, _, err) = convert(&dir);
    assert!(!ok && err.contains("model.norm.weight"), "{err}");

    // Hostile JSON: a config.json far bigger than any needs is not read; nesting 100 000 deep is
    // refused by the parser's depth limit. Both name the file, at once.
    let dir = fresh("huge-config");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config.replace('{', &format!("{{{}", " ".repeat(5 << 20)))).unwrap();
    let (ok, _, err) = convert(&dir);
    assert!(!ok && err.contains("config.json") && err.contains("more than"), "{err}");
    let dir = fresh("deep-json");
    std::fs::write(dir.join("tokenizer_config.json"), "[".repeat(100_000) + &"]".repeat(100_000)).unwrap();
    let (ok, _, err) = convert(&dir);
    assert!(!ok && err.contains("tokenizer_config.json") && err.contains("recursion limit"), "{err}");

    for line in err.lines().filter(|l| l.starts_with("error")) {
        assert!(!line.is_empty());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&scratch.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("out.gguf"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// A tiny stand-in for the Hugging Face hub on 127.0.0.1: the repo info API and `resolve` file
/// downloads with Range support, serving the files of `dir` as repo `test/tiny` at revision `main`,
/// which is commit `0123abcd`.
/// Returns the endpoint and a log of the paths requested.
fn serve_hub(dir: PathBuf) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut range = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().ok()));
                }
            }
            let path = request.split(' ').nth(1).unwrap_or("").to_string();
            seen.lock().unwrap().push(path.clone());
            let (status, headers, body): (&str, Vec<String>, Vec<u8>) = if ["main", "0123abcd"]
                .iter()
                .any(|rev| path == format!("/api/models/test/tiny/revision/{rev}"))
            {
                let files: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| serde_json::json!({ "rfilename": e.unwrap().file_name().to_string_lossy() }))
                    .collect();
                ("200 OK", vec![], serde_json::json!({ "sha": "0123abcd", "siblings": files }).to_string().into_bytes())
            } else if let Some(file) = path
                .strip_prefix("/test/tiny/resolve/main/")
                .or_else(|| path.strip_prefix("/test/tiny/resolve/0123abcd/"))
            {
                match std::fs::read(dir.join(file)) {
                    Ok(data) => {
                        let (a, b) = range
                            .map_or((0, data.len() - 1), |(a, b)| (a, b.unwrap_or(data.len() - 1).min(data.len() - 1)));
                        let headers = vec![
                            format!("content-range: bytes {a}-{b}/{}", data.len()),
                            format!("etag: \"{}\"", fnv_hex(&data)),
                            "x-repo-commit: 0123abcd".into(),
                        ];
                        ("206 Partial Content", headers, data[a..=b].to_vec())
                    }
                    Err(_) => ("404 Not Found", vec![], b"not found".to_vec()),
                }
            } else {
                ("404 Not Found", vec![], b"not found".to_vec())
            };
            let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
            for h in headers {
                head.push_str(&h);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
        }
    });
    (endpoint, log)
}

/// `--hf-repo` downloads through `HF_ENDPOINT` into the HF cache (`HF_HOME`), then converts; a
/// second run finds the files cached.
#[test]
fn hf_repo_downloads_then_converts() {
    if skip_without_tokenizer() {
        return;
    }
    let scratch = Scratch::new("hub");
    let repo = scratch.0.join("repo");
    write_checkpoint(&repo);
    let (endpoint, log) = serve_hub(repo);
    let out = scratch.0.join("hub.gguf");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_carebot"))
            .args(["convert", "--hf-repo", "test/tiny", "--out", out.to_str().unwrap(), "--quant", "q8_0"])
            .env("HF_ENDPOINT", &endpoint)
            .env("HF_HOME", scratch.0.join("hf-home"))
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(out.exists());
    let cached = scratch.0.join("hf-home/hub/models--test--tiny/snapshots/0123abcd/model-00001-of-00002.safetensors");
    assert!(cached.exists(), "not in the HF cache: {}", cached.display());
    let downloads = |log: &[String]| log.iter().filter(|p| p.contains("/resolve/")).count();
    let before = downloads(&log.lock().unwrap());
    assert!(before >= 6, "{:?}", log.lock().unwrap());
    let second = run();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(downloads(&log.lock().unwrap()), before, "cached files were downloaded again");
}

/// `generate` with no `--model` converts the hub repository once into the cache (Q4_K_M), then
/// reuses it: no download and no conversion the second time, and none needed with the hub out of
/// reach. With nothing converted and no hub, it fails naming both.
#[test]
fn a_command_without_a_model_converts_the_hub_model_once() {
    if skip_without_tokenizer() {
        return;
    }
    let scratch = Scratch::new("default-model");
    let repo = scratch.0.join("repo");
    write_checkpoint(&repo);
    let (endpoint, log) = serve_hub(repo);
    let cache = scratch.0.join("carebot-cache");
    let run = |endpoint: &str, cache: &Path| {
        Command::new(env!("CARGO_BIN_EXE_carebot"))
            .args(["generate", "--hf-repo", "test/tiny", "--backend", "cpu", "--prompt", "Fever", "--max-tokens", "3"])
            .args(["--temperature", "0", "--print-ids"])
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", scratch.0.join("hf-home"))
            .env("CAREBOT_CACHE", cache)
            .output()
            .unwrap()
    };
    let text = |o: &std::process::Output| {
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let first = run(&endpoint, &cache);
    let (out1, err1) = text(&first);
    assert!(first.status.success(), "{err1}");
    assert!(err1.contains("converted to Q4_K_M once"), "{err1}");
    let converted = cache.join("test--tiny--0123abcd.q4_k_m.gguf");
    let written =
        std::fs::metadata(&converted).unwrap_or_else(|e| panic!("{}: {e}", converted.display())).modified().unwrap();
    let downloads = |log: &[String]| log.iter().filter(|p| p.contains("/resolve/")).count();
    let before = downloads(&log.lock().unwrap());
    assert!(log.lock().unwrap().iter().all(|p| !p.contains("/resolve/main/")), "files read at a moving revision");

    let second = run(&endpoint, &cache);
    let (out2, err2) = text(&second);
    assert!(second.status.success(), "{err2}");
    assert!(err2.contains("converted earlier"), "{err2}");
    assert_eq!(downloads(&log.lock().unwrap()), before, "downloaded again");
    assert_eq!(std::fs::metadata(&converted).unwrap().modified().unwrap(), written, "converted again");
    let ids = |out: &str| out.lines().find(|l| l.starts_with("ids:")).map(str::to_string);
    assert!(ids(&out1).is_some(), "{out1}");
    assert_eq!(ids(&out1), ids(&out2));

    // No hub: the earlier conversion, said so.
    let unreachable = "http://127.0.0.1:9";
    let offline = run(unreachable, &cache);
    let (out3, err3) = text(&offline);
    assert!(offline.status.success(), "{err3}");
    assert!(err3.contains("cannot be reached"), "{err3}");
    assert_eq!(ids(&out3), ids(&out1));

    // No hub and nothing converted: a clear failure, and nothing left behind.
    let empty = scratch.0.join("empty-cache");
    let failed = run(unreachable, &empty);
    let (_, err4) = text(&failed);
    assert!(!failed.status.success());
    assert!(
        err4.contains("test/tiny cannot be fetched from the hub") && err4.contains("nothing was converted"),
        "{err4}"
    );
}

fn read_fixture(name: &str) -> Json {
    let path = fixtures().join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The bytes a metadata value's hash covers (see gen_convert_fixtures.py): numbers little-endian
/// at their width, strings as raw UTF-8, concatenated.
fn value_bytes(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(x) => out.extend(x.as_bytes()),
        Value::Array(a) => a.iter().for_each(|i| value_bytes(&i, out)),
    }
}

/// The GGUF at `path` holds exactly the tensors of llama.cpp's summarized file `reference`
/// (names, types, shapes, bytes); returns its header.
fn same_tensors_as(path: &Path, reference: &Json, label: &str) -> GgufFile {
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let ours = read_header(&mut f, len).unwrap();
    let tensors = reference["tensors"].as_array().unwrap();
    assert_eq!(ours.tensors.len(), tensors.len(), "{label}: tensor count");
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let info = ours.tensor(name).unwrap_or_else(|| panic!("{label}: no {name}"));
        assert_eq!(info.ty.name(), t["type"].as_str().unwrap(), "{label} {name}: type");
        let dims: Vec<u64> = t["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(info.dims, dims, "{label} {name}: dims");
        let data = read_tensor_data(&mut f, info).unwrap();
        assert_eq!(fnv_hex(&data), t["fnv1a64"].as_str().unwrap(), "{label} {name}: bytes differ from llama.cpp's");
    }
    ours
}

/// Every metadata key llama.cpp wrote has the same value in ours, except the ones named in
/// `differ` (checked by the caller); returns the keys we write that llama.cpp does not.
fn compare_metadata(ours: &GgufFile, reference: &Json, differ: &[&str]) -> Vec<String> {
    let mut theirs = Vec::new();
    for m in reference["metadata"].as_array().unwrap() {
        let key = m["key"].as_str().unwrap();
        theirs.push(key.to_string());
        if differ.contains(&key) {
            continue;
        }
        let v = ours.metadata.get(key).unwrap_or_else(|| panic!("{key} is missing"));
        if m["type"] == "array" {
            let Value::Array(items) = v else { panic!("{key} is not an array") };
            assert_eq!(items.len() as u64, m["length"].as_u64().unwrap(), "{key} length");
            let mut bytes = Vec::new();
            value_bytes(v, &mut bytes);
            assert_eq!(fnv_hex(&bytes), m["fnv1a64"].as_str().unwrap(), "{key} contents");
        } else {
            let expected = &m["value"];
            let same = match v {
                Value::String(s) => expected.as_str() == Some(s.as_str()),
                Value::Bool(b) => expected.as_bool() == Some(*b),
                Value::F32(x) => expected.as_f64() == Some(*x as f64),
                other => expected.as_u64() == other.as_u64(),
            };
            assert!(same, "{key}: ours {v:?}, llama.cpp {expected}");
        }
    }
    ours.metadata.iter().map(|(k, _)| k.to_string()).filter(|k| !theirs.contains(k)).collect()
}

/// Our files hold exactly llama.cpp's tensors (names, types, shapes, bytes) and metadata: for f16
/// and q8_0 as `convert_hf_to_gguf.py` writes them, for q4_k_m and q4_0 as `llama-quantize`
/// makes them from its bf16 file. Same bytes means llama.cpp computes the same logits on ours.
#[test]
fn converted_files_equal_llama_cpp_conversions() {
    if skip_without_tokenizer() {
        return;
    }
    let scratch = Scratch::new("llamacpp");
    let hf = scratch.0.join("hf");
    write_checkpoint(&hf);
    let llama_bpe = read_fixture("llamacpp_f16_bos_template.json")["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "tokenizer.ggml.pre")
        .unwrap()["value"]
        .clone();
    assert_eq!(llama_bpe, "llama-bpe");
    let logits = read_fixture("logits.json");
    for quant in ["f16", "q8_0", "q4_k_m", "q4_0"] {
        let out = scratch.0.join(format!("ours-{quant}.gguf"));
        let (ok, _, err) =
            carebot(&["convert", "--hf", hf.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quant", quant]);
        assert!(ok, "{quant}: {err}");
        greedy_tokens_match(&out, &logits["prompt_ids"], &logits["files"][quant], quant);
        let reference = read_fixture(&format!("llamacpp_{quant}.json"));
        let ours = same_tensors_as(&out, &reference, quant);

        // Ours differs on purpose in: the name (ours from config or folder, llama.cpp title-cases
        // the folder), and the pre-tokenizer: llama.cpp labels this copy of the Llama-3 tokenizer
        // (no BOS post-processor) "smaug-bpe" by hash and Meta's current one "llama-bpe" — same
        // regex, but llama-bpe also means ignore_merges, which is what Llama-3 wants.
        let extra = compare_metadata(&ours, &reference, &["general.name", "tokenizer.ggml.pre"]);
        assert_eq!(ours.metadata.get("tokenizer.ggml.pre"), Some(&Value::String("llama-bpe".into())));
        // One extra key: the end-of-turn id, so <|eot_id|> stops even where a loader does not
        // recognize the token by its text (this Llama-3.0 vocabulary has no <|eom_id|>).
        assert_eq!(extra, ["tokenizer.ggml.eot_token_id"], "{quant}");
        assert_eq!(ours.metadata.get("tokenizer.ggml.eot_token_id"), Some(&Value::U32(128009)));
    }
}

/// One case of `tests/fixtures/convert/matrix` (see gen_matrix_fixtures.py): a checkpoint saved
/// by transformers 4.x or 5.x, in the style of Llama-3.0, 3.1 or 3.2, rebuilt here from the
/// committed JSON files and the weight recipe. The weights of each shape are written once, into
/// `weights`, and linked.
fn write_matrix_case(dir: &Path, case: &Json, tokenizer_5x: &Path, weights: &Path) {
    let name = case["name"].as_str().unwrap();
    let spec = SyntheticSpec {
        vocab: case["vocab_size"].as_u64().unwrap() as usize,
        tied_output: case["tied"].as_bool().unwrap(),
        ..spec()
    };
    let shape = weights.join(format!("{}-{}", spec.vocab, spec.tied_output));
    if !shape.exists() {
        write_checkpoint_of(&shape, &spec, 1);
    }
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(&shape).unwrap() {
        let entry = entry.unwrap();
        std::fs::hard_link(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    for file in case["committed_files"].as_array().unwrap() {
        let file = file.as_str().unwrap();
        let to = dir.join(file);
        let _ = std::fs::remove_file(&to); // a link to the shared copy: replace, not write through
        std::fs::copy(fixtures().join("matrix").join(name).join(file), to).unwrap();
    }
    if case["tokenizer_json"] == "meta_merges_as_pairs" {
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        std::fs::hard_link(tokenizer_5x, dir.join("tokenizer.json")).unwrap();
    }
    // Tensors of another model, in a second shard the index lists.
    let extra = case["extra_tensors"].as_array().unwrap();
    if !extra.is_empty() {
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = extra
            .iter()
            .map(|t| {
                let shape: Vec<usize> = t[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                let n: usize = shape.iter().product();
                let bytes = (0..n).flat_map(|i| half::bf16::from_f32(1.0 + i as f32 / 64.0).to_le_bytes()).collect();
                (t[0].as_str().unwrap().to_string(), shape, bytes)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, shape, b)| {
                (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), b).unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("extra.safetensors")).unwrap();
        let path = dir.join("model.safetensors.index.json");
        let mut index: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (n, ..) in &data {
            index["weight_map"][n] = "extra.safetensors".into();
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, index.to_string()).unwrap();
    }
}

/// Checkpoints saved by transformers 4.x and 5.x (RoPE at the top or in `rope_parameters`, the chat
/// template in tokenizer_config.json or chat_template.jinja), in the styles of Llama-3.0 (plain
/// RoPE), 3.1 (llama3 scaling) and 3.2 (tied embeddings, explicit head_dim), and a padded
/// vocabulary, convert to llama.cpp's tensors and metadata; the cases llama.cpp would misread or
/// we do not implement are refused with a message naming the field. (llama.cpp's logits on our
/// files equal those on its own: tests/fixtures/convert/matrix/check.json.)
#[test]
fn the_checkpoint_matrix_converts_as_llama_cpp_does() {
    if skip_without_tokenizer() {
        return;
    }
    let scratch = Scratch::new("matrix");
    let matrix = read_fixture("matrix/cases.json");
    // transformers 5 saves Meta's tokenizer.json with each merge as a pair (otherwise unchanged,
    // as the fixture script checks).
    let tokenizer_5x = scratch.0.join("tokenizer-5x.json");
    let mut tok: Json =
        serde_json::from_slice(&std::fs::read(tokenizer_dir().join("tokenizer.json")).unwrap()).unwrap();
    for m in tok["model"]["merges"].as_array_mut().unwrap() {
        let (a, b) = m.as_str().unwrap().split_once(' ').unwrap();
        *m = serde_json::json!([a, b]);
    }
    std::fs::write(&tokenizer_5x, tok.to_string()).unwrap();
    drop(tok);

    let cases = matrix["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dir = scratch.0.join(name);
        write_matrix_case(&dir, case, &tokenizer_5x, &scratch.0.join("weights"));
        let out = scratch.0.join(format!("{name}.gguf"));
        let (ok, _, err) =
            carebot(&["convert", "--hf", dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quant", "f16"]);
        if !case["converts"].as_bool().unwrap() {
            let field = case["refused_field"].as_str().unwrap();
            assert!(!ok && err.contains(field), "{name}: expected a refusal naming {field}: {err}");
            assert!(!out.exists(), "{name}: a refused conversion left a file");
            std::fs::remove_dir_all(&dir).unwrap();
            continue;
        }
        assert!(ok, "{name}: {err}");
        let reference = read_fixture(&format!("matrix/{name}/llamacpp_f16.json"));
        let ours = same_tensors_as(&out, &reference, name);
        // As in converted_files_equal_llama_cpp_conversions: the name and the pre-tokenizer label
        // differ on purpose, and we add the end-of-turn id.
        let extra = compare_metadata(&ours, &reference, &["general.name", "tokenizer.ggml.pre"]);
        assert_eq!(extra, ["tokenizer.ggml.eot_token_id"], "{name}");
        // The chat template made it in from wherever this transformers version saved it.
        let template = ours.metadata.get("tokenizer.chat_template").and_then(Value::as_str);
        assert!(template.is_some_and(|t| t.contains("<|start_header_id|>")), "{name}: no chat template");

        // What the loader read is shown, so a person can see a misread.
        let (ok, info, err) = carebot(&["info", out.to_str().unwrap(), "--backend", "cpu"]);
        assert!(ok, "{name}: {err}");
        let scaling = if case["style"] == "llama30" { "RoPE scaling none" } else { "RoPE scaling Llama-3.1" };
        let output = if case["tied"] == true { "output tied to the embeddings" } else { "output its own matrix" };
        for shown in ["RoPE base 500000", "trained context 256", scaling, output] {
            assert!(info.contains(shown), "{name}: {shown:?} not in\n{info}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
}

/// Our quantizers reproduce ggml's bytes (so its RMSE, within 1% as required: exactly) on the
/// converted tensors, for every quantized type the presets use.
#[test]
fn quantization_rmse_matches_llama_cpp() {
    let rmse = read_fixture("rmse.json");
    let spec = spec();
    for (ty_name, tensors) in rmse["types"].as_object().unwrap() {
        let ty = GgmlType::from_name(&ty_name.to_ascii_uppercase()).unwrap();
        for (name, r) in tensors.as_object().unwrap() {
            let (hf, [rows, cols]) = spec.hf_tensor_values(name).unwrap();
            let mut src: Vec<f32> = hf.iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect();
            if name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight") {
                let heads = if name.ends_with("attn_q.weight") { spec.n_heads } else { spec.n_kv_heads };
                src = permute_rows_for_rope(&src, rows, cols, heads);
            }
            let q = quant::quantize(ty, &src).unwrap();
            assert_eq!(fnv_hex(&q), r["fnv1a64"].as_str().unwrap(), "{ty_name} {name}: bytes differ from ggml's");
            let mut back = vec![0f32; src.len()];
            quant::dequantize(ty, &q, &mut back).unwrap();
            let ours = (back.iter().zip(&src).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>()
                / src.len() as f64)
                .sqrt();
            let theirs = r["ggml"].as_f64().unwrap();
            assert!((ours - theirs).abs() <= 0.01 * theirs, "{ty_name} {name}: RMSE {ours} vs llama.cpp {theirs}");
        }
    }
}

/// Our GPU engine on our file predicts, after each prompt position, the token llama.cpp predicts
/// on its own file (f16, q8_0), or, for the 4-bit files where llama.cpp's own rounding of
/// activations flips near-ties on this random model, the token exact f32 arithmetic on the same
/// weights gives (HF transformers on the dequantized weights), agreeing with llama.cpp elsewhere.
fn greedy_tokens_match(path: &Path, prompt: &Json, reference: &Json, quant: &str) {
    use carebot_gpu::{EngineOptions, GpuModel, GpuOptions, KvFormat};
    let Some(ctx) = carebot_gpu::test_context(&GpuOptions::default()) else { return };
    let options = EngineOptions { context: 32, kv: KvFormat::F32, ..Default::default() };
    let mut model = GpuModel::load_file(ctx, path, &options, |_, _| {}).unwrap();
    let ids = |v: &Json| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    let ours: Vec<u32> = ids(prompt)
        .iter()
        .map(|&t| carebot_model::sampler::argmax(&pollster::block_on(model.forward(&[t])).unwrap()) as u32)
        .collect();
    let llamacpp = ids(&reference["argmax"]);
    match reference.get("hf_on_dequantized_weights_argmax") {
        Some(exact) if quant.starts_with("q4") => {
            assert_eq!(ours, ids(exact), "{quant}: greedy tokens vs exact arithmetic on the same weights");
            let agree = ours.iter().zip(&llamacpp).filter(|(a, b)| a == b).count();
            assert!(agree >= llamacpp.len() - 3, "{quant}: only {agree} of llama.cpp's tokens");
        }
        _ => assert_eq!(ours, llamacpp, "{quant}: greedy tokens vs llama.cpp"),
    }
}

/// A conversion killed part-way (no chance to clean up) leaves nothing under the final name, and
/// the next run replaces its leftover.
#[test]
fn an_interrupted_conversion_leaves_no_file_under_the_final_name() {
    if skip_without_tokenizer() {
        return;
    }
    let scratch = Scratch::new("interrupted");
    let hf = scratch.0.join("hf");
    write_checkpoint(&hf);
    let out = scratch.0.join("model.gguf");
    let partial = scratch.0.join(".model.gguf.partial");
    let args = ["convert", "--hf", hf.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quant", "q4_k_m"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_carebot")).args(args).spawn().unwrap();
    // Kill it as soon as it has started writing.
    while !partial.exists() {
        assert!(child.try_wait().unwrap().is_none(), "finished before writing anything");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed conversion left {}", out.display());
    let (ok, _, err) = carebot(&args);
    assert!(ok, "{err}");
    assert!(out.exists() && !partial.exists());
}

/// When the disk (here: the file-size limit, which makes writes fail like a full disk or quota)
/// runs out mid-write, the message names the file, the exit is non-zero and nothing is left.
#[test]
fn a_full_disk_fails_cleanly() {
    if skip_without_tokenizer() {
        return;
    }
    let scratch = Scratch::new("full");
    let hf = scratch.0.join("hf");
    write_checkpoint(&hf);
    let out = scratch.0.join("model.gguf");
    // 4 MiB allowed per file; SIGXFSZ ignored (inherited through exec) so writes fail with EFBIG.
    let script = format!(
        "trap '' XFSZ; ulimit -f 8192; exec '{}' convert --hf '{}' --out '{}' --quant q8_0",
        env!("CARGO_BIN_EXE_carebot"),
        hf.display(),
        out.display()
    );
    let result = Command::new("sh").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "a 4 MiB limit let a 75 MiB conversion succeed");
    assert!(err.contains("error: writing") && err.contains("model.gguf.partial"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&scratch.0).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(left, ["hf"], "left behind: {left:?}");
}
