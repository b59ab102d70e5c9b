//! `carebot bench`: load time, prefill and decode speed, weight bytes read per token, and the
//! device's own streaming-read bandwidth and f32 FMA rate measured in the same run (the decode
//! and prefill rooflines).

use carebot_gpu::ops::bandwidth::Bandwidth;
use carebot_gpu::ops::best_seconds_per_rep;
use carebot_gpu::ops::fma_peak::{FmaPeak, FmaType};
use carebot_gpu::{EngineOptions, GpuContext, GpuModel, GpuOptions, KvFormat, MatvecRows, NormPlacement, PrefillTile};
use carebot_model::config::LlamaConfig;
use carebot_model::generate::StepLogits;
use carebot_model::gguf::{GgufFile, read_header};
use carebot_model::quant::{GgmlType, TypeMix};
use carebot_model::rng::SplitMix64;
use carebot_model::sampler::{SelectRequest, argmax};
use carebot_model::synthetic::SyntheticSpec;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A GGUF model to benchmark.
    #[arg(long, conflicts_with = "synthetic", required_unless_present = "synthetic")]
    pub model: Option<PathBuf>,
    /// Random weights with real shapes and type mix instead of a file: `llama3-8b:q4_k_m`,
    /// `llama3-8b:q4_0`, `llama3-1b:…` (Llama-3.2-1B's shapes), or `tiny:<type>` (the 2-layer
    /// test model, e.g. `tiny:q4_k`).
    #[arg(long)]
    pub synthetic: Option<String>,
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// With --synthetic: write the model to this GGUF file first and load it from there like a
    /// real one (so the time to the first token can be compared with reading the file).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// KV cache format.
    #[arg(long, value_enum, default_value_t = Kv::F16)]
    pub kv: Kv,
    /// Where decoding runs each RMSNorm: a dispatch of its own, or split between the products
    /// around it.
    #[arg(long, value_enum, default_value_t = Norms::Folded)]
    pub norms: Norms,
    /// The prefill matmul's register tile, rows × tokens per invocation: 4x8 (the default), 2x8,
    /// 4x4, 8x8 or 4x16.
    #[arg(long, default_value_t = PrefillTile::default())]
    pub prefill_tile: PrefillTile,
    /// Rows per decode matrix–vector workgroup: 32, 16, 64 or 8 (default: 32 on a GPU, 64 on a
    /// software adapter).
    #[arg(long)]
    pub matvec_rows: Option<MatvecRows>,
    /// Also time decode attention alone at these context lengths (every layer, random keys): how
    /// attention's share of a token grows with the context.
    // Checked when parsed: a zero would otherwise fail only after minutes of benchmark.
    #[arg(long, value_delimiter = ',', default_value = "4096", value_parser = clap::value_parser!(u32).range(1..))]
    pub attention_keys: Vec<u32>,
    /// Never use subgroup operations (the decode products then reduce through workgroup memory).
    #[arg(long)]
    pub no_subgroups: bool,
    /// Int8 activations in the matrix products, decode and prefill (packed integer dot products,
    /// where WGSL has them): x rounded per 16 values, ≈ 0.5 % off per dot product, as llama.cpp's
    /// GPU paths do.
    #[arg(long)]
    pub int8_dot: bool,
    /// Prefill products on cooperative matrices (tensor cores), where the adapter has f16 ones
    /// (native only): weights and x rounded to f16, sums in f32.
    #[arg(long)]
    pub coop_matrix: bool,
    /// Most prompt tokens one prefill submission runs (the engine's default when left out): more
    /// tokens per dispatch give a GPU more workgroups to spread.
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Record each decode step's commands only once its token is known, not while the GPU runs
    /// the step before (the engine's default).
    #[arg(long)]
    pub no_record_ahead: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Norms {
    Separate,
    Folded,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kv {
    F16,
    F32,
}

/// Everything one run measures.
struct Report {
    adapter: String,
    model: String,
    weight_bytes: u64,
    load_s: f64,
    /// From opening the file to the first token's logits.
    first_token_s: f64,
    /// Reading the model file's bytes (`--model` only).
    read_s: Option<f64>,
    prompt_tokens: usize,
    prefill_s: f64,
    gen_tokens: usize,
    decode_s: f64,
    /// Weight bytes one decoded token reads (every matrix once, plus one embedding row).
    bytes_per_token: u64,
    /// KV-cache bytes the last decoded token read.
    kv_bytes_last: u64,
    read_gbs: f64,
    /// Floating-point operations of the prefill: every block matrix once per token, attention
    /// over the positions so far, the output projection once.
    prefill_flops: f64,
    fma_gflops: f64,
    /// The f16 FMA peak, where the device has `shader-f16`.
    fma16_gflops: Option<f64>,
    /// (context length, seconds) of one token's attention over every layer.
    attention: Vec<(u32, f64)>,
    dispatches_per_token: usize,
    /// CPU seconds to record one decode step's commands.
    record_s: f64,
    /// Decode steps submitted, and how many of them were recorded ahead.
    decode_steps: u64,
    recorded_ahead: u64,
    folds_norms: bool,
    prefill_tile: PrefillTile,
    matvec_rows: MatvecRows,
    max_batch: usize,
    int8_dot: bool,
    /// The side of the cooperative matrices prefill ran on, if it did.
    coop_matrix: Option<u32>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 {
        return Err("--prompt-tokens and --gen-tokens must be at least 1".into());
    }
    if args.file.is_some() && args.synthetic.is_none() {
        return Err("--file writes a --synthetic model: give --synthetic too".into());
    }
    let gpu = GpuOptions {
        disable_subgroups: args.no_subgroups,
        int8_dot: args.int8_dot,
        coop_matrix: args.coop_matrix,
        ..Default::default()
    };
    let ctx = pollster::block_on(GpuContext::new(&gpu))?;
    let adapter = ctx.describe();
    eprintln!("gpu: {adapter}");
    let options = EngineOptions {
        context: args.prompt_tokens + args.gen_tokens + 1,
        kv: match args.kv {
            Kv::F16 => KvFormat::F16,
            Kv::F32 => KvFormat::F32,
        },
        norms: match args.norms {
            Norms::Separate => NormPlacement::Separate,
            Norms::Folded => NormPlacement::Folded,
        },
        prefill_tile: args.prefill_tile,
        matvec_rows: args.matvec_rows,
        max_batch: args.max_batch.unwrap_or(EngineOptions::default().max_batch),
        record_ahead: !args.no_record_ahead,
        ..Default::default()
    };
    // The time to read the file's bytes, the yardstick for the time to the first token (read
    // first, so both see the same page cache).
    let model_path = match (&args.synthetic, &args.file) {
        (Some(spec), Some(path)) => {
            eprintln!("writing synthetic {spec} to {}", path.display());
            write_synthetic(spec, path)?;
            Some(path)
        }
        _ => args.model.as_ref(),
    };
    let read_s = match model_path {
        Some(path) => Some(read_time(path)?),
        None => None,
    };
    let t0 = Instant::now();
    let (mut model, file, name) = match (model_path, &args.synthetic) {
        (Some(path), spec) => {
            let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let header = read_header(&f, f.metadata()?.len()).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = match spec {
                Some(spec) => format!("synthetic {spec} from {}", path.display()),
                None => path.display().to_string(),
            };
            (GpuModel::load_file(ctx, path, &options, |_, _| {})?, header, name)
        }
        (None, Some(spec)) => {
            let (model, file) = load_synthetic(ctx, spec, &options)?;
            (model, file, format!("synthetic {spec}"))
        }
        (None, None) => return Err("give --model or --synthetic".into()),
    };
    let load_s = t0.elapsed().as_secs_f64();
    let needed = args.prompt_tokens + args.gen_tokens;
    if model.capacity() < needed {
        return Err(format!(
            "the model's context holds {} positions, fewer than --prompt-tokens + --gen-tokens = {needed}",
            model.capacity()
        )
        .into());
    }
    let cfg = model.cfg.clone();
    let bytes_per_token = decode_weight_bytes(&file, &cfg);
    let weight_bytes = file.tensors.iter().map(|t| t.n_bytes).sum();

    let mut rng = SplitMix64::new(7);
    let prompt: Vec<u32> = (0..args.prompt_tokens).map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32).collect();
    // The first token (it pays for driver setup: also the warm-up), then rewind.
    let t = Instant::now();
    pollster::block_on(model.forward(&prompt[..1]))?;
    let first_token_s = load_s + t.elapsed().as_secs_f64();
    model.truncate(0);

    let t = Instant::now();
    let logits = pollster::block_on(model.forward(&prompt))?;
    let prefill_s = t.elapsed().as_secs_f64();

    // Greedy decoding as the chat runs it: the best token picked on the GPU, a few bytes read back.
    let greedy = SelectRequest { k: 1, temperature: 0.0, repeat_penalty: 1.0, penalized: Vec::new() };
    let mut next = argmax(&logits) as u32;
    let before = model.run_stats();
    let t = Instant::now();
    for _ in 0..args.gen_tokens {
        next = match pollster::block_on(model.forward_select(&[next], &greedy))? {
            StepLogits::Candidates(c) => *c.ids.first().ok_or("every logit is NaN")?,
            StepLogits::Full(logits) => argmax(&logits) as u32,
        };
    }
    let decode_s = t.elapsed().as_secs_f64();
    let kv_elem = if matches!(args.kv, Kv::F32) { 4 } else { 2 };
    let kv_bytes_last = (2 * cfg.n_layers * model.len() * cfg.kv_dim() * kv_elem) as u64;
    let dispatches_per_token = model.dispatches_per_token();
    let after = model.run_stats();
    let record_s = model.decode_record_seconds();

    let read_gbs = measure_bandwidth(&model.ctx)?;
    let fma_gflops = measure_fma(&model.ctx, FmaType::F32)?;
    let fma16_gflops = if model.ctx.f16 { Some(measure_fma(&model.ctx, FmaType::F16)?) } else { None };
    let prefill_flops = prefill_flops(&file, &cfg, args.prompt_tokens);
    let mut attention = Vec::new();
    for &keys in &args.attention_keys {
        attention.push((keys, measure_attention(&model, keys)?));
    }
    let report = Report {
        adapter,
        model: name,
        weight_bytes,
        load_s,
        first_token_s,
        read_s,
        prompt_tokens: args.prompt_tokens,
        prefill_s,
        gen_tokens: args.gen_tokens,
        decode_s,
        bytes_per_token,
        kv_bytes_last,
        read_gbs,
        prefill_flops,
        fma_gflops,
        fma16_gflops,
        attention,
        dispatches_per_token,
        record_s,
        decode_steps: after.decode_steps - before.decode_steps,
        recorded_ahead: after.recorded_ahead - before.recorded_ahead,
        folds_norms: model.folds_norms(),
        prefill_tile: args.prefill_tile,
        matvec_rows: model.matvec_rows(),
        max_batch: model.max_batch(),
        int8_dot: model.ctx.int8_dot,
        coop_matrix: model.ctx.coop_matrix,
    };
    if args.json {
        println!("{}", report.json())
    } else {
        print!("{}", report.table())
    }
    Ok(())
}

