//! `carebot`: inspect a GGUF model, tokenize text, generate and chat, on the GPU engine or the CPU
//! reference, and benchmark.

mod bench;
mod compare;
mod convert;
mod download;

use carebot_gpu::weights::{row_bytes, rows_per_part};
use carebot_gpu::{EngineOptions, GpuContext, GpuModel, GpuOptions, KvFormat};
use carebot_model::chat::{ChatMessage, ChatTemplate, FitError, fit_conversation, stop_token_ids};
use carebot_model::config::LlamaConfig;
use carebot_model::generate::{Backend, Generation, Session, StopReason};
use carebot_model::gguf::{GgufFile, read_header, read_tensor_data};
use carebot_model::quant::GgmlType;
use carebot_model::reference::CpuModel;
use carebot_model::sampler::{Sampler, SamplerConfig};
use carebot_model::tokenizer::Tokenizer;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::error::Error;
use std::fs::File;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const MIB: f64 = 1024.0 * 1024.0;

/// KV cache positions when `--context` is not given (capped at the model's training context).
const DEFAULT_CONTEXT: usize = 4096;

#[derive(Parser)]
#[command(name = "carebot", version, about = "CareBot: private Llama-3 medical chat, on your own machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// Our WGSL engine on wgpu (Vulkan, Metal or DX12; Mesa's lavapipe without a GPU).
    Gpu,
    /// The f32 CPU reference (slow, exact).
    Cpu,
}

#[derive(Clone, Copy, ValueEnum)]
enum KvKind {
    /// Half the memory of f32.
    F16,
    /// Keys and values as computed (twice the memory).
    F32,
}

impl ModelArgs {
    /// The GGUF file to run: --model, else the hub repository's conversion (made on first use).
    fn path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(path) => Ok(path.clone()),
            None => download::converted_model(&self.hf_repo, &self.revision),
        }
    }
}

impl From<KvKind> for KvFormat {
    fn from(kv: KvKind) -> Self {
        match kv {
            KvKind::F16 => KvFormat::F16,
            KvKind::F32 => KvFormat::F32,
        }
    }
}

/// Which model, on which backend, with how much context.
#[derive(Args)]
struct ModelArgs {
    /// Path to the .gguf file. Without it, the --hf-repo model (CareBot's by default) is
    /// downloaded and converted to Q4_K_M once, into the cache, and reused after.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The hub repository used when --model is not given.
    #[arg(long, default_value = carebot_model::convert::CAREBOT_REPO, conflicts_with = "model")]
    hf_repo: String,
    /// Branch, tag or commit of --hf-repo.
    #[arg(long, default_value = "main", conflicts_with = "model")]
    revision: String,
    #[arg(long, value_enum, default_value_t = BackendKind::Gpu)]
    backend: BackendKind,
    /// KV cache format on the GPU.
    #[arg(long, value_enum, default_value_t = KvKind::F16)]
    kv: KvKind,
    /// KV cache size in tokens (default: the model's context, at most 4096).
    #[arg(long)]
    context: Option<usize>,
}

#[derive(Args)]
struct SamplingArgs {
    /// Most tokens generated per answer.
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
}

