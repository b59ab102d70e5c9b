//! `carebot convert` against llama.cpp: a tiny random Llama-3 checkpoint in Hugging Face layout
//! (bf16, two safetensors shards, the real Llama-3 tokenizer) is built here from the same recipe as
//! `tests/fixtures/convert/gen_convert_fixtures.py`, converted, and compared with what llama.cpp's
//! `convert_hf_to_gguf.py` + `llama-quantize` wrote for it (`tests/fixtures/convert/`). Also: bad
//! checkpoints fail with a message naming the file or tensor and leave no output behind.

use carebot_model::rng::fnv1a64;
use carebot_model::synthetic::SyntheticSpec;
use safetensors::{Dtype, tensor::TensorView};
use std::collections::BTreeMap;
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

/// (HF name, GGUF name) of every weight.
fn names(spec: &SyntheticSpec) -> Vec<(String, String)> {
    let mut n = vec![("model.embed_tokens.weight".to_string(), "token_embd.weight".to_string())];
    for i in 0..spec.n_layers {
        for (hf, gguf) in [
            ("input_layernorm", "attn_norm"),
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("post_attention_layernorm", "ffn_norm"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ] {
            n.push((format!("model.layers.{i}.{hf}.weight"), format!("blk.{i}.{gguf}.weight")));
        }
    }
    n.push(("model.norm.weight".into(), "output_norm.weight".into()));
    n.push(("lm_head.weight".into(), "output.weight".into()));
    n
}

/// Writes the checkpoint into `dir`: bf16 weights in two shards with an index, config.json,
/// generation_config.json (EOS 128001 only, like CareBot's), and the Llama-3 tokenizer files.
fn write_checkpoint(dir: &Path) {
    write_checkpoint_of(dir, &spec(), 2);
}

/// [`write_checkpoint`] for any shape, the tensors spread in order over `n_shards` shards (each
/// written as soon as it is complete, so memory holds one shard).
fn write_checkpoint_of(dir: &Path, spec: &SyntheticSpec, n_shards: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let all = names(spec);
    let per_shard = all.len().div_ceil(n_shards);
    let mut weight_map = BTreeMap::new();
    for (k, group) in all.chunks(per_shard).enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", k + 1, n_shards);
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = group
            .iter()
            .map(|(hf, gguf)| {
                let (values, [rows, cols]) = spec.hf_tensor_values(gguf).unwrap();
                let shape = if rows == 1 { vec![cols] } else { vec![rows, cols] };
                (hf.clone(), shape, values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect())
            })
            .collect();
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(name, shape, bytes)| (name.clone(), TensorView::new(Dtype::BF16, shape.clone(), bytes).unwrap()))
            .collect();
        for (name, ..) in &tensors {
            weight_map.insert(name.clone(), file.clone());
        }
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let s = spec;
    let rs = s.rope_scaling.as_ref().unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": s.dim, "intermediate_size": s.ffn_dim, "num_hidden_layers": s.n_layers,
        "num_attention_heads": s.n_heads, "num_key_value_heads": s.n_kv_heads, "head_dim": s.head_dim(),
        "vocab_size": s.vocab, "max_position_embeddings": s.context, "rms_norm_eps": s.rms_eps,
        "rope_theta": s.rope_theta, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "bos_token_id": 128000, "eos_token_id": 128001,
        "rope_scaling": { "rope_type": "llama3", "factor": rs.factor, "low_freq_factor": rs.low_freq_factor,
            "high_freq_factor": rs.high_freq_factor, "original_max_position_embeddings": rs.original_context },
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("generation_config.json"), r#"{"bos_token_id": 128000, "eos_token_id": 128001}"#).unwrap();
    let tok = tokenizer_dir();
    std::fs::copy(tok.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    std::fs::copy(tok.join("tokenizer_config.json"), dir.join("tokenizer_config.json")).unwrap();
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

#[allow(dead_code)]
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
        assert!(info.contains("Llama-3.1 rope_freqs"), "{info}");
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
/// downloads with Range support, serving the files of `dir` as repo `test/tiny` at revision `main`.
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
            let (status, headers, body): (&str, Vec<String>, Vec<u8>) = if path == "/api/models/test/tiny/revision/main"
            {
                let files: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| serde_json::json!({ "rfilename": e.unwrap().file_name().to_string_lossy() }))
                    .collect();
                ("200 OK", vec![], serde_json::json!({ "sha": "0123abcd", "siblings": files }).to_string().into_bytes())
            } else if let Some(file) = path.strip_prefix("/test/tiny/resolve/main/") {
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

/// Not a test: writes a checkpoint of Llama-3.1-8B's shapes (16 GB of bf16) into
/// `$CAREBOT_CHECKPOINT_OUT`, for measuring `carebot convert`'s memory and speed at full size:
/// `cargo test --release -p carebot-cli --test convert -- --ignored write_llama3_8b_checkpoint`.
#[test]
#[ignore]
fn write_llama3_8b_checkpoint() {
    let dir = PathBuf::from(std::env::var("CAREBOT_CHECKPOINT_OUT").expect("set CAREBOT_CHECKPOINT_OUT"));
    write_checkpoint_of(&dir, &SyntheticSpec::llama3_8b(), 17);
}
