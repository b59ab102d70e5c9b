//! GGUF reader and writer: round trips, prefix parsing, and one test per corruption class. Every
//! bad file must give a typed error, never a panic or an allocation beyond the bytes present.

use carebot_model::config::{ConfigError, LlamaConfig};
use carebot_model::gguf::{Array, GgufError, GgufFile, GgufWriter, TensorSpec, Value, ValueType, read_header};
use carebot_model::quant::{self, GgmlType};
use carebot_model::rng::SplitMix64;
use carebot_model::synthetic::SyntheticSpec;

/// A small file with every value type, a nested array and three tensors of different types.
fn sample_file() -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()))
        .set("test.u8", Value::U8(7))
        .set("test.i8", Value::I8(-7))
        .set("test.u16", Value::U16(700))
        .set("test.i16", Value::I16(-700))
        .set("test.u32", Value::U32(70000))
        .set("test.i32", Value::I32(-70000))
        .set("test.f32", Value::F32(0.25))
        .set("test.bool", Value::Bool(true))
        .set("test.string", Value::String("病人 patient ❤".into()))
        .set("test.u64", Value::U64(1 << 40))
        .set("test.i64", Value::I64(-(1 << 40)))
        .set("test.f64", Value::F64(-1.5))
        .set("test.empty", Value::Array(Vec::<String>::new().into()))
        .set("test.nested", Value::Array(Array::Array(vec![vec![1i32, 2].into(), Vec::<i32>::new().into()])))
        .set("test.strings", Value::Array(vec!["a".to_string(), "bc".to_string()].into()))
        .set("test.bytes", Value::Array(vec![0u8, 7, 255].into()))
        .set("test.f64s", Value::Array(vec![-1.5f64, 1e300].into()))
        .set("test.bools", Value::Array(vec![true, false, true].into()));
    let mut rng = SplitMix64::new(11);
    let vals: Vec<f32> = (0..96 * 3).map(|_| rng.next_signed()).collect();
    let tensors = [
        ("a.weight", vec![96u64, 3], GgmlType::Q8_0),
        ("b.weight", vec![96, 3], GgmlType::F16),
        ("c", vec![5], GgmlType::F32),
    ];
    let mut data = Vec::new();
    for (name, dims, ty) in tensors {
        w.add_tensor(TensorSpec::new(name, &dims, ty)).unwrap();
        let n: u64 = dims.iter().product();
        data.push(quant::quantize(ty, &vals[..n as usize]).unwrap());
    }
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    (w.to_bytes(&refs).unwrap(), data)
}

#[test]
fn round_trip_metadata_and_tensors() {
    let (bytes, data) = sample_file();
    let f = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.metadata.len(), 19);
    assert_eq!(f.metadata.get_str("test.string"), Some("病人 patient ❤"));
    assert_eq!(f.metadata.get("test.i16"), Some(&Value::I16(-700)));
    assert_eq!(f.metadata.get_u64("test.u64"), Some(1 << 40));
    assert_eq!(f.metadata.get("test.f64"), Some(&Value::F64(-1.5)));
    assert_eq!(f.metadata.get("test.empty"), Some(&Value::Array(Vec::<String>::new().into())));
    assert_eq!(f.metadata.get_array("test.empty").map(Array::elem_type), Some(ValueType::String));
    assert_eq!(
        f.metadata.get_array("test.nested"),
        Some(&Array::Array(vec![vec![1i32, 2].into(), Vec::<i32>::new().into()]))
    );
    assert_eq!(f.metadata.get_array("test.bytes"), Some(&Array::U8(vec![0, 7, 255])));
    assert_eq!(f.metadata.get_array("test.f64s"), Some(&Array::F64(vec![-1.5, 1e300])));
    assert_eq!(f.metadata.get_array("test.bools"), Some(&Array::Bool(vec![true, false, true])));
    assert_eq!(f.tensors.len(), 3);
    for (t, d) in f.tensors.iter().zip(&data) {
        assert_eq!(t.offset % 32, 0, "tensor data aligned");
        assert_eq!(&bytes[t.offset as usize..(t.offset + t.n_bytes) as usize], d.as_slice());
    }
    assert_eq!(f.tensor("a.weight").unwrap().n_rows(), 3);
}

