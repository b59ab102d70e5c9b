//! Parsing the GGUF header from a byte prefix. Every count and length read from the file is checked
//! against the bytes that actually remain before anything is allocated for it, so a hostile header
//! can neither exhaust memory nor panic.

use super::*;
use crate::offsets::{alloc_len, piece_len, slice_at};
use std::io::{Read, Seek, SeekFrom};

/// Nested arrays deeper than this are rejected (real files use at most one level).
const MAX_ARRAY_DEPTH: usize = 3;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: u64,
    file_len: u64,
    /// Memory the metadata parsed so far takes (see [`MAX_METADATA_MEMORY`]).
    memory: u64,
}

impl<'a> Cursor<'a> {
    fn remaining_in_file(&self) -> u64 {
        self.file_len.saturating_sub(self.pos)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).ok_or(GgufError::Truncated { needed: u64::MAX, file_len: self.file_len })?;
        if end > self.file_len {
            return Err(GgufError::Truncated { needed: end, file_len: self.file_len });
        }
        let s = slice_at(self.buf, 0, self.pos, end).ok_or(GgufError::NeedMoreData { needed: end })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in the rest of the file.
    fn check_count(&self, what: &'static str, count: u64, min_size: u64) -> Result<(), GgufError> {
        let max = self.remaining_in_file() / min_size.max(1);
        if count > max {
            return Err(GgufError::ImpossibleCount { what, count, offset: self.pos, max });
        }
        Ok(())
    }

    /// Capacity to reserve for `count` items: never more than the prefix in hand could hold.
    fn capacity(&self, count: u64, min_size: u64) -> usize {
        let in_hand = (self.buf.len() as u64).saturating_sub(self.pos) / min_size.max(1);
        piece_len(count.min(in_hand), usize::MAX)
    }

    fn bytes_with_len(&mut self, what: &'static str) -> Result<&'a [u8], GgufError> {
        let len = self.u64()?;
        self.check_count(what, len, 1)?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        // Values may hold arbitrary bytes (some vocabularies do); keep them readable rather than fail.
        Ok(String::from_utf8_lossy(self.bytes_with_len("string length")?).into_owned())
    }

    /// Counts `bytes` more of parsed metadata against [`MAX_METADATA_MEMORY`].
    fn spend(&mut self, bytes: u64, key: &str) -> Result<(), GgufError> {
        self.memory = self.memory.saturating_add(bytes);
        if self.memory > MAX_METADATA_MEMORY {
            return Err(GgufError::MetadataTooLarge { key: key.to_string(), limit: MAX_METADATA_MEMORY });
        }
        Ok(())
    }

    fn key(&mut self) -> Result<String, GgufError> {
        let offset = self.pos;
        let b = self.bytes_with_len("key length")?;
        String::from_utf8(b.to_vec()).map_err(|_| GgufError::InvalidKey { offset })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>()?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            // Any non-zero byte is true, as in llama.cpp.
            ValueType::Bool => Value::Bool(self.array::<1>()?[0] != 0),
            ValueType::String => {
                let s = self.string()?;
                self.spend(s.len() as u64, key)?;
                Value::String(s)
            }
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            ValueType::Array => Value::Array(self.array_value(key, depth)?),
        })
    }

    /// An array: its element type, its count, its elements.
    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep(MAX_ARRAY_DEPTH, key.to_string()));
        }
        let type_id = self.u32()?;
        let elem =
            ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType { key: key.to_string(), type_id })?;
        let count = self.u64()?;
        self.check_count("array length", count, elem.min_size())?;
        self.array_items(elem, count, key, depth)
    }

    /// `count` elements of type `elem`, stored as that type: numbers in one read of their bytes.
    fn array_items(&mut self, elem: ValueType, count: u64, key: &str, depth: usize) -> Result<Array, GgufError> {
        macro_rules! numbers {
            ($variant:ident, $t:ty) => {{
                const SIZE: usize = std::mem::size_of::<$t>();
                self.spend(count.saturating_mul(SIZE as u64), key)?;
                let bytes = self.take(count.saturating_mul(SIZE as u64))?;
                let values = bytes.chunks_exact(SIZE).map(|c| {
                    let mut a = [0u8; SIZE];
                    a.copy_from_slice(c);
                    <$t>::from_le_bytes(a)
                });
                Array::$variant(values.collect())
            }};
        }
        Ok(match elem {
            ValueType::U8 => numbers!(U8, u8),
            ValueType::I8 => numbers!(I8, i8),
            ValueType::U16 => numbers!(U16, u16),
            ValueType::I16 => numbers!(I16, i16),
            ValueType::U32 => numbers!(U32, u32),
            ValueType::I32 => numbers!(I32, i32),
            ValueType::F32 => numbers!(F32, f32),
            ValueType::U64 => numbers!(U64, u64),
            ValueType::I64 => numbers!(I64, i64),
            ValueType::F64 => numbers!(F64, f64),
            ValueType::Bool => {
                self.spend(count, key)?;
                // Any non-zero byte is true, as in llama.cpp.
                Array::Bool(self.take(count)?.iter().map(|&b| b != 0).collect())
            }
            ValueType::String => {
                self.spend(count.saturating_mul(std::mem::size_of::<String>() as u64), key)?;
                let mut items = Vec::with_capacity(self.capacity(count, elem.min_size()));
                for _ in 0..count {
                    let s = self.string()?;
                    self.spend(s.len() as u64, key)?;
                    items.push(s);
                }
                Array::String(items)
            }
            ValueType::Array => {
                self.spend(count.saturating_mul(std::mem::size_of::<Array>() as u64), key)?;
                let mut items = Vec::with_capacity(self.capacity(count, elem.min_size()));
                for _ in 0..count {
                    items.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(items)
            }
        })
    }
}

