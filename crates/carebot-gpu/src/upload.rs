//! Weight streaming: where each tensor's file bytes go on the GPU, and getting them there. The
//! model's tensors are allocated first ([`Allocator`]); then the file's bytes arrive in any
//! pieces, in order per tensor, from the network, a cache or a local file ([`Upload::push`]), or
//! natively from a file read on every core ([`read_pieces`]). Matrices are written in whole
//! rows, repacked where their type needs it (weights.rs); norm vectors are widened to f32.
//!
//! File offsets and sizes are u64 here and become a `usize` only as a position inside bytes in
//! memory: models pass 4 GiB, and in the browser `usize` has 32 bits.
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

use crate::context::{GpuContext, GpuError};
use crate::weights::{self, GpuMatrix, row_bytes, rows_per_part};
use carebot_model::gguf::{GgufFile, TensorInfo};
use carebot_model::offsets::{alloc_len, piece_len, slice_at};
use carebot_model::quant::{self, GgmlType};

/// Allocates GPU buffers for tensors and remembers where each tensor's file bytes go.
pub(crate) struct Allocator<'a> {
    pub ctx: &'a GpuContext,
    pub file: &'a GgufFile,
    /// Bytes allocated so far.
    pub total: u64,
    pub targets: Vec<Target>,
}

impl Allocator<'_> {
    pub fn info(&self, name: &str) -> Result<&TensorInfo, GpuError> {
        self.file
            .tensor(name)
            .ok_or_else(|| GpuError::Tensor { name: name.into(), problem: "missing from the file".into() })
    }

    pub fn buffer(&mut self, what: &str, bytes: u64) -> Result<wgpu::Buffer, GpuError> {
        self.total += bytes;
        self.ctx.storage(what, bytes)
    }

    /// A weight matrix in its file format, split into parts of at most `per_part` rows (default:
    /// as many as fit one binding).
    pub fn matrix(&mut self, name: &str, per_part: Option<u32>) -> Result<GpuMatrix, GpuError> {
        let info = self.info(name)?.clone();
        let too_big = || GpuError::Tensor { name: name.into(), problem: "too large".into() };
        let rows = u32::try_from(info.n_rows()).map_err(|_| too_big())?;
        let cols = u32::try_from(info.row_len()).map_err(|_| too_big())?;
        let per_part = match per_part {
            Some(n) => n,
            None => rows_per_part(self.ctx, row_bytes(info.ty, cols as u64))?,
        };
        let m = GpuMatrix::allocate(self.ctx, name, info.ty, rows, cols, per_part)?;
        self.total += m.bytes();
        // Parts as lengths in the file: what arrives is counted in file bytes.
        let rb = weights::file_row_bytes(info.ty, cols as u64);
        let parts = m.parts.iter().map(|p| (p.buffer.clone(), p.rows as u64 * rb)).collect();
        self.targets.push(Target::new(info, Dest::Matrix { parts }));
        Ok(m)
    }

    /// A matrix the fused decode kernels read from one binding (the attention projections).
    pub fn whole_matrix(&mut self, name: &str) -> Result<GpuMatrix, GpuError> {
        let m = self.matrix(name, None)?;
        if m.parts.len() > 1 {
            return Err(GpuError::TooSmall {
                what: format!("tensor {name:?} in one storage binding"),
                needs: weights::padded(m.bytes()),
                offers: self.ctx.binding_limit,
            });
        }
        Ok(m)
    }

    /// A 1-D tensor of `len` values (norm weights), widened to f32 on upload into `buffer` at
    /// `offset` f32s.
    pub fn vector(&mut self, name: &str, buffer: &wgpu::Buffer, offset: u32, len: usize) -> Result<(), GpuError> {
        let info = self.info(name)?.clone();
        if info.n_elements() != len as u64 {
            return Err(GpuError::Tensor {
                name: name.into(),
                problem: format!("{} values, expected {len}", info.n_elements()),
            });
        }
        let dest = Dest::Vector { buffer: buffer.clone(), offset: offset as u64 * 4 };
        self.targets.push(Target::new(info, dest));
        Ok(())
    }
}

/// Where one tensor's bytes go.
pub(crate) enum Dest {
    /// Consecutive parts of (buffer, length in the file), repacked where the type is
    /// (weights.rs).
    Matrix { parts: Vec<(wgpu::Buffer, u64)> },
    /// Collected, widened to f32, then written at a byte offset.
    Vector { buffer: wgpu::Buffer, offset: u64 },
    /// Llama-3.1 RoPE frequency factors: kept on the host for the RoPE table.
    RopeFreqs,
}

