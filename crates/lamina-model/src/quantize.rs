//! `lamina quantize`: rewrite a GGUF model with its matrices in another block format.
//!
//! Every 2-D weight is dequantized to f32 and quantized again with the GGML reference
//! quantizers (through candle); norms, biases and other 1-D tensors stay f32. K-quant
//! formats need rows that are multiples of 256 values; matrices whose rows are not (all of
//! SmolLM2's 576-wide ones) fall back to a 32-block format of similar size, as llama.cpp's
//! `llama-quantize` does (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0). Metadata is copied, with
//! `general.file_type` updated. The output is written to a temporary file and renamed, so
//! an interrupted run never leaves a half-written model.

use crate::gguf::{GgmlType, GgufFile, Value};
use crate::linear::dequantize_any;
use candle_core::quantized::{ggml_file, gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use lamina_core::{Error, Result};
use std::path::Path;

/// Target formats `lamina quantize` accepts.
pub const QUANTIZE_TYPES: &[&str] = &["f32", "f16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k"];

fn parse_type(name: &str) -> Result<(GgmlDType, u32)> {
    // (candle type, llama.cpp `general.file_type` code)
    Ok(match name.to_ascii_lowercase().as_str() {
        "f32" => (GgmlDType::F32, 0),
        "f16" => (GgmlDType::F16, 1),
        "q4_0" => (GgmlDType::Q4_0, 2),
        "q4_1" => (GgmlDType::Q4_1, 3),
        "q8_0" => (GgmlDType::Q8_0, 7),
        "q5_0" => (GgmlDType::Q5_0, 8),
        "q5_1" => (GgmlDType::Q5_1, 9),
        "q4_k" => (GgmlDType::Q4K, 15),
        "q5_k" => (GgmlDType::Q5K, 17),
        "q6_k" => (GgmlDType::Q6K, 18),
        other => return Err(Error::InvalidInput(format!("unknown quantization type `{other}` (one of: {})", QUANTIZE_TYPES.join(", ")))),
    })
}

fn block_size(t: GgmlDType) -> usize {
    match t {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => 1,
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K | GgmlDType::Q8K => 256,
        _ => 32,
    }
}

fn fallback(t: GgmlDType) -> GgmlDType {
    match t {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    }
}

fn to_candle_value(v: &Value) -> gguf_file::Value {
    use gguf_file::Value as C;
    match v {
        Value::U8(x) => C::U8(*x),
        Value::I8(x) => C::I8(*x),
        Value::U16(x) => C::U16(*x),
        Value::I16(x) => C::I16(*x),
        Value::U32(x) => C::U32(*x),
        Value::I32(x) => C::I32(*x),
        Value::U64(x) => C::U64(*x),
        Value::I64(x) => C::I64(*x),
        Value::F32(x) => C::F32(*x),
        Value::F64(x) => C::F64(*x),
        Value::Bool(x) => C::Bool(*x),
        Value::String(x) => C::String(x.clone()),
        Value::Array(a) => C::Array(a.iter().map(to_candle_value).collect()),
    }
}

/// What a quantization run did.
#[derive(Debug, Clone, Default)]
pub struct QuantizeReport {
    pub tensors: usize,
    /// Matrices written in the requested type.
    pub quantized: usize,
    /// Matrices written in the fallback type (rows not a multiple of the block).
    pub fallback: usize,
    /// Tensors with an update added (`lamina merge`).
    pub changed: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn candle_err(e: candle_core::Error) -> Error {
    Error::Candle(e.to_string())
}

/// Writes `output`: `input` with its matrices in `type_name` (see [`QUANTIZE_TYPES`]).
pub fn quantize_gguf(input: &Path, output: &Path, type_name: &str) -> Result<QuantizeReport> {
    rewrite_gguf(input, output, Some(type_name), &|_| None)
}

/// Our GGUF type as candle's (all but the activation-only Q8_1).
fn candle_type(t: GgmlType) -> Option<GgmlDType> {
    Some(match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q2K => GgmlDType::Q2K,
        GgmlType::Q3K => GgmlDType::Q3K,
        GgmlType::Q4K => GgmlDType::Q4K,
        GgmlType::Q5K => GgmlDType::Q5K,
        GgmlType::Q6K => GgmlDType::Q6K,
        GgmlType::Q8K => GgmlDType::Q8K,
        GgmlType::Q8_1 => return None,
    })
}

/// Writes `output`: `input` with `delta(name)` (row-major, the tensor's own layout) added
/// to the tensors it returns one for, and its matrices in `type_name` when given. Without a
/// type, tensors keep their types: untouched ones are copied block for block, changed ones
/// are quantized again in their own type. Metadata is copied (`general.file_type` updated
/// when the type changes).
pub(crate) fn rewrite_gguf(input: &Path, output: &Path, type_name: Option<&str>, delta: &dyn Fn(&str) -> Option<Vec<f32>>) -> Result<QuantizeReport> {
    let target = type_name.map(parse_type).transpose()?;
    let file = GgufFile::open(input)?;
    file.model_config()?; // refuse files the model loader would refuse
    let mut report = QuantizeReport { bytes_in: std::fs::metadata(input).map(|m| m.len()).unwrap_or(0), ..Default::default() };
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(file.order.len());
    for name in &file.order {
        let info = file.tensor(name)?;
        // GGML dims are innermost-first; candle shapes are outermost-first.
        let shape: Vec<usize> = info.dims.iter().rev().copied().collect();
        let change = delta(name);
        let own = candle_type(info.dtype).ok_or_else(|| Error::invalid_file(input, format!("{name}: type {} cannot be rewritten", info.dtype.name())))?;
        if target.is_none() && change.is_none() {
            // Block for block, through an 8-byte-aligned copy (candle reads blocks in place).
            let raw = file.data(info);
            let mut aligned = vec![0u64; raw.len().div_ceil(8)];
            // SAFETY: `aligned` holds at least `raw.len()` bytes.
            let bytes = unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr() as *mut u8, raw.len()) };
            bytes.copy_from_slice(raw);
            tensors.push((name.clone(), ggml_file::qtensor_from_ggml(own, bytes, shape, &Device::Cpu).map_err(candle_err)?));
            report.tensors += 1;
            continue;
        }
        let mut values = dequantize_any(info.dtype, file.data(info), info.elements()).map_err(|e| Error::invalid_file(input, format!("{name}: {e}")))?;
        if let Some(d) = change {
            if d.len() != values.len() {
                return Err(Error::ShapeMismatch { name: name.clone(), expected: shape.clone(), actual: vec![d.len()] });
            }
            values.iter_mut().zip(&d).for_each(|(v, d)| *v += d);
            report.changed += 1;
        }
        let t = Tensor::from_vec(values, shape, &Device::Cpu).map_err(candle_err)?;
        let is_matrix = info.dims.len() == 2;
        let dtype = match target {
            None => own,
            Some(_) if !is_matrix => GgmlDType::F32,
            Some((target, _)) if info.dims[0] % block_size(target) == 0 => {
                report.quantized += 1;
                target
            }
            Some((target, _)) => {
                let fb = fallback(target);
                if info.dims[0] % block_size(fb) != 0 {
                    GgmlDType::F32
                } else {
                    report.fallback += 1;
                    fb
                }
            }
        };
        let q = QTensor::quantize(&t, dtype).map_err(candle_err)?;
        tensors.push((name.clone(), q));
        report.tensors += 1;
    }
    let retyped = |k: &str| target.is_some() && k == "general.file_type";
    let mut meta: Vec<(String, gguf_file::Value)> = file.metadata.iter().filter(|(k, _)| !retyped(k)).map(|(k, v)| (k.clone(), to_candle_value(v))).collect();
    if let Some((_, file_type)) = target {
        meta.push(("general.file_type".into(), gguf_file::Value::U32(file_type)));
    }
    let meta_refs: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", output.file_name().and_then(|n| n.to_str()).unwrap_or("model.gguf"), std::process::id()));
    let write = || -> Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
        gguf_file::write(&mut f, &meta_refs, &tensor_refs).map_err(candle_err)?;
        let f = f.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, output).map_err(|e| Error::io(output, e))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    report.bytes_out = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    Ok(report)
}
