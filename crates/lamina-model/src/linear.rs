//! The linear layer of the inference path: `y = x · Wᵀ (+ b)`.
//!
//! One type covers every storage the model meets: quantized blocks rearranged at load for
//! the kernels (the 32-value formats), quantized blocks used as stored (K-quants, copied
//! out of the GGUF memory map into huge-page memory), and dense f32 (from safetensors, from Q2_K / Q3_K, or when
//! the caller asks for f32 arithmetic). The kernel is chosen from the storage; callers do
//! not care. Training uses `trainable::Linear` over candle `Var`s with the same names.

use crate::gguf::{GgmlType, GgufFile};
use lamina_core::{Error, Result};
use lamina_kernels::hugepage::HugeVec;
use lamina_kernels::packed::PackedMatrix;
use lamina_kernels::quant::*;
use lamina_kernels::Weights;
use std::sync::Arc;

/// Where a matrix's values live.
#[derive(Clone)]
pub enum LinearData {
    /// GGUF blocks used in place: `offset` bytes into the map, `rows` rows of `cols` values.
    Mapped { file: Arc<GgufFile>, offset: usize, dtype: GgmlType },
    /// GGUF blocks (K-quants) used as stored, copied at load out of the file mapping into
    /// huge-page-advised memory (`lamina_kernels::hugepage`: fewer TLB misses when a
    /// token streams them); `rows` rows of `cols` values.
    Copied { bytes: Arc<HugeVec<u8>>, dtype: GgmlType },
    /// Row-major `rows × cols` f32.
    F32(Arc<Vec<f32>>),
    /// Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 blocks rearranged at load time into 8-row interleaved groups
    /// (`lamina_kernels::packed`); `dtype` is the GGUF type they came from.
    Packed { packed: Arc<PackedMatrix>, dtype: GgmlType },
}

#[derive(Clone)]
pub struct Linear {
    pub rows: usize,
    pub cols: usize,
    pub data: LinearData,
    pub bias: Option<Vec<f32>>,
}

impl std::fmt::Debug for Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Linear({}x{}, {})", self.rows, self.cols, self.dtype_name())
    }
}

/// Whether the inner kernels can use a GGUF type in place.
pub fn has_int_kernel(dtype: GgmlType) -> bool {
    matches!(dtype, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K)
}