#[test]
fn prefix_parsing_asks_for_more_bytes_until_the_header_is_in() {
    let (bytes, _) = sample_file();
    let full = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let header_end = full.data_offset as usize;
    let mut prefix = 0usize;
    let mut rounds = 0;
    let parsed = loop {
        match GgufFile::parse(&bytes[..prefix], bytes.len() as u64) {
            Err(GgufError::NeedMoreData { needed }) => {
                assert!(needed as usize > prefix, "must ask for more than it has");
                assert!(needed as usize <= header_end, "never asks past the header");
                prefix = needed as usize;
                rounds += 1;
            }
            other => break other.unwrap(),
        }
    };
    assert!(rounds > 5);
    assert_eq!(parsed.tensors, full.tensors);
    assert_eq!(parsed.data_offset, full.data_offset);
    // Native helper reading through io::Read gives the same.
    let via_reader = read_header(std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    assert_eq!(via_reader.tensors, full.tensors);
}

#[test]
fn truncated_anywhere_is_a_typed_error() {
    let (bytes, _) = sample_file();
    let full = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    // Cutting only the padding after the last tensor leaves a valid file.
    let data_end = full.tensors.iter().map(|t| t.offset + t.n_bytes).max().unwrap() as usize;
    assert!(GgufFile::parse(&bytes[..data_end], data_end as u64).is_ok());
    for len in 0..data_end {
        match GgufFile::parse(&bytes[..len], len as u64) {
            Err(GgufError::Truncated { needed, file_len }) => assert!(needed > file_len && file_len == len as u64),
            Err(GgufError::TensorOutOfRange { end, file_len, .. }) => assert!(end > file_len),
            // Counts that the cut-short file can no longer hold.
            Err(GgufError::ImpossibleCount { .. }) => {}
            other => panic!("truncated at {len}: expected a truncation error, got {other:?}"),
        }
        // The native reader reports the same.
        assert!(read_header(std::io::Cursor::new(&bytes[..len]), len as u64).is_err());
    }
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn push_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

#[test]
fn bad_magic_and_versions() {
    let mut b = header(3, 0, 0);
    b[0] = b'X';
    assert_eq!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::BadMagic(*b"XGUF"));
    for v in [0, 1, 4, 99] {
        let b = header(v, 0, 0);
        assert_eq!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::UnsupportedVersion(v));
    }
    let b = header(3u32.swap_bytes(), 0, 0);
    assert_eq!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::BigEndian);
    let b = header(2, 0, 0);
    assert_eq!(GgufFile::parse(&b, b.len() as u64).unwrap().version, 2);
    assert!(GgufFile::parse(b"GGU", 3).unwrap_err().to_string().contains("truncated"));
}

#[test]
fn absurd_counts_and_lengths_are_rejected_before_allocating() {
    // Counts claiming more entries than the file could possibly hold.
    let b = header(3, 0, u64::MAX);
    assert!(matches!(
        GgufFile::parse(&b, 1 << 40).unwrap_err(),
        GgufError::ImpossibleCount { what: "metadata key/value", .. }
    ));
    let b = header(3, u64::MAX / 2, 0);
    assert!(matches!(
        GgufFile::parse(&b, b.len() as u64).unwrap_err(),
        GgufError::ImpossibleCount { what: "tensor", .. }
    ));
    // A key length of 2^63.
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&(1u64 << 63).to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    assert!(matches!(
        GgufFile::parse(&b, b.len() as u64).unwrap_err(),
        GgufError::ImpossibleCount { what: "key length", .. }
    ));
    // A string value longer than the file.
    let mut b = header(3, 0, 1);
    push_str(&mut b, "k");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&1_000_000u64.to_le_bytes());
    b.extend_from_slice(b"short");
    assert!(matches!(
        GgufFile::parse(&b, b.len() as u64).unwrap_err(),
        GgufError::ImpossibleCount { what: "string length", .. }
    ));
    // An array of u64::MAX u32s in a file of 4 GiB claimed length but a short prefix.
    let mut b = header(3, 0, 1);
    push_str(&mut b, "arr");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        GgufFile::parse(&b, 4 << 30).unwrap_err(),
        GgufError::ImpossibleCount { what: "array length", .. }
    ));
    // A plausible-looking array count (fits a 4 GiB file) with only a short prefix: asks for more
    // bytes instead of reserving memory for the whole array.
    let mut b = header(3, 0, 1);
    push_str(&mut b, "arr");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 20).to_le_bytes());
    assert!(matches!(GgufFile::parse(&b, 4 << 30).unwrap_err(), GgufError::NeedMoreData { .. }));
    // One that fits the file but not the metadata's memory bound: refused at its count.
    let at = b.len() - 8;
    b[at..].copy_from_slice(&(1u64 << 28).to_le_bytes());
    assert!(matches!(GgufFile::parse(&b, 4 << 30).unwrap_err(), GgufError::MetadataTooLarge { .. }));
    // Deeply nested arrays.
    let mut b = header(3, 0, 1);
    push_str(&mut b, "deep");
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..10 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&[0; 64]);
    assert!(matches!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::NestingTooDeep(..)));
}

