//! `carebot compare A.gguf B.gguf`: whether two files of one model agree (a model prepared in the
//! browser against `carebot convert`'s): the headers, the weight blocks that differ per tensor,
//! and, when any do, how far apart the CPU reference's logits are on a prompt. Prints one JSON
//! object.

use carebot_model::gguf::{GgufFile, read_tensor_data};
use carebot_model::reference::CpuModel;
use carebot_model::tokenizer::Tokenizer;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn header_bytes(file: &mut File, f: &GgufFile) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; f.data_offset as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Logits of the last prompt token.
fn logits(f: &GgufFile, file: &mut File, prompt: &str) -> Result<Vec<f32>> {
    let tok = Tokenizer::from_gguf(&f.metadata)?;
    let ids = tok.encode(prompt, tok.add_bos())?;
    let mut model = CpuModel::load(f, ids.len() + 1, |t| read_tensor_data(&mut *file, t).map_err(|e| e.to_string()))?;
    let all = model.forward(&ids)?;
    let vocab = all.len() / ids.len();
    Ok(all[all.len() - vocab..].to_vec())
}

pub fn run(a: &Path, b: &Path, prompt: &str) -> Result<()> {
    let (fa, mut file_a) = crate::open(a)?;
    let (fb, mut file_b) = crate::open(b)?;
    let header_equal = header_bytes(&mut file_a, &fa)? == header_bytes(&mut file_b, &fb)?;
    if fa.tensors.len() != fb.tensors.len() {
        return Err(format!(
            "{} has {} tensors, {} has {}",
            a.display(),
            fa.tensors.len(),
            b.display(),
            fb.tensors.len()
        )
        .into());
    }
    let (mut blocks, mut differing) = (0u64, 0u64);
    let mut tensors = Vec::new();
    for (ta, tb) in fa.tensors.iter().zip(&fb.tensors) {
        if (ta.name.as_str(), &ta.dims, ta.ty) != (tb.name.as_str(), &tb.dims, tb.ty) {
            return Err(format!("tensor {} differs in name, shape or type from {}", ta.name, tb.name).into());
        }
        let (da, db) = (read_tensor_data(&mut file_a, ta)?, read_tensor_data(&mut file_b, tb)?);
        let n = da.chunks(ta.ty.block_bytes()).zip(db.chunks(tb.ty.block_bytes())).filter(|(x, y)| x != y).count();
        blocks += (da.len() / ta.ty.block_bytes()) as u64;
        if n > 0 {
            tensors.push(serde_json::json!({ "name": ta.name, "type": ta.ty.name(), "differing_blocks": n }));
        }
        differing += n as u64;
    }
    let max_logit_diff = if differing > 0 {
        let (la, lb) = (logits(&fa, &mut file_a, prompt)?, logits(&fb, &mut file_b, prompt)?);
        la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
    } else {
        0.0
    };
    let report = serde_json::json!({
        "identical": header_equal && differing == 0,
        "header_equal": header_equal,
        "blocks": blocks,
        "differing_blocks": differing,
        "tensors": tensors,
        "max_logit_diff": max_logit_diff,
    });
    println!("{report}");
    Ok(())
}