/// The synthetic model `spec` names (`llama3-8b:q4_k_m`, …): its recipe, GGUF header bytes, file
/// length and parsed header.
fn synthetic(spec: &str) -> Result<(SyntheticSpec, Vec<u8>, u64, GgufFile)> {
    let (shape, mix) = spec.split_once(':').ok_or_else(|| format!("--synthetic {spec:?}: expected SHAPE:TYPES"))?;
    let model = match shape {
        "llama3-8b" => SyntheticSpec::llama3_8b(),
        "llama3-1b" => SyntheticSpec::llama3_1b(),
        "tiny" => SyntheticSpec::tiny_llama3(),
        _ => return Err(format!("--synthetic {spec:?}: unknown shape {shape:?} (llama3-8b, llama3-1b, tiny)").into()),
    };
    let mix = match mix.to_ascii_lowercase().as_str() {
        "q4_k_m" => TypeMix::Q4KM,
        "q4_0" => TypeMix::Q4_0,
        other => TypeMix::Uniform(
            GgmlType::from_name(&other.to_ascii_uppercase())
                .or_else(|| GgmlType::from_name(other))
                .ok_or_else(|| format!("--synthetic {spec:?}: unknown weight type {other:?}"))?,
        ),
    };
    let (header, file_len) = model.gguf_header(mix);
    let file = GgufFile::parse(&header, file_len)?;
    Ok((model, header, file_len, file))
}