#[test]
fn unknown_value_and_tensor_types() {
    let mut b = header(3, 0, 1);
    push_str(&mut b, "k");
    b.extend_from_slice(&13u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    assert_eq!(
        GgufFile::parse(&b, b.len() as u64).unwrap_err(),
        GgufError::UnknownValueType { key: "k".into(), type_id: 13 }
    );

    let tensor = |ty: u32, dims: &[u64], offset: u64| {
        let mut b = header(3, 1, 0);
        push_str(&mut b, "t");
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.resize(b.len().next_multiple_of(32) + 4096, 0);
        b
    };
    let b = tensor(99, &[32], 0);
    assert_eq!(
        GgufFile::parse(&b, b.len() as u64).unwrap_err(),
        GgufError::UnknownTensorType { tensor: "t".into(), type_id: 99 }
    );
    // Known to ggml but not readable by CareBot: parsed (so `info` can show it), refused by the model config.
    let b = tensor(GgmlType::IQ2_XXS.id(), &[256], 0);
    assert_eq!(GgufFile::parse(&b, b.len() as u64).unwrap().tensors[0].ty, GgmlType::IQ2_XXS);
    // Shape not divisible by the block size.
    let b = tensor(GgmlType::Q4_0.id(), &[33, 2], 0);
    let e = GgufFile::parse(&b, b.len() as u64).unwrap_err();
    assert!(e.to_string().contains("not a multiple of the 32-value block size of Q4_0"), "{e}");
    let b = tensor(0, &[4, 0], 0);
    assert!(matches!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::BadShape { .. }));
    let b = tensor(0, &[1, 2, 3, 4, 5], 0);
    assert!(matches!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::BadShape { .. }));
    let b = tensor(0, &[u64::MAX / 2, 4], 0);
    assert!(matches!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::BadShape { .. }));
    // Data beyond the end of the file, and offsets that overflow.
    let b = tensor(0, &[2048], 0);
    assert!(matches!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::TensorOutOfRange { .. }));
    let b = tensor(0, &[8], u64::MAX - 31);
    assert!(matches!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::TensorOutOfRange { .. }));
    let b = tensor(0, &[8], 7);
    assert!(matches!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::Misaligned { .. }));
}

#[test]
fn duplicates_and_alignment() {
    let mut b = header(3, 0, 2);
    for _ in 0..2 {
        push_str(&mut b, "same");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    assert_eq!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::DuplicateKey("same".into()));
    let mut b = header(3, 0, 1);
    push_str(&mut b, "general.alignment");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&24u32.to_le_bytes());
    assert_eq!(GgufFile::parse(&b, b.len() as u64).unwrap_err(), GgufError::BadAlignment(24));
}

#[test]
fn random_corruptions_never_panic() {
    let (bytes, _) = sample_file();
    let mut rng = SplitMix64::new(0xC0FFEE);
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.next_u64() % 4 {
            let at = (rng.next_u64() % b.len() as u64) as usize;
            b[at] = rng.next_u64() as u8;
        }
        let cut = if rng.next_u64().is_multiple_of(4) { (rng.next_u64() % b.len() as u64) as usize } else { b.len() };
        // Any outcome but a panic is fine; successful parses must stay within the file.
        if let Ok(f) = GgufFile::parse(&b[..cut], cut as u64) {
            for t in &f.tensors {
                assert!(t.offset + t.n_bytes <= cut as u64);
            }
        }
    }
}