pub(crate) struct Target {
    info: TensorInfo,
    dest: Dest,
    /// Bytes of the tensor received so far.
    received: u64,
    /// Matrix: the part being filled, its bytes written so far (a multiple of 4; GPU layout) and
    /// the file bytes waiting to be written. Vector: the whole tensor.
    part: usize,
    part_start: u64,
    written: u64,
    pending: Vec<u8>,
}

impl Target {
    pub fn new(info: TensorInfo, dest: Dest) -> Self {
        Target { info, dest, received: 0, part: 0, part_start: 0, written: 0, pending: Vec::new() }
    }

    fn push(&mut self, ctx: &GpuContext, rel: u64, mut data: &[u8], flush_bytes: usize) -> Result<(), GpuError> {
        if rel != self.received {
            return Err(GpuError::Tensor {
                name: self.info.name.clone(),
                problem: format!("bytes arrived out of order (at {rel}, expected {})", self.received),
            });
        }
        match &self.dest {
            Dest::Matrix { parts } => {
                let (ty, cols) = (self.info.ty, self.info.row_len());
                let planar = weights::row_align(ty) > 1;
                let mut scratch = Vec::new();
                let file_row = usize::try_from(weights::file_row_bytes(ty, cols)).map_err(|_| GpuError::Tensor {
                    name: self.info.name.clone(),
                    problem: "a row does not fit in memory".into(),
                })?;
                // Repacked types are written in whole rows, the others in whole words.
                let whole = |n: usize| if planar { n / file_row * file_row } else { n / 4 * 4 };
                while !data.is_empty() {
                    let (buffer, part_len) = &parts[self.part];
                    let take = piece_len(self.part_start + part_len - self.received, data.len());
                    let part_done = self.received + take as u64 == self.part_start + part_len;
                    if self.pending.is_empty() && (take >= flush_bytes || part_done) {
                        // Enough here: written straight from the caller's bytes, not copied
                        // into `pending` first (a remainder of less than a row waits there).
                        let n = if part_done { take } else { whole(take) };
                        write_rows(ctx, buffer, &mut self.written, ty, cols, &data[..n], &mut scratch);
                        self.pending.extend_from_slice(&data[n..take]);
                    } else {
                        self.pending.extend_from_slice(&data[..take]);
                        if part_done || self.pending.len() >= flush_bytes {
                            let n = if part_done { self.pending.len() } else { whole(self.pending.len()) };
                            let rows = &self.pending[..n];
                            write_rows(ctx, buffer, &mut self.written, ty, cols, rows, &mut scratch);
                            self.pending.drain(..n);
                            // Give the memory back: a few hundred tensors each keeping a
                            // flush-sized buffer would hold as much as the model itself.
                            self.pending.shrink_to_fit();
                        }
                    }
                    self.received += take as u64;
                    data = &data[take..];
                    if part_done {
                        self.part += 1;
                        self.part_start += part_len;
                        self.written = 0;
                    }
                }
            }
            Dest::Vector { .. } | Dest::RopeFreqs => {
                self.pending.extend_from_slice(data);
                self.received += data.len() as u64;
            }
        }
        Ok(())
    }

    fn widened(&self) -> Result<Vec<f32>, GpuError> {
        let len = alloc_len(self.info.row_len()).ok_or_else(|| GpuError::Tensor {
            name: self.info.name.clone(),
            problem: "does not fit in memory".into(),
        })?;
        let mut v = vec![0f32; len];
        quant::dequantize(self.info.ty, &self.pending, &mut v)
            .map_err(|e| GpuError::Tensor { name: self.info.name.clone(), problem: e.to_string() })?;
        Ok(v)
    }
}

/// Rows of one matrix part that a file loader reads and writes on their own.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) struct MatrixPiece {
    file_offset: u64,
    pub file_len: u64,
    buffer: wgpu::Buffer,
    gpu_offset: u64,
    ty: GgmlType,
    cols: u64,
}

/// Bytes written to the GPU between waits for it (natively, the staging memory of written
/// bytes is freed only when the queue has caught up).
pub(crate) const FLUSH_BYTES: u64 = 256 << 20;