/// Loads the synthetic model straight onto the GPU.
fn load_synthetic(ctx: GpuContext, spec: &str, options: &EngineOptions) -> Result<(GpuModel, GgufFile)> {
    let (model, _, _, file) = synthetic(spec)?;
    let mut gpu = pollster::block_on(GpuModel::new(ctx, &file, options))?;
    model.random_tensor_data(&file, |offset, bytes| Ok(gpu.upload(offset, bytes)?)).map_err(|e| e.to_string())?;
    gpu.finish_upload()?;
    Ok((gpu, file))
}

/// Writes the synthetic model as a GGUF file at `path`.
fn write_synthetic(spec: &str, path: &std::path::Path) -> Result<()> {
    let (model, header, file_len, file) = synthetic(spec)?;
    Ok(model.write_random_gguf(path, &header, file_len, &file)?)
}

/// Bytes of weights one decode step reads: every block matrix and the output projection in full,
/// one row of the embedding table, and the norm vectors.
fn decode_weight_bytes(file: &GgufFile, cfg: &LlamaConfig) -> u64 {
    let mut total = 0;
    for t in &file.tensors {
        total += match t.name.as_str() {
            "token_embd.weight" if !cfg.tied_output => t.n_bytes / t.n_rows().max(1),
            "rope_freqs.weight" => 0,
            _ => t.n_bytes,
        };
    }
    total
}