#[test]
fn wrong_architecture_and_missing_keys_name_the_problem() {
    let spec = SyntheticSpec { n_layers: 1, ..SyntheticSpec::tiny_llama3() };
    let bytes = spec.to_gguf(GgmlType::Q8_0);
    let f = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let cfg = LlamaConfig::from_gguf(&f).unwrap();
    assert_eq!((cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.vocab_size), (1, 4, 2, 64, 256));
    assert!(cfg.has_rope_freqs && !cfg.tied_output);
    // What `carebot info` and the page show: every field that changes the math.
    let summary = cfg.summary();
    for part in ["1 layers", "4 heads (2 KV, head dim 64)", "vocab 256", "RoPE base 500000", "Llama-3.1", "own matrix"]
    {
        assert!(summary.contains(part), "{part:?} missing from {summary:?}");
    }

    let mut g = f.clone();
    g.metadata.insert("general.architecture", Value::String("qwen2".into()));
    assert_eq!(LlamaConfig::from_gguf(&g).unwrap_err(), ConfigError::WrongArchitecture("qwen2".into()));
    let e = LlamaConfig::from_gguf(&g).unwrap_err().to_string();
    assert!(e.contains("qwen2") && e.contains("llama"), "{e}");

    let mut g = f.clone();
    g.metadata = carebot_model::gguf::Metadata::default();
    for (k, v) in f.metadata.iter().filter(|(k, _)| *k != "llama.block_count") {
        g.metadata.insert(k, v.clone());
    }
    assert_eq!(LlamaConfig::from_gguf(&g).unwrap_err(), ConfigError::MissingKey("llama.block_count".into()));

    let mut g = f.clone();
    g.metadata.insert("llama.attention.head_count_kv", Value::U32(3));
    assert!(matches!(LlamaConfig::from_gguf(&g).unwrap_err(), ConfigError::BadValue { .. }));

    // Every key with which llama.cpp would compute something this engine does not is refused by
    // key, not ignored (the table on LlamaConfig::from_gguf).
    for (key, value) in [
        ("llama.rope.scaling.type", Value::String("yarn".into())),
        ("llama.rope.scaling.type", Value::String("longrope".into())),
        ("llama.rope.scale_linear", Value::F32(2.0)),
        ("llama.rope.scaling.factor", Value::F32(8.0)),
        ("llama.rope.scaling.attn_factor", Value::F32(0.7)),
        ("llama.rope.scaling.yarn_log_multiplier", Value::F32(0.1)),
        ("llama.expert_count", Value::U32(8)),
        ("llama.attention.causal", Value::Bool(false)),
        ("llama.embedding_length_out", Value::U32(512)),
        ("llama.attention.value_length", Value::U32(32)),
        ("llama.rope.dimension_count", Value::U32(32)),
        ("llama.attention.head_count", Value::Array(vec![4u32, 4].into())),
    ] {
        let mut g = f.clone();
        g.metadata.insert(key, value);
        let e = LlamaConfig::from_gguf(&g).unwrap_err();
        assert!(matches!(&e, ConfigError::BadValue { key: k, .. } if k == key), "{key}: {e}");
    }
    // What llama.cpp reads as "no scaling" is read the same way.
    for (key, value) in [
        ("llama.rope.scaling.type", Value::String("none".into())),
        ("llama.rope.scaling.type", Value::String("linear".into())),
        ("llama.rope.scaling.factor", Value::F32(1.0)),
        ("llama.rope.scaling.factor", Value::F32(0.0)),
        ("llama.rope.scaling.attn_factor", Value::F32(1.0)),
        ("llama.expert_count", Value::U32(0)),
        ("llama.attention.causal", Value::Bool(true)),
        ("llama.rope.scaling.finetuned", Value::Bool(true)),
    ] {
        let mut g = f.clone();
        g.metadata.insert(key, value);
        assert!(LlamaConfig::from_gguf(&g).is_ok(), "{key}");
    }
    // A tokenizer with more or fewer tokens than the model has rows.
    let mut g = f.clone();
    let Some(Value::Array(Array::String(mut tokens))) = g.metadata.get("tokenizer.ggml.tokens").cloned() else {
        panic!()
    };
    tokens.pop();
    g.metadata.insert("tokenizer.ggml.tokens", Value::Array(tokens.into()));
    let e = LlamaConfig::from_gguf(&g).unwrap_err();
    assert!(matches!(&e, ConfigError::BadValue { key, .. } if key == "tokenizer.ggml.tokens"), "{e}");

    let mut g = f.clone();
    g.tensors.iter_mut().find(|t| t.name == "blk.0.attn_k.weight").unwrap().dims = vec![256, 256];
    let e = LlamaConfig::from_gguf(&g).unwrap_err();
    assert_eq!(
        e,
        ConfigError::ShapeMismatch {
            tensor: "blk.0.attn_k.weight".into(),
            expected: vec![256, 128],
            found: vec![256, 256]
        }
    );

    let mut g = f.clone();
    g.tensors.retain(|t| t.name != "blk.0.ffn_up.weight");
    assert_eq!(LlamaConfig::from_gguf(&g).unwrap_err(), ConfigError::MissingTensor("blk.0.ffn_up.weight".into()));

    let mut g = f.clone();
    g.tensors.iter_mut().find(|t| t.name == "blk.0.ffn_up.weight").unwrap().ty = GgmlType::IQ2_XXS;
    assert!(LlamaConfig::from_gguf(&g).unwrap_err().to_string().contains("IQ2_XXS"));

    // Tied output when output.weight is absent.
    let tied = SyntheticSpec { n_layers: 1, tied_output: true, rope_scaling: None, ..SyntheticSpec::tiny_llama3() };
    let bytes = tied.to_gguf(GgmlType::F16);
    let cfg = LlamaConfig::from_gguf(&GgufFile::parse(&bytes, bytes.len() as u64).unwrap()).unwrap();
    assert!(cfg.tied_output && !cfg.has_rope_freqs);
    assert!(cfg.summary().ends_with("RoPE scaling none, output tied to the embeddings"), "{}", cfg.summary());
}

