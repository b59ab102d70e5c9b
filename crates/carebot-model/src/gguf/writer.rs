//! Writing GGUF v3 files: header first, then each tensor's data in directory order, so large files
//! can be streamed out one tensor at a time.

use super::*;
use crate::offsets::piece_len;
use std::io::{self, Write};

/// A tensor's name, shape (ggml order) and type, as declared in the directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: &[u64], ty: GgmlType) -> Self {
        TensorSpec { name: name.into(), dims: dims.to_vec(), ty }
    }

    pub fn n_bytes(&self) -> Option<u64> {
        ty_bytes(&self.dims, self.ty)
    }
}

fn ty_bytes(dims: &[u64], ty: GgmlType) -> Option<u64> {
    if dims.is_empty() || dims.len() > MAX_DIMS || !dims[0].is_multiple_of(ty.block_size() as u64) {
        return None;
    }
    ty.bytes_for(dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?)
}

/// Builds a GGUF file: add metadata and tensor specs, write the header, then the tensors in order.
#[derive(Debug, Default)]
pub struct GgufWriter {
    pub metadata: Metadata,
    tensors: Vec<TensorSpec>,
    next: usize,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.insert(key, value);
        self
    }

    /// The tensors declared so far, in directory order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    pub fn add_tensor(&mut self, spec: TensorSpec) -> io::Result<&mut Self> {
        if spec.n_bytes().is_none() {
            return Err(invalid(format!(
                "tensor {:?}: shape {:?} does not fit type {}",
                spec.name,
                spec.dims,
                spec.ty.name()
            )));
        }
        if self.tensors.iter().any(|t| t.name == spec.name) {
            return Err(invalid(format!("duplicate tensor {:?}", spec.name)));
        }
        self.tensors.push(spec);
        Ok(self)
    }

    pub fn alignment(&self) -> u64 {
        self.metadata.get_u64("general.alignment").filter(|a| a.is_power_of_two()).unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Writes magic, counts, metadata and the tensor directory, padded to the alignment.
    pub fn write_header(&mut self, w: &mut impl Write) -> io::Result<u64> {
        let alignment = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in self.metadata.iter() {
            put_str(&mut out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            // At most MAX_DIMS (checked by TensorSpec::new).
            out.extend_from_slice(&u32::try_from(t.dims.len()).unwrap_or(u32::MAX).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += t.n_bytes().expect("checked in add_tensor").next_multiple_of(alignment);
        }
        let padding = (out.len() as u64).next_multiple_of(alignment) - out.len() as u64;
        out.resize(out.len() + piece_len(padding, usize::MAX), 0);
        w.write_all(&out)?;
        self.next = 0;
        Ok(out.len() as u64)
    }

    /// Writes the data of the next tensor in directory order, followed by alignment padding.
    pub fn write_tensor_data(&mut self, w: &mut impl Write, data: &[u8]) -> io::Result<()> {
        self.write_tensor_pieces(w, std::iter::once(Ok(data.to_vec())))
    }

    /// Like [`GgufWriter::write_tensor_data`] with the data in consecutive pieces, so that a big
    /// tensor never has to be whole in memory; fails if the pieces do not add up to its size.
    pub fn write_tensor_pieces(
        &mut self,
        w: &mut impl Write,
        pieces: impl IntoIterator<Item = io::Result<Vec<u8>>>,
    ) -> io::Result<()> {
        let alignment = self.alignment();
        let spec = self.tensors.get(self.next).ok_or_else(|| invalid("more tensor data than tensors".into()))?;
        let n = spec.n_bytes().expect("checked in add_tensor");
        let mut written = 0u64;
        for piece in pieces {
            let piece = piece?;
            written += piece.len() as u64;
            if written > n {
                break;
            }
            w.write_all(&piece)?;
        }
        if written != n {
            return Err(invalid(format!("tensor {:?} needs {n} bytes, got {written}", spec.name)));
        }
        w.write_all(&vec![0u8; piece_len(n.next_multiple_of(alignment) - n, usize::MAX)])?;
        self.next += 1;
        Ok(())
    }

    /// The whole file in memory (tests and small fixtures): header plus `data[i]` for tensor i.
    pub fn to_bytes(&mut self, data: &[&[u8]]) -> io::Result<Vec<u8>> {
        if data.len() != self.tensors.len() {
            return Err(invalid(format!("{} tensors declared, {} given", self.tensors.len(), data.len())));
        }
        let mut out = Vec::new();
        self.write_header(&mut out)?;
        for d in data {
            self.write_tensor_data(&mut out, d)?;
        }
        Ok(out)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
        // Numbers and booleans: each as its value is written.
        _ => a.iter().for_each(|v| put_value(out, &v)),
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