/// Seconds to read a file end to end in 8 MiB pieces, as `GpuModel::load_file` reads it.
fn read_time(path: &std::path::Path) -> Result<f64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut piece = vec![0u8; 8 << 20];
    let t = Instant::now();
    while f.read(&mut piece).map_err(|e| format!("{}: {e}", path.display()))? > 0 {}
    Ok(t.elapsed().as_secs_f64())
}

/// Floating-point operations of a prefill of `n` tokens (multiply-adds count two).
fn prefill_flops(file: &GgufFile, cfg: &LlamaConfig, n: usize) -> f64 {
    let block_weights: u64 =
        file.tensors.iter().filter(|t| t.name.starts_with("blk.") && t.dims.len() == 2).map(|t| t.n_elements()).sum();
    let n = n as f64;
    // Token t attends to t + 1 positions: q·k and the weighted sum of v, per head dimension.
    let attention = 4.0 * cfg.q_dim() as f64 * cfg.n_layers as f64 * n * (n + 1.0) / 2.0;
    2.0 * block_weights as f64 * n + attention + 2.0 * (cfg.vocab_size * cfg.dim) as f64
}

/// Peak FMA rate of `ty` in GFLOP/s: rounds per invocation doubled until one dispatch takes
/// ≥ 50 ms, then the best of 3.
fn measure_fma(ctx: &GpuContext, ty: FmaType) -> Result<f64> {
    let time = |probe: &FmaPeak| -> Result<f64> {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        probe.encode(&mut encoder.begin_compute_pass(&Default::default()));
        let t = Instant::now();
        ctx.queue.submit([encoder.finish()]);
        ctx.wait_idle()?;
        ctx.check()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut iters = 16;
    let probe = loop {
        let probe = FmaPeak::new(ctx, ty, iters)?;
        if time(&probe)? >= 0.05 || iters >= 1 << 20 {
            break probe;
        }
        iters *= 2;
    };
    let mut best = 0f64;
    for _ in 0..3 {
        best = best.max(probe.flops() / time(&probe)? / 1e9);
    }
    Ok(best)
}

/// One token's attention over `keys` positions in every layer, in seconds (best of 3 rounds of
/// 4 tokens after a warm-up round).
fn measure_attention(model: &GpuModel, keys: u32) -> Result<f64> {
    let probe = model.attention_probe(keys)?;
    Ok(best_seconds_per_rep(&model.ctx, 4, |pass| probe.encode(pass))?)
}

/// Streaming-read bandwidth in GB/s: the best of 3 rounds of 8 full reads of a buffer of up to
/// 1 GiB, after a warm-up round.
fn measure_bandwidth(ctx: &GpuContext) -> Result<f64> {
    let probe = Bandwidth::new(ctx, 1 << 30)?;
    Ok(probe.bytes as f64 / best_seconds_per_rep(ctx, 8, |pass| probe.encode(pass))? / 1e9)
}

impl Report {
    fn prefill_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_s
    }
    fn decode_tps(&self) -> f64 {
        self.gen_tokens as f64 / self.decode_s
    }
    /// Prefill's achieved rate as a share of the measured f32 FMA peak.
    fn prefill_fma_pct(&self) -> f64 {
        100.0 * self.prefill_flops / self.prefill_s / (self.fma_gflops * 1e9)
    }
    /// The same against the f16 peak (the bar where `shader-f16` exists; the prefill
    /// kernel computes in f32, so where f16 runs at twice the rate this is at most half the above).
    fn prefill_fma16_pct(&self) -> Option<f64> {
        self.fma16_gflops.map(|peak| 100.0 * self.prefill_flops / self.prefill_s / (peak * 1e9))
    }
    /// Decode's achieved weight bandwidth as a share of the measured read bandwidth.
    fn roofline_pct(&self) -> f64 {
        100.0 * self.bytes_per_token as f64 * self.decode_tps() / (self.read_gbs * 1e9)
    }

    fn table(&self) -> String {
        // Three significant digits whatever the scale (software drivers run below 1 tok/s).
        let rate = |x: f64| format!("{:.*}", (2 - x.abs().max(1e-9).log10().floor() as i64).clamp(0, 6) as usize, x);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let rows = [
            ("adapter", self.adapter.clone()),
            ("model", format!("{} ({:.1} MiB of weights)", self.model, mib(self.weight_bytes))),
            ("load", format!("{:.2} s", self.load_s)),
            (
                "first token",
                match self.read_s {
                    Some(r) => format!(
                        "{:.2} s from opening the file, {:.2}× the {:.2} s it takes to read it",
                        self.first_token_s,
                        self.first_token_s / r,
                        r
                    ),
                    None => format!("{:.2} s (synthetic weights: no file to compare with)", self.first_token_s),
                },
            ),
            (
                "prefill",
                format!(
                    "{} tok/s ({} tokens in {:.3} s, batches of ≤ {}, {})",
                    rate(self.prefill_tps()),
                    self.prompt_tokens,
                    self.prefill_s,
                    self.max_batch,
                    match self.coop_matrix {
                        Some(side) => format!("{side}×{side} cooperative matrices"),
                        None => format!("{} tiles", self.prefill_tile),
                    }
                ),
            ),
            (
                "decode",
                format!(
                    "{} tok/s ({} tokens in {:.3} s, {} rows per matvec group)",
                    rate(self.decode_tps()),
                    self.gen_tokens,
                    self.decode_s,
                    self.matvec_rows
                ),
            ),
            ("weights read / token", format!("{:.1} MiB", mib(self.bytes_per_token))),
            ("KV read, last token", format!("{:.1} MiB", mib(self.kv_bytes_last))),
            (
                "dispatches / token",
                format!(
                    "{} (norms {})",
                    self.dispatches_per_token,
                    if self.folds_norms { "folded into the products" } else { "separate" }
                ),
            ),
            (
                "recording a token",
                format!(
                    "{:.3} ms of CPU time; {} of {} decode steps recorded ahead",
                    self.record_s * 1e3,
                    self.recorded_ahead,
                    self.decode_steps
                ),
            ),
            ("device read bandwidth", format!("{:.1} GB/s (streaming-read kernel)", self.read_gbs)),
            ("decode vs roofline", format!("{:.1} %", self.roofline_pct())),
            ("device f32 FMA peak", format!("{:.1} GFLOP/s (FMA-chain kernel)", self.fma_gflops)),
            (
                "prefill vs FMA peak",
                format!("{:.1} % ({:.1} GFLOP/s)", self.prefill_fma_pct(), self.prefill_flops / self.prefill_s / 1e9),
            ),
            (
                "device f16 FMA peak",
                match self.fma16_gflops {
                    Some(peak) => format!("{peak:.1} GFLOP/s (FMA-chain kernel)"),
                    None => "- (no shader-f16)".into(),
                },
            ),
            (
                "prefill vs f16 peak",
                match self.prefill_fma16_pct() {
                    Some(pct) => format!(
                        "{pct:.1} % (the prefill multiplies {})",
                        match (self.coop_matrix, self.int8_dot) {
                            (Some(_), _) => "f16 on cooperative matrices",
                            (None, true) => "int8 where the weights have integer quants",
                            (None, false) => "in f32",
                        }
                    ),
                    None => "-".into(),
                },
            ),
        ];
        // A token's time at the roofline: its weight bytes at the measured read bandwidth.
        let roofline_token_s = self.bytes_per_token as f64 / (self.read_gbs * 1e9);
        let attention = self.attention.iter().map(|&(keys, s)| {
            (
                format!("attention, {keys} keys"),
                format!(
                    "{:.3} ms / token (all layers), {:.1} % of a token's weight reads at the roofline",
                    s * 1e3,
                    100.0 * s / roofline_token_s
                ),
            )
        });
        rows.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(attention)
            .map(|(k, v)| format!("{k:<22} {v}\n"))
            .collect()
    }

    fn json(&self) -> String {
        serde_json::json!({
            "adapter": self.adapter,
            "model": self.model,
            "weight_bytes": self.weight_bytes,
            "load_s": self.load_s,
            "first_token_s": self.first_token_s,
            "file_read_s": self.read_s,
            "first_token_vs_read": self.read_s.map(|r| self.first_token_s / r),
            "prompt_tokens": self.prompt_tokens,
            "prefill_s": self.prefill_s,
            "prefill_tok_s": self.prefill_tps(),
            "prefill_tile": self.prefill_tile.to_string(),
            "matvec_rows": self.matvec_rows.0,
            "max_batch": self.max_batch,
            "int8_activations": self.int8_dot,
            "coop_matrix": self.coop_matrix,
            "gen_tokens": self.gen_tokens,
            "decode_s": self.decode_s,
            "decode_tok_s": self.decode_tps(),
            "weight_bytes_per_token": self.bytes_per_token,
            "kv_bytes_last_token": self.kv_bytes_last,
            "dispatches_per_token": self.dispatches_per_token,
            "folds_norms": self.folds_norms,
            "record_ms": self.record_s * 1e3,
            "decode_steps": self.decode_steps,
            "decode_steps_recorded_ahead": self.recorded_ahead,
            "read_gb_s": self.read_gbs,
            "decode_roofline_pct": self.roofline_pct(),
            "fma_gflop_s": self.fma_gflops,
            "prefill_gflop_s": self.prefill_flops / self.prefill_s / 1e9,
            "prefill_fma_pct": self.prefill_fma_pct(),
            "fma16_gflop_s": self.fma16_gflops,
            "prefill_fma16_pct": self.prefill_fma16_pct(),
            "attention": self.attention.iter().map(|&(keys, s)| serde_json::json!({ "keys": keys, "ms_per_token": s * 1e3 })).collect::<Vec<_>>(),
        })
        .to_string()
    }
}
