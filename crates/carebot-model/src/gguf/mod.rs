//! GGUF (v2 and v3) files: metadata values, the tensor directory, a reader that works on a byte
//! prefix (so the browser can fetch only the header, then tensor ranges) and a writer.
//!
//! Offsets and sizes are u64 and never cast down: files pass 4 GiB, and in the browser `usize`
//! has 32 bits ([`crate::offsets`]).
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

mod reader;
mod writer;

pub use reader::{read_header, read_tensor_data};
pub use writer::{GgufWriter, TensorSpec};

use crate::quant::GgmlType;
use std::collections::HashMap;
use std::ops::Range;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;

/// A metadata value. Arrays are stored compactly, as their element type ([`Array`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// GGUF value type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Smallest encoded size of one value of this type (strings and arrays: their length field).
    pub(crate) fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata array, each element type in its own vector: a 128k-token vocabulary's token types
/// take 4 bytes each, not a 32-byte [`Value`] each, and a byte array takes its bytes. The type
/// survives an empty array. (Arrays of arrays are allowed by GGUF; no model we read has one.)
macro_rules! arrays {
    ($($variant:ident($t:ty)),*) => {
        #[derive(Clone, Debug, PartialEq)]
        pub enum Array {
            $($variant(Vec<$t>),)*
            String(Vec<String>),
            Array(Vec<Array>),
        }

        impl Array {
            pub fn elem_type(&self) -> ValueType {
                match self {
                    $(Array::$variant(_) => ValueType::$variant,)*
                    Array::String(_) => ValueType::String,
                    Array::Array(_) => ValueType::Array,
                }
            }

            pub fn len(&self) -> usize {
                match self {
                    $(Array::$variant(v) => v.len(),)*
                    Array::String(v) => v.len(),
                    Array::Array(v) => v.len(),
                }
            }

            /// Element `i` as a value (a copy).
            pub fn get(&self, i: usize) -> Option<Value> {
                Some(match self {
                    $(Array::$variant(v) => Value::$variant(*v.get(i)?),)*
                    Array::String(v) => Value::String(v.get(i)?.clone()),
                    Array::Array(v) => Value::Array(v.get(i)?.clone()),
                })
            }

            /// An array of `ty` from `items`; `None` if one of them has another type.
            pub fn from_values(ty: ValueType, items: Vec<Value>) -> Option<Array> {
                Some(match ty {
                    $(ValueType::$variant => Array::$variant(
                        items.into_iter().map(|v| match v { Value::$variant(x) => Some(x), _ => None }).collect::<Option<_>>()?,
                    ),)*
                    ValueType::String => Array::String(
                        items.into_iter().map(|v| match v { Value::String(x) => Some(x), _ => None }).collect::<Option<_>>()?,
                    ),
                    ValueType::Array => Array::Array(
                        items.into_iter().map(|v| match v { Value::Array(x) => Some(x), _ => None }).collect::<Option<_>>()?,
                    ),
                })
            }
        }

        $(impl From<Vec<$t>> for Array {
            fn from(v: Vec<$t>) -> Array {
                Array::$variant(v)
            }
        })*
    };
}

arrays!(U8(u8), I8(i8), U16(u16), I16(i16), U32(u32), I32(i32), F32(f32), Bool(bool), U64(u64), I64(i64), F64(f64));

impl From<Vec<String>> for Array {
    fn from(v: Vec<String>) -> Array {
        Array::String(v)
    }
}

impl Array {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element as a value (copies; for small arrays and tests).
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The strings of a string array.
    pub fn strings(&self) -> Option<&[String]> {
        match self {
            Array::String(v) => Some(v),
            _ => None,
        }
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type, if it is non-negative and fits.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(i64::from(v)),
            Value::I16(v) => Some(i64::from(v)),
            Value::I32(v) => Some(i64::from(v)),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short human-readable rendering (long arrays elided) for `carebot info`.
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 80 => {
                format!("{:?}… ({} chars)", s.chars().take(60).collect::<String>(), s.chars().count())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) if a.len() > 6 => {
                let head: Vec<String> = a.iter().take(4).map(|v| v.summary()).collect();
                format!("[{}, …] ({} × {:?})", head.join(", "), a.len(), a.elem_type())
            }
            Value::Array(a) => format!("[{}]", a.iter().map(|v| v.summary()).collect::<Vec<_>>().join(", ")),
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
        }
    }
}

/// Key/value metadata in file order, with lookup by key.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Adds or replaces a key (replacing keeps the original position).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Option<&Array> {
        self.get(key).and_then(Value::as_array)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One entry of the tensor directory, with its position resolved to absolute file offsets.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Length of one row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows (product of the other dims).
    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }

    pub fn byte_range(&self) -> Range<u64> {
        self.offset..self.offset + self.n_bytes
    }
}

/// The parsed header of a GGUF file: everything but the tensor data.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the tensor data section starts (= header length).
    pub data_offset: u64,
    pub file_len: u64,
}

impl GgufFile {
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get_str("general.architecture")
    }
}

/// Everything that can be wrong with a GGUF file. Offsets are byte positions in the file.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum GgufError {
    #[error("the header continues past the bytes given: read at least {needed} bytes of the file and parse again")]
    NeedMoreData { needed: u64 },
    #[error("file is truncated: {needed} bytes needed, the file has {file_len}")]
    Truncated { needed: u64, file_len: u64 },
    #[error("not a GGUF file (magic bytes {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("{what} count {count} at offset {offset} is impossible: the rest of the file holds at most {max}")]
    ImpossibleCount { what: &'static str, count: u64, offset: u64, max: u64 },
    #[error("unknown metadata value type {type_id} for key {key:?}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("metadata arrays nested deeper than {0} levels (key {1:?})")]
    NestingTooDeep(usize, String),
    #[error("key at offset {offset} is not valid UTF-8")]
    InvalidKey { offset: u64 },
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("general.alignment = {0} is not a power of two")]
    BadAlignment(u64),
    #[error("tensor {tensor:?} has unknown ggml type id {type_id}")]
    UnknownTensorType { tensor: String, type_id: u32 },
    #[error("tensor {tensor:?}: {reason}")]
    BadShape { tensor: String, reason: String },
    #[error("tensor {tensor:?} data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned { tensor: String, offset: u64, alignment: u64 },
    #[error("tensor {tensor:?} data {start}..{end} lies outside the file ({file_len} bytes)")]
    TensorOutOfRange { tensor: String, start: u64, end: u64, file_len: u64 },
    #[error("I/O error reading the GGUF header: {0}")]
    Io(String),
    /// The metadata would take more memory than any model's needs ([`MAX_METADATA_MEMORY`]).
    #[error("the metadata would take over {limit} bytes of memory (at key {key:?}): no model needs that much")]
    MetadataTooLarge { key: String, limit: u64 },
}

/// The memory the parsed metadata of one file may take: 64 MiB, counted as it is stored (each
/// number at its own size, each string its bytes plus a `String`, each key and entry its own).
/// Llama-3's (128 256 tokens, 280 147 merges, token types, template) takes ≈ 14 MB, a 256k-token
/// vocabulary with scores about as much; a hostile array (a 128 MiB `u8` array) is refused at its
/// count, before anything is allocated for it. The bound matters most in the page, whose worker
/// keeps its whole wasm memory under 256 MiB.
pub const MAX_METADATA_MEMORY: u64 = 64 << 20;