/// Writes whole rows of a matrix part, given in the file's layout, at `*written` bytes into
/// `buffer`, repacked where the type needs it (in `scratch`, which callers reuse), and advances
/// `*written`.
fn write_rows(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    written: &mut u64,
    ty: GgmlType,
    cols: u64,
    rows: &[u8],
    scratch: &mut Vec<u8>,
) {
    if rows.is_empty() {
        return;
    }
    let len = if weights::row_align(ty) > 1 {
        scratch.clear();
        weights::repack_rows(ty, cols, rows, scratch);
        scratch.len()
    } else if !rows.len().is_multiple_of(4) {
        // A part's last bytes may end mid-word (the buffer is padded to whole vec4s).
        scratch.clear();
        scratch.extend_from_slice(rows);
        rows.len()
    } else {
        ctx.queue.write_buffer(buffer, *written, rows);
        *written += rows.len() as u64;
        return;
    };
    scratch.resize(len.next_multiple_of(4), 0);
    ctx.queue.write_buffer(buffer, *written, scratch);
    *written += len as u64;
}

/// The state of a weight upload: every tensor's target, sorted by file offset.
pub(crate) struct Upload {
    targets: Vec<Target>,
    /// Bytes written since the last wait for the GPU (natively, staging memory is only freed
    /// once the queue has caught up).
    unflushed: u64,
    /// `EngineOptions::flush_bytes`.
    flush_bytes: usize,
}

impl Upload {
    pub fn new(mut targets: Vec<Target>, flush_bytes: usize) -> Self {
        targets.sort_by_key(|t| t.info.offset);
        // The tied output reuses token_embd's buffers: one target per tensor.
        targets.dedup_by(|a, b| a.info.name == b.info.name);
        Upload { targets, unflushed: 0, flush_bytes }
    }

    pub fn push(&mut self, ctx: &GpuContext, offset: u64, bytes: &[u8]) -> Result<(), GpuError> {
        let end = offset + bytes.len() as u64;
        let first = self.targets.partition_point(|t| t.info.offset + t.info.n_bytes <= offset);
        for t in &mut self.targets[first..] {
            if t.info.offset >= end {
                break;
            }
            let lo = t.info.offset.max(offset);
            let hi = (t.info.offset + t.info.n_bytes).min(end);
            // lo..hi lies within offset..end, so within `bytes`.
            let part = slice_at(bytes, offset, lo, hi).expect("a tensor's part of the piece lies in the piece");
            t.push(ctx, lo - t.info.offset, part, self.flush_bytes)?;
        }
        self.unflushed += bytes.len() as u64;
        if self.unflushed >= FLUSH_BYTES {
            self.unflushed = 0;
            ctx.queue.submit([]);
            #[cfg(not(target_arch = "wasm32"))]
            ctx.wait_idle()?;
        }
        Ok(())
    }

    /// Takes the matrices out of the upload as pieces of at most `piece_bytes` (at least one row)
    /// that can be read and written independently, in file order; the upload keeps the rest.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn take_matrix_pieces(&mut self, piece_bytes: u64) -> Vec<MatrixPiece> {
        let mut pieces = Vec::new();
        self.targets.retain(|t| {
            let Dest::Matrix { parts } = &t.dest else { return true };
            let (ty, cols) = (t.info.ty, t.info.row_len());
            let (file_row, gpu_row) = (weights::file_row_bytes(ty, cols), weights::row_bytes(ty, cols));
            // Rows in fours: every piece then starts on a whole word, whatever the row length.
            let rows_per_piece = (piece_bytes / file_row.max(1)).max(1).next_multiple_of(4);
            let mut file_offset = t.info.offset;
            for (buffer, part_len) in parts {
                let rows = part_len / file_row.max(1);
                let mut first = 0;
                while first < rows {
                    let n = rows_per_piece.min(rows - first);
                    pieces.push(MatrixPiece {
                        file_offset: file_offset + first * file_row,
                        file_len: n * file_row,
                        buffer: buffer.clone(),
                        gpu_offset: first * gpu_row,
                        ty,
                        cols,
                    });
                    first += n;
                }
                file_offset += part_len;
            }
            false
        });
        pieces
    }

    /// The file ranges (offset, bytes) of the tensors still awaited, in file order.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn remaining(&self) -> Vec<(u64, u64)> {
        self.targets.iter().map(|t| (t.info.offset + t.received, t.info.n_bytes - t.received)).collect()
    }

    /// Writes the vectors, checks completeness, and returns the RoPE frequency factors if any.
    pub fn finish(&self, ctx: &GpuContext) -> Result<Option<Vec<f32>>, GpuError> {
        let mut freqs = None;
        for t in &self.targets {
            if t.received != t.info.n_bytes {
                return Err(GpuError::Tensor {
                    name: t.info.name.clone(),
                    problem: format!("got {} of its {} bytes (the file is truncated?)", t.received, t.info.n_bytes),
                });
            }
            match &t.dest {
                Dest::Matrix { .. } => {}
                Dest::Vector { buffer, offset } => {
                    ctx.queue.write_buffer(buffer, *offset, bytemuck::cast_slice(&t.widened()?))
                }
                Dest::RopeFreqs => freqs = Some(t.widened()?),
            }
        }
        Ok(freqs)
    }
}