/// The header of a GGUF whose only metadata is a `u8` array of `count` elements (the data itself
/// not included), and the length of the whole file.
fn header_with_u8_array(count: u64) -> (Vec<u8>, u64) {
    let mut h = header(3, 0, 1);
    push_str(&mut h, "evil");
    h.extend(9u32.to_le_bytes()); // array
    h.extend(0u32.to_le_bytes()); // of u8
    h.extend(count.to_le_bytes());
    let len = h.len() as u64 + count;
    (h, len)
}

/// A 128 MiB metadata array is past the 64 MiB bound: refused at its count, before anything is
/// allocated or read for it, quickly. Arrays are stored as their type, so a 48 MiB byte array
/// takes 48 MiB (as boxed values it took 1.5 GiB), and a real vocabulary stays well within.
#[test]
fn metadata_memory_is_bounded() {
    let started = std::time::Instant::now();
    let (header, len) = header_with_u8_array(128 << 20);
    let e = GgufFile::parse(&header, len).unwrap_err();
    assert!(matches!(&e, GgufError::MetadataTooLarge { key, .. } if key == "evil"), "{e}");
    assert!(started.elapsed().as_millis() < 100, "{:?}", started.elapsed());
    // Small arrays parse (here: the data must be there).
    let (mut header, len) = header_with_u8_array(1000);
    header.resize(len as usize, 7);
    let f = GgufFile::parse(&header, len).unwrap();
    assert_eq!(f.metadata.get_array("evil").map(Array::len), Some(1000));
    let (mut header, len) = header_with_u8_array(48 << 20);
    let values: Vec<u8> = (0..48u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    header.extend_from_slice(&values);
    let f = GgufFile::parse(&header, len).unwrap();
    assert_eq!(f.metadata.get_array("evil"), Some(&Array::U8(values)));
    // The real model's metadata: the Llama-3 tokenizer's arrays, written the way a conversion does.
    let spec = SyntheticSpec { vocab: 128_256, n_layers: 1, ..SyntheticSpec::tiny_llama3() };
    let (header, len) = spec.gguf_header(carebot_model::quant::TypeMix::Uniform(GgmlType::Q4_K));
    let f = GgufFile::parse(&header, len).unwrap();
    assert_eq!(f.metadata.get_array("tokenizer.ggml.tokens").map(Array::len), Some(128_256));
}