impl Linear {
    pub fn dtype_name(&self) -> &'static str {
        match &self.data {
            LinearData::Mapped { dtype, .. } | LinearData::Packed { dtype, .. } | LinearData::Copied { dtype, .. } => dtype.name(),
            LinearData::F32(_) => "F32",
        }
    }

    /// Bytes of one row in its storage.
    fn row_bytes(&self) -> usize {
        match &self.data {
            LinearData::Mapped { dtype, .. } | LinearData::Packed { dtype, .. } | LinearData::Copied { dtype, .. } => {
                let (bs, bb) = dtype.block();
                self.cols / bs * bb
            }
            LinearData::F32(_) => self.cols * 4,
        }
    }

    /// Bytes the weights occupy (what one full product reads).
    pub fn weight_bytes(&self) -> usize {
        self.rows * self.row_bytes()
    }

    /// The kernel view of the weights.
    pub fn weights(&self) -> Weights<'_> {
        match &self.data {
            LinearData::F32(v) => Weights::F32(&v[..self.rows * self.cols]),
            LinearData::Packed { packed, .. } => Weights::Packed(packed),
            LinearData::Mapped { file, offset, dtype } => Linear::blocks(*dtype, file.data_at(*offset, self.weight_bytes())),
            LinearData::Copied { bytes, dtype } => Linear::blocks(*dtype, bytes),
        }
    }

    /// The kernel view of GGUF blocks of type `dtype`.
    fn blocks(dtype: GgmlType, all: &[u8]) -> Weights<'_> {
        // Construction checked type, size and alignment, so these casts succeed.
        match dtype {
            GgmlType::Q4_0 => Weights::Q4_0(cast_blocks(all).expect("checked at load")),
            GgmlType::Q4_1 => Weights::Q4_1(cast_blocks(all).expect("checked at load")),
            GgmlType::Q5_0 => Weights::Q5_0(cast_blocks(all).expect("checked at load")),
            GgmlType::Q5_1 => Weights::Q5_1(cast_blocks(all).expect("checked at load")),
            GgmlType::Q8_0 => Weights::Q8_0(cast_blocks(all).expect("checked at load")),
            GgmlType::Q4K => Weights::Q4K(cast_blocks(all).expect("checked at load")),
            GgmlType::Q5K => Weights::Q5K(cast_blocks(all).expect("checked at load")),
            GgmlType::Q6K => Weights::Q6K(cast_blocks(all).expect("checked at load")),
            _ => unreachable!("only int-kernel types are kept in their blocks"),
        }
    }

    /// Dequantizes row `r` into `out` (length `cols`); used for embedding look-ups.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        match self.weights() {
            Weights::F32(v) => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
            Weights::Q4_0(b) => dequantize_q4_0(&b[r * self.cols / QK..(r + 1) * self.cols / QK], out),
            Weights::Q4_1(b) => dequantize_q4_1(&b[r * self.cols / QK..(r + 1) * self.cols / QK], out),
            Weights::Q5_0(b) => dequantize_q5_0(&b[r * self.cols / QK..(r + 1) * self.cols / QK], out),
            Weights::Q5_1(b) => dequantize_q5_1(&b[r * self.cols / QK..(r + 1) * self.cols / QK], out),
            Weights::Q8_0(b) => dequantize_q8_0(&b[r * self.cols / QK..(r + 1) * self.cols / QK], out),
            Weights::Q4K(b) => dequantize_q4_k(&b[r * self.cols / QK_K..(r + 1) * self.cols / QK_K], out),
            Weights::Q5K(b) => dequantize_q5_k(&b[r * self.cols / QK_K..(r + 1) * self.cols / QK_K], out),
            Weights::Q6K(b) => dequantize_q6_k(&b[r * self.cols / QK_K..(r + 1) * self.cols / QK_K], out),
            Weights::Packed(p) => p.row_f32(r, out),
        }
    }

    /// All values as f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_f32(r, row);
        }
        out
    }

    /// A linear layer over rows `[row_start, row_start + rows)` of a GGUF tensor with
    /// `cols` columns. Types without an integer kernel (and every type when `dense` is
    /// set) are dequantized to f32 here.
    pub fn from_gguf(file: &Arc<GgufFile>, name: &str, row_start: usize, rows: usize, dense: bool) -> Result<Linear> {
        let info = file.tensor(name)?;
        if info.dims.len() != 2 {
            return Err(Error::ShapeMismatch { name: name.into(), expected: vec![0, 0], actual: info.dims.clone() });
        }
        let cols = info.dims[0];
        let total_rows = info.dims[1];
        if row_start + rows > total_rows {
            return Err(Error::ShapeMismatch { name: name.into(), expected: vec![cols, row_start + rows], actual: info.dims.clone() });
        }
        let (bs, bb) = info.dtype.block();
        if cols % bs != 0 {
            return Err(Error::invalid_file(&file.path, format!("tensor `{name}`: rows of {cols} values are not whole blocks")));
        }
        let row_bytes = cols / bs * bb;
        let offset = info.offset + row_start * row_bytes;
        let mapped = Linear { rows, cols, data: LinearData::Mapped { file: file.clone(), offset, dtype: info.dtype }, bias: None };
        if has_int_kernel(info.dtype) && !dense && offset.is_multiple_of(2) {
            if std::env::var_os("LAMINA_NO_PACK").is_some() {
                return Ok(mapped);
            }
            return Ok(if packs(info.dtype) { mapped.packed() } else { mapped.copied() });
        }
        let bytes = file.data_at(offset, rows * row_bytes);
        let values = dequantize_any(info.dtype, bytes, rows * cols).map_err(|e| Error::invalid_file(&file.path, format!("tensor `{name}`: {e}")))?;
        Ok(Linear { rows, cols, data: LinearData::F32(Arc::new(values)), bias: None })
    }

    /// This layer with Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 mapped weights rearranged into the interleaved
    /// layout of `lamina_kernels::packed` (other storage is returned unchanged). The
    /// mapped pages it read are released from this process's resident set afterwards
    /// (they are still in the page cache and fault back in if read again).
    pub fn packed(self) -> Linear {
        let LinearData::Mapped { file, offset, dtype } = &self.data else { return self };
        let (rows, cols) = (self.rows, self.cols);
        let packed = match self.weights() {
            Weights::Q4_0(b) => PackedMatrix::from_q4_0(b, rows, cols),
            Weights::Q4_1(b) => PackedMatrix::from_q4_1(b, rows, cols),
            Weights::Q5_0(b) => PackedMatrix::from_q5_0(b, rows, cols),
            Weights::Q5_1(b) => PackedMatrix::from_q5_1(b, rows, cols),
            Weights::Q8_0(b) => PackedMatrix::from_q8_0(b, rows, cols),
            _ => return self,
        };
        release_pages(file.data_at(*offset, self.weight_bytes()));
        let dtype = *dtype;
        Linear { data: LinearData::Packed { packed: Arc::new(packed), dtype }, ..self }
    }

    /// This layer with mapped weights copied into huge-page-advised memory, their mapped
    /// pages released as in [`Linear::packed`] (other storage is returned unchanged).
    pub fn copied(self) -> Linear {
        let LinearData::Mapped { file, offset, dtype } = &self.data else { return self };
        let src = file.data_at(*offset, self.weight_bytes());
        let bytes = Arc::new(HugeVec::from_slice(src));
        release_pages(src);
        let dtype = *dtype;
        Linear { data: LinearData::Copied { bytes, dtype }, ..self }
    }

    /// A layer over f32 `values` quantized to Q8_0 (8-bit weights, one f16 scale per 32)
    /// and packed for the kernels: the fast path for checkpoints stored in f32.
    pub fn quantized_q8_0(rows: usize, cols: usize, values: &[f32], bias: Option<Vec<f32>>) -> Result<Linear> {
        if values.len() != rows * cols || !cols.is_multiple_of(QK) {
            return Err(Error::InvalidInput(format!("Q8_0 linear {rows}x{cols} (columns a multiple of {QK}) given {} values", values.len())));
        }
        let mut blocks = vec![BlockQ8_0::default(); rows * cols / QK];
        quantize_q8_0(values, &mut blocks);
        let packed = PackedMatrix::from_q8_0(&blocks, rows, cols);
        Ok(Linear { rows, cols, data: LinearData::Packed { packed: Arc::new(packed), dtype: GgmlType::Q8_0 }, bias })
    }

    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>, bias: Option<Vec<f32>>) -> Result<Linear> {
        if values.len() != rows * cols {
            return Err(Error::InvalidInput(format!("linear {rows}x{cols} given {} values", values.len())));
        }
        Ok(Linear { rows, cols, data: LinearData::F32(Arc::new(values)), bias })
    }
}