/// Reads `pieces` of the file at `path` and writes them to the GPU on worker threads (one per
/// core, up to 8, each with its own handle on the file, one copy from its read buffer to the
/// staging memory), while `meanwhile` runs on this thread; `progress(done, total)` sees the
/// bytes written so far.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn read_pieces<T>(
    ctx: &GpuContext,
    path: &std::path::Path,
    pieces: &[MatrixPiece],
    progress: impl FnMut(u64, u64) + Send,
    meanwhile: impl FnOnce() -> T,
) -> (T, Result<(), GpuError>) {
    use std::io::{Read, Seek, SeekFrom};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    let io = |e: std::io::Error| GpuError::File { path: path.display().to_string(), reason: e.to_string() };
    let total: u64 = pieces.iter().map(|p| p.file_len).sum();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let (next, done, unflushed, failed) =
        (AtomicUsize::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
    let progress = std::sync::Mutex::new(progress);
    let worker = || -> Result<(), GpuError> {
        let mut f = std::fs::File::open(path).map_err(io)?;
        let (mut raw, mut scratch) = (Vec::new(), Vec::new());
        while !failed.load(Ordering::Relaxed) {
            let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
            let len = usize::try_from(piece.file_len).map_err(|_| {
                GpuError::Unsupported(format!("a piece of {} bytes does not fit in memory", piece.file_len))
            })?;
            raw.resize(len, 0);
            f.seek(SeekFrom::Start(piece.file_offset)).map_err(io)?;
            f.read_exact(&mut raw).map_err(io)?;
            let mut at = piece.gpu_offset;
            write_rows(ctx, &piece.buffer, &mut at, piece.ty, piece.cols, &raw, &mut scratch);
            ctx.check()?;
            // Staging memory is freed only once the queue has caught up with the writes.
            if unflushed.fetch_add(piece.file_len, Ordering::Relaxed) + piece.file_len >= FLUSH_BYTES {
                unflushed.store(0, Ordering::Relaxed);
                ctx.queue.submit([]);
                ctx.wait_idle()?;
            }
            let so_far = done.fetch_add(piece.file_len, Ordering::Relaxed) + piece.file_len;
            if let Ok(mut report) = progress.lock() {
                report(so_far, total);
            }
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let r = worker();
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        let result = meanwhile();
        let joined = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(GpuError::File { path: path.display().to_string(), reason: "a file reader panicked".into() })
                })
            })
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ());
        (result, joined)
    })
}

impl Upload {
    /// Reads every byte of the file that a remaining target still wants (the norm vectors, a few
    /// KiB, after [`read_pieces`] took the matrices) and pushes it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn push_remaining_from(
        &mut self,
        ctx: &GpuContext,
        f: &mut std::fs::File,
        path: &std::path::Path,
    ) -> Result<(), GpuError> {
        use std::io::{Read, Seek, SeekFrom};
        let io = |e: std::io::Error| GpuError::File { path: path.display().to_string(), reason: e.to_string() };
        for (offset, n_bytes) in self.remaining() {
            let len = usize::try_from(n_bytes)
                .map_err(|_| GpuError::Unsupported(format!("a tensor of {n_bytes} bytes does not fit in memory")))?;
            let mut bytes = vec![0; len];
            f.seek(SeekFrom::Start(offset)).map_err(io)?;
            f.read_exact(&mut bytes).map_err(io)?;
            self.push(ctx, offset, &bytes)?;
        }
        Ok(())
    }
}