impl SamplingArgs {
    fn sampler(&self) -> Sampler {
        Sampler::new(SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: 64,
            seed: self.seed,
        })
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// Treat the prompt as a user message and apply the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// End with one line `ids: …` listing the generated token ids.
    #[arg(long)]
    print_ids: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// System message opening the conversation (kept when old turns are dropped).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF model's architecture, sizes, weight types, tokenizer, chat template, and whether
    /// it fits the GPU.
    Info {
        /// Path to the .gguf file.
        model: PathBuf,
        /// `cpu` skips the GPU report.
        #[arg(long, value_enum, default_value_t = BackendKind::Gpu)]
        backend: BackendKind,
    },
    /// Print the token ids of TEXT (space separated), adding BOS when the file says so.
    Tokenize {
        #[arg(long)]
        model: PathBuf,
        text: String,
    },
    /// Generate a continuation (or, with --chat, an answer) and stream it to stdout.
    Generate(GenerateArgs),
    /// Chat on stdin/stdout, one line per message (`/reset` clears the conversation, `/exit` or end
    /// of input quits); each turn only runs the tokens that are new.
    Chat(ChatArgs),
    /// Measure load time, prefill and decode speed against the device's memory bandwidth.
    Bench(bench::BenchArgs),
    /// Make a GGUF (q4_k_m by default) from a Hugging Face Llama checkpoint, as llama.cpp would.
    Convert(convert::ConvertArgs),
    /// Compare two GGUF files of one model: headers, differing weight blocks per tensor, and (when
    /// blocks differ) the largest logit difference on PROMPT in the CPU reference. Prints JSON.
    Compare {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, default_value = "Fever and cough for three days. 发烧咳嗽三天了。")]
        prompt: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { model, backend } => info(&model, backend),
        Command::Tokenize { model, text } => tokenize(&model, &text),
        Command::Generate(args) => generate(&args),
        Command::Chat(args) => chat(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Compare { a, b, prompt } => compare::run(&a, &b, &prompt),
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

/// The device `GpuOptions::default()` picks (`WGPU_ADAPTER_NAME` chooses among several).
fn gpu_context() -> Result<GpuContext> {
    Ok(pollster::block_on(GpuContext::new(&GpuOptions::default()))?)
}

fn info(path: &Path, backend: BackendKind) -> Result<()> {
    let (f, _) = open(path)?;
    let m = &f.metadata;
    println!("file          {} ({:.1} MiB, GGUF v{})", path.display(), f.file_len as f64 / MIB, f.version);
    println!("name          {}", m.get_str("general.name").unwrap_or("-"));
    println!("architecture  {}", f.architecture().unwrap_or("-"));
    let params: u64 = f.tensors.iter().map(|t| t.n_elements()).sum();
    println!("tensors       {} ({:.1} M parameters)", f.tensors.len(), params as f64 / 1e6);
    let cfg = LlamaConfig::from_gguf(&f);
    match &cfg {
        Ok(c) => println!("model         {}", c.summary()),
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
    println!("weights       {} — {:.1} MiB", parts.join(", "), total as f64 / MIB);
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
    if backend == BackendKind::Gpu {
        match gpu_context() {
            Ok(ctx) => {
                println!("gpu           {}", ctx.describe());
                if let Ok(cfg) = &cfg {
                    gpu_fit(&ctx, &f, cfg);
                }
            }
            // A machine without a GPU still gets the rest of the report.
            Err(e) => println!("gpu           none: {e}"),
        }
    }
    Ok(())
}

/// What the GPU engine would allocate for `f` on `ctx` (without loading anything): weight and KV
/// cache bytes at the default context, and how many buffers the tensors larger than one storage
/// binding are split into.
fn gpu_fit(ctx: &GpuContext, f: &GgufFile, cfg: &LlamaConfig) {
    let mut weights = 0u64;
    let mut split: Vec<(&str, u64, u64)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut largest = ("-", 0u64);
    for t in &f.tensors {
        if t.dims.len() < 2 {
            // Norm weights are widened to f32; Llama-3.1 RoPE factors stay on the host.
            if t.name != "rope_freqs.weight" {
                let bytes = t.row_len() * 4;
                weights += bytes;
                if bytes > ctx.binding_limit {
                    problems.push(format!("{} needs a {} binding", t.name, mib(bytes)));
                }
            }
            continue;
        }
        if carebot_gpu::shader::weight_format(t.ty).is_none() {
            problems.push(format!("{} is {}, which the GPU engine cannot read", t.name, t.ty.name()));
            continue;
        }
        weights += t.n_bytes;
        if t.n_bytes > largest.1 {
            largest = (&t.name, t.n_bytes);
        }
        match rows_per_part(ctx, row_bytes(t.ty, t.row_len())) {
            Ok(per_part) => {
                let buffers = t.n_rows().div_ceil(per_part as u64);
                if buffers > 1 {
                    split.push((&t.name, buffers, t.n_bytes));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", t.name)),
        }
    }
    let capacity = DEFAULT_CONTEXT.min(cfg.context_length).max(1);
    // Keys and values, f16, every layer.
    let layer_kv = (capacity * cfg.kv_dim() * 2) as u64;
    let kv = 2 * cfg.n_layers as u64 * layer_kv;
    if layer_kv > ctx.binding_limit {
        problems.push(format!("one layer's keys need a {} binding at {capacity} positions", mib(layer_kv)));
    }
    println!(
        "gpu memory    weights {} + KV cache {} ({capacity} positions, f16) = {}",
        mib(weights),
        mib(kv),
        mib(weights + kv)
    );
    let limit = mib(ctx.binding_limit.min(ctx.max_buffer));
    if split.is_empty() {
        println!("gpu buffers   every tensor fits one {limit} binding (largest: {}, {})", largest.0, mib(largest.1));
    } else {
        split.sort_by_key(|s| std::cmp::Reverse((s.1, s.2)));
        let shown: Vec<String> =
            split.iter().take(4).map(|(name, n, bytes)| format!("{name} ({}) → {n} buffers", mib(*bytes))).collect();
        let more = if split.len() > 4 { format!(" and {} more", split.len() - 4) } else { String::new() };
        println!("gpu buffers   {}{more} (bindings ≤ {limit}); the other tensors fit one", shown.join(", "));
    }
    match problems.first() {
        None => println!("gpu fit       yes (the device's free memory is not known until loading)"),
        Some(p) => println!("gpu fit       no: {p}{}", if problems.len() > 1 { " (and more)" } else { "" }),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

fn tokenize(path: &Path, text: &str) -> Result<()> {
    let (f, _) = open(path)?;
    let tok = Tokenizer::from_gguf(&f.metadata)?;
    let ids = tok.encode(text, tok.add_bos())?;
    println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    Ok(())
}

/// The f32 CPU reference with `args.context` positions of KV cache.
fn load_cpu(f: &GgufFile, file: &mut File, args: &ModelArgs) -> Result<CpuModel> {
    let context = args.context.unwrap_or(DEFAULT_CONTEXT);
    Ok(CpuModel::load(f, context, |t| read_tensor_data(&mut *file, t).map_err(|e| e.to_string()))?)
}

/// The GPU engine, its weights streamed from the file with a progress bar on stderr (hidden when
/// stderr is not a terminal).
fn load_gpu(path: &Path, args: &ModelArgs) -> Result<GpuModel> {
    let ctx = gpu_context()?;
    eprintln!("gpu: {}", ctx.describe());
    if ctx.is_software() {
        eprintln!(
            "note: this adapter is a software (CPU) Vulkan driver, so the GPU engine runs slowly; --backend cpu may be faster"
        );
    }
    let options = EngineOptions {
        context: args.context.unwrap_or(DEFAULT_CONTEXT),
        kv: args.kv.into(),
        ..EngineOptions::default()
    };
    let style = ProgressStyle::with_template(
        "loading {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, ETA {eta}",
    )?
    .progress_chars("=> ");
    let bar = ProgressBar::new(0).with_style(style);
    let model = GpuModel::load_file(ctx, path, &options, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    Ok(model?)
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let path = args.model.path()?;
    let (f, mut file) = open(&path)?;
    let tok = Tokenizer::from_gguf(&f.metadata)?;
    let ids = if args.chat {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(ChatMessage::system(s));
        }
        messages.push(ChatMessage::user(&args.prompt));
        let text = ChatTemplate::from_gguf(&f.metadata)?.render(&messages, true)?;
        // The template writes BOS itself when the model wants it.
        tok.encode(&text, false)?
    } else {
        tok.encode(&args.prompt, tok.add_bos())?
    };
    let t0 = Instant::now();
    match args.model.backend {
        BackendKind::Cpu => generate_on(load_cpu(&f, &mut file, &args.model)?, &tok, &ids, args, t0),
        BackendKind::Gpu => generate_on(load_gpu(&path, &args.model)?, &tok, &ids, args, t0),
    }
}

/// `generate` on a loaded model (`t0`: when loading started).
fn generate_on(model: impl Backend, tok: &Tokenizer, ids: &[u32], args: &GenerateArgs, t0: Instant) -> Result<()> {
    let load_s = t0.elapsed().as_secs_f64();
    let mut session = Session::new(model);
    let mut sampler = args.sampling.sampler();
    if !args.chat {
        let mut stdout = std::io::stdout().lock();
        write!(stdout, "{}", args.prompt)?;
        stdout.flush()?;
    }
    let t1 = Instant::now();
    let (g, first_token_at) = stream_answer(&mut session, tok, ids, &mut sampler, args.sampling.max_tokens)?;
    if args.print_ids {
        println!("ids: {}", g.tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    }
    let gen_s = t1.elapsed().as_secs_f64();
    let why = match g.stop {
        StopReason::StopToken(t) => format!("stop token {t}"),
        StopReason::MaxTokens => "max tokens".into(),
        StopReason::Cancelled => "cancelled".into(),
        StopReason::ContextFull => "context full".into(),
    };
    // Writing speed as the browser worker measures it: the tokens after the first over the time
    // since it (the first carries the prompt's prefill), so the two can be compared.
    let writing = match first_token_at {
        Some(first) if g.tokens.len() > 1 => {
            format!(", writing {:.2} tok/s", (g.tokens.len() - 1) as f64 / first.elapsed().as_secs_f64().max(1e-9))
        }
        _ => String::new(),
    };
    eprintln!(
        "[{} prompt + {} generated tokens, load {:.1}s, {:.2} tok/s{writing}, ended by {why}]",
        ids.len(),
        g.tokens.len(),
        load_s,
        (g.prompt_tokens_run + g.tokens.len()) as f64 / gen_s.max(1e-9)
    );
    Ok(())
}

/// Generates after `ids` (running only what the session's cache lacks), streaming the text to
/// stdout as it is produced, and ends the line. Also returns when the first token came.
fn stream_answer<B: Backend>(
    session: &mut Session<B>,
    tok: &Tokenizer,
    ids: &[u32],
    sampler: &mut Sampler,
    max_tokens: usize,
) -> Result<(Generation, Option<Instant>)> {
    let stops = stop_token_ids(tok);
    let mut stream = tok.stream().skip_control(true);
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    let mut first_token_at = None;
    let g = session.generate(ids, sampler, &stops, max_tokens, |id| {
        first_token_at.get_or_insert_with(Instant::now);
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
    writeln!(stdout, "{}", stream.flush())?;
    stdout.flush()?;
    Ok((g, first_token_at))
}

fn chat(args: &ChatArgs) -> Result<()> {
    let path = args.model.path()?;
    let (f, mut file) = open(&path)?;
    let tok = Tokenizer::from_gguf(&f.metadata)?;
    let template = ChatTemplate::from_gguf(&f.metadata)?;
    match args.model.backend {
        BackendKind::Cpu => chat_on(load_cpu(&f, &mut file, &args.model)?, &tok, &template, args),
        BackendKind::Gpu => chat_on(load_gpu(&path, &args.model)?, &tok, &template, args),
    }
}

/// The chat loop on a loaded model: one Session for the whole conversation, so each turn only runs
/// the tokens after the longest prefix the KV cache already holds.
fn chat_on(model: impl Backend, tok: &Tokenizer, template: &ChatTemplate, args: &ChatArgs) -> Result<()> {
    let mut session = Session::new(model);
    let capacity = session.backend.capacity();
    let max_tokens = args.sampling.max_tokens;
    // Room kept for the answer when deciding whether the conversation still fits.
    let reserve = max_tokens.min(capacity / 2);
    let mut sampler = args.sampling.sampler();
    let mut messages: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();
    let first_turn = messages.len();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        {
            let mut stdout = std::io::stdout().lock();
            write!(stdout, "> ")?;
            stdout.flush()?;
        }
        let Some(line) = lines.next() else {
            println!();
            return Ok(());
        };
        let line = line?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" => return Ok(()),
            "/reset" => {
                messages.truncate(first_turn);
                eprintln!("[conversation cleared]");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::user(line));

        // While the conversation leaves no room for the answer, the oldest turns are left out
        // (never the system message or the new message).
        let fitted = match fit_conversation(template, tok, &messages, first_turn, capacity, reserve) {
            Ok(f) => f,
            Err(FitError::TooLong { tokens, capacity }) => {
                eprintln!(
                    "[this message makes the prompt {tokens} tokens, more than the context of {capacity} holds: not sent]"
                );
                messages.pop();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let dropped = fitted.dropped_turns;
        if dropped > 0 {
            eprintln!(
                "[the conversation no longer fits the context of {capacity} tokens: dropped the oldest {dropped} \
                 turn{}]",
                if dropped == 1 { "" } else { "s" }
            );
            // Forget them for good, as the prompt did.
            messages.drain(first_turn..fitted.first_kept);
        }
        let ids = fitted.ids;

        let t0 = Instant::now();
        let (g, _) = stream_answer(&mut session, tok, &ids, &mut sampler, max_tokens)?;
        let secs = t0.elapsed().as_secs_f64();
        if g.stop == StopReason::ContextFull {
            eprintln!("[the context of {capacity} tokens is full: the answer was cut short]");
        }
        messages.push(ChatMessage::assistant(tok.decode_text(&g.tokens)));
        eprintln!(
            "[{} prompt tokens run, {} generated, {:.2} tok/s; conversation {} tokens]",
            g.prompt_tokens_run,
            g.tokens.len(),
            (g.prompt_tokens_run + g.tokens.len()) as f64 / secs.max(1e-9),
            ids.len()
        );
    }
}
