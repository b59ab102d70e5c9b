//! `carebot`: inspect a GGUF model, tokenize text, and generate with the CPU reference.

use carebot_model::chat::{ChatMessage, ChatTemplate, stop_token_ids};
use carebot_model::config::LlamaConfig;
use carebot_model::generate::{Session, StopReason};
use carebot_model::gguf::{GgufFile, read_header, read_tensor_data};
use carebot_model::quant::GgmlType;
use carebot_model::reference::CpuModel;
use carebot_model::sampler::{Sampler, SamplerConfig};
use carebot_model::tokenizer::Tokenizer;
use clap::{Parser, Subcommand, ValueEnum};
use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

#[derive(Parser)]
#[command(name = "carebot", version, about = "CareBot: private Llama-3 medical chat, on your own machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendKind {
    /// The f32 CPU reference (slow, exact).
    Cpu,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF model's architecture, sizes, weight types, tokenizer and chat template.
    Info {
        /// Path to the .gguf file.
        model: PathBuf,
    },
    /// Print the token ids of TEXT (space separated), adding BOS when the file says so.
    Tokenize {
        #[arg(long)]
        model: PathBuf,
        text: String,
    },
    /// Generate a continuation (or, with --chat, an answer) and stream it to stdout.
    Generate {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Treat the prompt as a user message and apply the model's chat template.
        #[arg(long)]
        chat: bool,
        /// System message for --chat.
        #[arg(long)]
        system: Option<String>,
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// 0 means greedy decoding.
        #[arg(long, default_value_t = 0.7)]
        temperature: f32,
        #[arg(long, default_value_t = 0.9)]
        top_p: f32,
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        repeat_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// End with one line `ids: …` listing the generated token ids.
        #[arg(long)]
        print_ids: bool,
        /// KV cache size in tokens (default: the model's context, at most 4096).
        #[arg(long)]
        context: Option<usize>,
        #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
        backend: BackendKind,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { model } => info(&model),
        Command::Tokenize { model, text } => tokenize(&model, &text),
        Command::Generate {
            model,
            prompt,
            chat,
            system,
            max_tokens,
            temperature,
            top_p,
            top_k,
            repeat_penalty,
            seed,
            print_ids,
            context,
            backend: BackendKind::Cpu,
        } => {
            let sampler = SamplerConfig { temperature, top_k, top_p, repeat_penalty, repeat_last_n: 64, seed };
            generate(&model, &prompt, chat.then_some(system), max_tokens, sampler, print_ids, context)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens a model file and parses its header.
fn open(path: &Path) -> Result<(GgufFile, File)> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata()?.len();
    let header = read_header(&file, len).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((header, file))
}

fn info(path: &Path) -> Result<()> {
    let (f, _) = open(path)?;
    let m = &f.metadata;
    println!("file          {} ({:.1} MiB, GGUF v{})", path.display(), f.file_len as f64 / 1048576.0, f.version);
    println!("name          {}", m.get_str("general.name").unwrap_or("-"));
    println!("architecture  {}", f.architecture().unwrap_or("-"));
    let params: u64 = f.tensors.iter().map(|t| t.n_elements()).sum();
    println!("tensors       {} ({:.1} M parameters)", f.tensors.len(), params as f64 / 1e6);
    match LlamaConfig::from_gguf(&f) {
        Ok(c) => {
            println!(
                "model         {} layers, dim {}, {} heads ({} KV, head dim {}), FFN {}, vocab {}",
                c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size
            );
            println!(
                "              context {}, RMS eps {:e}, RoPE base {}{}{}",
                c.context_length,
                c.rms_eps,
                c.rope_theta,
                if c.has_rope_freqs { ", Llama-3.1 rope_freqs scaling" } else { "" },
                if c.tied_output { ", output tied to embeddings" } else { "" }
            );
        }
        Err(e) => println!("model         cannot run: {e}"),
    }
    let mut mix: Vec<(GgmlType, usize, u64)> = Vec::new();
    for t in &f.tensors {
        match mix.iter_mut().find(|(ty, ..)| *ty == t.ty) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.n_bytes;
            }
            None => mix.push((t.ty, 1, t.n_bytes)),
        }
    }
    mix.sort_by_key(|e| std::cmp::Reverse(e.2));
    let total: u64 = mix.iter().map(|e| e.2).sum();
    let parts: Vec<String> = mix
        .iter()
        .map(|(ty, n, b)| format!("{} ×{} ({:.1}%)", ty.name(), n, 100.0 * *b as f64 / total.max(1) as f64))
        .collect();
    println!("weights       {} — {:.1} MiB", parts.join(", "), total as f64 / 1048576.0);
    match Tokenizer::from_gguf(m) {
        Ok(t) => {
            println!(
                "tokenizer     {} / {}, {} tokens, BOS {:?}, EOS {:?}, add BOS {}",
                m.get_str("tokenizer.ggml.model").unwrap_or("-"),
                m.get_str("tokenizer.ggml.pre").unwrap_or("-"),
                t.vocab_size(),
                t.bos_id(),
                t.eos_id(),
                t.add_bos()
            );
            let stops: Vec<String> = stop_token_ids(&t).iter().map(|id| format!("{id}")).collect();
            println!("stop tokens   {}", stops.join(" "));
        }
        Err(e) => println!("tokenizer     unusable: {e}"),
    }
    match m.get_str("tokenizer.chat_template") {
        Some(t) => println!(
            "chat template {} chars: {}",
            t.len(),
            t.lines().next().unwrap_or("").chars().take(70).collect::<String>()
        ),
        None => println!("chat template none (the Llama-3 header format is used)"),
    }
    Ok(())
}