fn align_up(x: u64, alignment: u64) -> Option<u64> {
    x.checked_add(alignment - 1).map(|v| v / alignment * alignment)
}

impl GgufFile {
    /// Parses the header from the first bytes of a file of `file_len` bytes.
    ///
    /// `prefix` may be any length: if the header runs past it, the error is
    /// [`GgufError::NeedMoreData`] with the number of bytes to read before trying again (a lower
    /// bound; the header may turn out to be longer still).
    pub fn parse(prefix: &[u8], file_len: u64) -> Result<GgufFile, GgufError> {
        let file_len = file_len.max(prefix.len() as u64);
        let mut c = Cursor { buf: prefix, pos: 0, file_len, memory: 0 };
        let magic = c.array::<4>()?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32()?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(GgufError::BigEndian);
        }
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
        c.check_count("metadata key/value", n_kv, 13)?;
        // A tensor entry takes at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
        c.check_count("tensor", n_tensors, 32)?;

        let mut metadata = Metadata::default();
        for _ in 0..n_kv {
            let key = c.key()?;
            let type_id = c.u32()?;
            let ty =
                ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType { key: key.clone(), type_id })?;
            c.spend((std::mem::size_of::<(String, Value)>() + key.len()) as u64, &key)?;
            let value = c.value(ty, &key, 0)?;
            if metadata.contains(&key) {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                Some(a) => return Err(GgufError::BadAlignment(a)),
                None => return Err(GgufError::BadAlignment(0)),
            },
        };

        let mut raw = Vec::with_capacity(c.capacity(n_tensors, 32));
        let mut names = std::collections::HashSet::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            let Some(n_dims) = usize::try_from(n_dims).ok().filter(|n| (1..=MAX_DIMS).contains(n)) else {
                return Err(GgufError::BadShape {
                    tensor: name,
                    reason: format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
                });
            };
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let type_id = c.u32()?;
            let rel_offset = c.u64()?;
            if !names.insert(name.clone()) {
                return Err(GgufError::DuplicateTensor(name));
            }
            raw.push((name, dims, type_id, rel_offset));
        }
        let data_offset = align_up(c.pos, alignment).ok_or(GgufError::Truncated { needed: u64::MAX, file_len })?;

        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, type_id, rel_offset) in raw {
            let ty = GgmlType::from_id(type_id)
                .ok_or_else(|| GgufError::UnknownTensorType { tensor: name.clone(), type_id })?;
            let n_bytes = tensor_bytes(&name, &dims, ty)?;
            if rel_offset % alignment != 0 {
                return Err(GgufError::Misaligned { tensor: name, offset: rel_offset, alignment });
            }
            let start = data_offset.checked_add(rel_offset);
            let end = start.and_then(|s| s.checked_add(n_bytes));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => {
                    tensors.push(TensorInfo { name, dims, ty, offset: start, n_bytes: end - start })
                }
                _ => {
                    return Err(GgufError::TensorOutOfRange {
                        tensor: name,
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    });
                }
            }
        }
        Ok(GgufFile { version, metadata, tensors, alignment, data_offset, file_len })
    }
}

/// Size in bytes of a tensor, checking that its shape is sound for its type.
fn tensor_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    let bad = |reason: String| GgufError::BadShape { tensor: name.to_string(), reason };
    if dims.contains(&0) {
        return Err(bad(format!("shape {dims:?} has a zero dimension")));
    }
    if !dims[0].is_multiple_of(ty.block_size() as u64) {
        return Err(bad(format!(
            "row length {} is not a multiple of the {}-value block size of {}",
            dims[0],
            ty.block_size(),
            ty.name()
        )));
    }
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
    ty.bytes_for(n).ok_or_else(|| bad(format!("shape {dims:?} overflows")))
}

/// Reads and parses the header from the start of `reader` (a file of `file_len` bytes), reading
/// only as much as the header needs (in growing chunks).
pub fn read_header(mut reader: impl Read, file_len: u64) -> Result<GgufFile, GgufError> {
    let mut buf = Vec::new();
    let mut want = (1u64 << 20).min(file_len);
    loop {
        let have = buf.len();
        if want > have as u64 {
            let Some(len) = alloc_len(want) else {
                return Err(GgufError::Io(format!("a header of {want} bytes does not fit in memory here")));
            };
            buf.resize(len, 0);
            reader.read_exact(&mut buf[have..]).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => GgufError::Truncated { needed: want, file_len },
                _ => GgufError::Io(e.to_string()),
            })?;
        }
        match GgufFile::parse(&buf, file_len) {
            Err(GgufError::NeedMoreData { needed }) => want = needed.max(want.saturating_mul(2)).min(file_len),
            other => return other,
        }
    }
}

/// Reads one tensor's bytes from a seekable file (its range was checked against the file length
/// when the header was parsed, so the allocation is bounded by bytes that exist).
pub fn read_tensor_data(mut reader: impl Read + Seek, tensor: &TensorInfo) -> std::io::Result<Vec<u8>> {
    let len = alloc_len(tensor.n_bytes).ok_or_else(|| {
        std::io::Error::other(format!("tensor {:?}: {} bytes do not fit in memory here", tensor.name, tensor.n_bytes))
    })?;
    let mut buf = vec![0u8; len];
    reader.seek(SeekFrom::Start(tensor.offset))?;
    reader.read_exact(&mut buf)?;
    Ok(buf)
}
