//! The `carebot` binary end to end on a synthetic model: info, tokenize, generate, and one-line
//! errors with a non-zero exit for bad input.

use carebot_model::quant::GgmlType;
use carebot_model::synthetic::SyntheticSpec;
use std::process::Command;

fn carebot(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_carebot")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn info_tokenize_generate_and_errors() {
    let dir = std::env::temp_dir().join(format!("carebot-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny.gguf");
    let bytes = SyntheticSpec { n_layers: 1, ..SyntheticSpec::tiny_llama3() }.to_gguf(GgmlType::Q4_K);
    std::fs::write(&model, &bytes).unwrap();
    let m = model.to_str().unwrap();

    let (ok, out, _) = carebot(&["info", m]);
    assert!(ok);
    assert!(out.contains("1 layers, dim 256, 4 heads (2 KV") && out.contains("Q4_K"), "{out}");

    let (ok, out, _) = carebot(&["tokenize", "--model", m, "Hi!"]);
    assert!(ok);
    assert_eq!(out.trim(), "72 105 33");

    let args = ["generate", "--model", m, "--prompt", "abc", "--max-tokens", "6", "--temperature", "0", "--print-ids"];
    let (ok, out, _) = carebot(&args);
    assert!(ok);
    let ids = out.lines().last().unwrap();
    assert!(ids.starts_with("ids: ") && ids.split(' ').count() == 7, "{out}");
    assert_eq!(carebot(&args).1, out, "greedy is deterministic");
    let (_, sampled_a, _) =
        carebot(&["generate", "--model", m, "--prompt", "abc", "--max-tokens", "12", "--seed", "3", "--print-ids"]);
    let (_, sampled_b, _) =
        carebot(&["generate", "--model", m, "--prompt", "abc", "--max-tokens", "12", "--seed", "3", "--print-ids"]);
    assert_eq!(sampled_a, sampled_b, "same seed, same tokens");

    // Bad input: one line on stderr, non-zero exit.
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let notgguf = dir.join("notes.txt");
    std::fs::write(&notgguf, "patient notes, not a model").unwrap();
    for (args, needle) in [
        (vec!["info", "/nonexistent/model.gguf"], "No such file"),
        (vec!["info", truncated.to_str().unwrap()], "outside the file"),
        (vec!["tokenize", "--model", notgguf.to_str().unwrap(), "x"], "not a GGUF file"),
        (vec!["generate", "--model", truncated.to_str().unwrap(), "--prompt", "x"], "outside the file"),
    ] {
        let (ok, _, err) = carebot(&args);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