fn tokenize(path: &Path, text: &str) -> Result<()> {
    let (f, _) = open(path)?;
    let tok = Tokenizer::from_gguf(&f.metadata)?;
    let ids = tok.encode(text, tok.add_bos())?;
    println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    Ok(())
}

fn generate(
    path: &Path,
    prompt: &str,
    chat_system: Option<Option<String>>,
    max_tokens: usize,
    sampler: SamplerConfig,
    print_ids: bool,
    context: Option<usize>,
) -> Result<()> {
    let (f, mut file) = open(path)?;
    let tok = Tokenizer::from_gguf(&f.metadata)?;
    let ids = match &chat_system {
        Some(system) => {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(ChatMessage::new("system", s));
            }
            messages.push(ChatMessage::new("user", prompt));
            let text = ChatTemplate::from_gguf(&f.metadata)?.render(&messages, true)?;
            // The template writes BOS itself when the model wants it.
            tok.encode(&text, false)?
        }
        None => tok.encode(prompt, tok.add_bos())?,
    };
    let t0 = Instant::now();
    let context = context.unwrap_or(4096);
    let model = CpuModel::load(&f, context, |t| read_tensor_data(&mut file, t).map_err(|e| e.to_string()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let stops = stop_token_ids(&tok);
    let mut session = Session::new(model);
    let mut sampler = Sampler::new(sampler);
    let mut stream = tok.stream().skip_control(true);
    let mut stdout = std::io::stdout().lock();
    if chat_system.is_none() {
        write!(stdout, "{prompt}")?;
    }
    let t1 = Instant::now();
    let mut write_err = None;
    let g = session.generate(&ids, &mut sampler, &stops, max_tokens, |id| {
        let text = stream.push(id);
        match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_err = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    write!(stdout, "{}", stream.flush())?;
    writeln!(stdout)?;
    if print_ids {
        writeln!(stdout, "ids: {}", g.tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(" "))?;
    }
    let gen_s = t1.elapsed().as_secs_f64();
    let why = match g.stop {
        StopReason::StopToken(t) => format!("stop token {t}"),
        StopReason::MaxTokens => "max tokens".into(),
        StopReason::Cancelled => "cancelled".into(),
        StopReason::ContextFull => "context full".into(),
    };
    eprintln!(
        "[{} prompt + {} generated tokens, load {:.1}s, {:.2} tok/s, ended by {why}]",
        ids.len(),
        g.tokens.len(),
        load_s,
        (g.prompt_tokens_run + g.tokens.len()) as f64 / gen_s.max(1e-9)
    );
    Ok(())
}
