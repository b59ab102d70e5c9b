//! Preparing a hub repository: its JSON files and safetensors headers are read first (a few MB),
//! planned into the GGUF `carebot convert --quant q4_k_m` writes, and then each tensor is fetched
//! in Range pieces, widened to f32, q/k rows permuted, quantized on the GPU (Q4_K/Q6_K; the small
//! f32 norms on the CPU) and appended to the cache file, front to back. The file holds only whole
//! rows, so a reload continues at the first missing row; it becomes a model only when complete.

use super::js::now_ms;
use super::source::{Remote, fetch_file};
use super::store::CachedFile;
use super::{failure, gpu_failure};
use crate::hub::{HubRepo, OutTensor, is_commit, resume_at, rows_per_piece};
use crate::protocol::{ErrorKind, Failure, PrepareInfo, PrepareProgress, PrepareStats};
use carebot_gpu::{GpuContext, GpuQuantizer};
use carebot_model::convert::{
    Conversion, ConvertError, HfConfig, HfFiles, Quant, SAFETENSORS_PREFIX, SourceTensor, json_file_limit,
    parse_safetensors_header, permute_rows_for_rope, safetensors_header_len, weight_map,
};
use carebot_model::offsets::{alloc_len, piece_len};
use carebot_model::quant::{self, GgmlType};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};

/// Source bytes per piece: what the wasm heap holds of a tensor at a time (twice, as the next
/// piece downloads while this one is quantized), and 4 Mi values of f32 on the GPU.
const PIECE_BYTES: u64 = 8 << 20;
const MAX_VALUES: usize = 4 << 20;

fn convert_failure(e: ConvertError) -> Failure {
    match e {
        ConvertError::NotLlama(m) => failure(ErrorKind::WrongArchitecture, m),
        ConvertError::Invalid(m) => failure(ErrorKind::Model, m),
    }
}

fn parse_json(bytes: &[u8], name: &str) -> Result<Json, Failure> {
    serde_json::from_slice(bytes).map_err(|e| failure(ErrorKind::Model, format!("{name}: not JSON: {e}")))
}

/// One piece of work: rows `rows.0..rows.1` of tensor `tensor`.
#[derive(Clone, Copy, Debug)]
struct Piece {
    tensor: usize,
    rows: (u64, u64),
}

/// A hub repository planned into a GGUF, ready to prepare.
pub struct Plan {
    pub repo: HubRepo,
    /// The commit every file is read at.
    pub commit: String,
    conversion: Conversion,
    pub header: Vec<u8>,
    out: Vec<OutTensor>,
    /// Per planned tensor: its shard's URL and bytes there (None: computed, `rope_freqs`).
    sources: Vec<Option<(String, SourceTensor)>>,
    /// Size of the prepared GGUF, and bytes of weights to download for it.
    pub size: u64,
    pub download: u64,
}