/// Types that [`Linear::packed`] rearranges.
pub fn packs(dtype: GgmlType) -> bool {
    matches!(dtype, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0)
}

/// Drops the whole pages of a read-only file mapping that `bytes` covers from the
/// resident set (`madvise(MADV_DONTNEED)`; the data stays in the page cache and is
/// faulted back in on the next read). A no-op elsewhere than Linux.
fn release_pages(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const MADV_DONTNEED: i32 = 4;
        const PAGE: usize = 4096;
        let start = (bytes.as_ptr() as usize).div_ceil(PAGE) * PAGE;
        let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
        if end > start {
            // SAFETY: the range lies inside a live read-only shared file mapping that nobody
            // writes; dropping its pages only makes later reads fault them in from the file.
            unsafe {
                madvise(start as *mut std::ffi::c_void, end - start, MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Dequantizes any GGUF tensor type to f32 (K-quants through candle's reference code).
pub fn dequantize_any(dtype: GgmlType, bytes: &[u8], n: usize) -> std::result::Result<Vec<f32>, String> {
    use candle_core::quantized::k_quants::{self as kq, GgmlType as _};
    let mut out = vec![0.0f32; n];
    fn blocks<T>(b: &[u8]) -> std::result::Result<Vec<T>, String> {
        // Copy into an owned, correctly aligned buffer (K-quant blocks need 2-byte alignment
        // and the mapped offset may not provide it).
        let size = std::mem::size_of::<T>();
        if !b.len().is_multiple_of(size) {
            return Err("data is not a whole number of blocks".into());
        }
        let n = b.len() / size;
        let mut v: Vec<T> = Vec::with_capacity(n);
        // SAFETY: T is a plain-old-data block type; we fill exactly n elements.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr() as *mut u8, b.len());
            v.set_len(n);
        }
        Ok(v)
    }
    match dtype {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes(c.try_into().unwrap()).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32();
            }
        }
        GgmlType::Q4_0 => dequantize_q4_0(&blocks::<BlockQ4_0>(bytes)?, &mut out),
        GgmlType::Q4_1 => dequantize_q4_1(&blocks::<BlockQ4_1>(bytes)?, &mut out),
        GgmlType::Q5_0 => dequantize_q5_0(&blocks::<BlockQ5_0>(bytes)?, &mut out),
        GgmlType::Q5_1 => dequantize_q5_1(&blocks::<BlockQ5_1>(bytes)?, &mut out),
        GgmlType::Q8_0 => dequantize_q8_0(&blocks::<BlockQ8_0>(bytes)?, &mut out),
        GgmlType::Q2K => kq::BlockQ2K::to_float(&blocks::<kq::BlockQ2K>(bytes)?, &mut out),
        GgmlType::Q3K => kq::BlockQ3K::to_float(&blocks::<kq::BlockQ3K>(bytes)?, &mut out),
        GgmlType::Q4K => kq::BlockQ4K::to_float(&blocks::<kq::BlockQ4K>(bytes)?, &mut out),
        GgmlType::Q5K => kq::BlockQ5K::to_float(&blocks::<kq::BlockQ5K>(bytes)?, &mut out),
        GgmlType::Q6K => kq::BlockQ6K::to_float(&blocks::<kq::BlockQ6K>(bytes)?, &mut out),
        GgmlType::Q8K => kq::BlockQ8K::to_float(&blocks::<kq::BlockQ8K>(bytes)?, &mut out),
        GgmlType::Q8_1 => return Err("Q8_1 is an activation format, not a weight type".into()),
    }
    Ok(out)
}