impl Plan {
    /// Reads what the plan needs: config first (a repository of another architecture is refused
    /// before anything big is fetched), tokenizer files, the shard index, each shard's header.
    pub async fn fetch(repo: &HubRepo) -> Result<Plan, Failure> {
        let missing = |url: &str, file: &str| {
            failure(
                ErrorKind::NotFound,
                format!("{url}: the repository {} has no {file} at {}", repo.repo, repo.revision),
            )
        };
        let config_url = repo.file_url(&repo.revision, "config.json");
        let (config, commit) = fetch_file(&config_url, json_file_limit("config.json"))
            .await?
            .ok_or_else(|| missing(&config_url, "config.json"))?;
        let commit = commit.filter(|c| is_commit(c)).unwrap_or_else(|| repo.revision.clone());
        let config = parse_json(&config, "config.json")?;
        HfConfig::from_json(&config).map_err(convert_failure)?;

        let get = |file: &'static str| {
            let url = repo.file_url(&commit, file);
            async move { fetch_file(&url, json_file_limit(file)).await.map(|r| r.map(|(bytes, _)| bytes)) }
        };
        let optional = |r: Option<Vec<u8>>, name: &str| match r {
            Some(bytes) => parse_json(&bytes, name),
            None => Ok(Json::Null),
        };
        let tokenizer = match get("tokenizer.json").await? {
            Some(bytes) => parse_json(&bytes, "tokenizer.json")?,
            None => return Err(missing(&repo.file_url(&commit, "tokenizer.json"), "tokenizer.json")),
        };
        let tokenizer_config = optional(get("tokenizer_config.json").await?, "tokenizer_config.json")?;
        let generation_config = optional(get("generation_config.json").await?, "generation_config.json")?;
        // transformers 5 saves the chat template as its own file.
        let chat_template = match get("chat_template.jinja").await? {
            Some(bytes) => Some(
                String::from_utf8(bytes)
                    .map_err(|_| failure(ErrorKind::Model, "chat_template.jinja is not UTF-8 text"))?,
            ),
            None => None,
        };
        let index = match get("model.safetensors.index.json").await? {
            Some(bytes) => weight_map(&parse_json(&bytes, "model.safetensors.index.json")?).map_err(convert_failure)?,
            None => BTreeMap::new(),
        };

        // Every tensor of every shard: (shard URL, where its bytes are).
        let shards: BTreeSet<String> =
            if index.is_empty() { ["model.safetensors".to_string()].into() } else { index.values().cloned().collect() };
        let mut tensors: BTreeMap<String, (String, SourceTensor)> = BTreeMap::new();
        for shard in &shards {
            let url = repo.file_url(&commit, shard);
            let remote = Remote::url(url.clone());
            let mut prefix = [0u8; SAFETENSORS_PREFIX];
            let size = remote.read(0, &mut prefix).await.map_err(|f| match f.kind {
                ErrorKind::NotFound => missing(&url, shard),
                _ => f,
            })?;
            let n = safetensors_header_len(&prefix, size)
                .map_err(|e| failure(ErrorKind::Model, format!("{shard}: {e}")))?;
            let mut header = vec![0u8; n];
            remote.read(SAFETENSORS_PREFIX as u64, &mut header).await?;
            let listed = parse_safetensors_header(&header, size)
                .map_err(|e| failure(ErrorKind::Model, format!("{shard}: {e}")))?;
            for (name, t) in listed {
                if index.is_empty() || index.get(&name) == Some(shard) {
                    tensors.insert(name, (url.clone(), t));
                }
            }
        }

        let dir_name = repo.repo.rsplit('/').next().unwrap_or(&repo.repo).to_string();
        let files = HfFiles { config, tokenizer, tokenizer_config, generation_config, chat_template, dir_name };
        let mut conversion =
            Conversion::plan(&files, Quant::Q4KM, tensors.keys().map(String::as_str)).map_err(convert_failure)?;
        let header = conversion.header();
        let layout = conversion.layout(header.len() as u64);
        let mut sources = Vec::with_capacity(conversion.tensors.len());
        let mut out = Vec::with_capacity(conversion.tensors.len());
        let mut download = 0;
        for (p, &(start, bytes, padded)) in conversion.tensors.iter().zip(&layout) {
            out.push(OutTensor {
                start,
                bytes,
                padded,
                rows: p.rows() as u64,
                out_row_bytes: p.out_row_bytes() as u64,
            });
            let Some(hf) = &p.hf else {
                sources.push(None);
                continue;
            };
            let (url, t) = tensors.get(hf).ok_or_else(|| {
                failure(ErrorKind::NotFound, format!("tensor {hf:?} is missing from the repository's safetensors"))
            })?;
            if t.shape != p.hf_shape() {
                return Err(failure(
                    ErrorKind::Model,
                    format!("tensor {hf:?} has shape {:?}; config.json implies {:?}", t.shape, p.hf_shape()),
                ));
            }
            download += t.end - t.start;
            sources.push(Some((url.clone(), t.clone())));
        }
        let size = layout.last().map_or(header.len() as u64, |&(start, _, padded)| start + padded);
        Ok(Plan { repo: repo.clone(), commit, conversion, header, out, sources, size, download })
    }

    /// The version the prepared file comes from, for the cache: the commit, or nothing when the
    /// hub named none (a branch name moves, so such a preparation is never resumed).
    pub fn version(&self) -> &str {
        if is_commit(&self.commit) { &self.commit } else { "" }
    }

    /// Source bytes of tensor `i`'s rows before `row`.
    fn source_bytes_before(&self, tensor: usize, row: u64) -> u64 {
        let whole: u64 = self.sources[..tensor].iter().flatten().map(|(_, t)| t.end - t.start).sum();
        let part = self
            .sources
            .get(tensor)
            .and_then(|s| s.as_ref())
            .map_or(0, |(_, t)| (t.end - t.start) / self.out[tensor].rows.max(1) * row);
        whole + part
    }

    /// What the page shows before the preparation starts, given the bytes already prepared.
    pub fn info(&self, cached: u64) -> PrepareInfo {
        let at = resume_at(self.header.len() as u64, &self.out, cached);
        PrepareInfo {
            download: self.download,
            downloaded: self.source_bytes_before(at.tensor, at.row),
            revision: self.commit.clone(),
            page: self.repo.page_url(),
        }
    }

    /// The pieces from the first missing row on.
    fn pieces(&self, from_tensor: usize, from_row: u64) -> Vec<Piece> {
        let mut pieces = Vec::new();
        for (i, p) in self.conversion.tensors.iter().enumerate().skip(from_tensor) {
            let rows = p.rows() as u64;
            let step = match &self.sources[i] {
                Some((_, t)) => rows_per_piece(
                    (t.end - t.start) / rows.max(1),
                    p.cols() as u64,
                    p.row_group() as u64,
                    PIECE_BYTES,
                    MAX_VALUES as u64,
                ),
                None => rows,
            };
            let mut r = if i == from_tensor { from_row } else { 0 };
            while r < rows {
                let end = (r + step).min(rows);
                pieces.push(Piece { tensor: i, rows: (r, end) });
                r = end;
            }
        }
        pieces
    }

    /// Fetches a piece's source bytes (nothing for a computed tensor).
    async fn fetch_piece(&self, piece: Piece) -> Result<(Vec<u8>, f64), Failure> {
        let Some((url, t)) = &self.sources[piece.tensor] else { return Ok((Vec::new(), 0.0)) };
        let row_bytes = (t.end - t.start) / self.out[piece.tensor].rows.max(1);
        let t0 = now_ms();
        // A piece is at most 8 MiB, or one head of rows where a head is bigger: bounded by what
        // the shard's header declared, which must fit this machine.
        let len = (piece.rows.1 - piece.rows.0) * row_bytes;
        let mut bytes = vec![
            0u8;
            alloc_len(len).ok_or_else(|| {
                failure(ErrorKind::Model, format!("a piece of {len} bytes of {url} does not fit in memory here"))
            })?
        ];
        Remote::url(url.clone()).read(t.start + piece.rows.0 * row_bytes, &mut bytes).await?;
        Ok((bytes, (now_ms() - t0) / 1000.0))
    }

    /// A piece's output bytes (with the tensor's padding after its last row).
    async fn quantize(
        &self,
        ctx: &GpuContext,
        quantizer: &GpuQuantizer,
        piece: Piece,
        source: Vec<u8>,
    ) -> Result<(Vec<u8>, f64), Failure> {
        let t0 = now_ms();
        let p = &self.conversion.tensors[piece.tensor];
        let model = |e: quant::QuantError| failure(ErrorKind::Internal, format!("tensor {}: {e}", p.gguf));
        let mut out = match &self.sources[piece.tensor] {
            None => {
                let factors = self.conversion.rope_factors().unwrap_or_default();
                quant::quantize(GgmlType::F32, &factors).map_err(model)?
            }
            Some((_, t)) => {
                let mut values = t.dtype.to_f32(&source);
                drop(source);
                if p.permute_heads.is_some() {
                    let rows = values.len() / p.cols();
                    values = permute_rows_for_rope(&values, rows, p.cols(), rows / p.row_group());
                }
                if GpuQuantizer::supports(p.ty) {
                    quantizer.quantize(ctx, p.ty, &values).await.map_err(gpu_failure)?
                } else {
                    // F32 norms, and the fallback types of rows that are not whole K-blocks.
                    quant::quantize(p.ty, &values).map_err(model)?
                }
            }
        };
        let t = &self.out[piece.tensor];
        if piece.rows.1 == t.rows {
            // Alignment padding: less than the GGUF alignment (32 bytes).
            out.resize(out.len() + piece_len(t.padded - t.bytes, usize::MAX), 0);
        }
        Ok((out, (now_ms() - t0) / 1000.0))
    }

    /// Prepares what `cache` lacks; `report` is called after each piece.
    pub async fn run(
        &self,
        ctx: &GpuContext,
        cache: &CachedFile,
        mut report: impl FnMut(PrepareProgress),
    ) -> Result<PrepareStats, Failure> {
        let t0 = now_ms();
        let header_len = self.header.len() as u64;
        let mut cached = cache.cached()?;
        // A header from another plan (the repository changed) starts the file over.
        if cached >= header_len {
            let mut old = vec![0u8; self.header.len()];
            cache.read(0, &mut old)?;
            if old != self.header {
                cached = 0;
            }
        }
        let at = resume_at(header_len, &self.out, cached);
        if at.keep < cache.cached()? {
            cache.truncate(at.keep)?;
        }
        if at.keep == 0 {
            cache.append(0, &self.header)?;
        }
        let mut written = if at.keep == 0 { header_len } else { at.keep };
        let written_at_start = written;
        let mut downloaded = self.source_bytes_before(at.tensor, at.row);
        let pieces = self.pieces(at.tensor, at.row);
        let quantizer = GpuQuantizer::new(ctx, MAX_VALUES).map_err(gpu_failure)?;
        let (mut download_seconds, mut quantize_seconds, mut source_bytes) = (0.0f64, 0.0f64, 0u64);

        // The next piece downloads while this one is quantized and written.
        let mut next = match pieces.first() {
            Some(&p) => Some(self.fetch_piece(p).await?),
            None => None,
        };
        for (k, &piece) in pieces.iter().enumerate() {
            let (source, fetch_seconds) = next.take().expect("fetched ahead");
            download_seconds += fetch_seconds;
            let n_source = source.len() as u64;
            let following = pieces.get(k + 1).copied();
            let (quantized, fetched) = futures::future::join(self.quantize(ctx, &quantizer, piece, source), async {
                match following {
                    Some(p) => self.fetch_piece(p).await.map(Some),
                    None => Ok(None),
                }
            })
            .await;
            let (bytes, seconds) = quantized?;
            quantize_seconds += seconds;
            cache.append(written, &bytes)?;
            written += bytes.len() as u64;
            downloaded += n_source;
            source_bytes += n_source;
            next = fetched?;
            report(PrepareProgress {
                downloaded,
                download_total: self.download,
                written,
                write_total: self.size,
                download_rate: source_bytes as f64 / download_seconds.max(1e-3),
                quantize_rate: source_bytes as f64 / quantize_seconds.max(1e-3),
                tensor: self.conversion.tensors[piece.tensor].gguf.clone(),
            });
        }
        if written != self.size {
            return Err(failure(
                ErrorKind::Internal,
                format!("the prepared model has {written} bytes where {} were planned", self.size),
            ));
        }
        Ok(PrepareStats {
            source_bytes,
            download_seconds,
            quantize_seconds,
            total_seconds: (now_ms() - t0) / 1000.0,
            written: written - written_at_start,
        })
    }
}
