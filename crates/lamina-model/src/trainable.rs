//! Trainable forward pass (candle autograd).
//!
//! The same decoder-only transformer that inference runs, written with candle tensor ops
//! so that `loss.backward()` gives gradients for every weight. Weights are [`Var`]s held
//! in a [`VarMap`] under their Hugging Face names (see the crate docs of `lamina-train`),
//! so a trained model is saved as a `model.safetensors` that the inference loader reads.
//!
//! Only primitive candle ops with a backward rule are used (candle-nn's fused softmax,
//! RMSNorm and RoPE have no backward pass). Works in `F32` and `F64` (gradient checks).
//!
//! Shapes use `b` = batch, `t` = sequence length, `c` = hidden size, `nh` = query heads,
//! `nkv` = key/value heads, `hd` = head dim, `v` = vocabulary.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;
use lamina_core::{Architecture, Error, ModelConfig, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Converts a candle error into the project error type.
pub fn candle_err(e: candle_core::Error) -> Error {
    Error::Candle(e.to_string())
}

type CResult<T> = candle_core::Result<T>;

/// A small deterministic random generator (SplitMix64) whose whole state is one `u64`, so
/// trainers can store it in a checkpoint and resume the exact same stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    pub state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (`n > 0`), by multiply-shift (bias < 2^-64 * n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal sample (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// How a linear layer's weight matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[out, in]`, torch `nn.Linear` (Llama family).
    OutIn,
    /// `[in, out]`, GPT-2's `Conv1D`.
    InOut,
}

/// A linear layer: `y = x W^T + b` (or `x W + b` for [`WeightLayout::InOut`]), plus
/// `s·(x Aᵀ) Bᵀ` when a LoRA adapter is attached.
#[derive(Debug, Clone)]
pub struct Linear {
    pub name: String,
    pub weight: Var,
    pub bias: Option<Var>,
    pub layout: WeightLayout,
    /// The base weights take no gradient (LoRA training).
    pub frozen: bool,
    pub lora: Option<LoraVars>,
}

/// A LoRA adapter on one layer: `A` (r × in), `B` (out × r), scale `s`.
#[derive(Debug, Clone)]
pub struct LoraVars {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    /// Shared by all of a model's adapters: off, the model is its base (DPO's reference).
    pub enabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// `v` as a tensor of the graph: detached (no gradient flows to it) when `frozen`.
fn param(v: &Var, frozen: bool) -> Tensor {
    if frozen {
        v.as_tensor().detach()
    } else {
        v.as_tensor().clone()
    }
}

impl Linear {
    pub fn in_dim(&self) -> usize {
        let d = self.weight.dims();
        match self.layout {
            WeightLayout::OutIn => d[1],
            WeightLayout::InOut => d[0],
        }
    }

    pub fn out_dim(&self) -> usize {
        let d = self.weight.dims();
        match self.layout {
            WeightLayout::OutIn => d[0],
            WeightLayout::InOut => d[1],
        }
    }

    /// `x`: (..., in) → (..., out).
    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        let n: usize = dims[..dims.len().saturating_sub(1)].iter().product();
        let x2 = x.reshape((n, in_dim))?; // (n, in)
        let w = param(&self.weight, self.frozen);
        let y = match self.layout {
            WeightLayout::OutIn => x2.matmul(&w.t()?)?, // (n, in) @ (in, out) → (n, out)
            WeightLayout::InOut => x2.matmul(&w)?,      // (n, in) @ (in, out)
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(&param(b, self.frozen))?, // (n, out) + (out)
            None => y,
        };
        let y = match &self.lora {
            // (n, in) @ (in, r) → (n, r), times s, @ (r, out) → (n, out)
            Some(l) if l.enabled.load(std::sync::atomic::Ordering::Relaxed) => (y + (x2.matmul(&l.a.t()?)? * l.scale)?.matmul(&l.b.t()?)?)?,
            _ => y,
        };
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.out_dim();
        y.reshape(out_dims) // (..., out)
    }
}

/// RMSNorm (Llama) or LayerNorm with bias (GPT-2), over the last dimension.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Var,
    pub bias: Option<Var>,
    pub eps: f64,
    pub frozen: bool,
}

impl Norm {
    /// `x`: (b, t, c) → (b, t, c).
    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        match &self.bias {
            None => {
                // RMSNorm: x / sqrt(mean(x²) + eps) * w
                let ms = x.sqr()?.mean_keepdim(D::Minus1)?; // (b, t, 1)
                let inv = (ms + self.eps)?.sqrt()?.recip()?; // (b, t, 1)
                x.broadcast_mul(&inv)?.broadcast_mul(&param(&self.weight, self.frozen))
                // (b, t, c)
            }
            Some(bias) => {
                // LayerNorm: (x - mean) / sqrt(var + eps) * w + b (biased variance, like torch)
                let mu = x.mean_keepdim(D::Minus1)?; // (b, t, 1)
                let xc = x.broadcast_sub(&mu)?; // (b, t, c)
                let var = xc.sqr()?.mean_keepdim(D::Minus1)?; // (b, t, 1)
                let inv = (var + self.eps)?.sqrt()?.recip()?; // (b, t, 1)
                xc.broadcast_mul(&inv)?.broadcast_mul(&param(&self.weight, self.frozen))?.broadcast_add(&param(bias, self.frozen))
                // (b, t, c)
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Attention {
    Llama { q: Linear, k: Linear, v: Linear, o: Linear },
    Gpt2 { c_attn: Linear, c_proj: Linear },
}

#[derive(Debug, Clone)]
enum Mlp {
    Llama { gate: Linear, up: Linear, down: Linear },
    Gpt2 { c_fc: Linear, c_proj: Linear },
}

#[derive(Debug, Clone)]
struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    mlp: Mlp,
}

/// The decoder-only transformer with trainable weights.
pub struct TrainableModel {
    cfg: ModelConfig,
    dtype: DType,
    device: Device,
    varmap: VarMap,
    /// Parameter names in a fixed (sorted) order, with their vars.
    params: BTreeMap<String, Var>,
    embed: Var,
    pos_embed: Option<Var>,
    blocks: Vec<Block>,
    final_norm: Norm,
    /// Separate output projection; `None` when tied to the token embedding.
    lm_head: Option<Linear>,
    /// RoPE tables, each (context_length, rope_dim).
    rope: Option<(Tensor, Tensor)>,
    /// LoRA matrices by PEFT-style name (`{module}.lora_A.weight`), when adapters are
    /// attached; then only these train and the base is frozen.
    lora: BTreeMap<String, Var>,
    lora_config: Option<crate::lora::LoraConfig>,
    lora_enabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Which names are residual output projections (scaled init).
fn is_residual_proj(name: &str) -> bool {
    name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") || name.ends_with("attn.c_proj.weight") || name.ends_with("mlp.c_proj.weight")
}

struct Builder<'a> {
    cfg: &'a ModelConfig,
    dtype: DType,
    device: &'a Device,
    rng: SplitMix64,
    params: BTreeMap<String, Var>,
}

impl Builder<'_> {
    fn normal(&mut self, name: &str, shape: &[usize], std: f64) -> CResult<Var> {
        let n: usize = shape.iter().product();
        let data: Vec<f64> = (0..n).map(|_| self.rng.normal() * std).collect();
        let t = Tensor::from_vec(data, shape, self.device)?.to_dtype(self.dtype)?;
        self.insert(name, t)
    }

    fn constant(&mut self, name: &str, shape: &[usize], value: f64) -> CResult<Var> {
        let t = (Tensor::ones(shape, self.dtype, self.device)? * value)?;
        self.insert(name, t)
    }

    fn insert(&mut self, name: &str, t: Tensor) -> CResult<Var> {
        let v = Var::from_tensor(&t)?;
        self.params.insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn init_std(&self, name: &str) -> f64 {
        if is_residual_proj(name) {
            0.02 / (2.0 * self.cfg.num_layers as f64).sqrt()
        } else {
            0.02
        }
    }

    /// A linear layer of `out × in`; GPT-2 (`InOut`) stores it transposed.
    fn linear(&mut self, name: &str, in_dim: usize, out_dim: usize, bias: bool, layout: WeightLayout) -> CResult<Linear> {
        let wname = format!("{name}.weight");
        let shape = match layout {
            WeightLayout::OutIn => [out_dim, in_dim],
            WeightLayout::InOut => [in_dim, out_dim],
        };
        let std = self.init_std(&wname);
        let weight = self.normal(&wname, &shape, std)?;
        let bias = if bias { Some(self.constant(&format!("{name}.bias"), &[out_dim], 0.0)?) } else { None };
        Ok(Linear { name: name.to_string(), weight, bias, layout, frozen: false, lora: None })
    }

    fn norm(&mut self, name: &str, dim: usize, bias: bool) -> CResult<Norm> {
        let weight = self.constant(&format!("{name}.weight"), &[dim], 1.0)?;
        let bias = if bias { Some(self.constant(&format!("{name}.bias"), &[dim], 0.0)?) } else { None };
        Ok(Norm { weight, bias, eps: self.cfg.norm_eps as f64, frozen: false })
    }
}

fn check_dtype(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F64 => Ok(()),
        other => Err(Error::InvalidConfig(format!("training supports f32 and f64, not {other:?}"))),
    }
}

/// Extra checks on top of [`ModelConfig::validate`] that the trainable model relies on.
pub fn validate_for_training(cfg: &ModelConfig) -> Result<()> {
    cfg.validate()?;
    if cfg.architecture == Architecture::Gemma3 {
        return Err(Error::InvalidConfig("training a Gemma 3 model is not supported yet (Llama and GPT-2 are)".into()));
    }
    if cfg.architecture == Architecture::Gpt2 {
        if cfg.head_dim * cfg.num_heads != cfg.hidden_size {
            return Err(Error::InvalidConfig(format!(
                "GPT-2 needs num_heads ({}) × head_dim ({}) = hidden_size ({})",
                cfg.num_heads, cfg.head_dim, cfg.hidden_size
            )));
        }
        if cfg.num_kv_heads != cfg.num_heads {
            return Err(Error::InvalidConfig("GPT-2 has no grouped-query attention (num_kv_heads must equal num_heads)".into()));
        }
    }
    if cfg.ffn_dim == 0 {
        return Err(Error::InvalidConfig("ffn_dim must be positive".into()));
    }
    Ok(())
}

impl TrainableModel {
    /// A freshly initialised model: GPT-2 style, normal(0, 0.02) for matrices and
    /// embeddings, residual output projections scaled by `1/sqrt(2 n_layers)`, norms at 1,
    /// biases at 0. The same `seed` gives the same weights on every machine.
    pub fn new(cfg: &ModelConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        validate_for_training(cfg)?;
        check_dtype(dtype)?;
        Self::build(cfg, seed, dtype, device).map_err(candle_err)
    }

    fn build(cfg: &ModelConfig, seed: u64, dtype: DType, device: &Device) -> CResult<Self> {
        let mut b = Builder { cfg, dtype, device, rng: SplitMix64::new(seed), params: BTreeMap::new() };
        let c = cfg.hidden_size;
        let (embed, pos_embed, blocks, final_norm, lm_head, rope);
        match cfg.architecture {
            Architecture::Llama => {
                embed = b.normal("model.embed_tokens.weight", &[cfg.vocab_size, c], 0.02)?;
                pos_embed = None;
                let mut bl = Vec::with_capacity(cfg.num_layers);
                for i in 0..cfg.num_layers {
                    let p = format!("model.layers.{i}");
                    let l = WeightLayout::OutIn;
                    let norm1 = b.norm(&format!("{p}.input_layernorm"), c, false)?;
                    let q = b.linear(&format!("{p}.self_attn.q_proj"), c, cfg.q_dim(), cfg.qkv_bias, l)?;
                    let k = b.linear(&format!("{p}.self_attn.k_proj"), c, cfg.kv_dim(), cfg.qkv_bias, l)?;
                    let v = b.linear(&format!("{p}.self_attn.v_proj"), c, cfg.kv_dim(), cfg.qkv_bias, l)?;
                    let o = b.linear(&format!("{p}.self_attn.o_proj"), cfg.q_dim(), c, false, l)?;
                    let norm2 = b.norm(&format!("{p}.post_attention_layernorm"), c, false)?;
                    let gate = b.linear(&format!("{p}.mlp.gate_proj"), c, cfg.ffn_dim, false, l)?;
                    let up = b.linear(&format!("{p}.mlp.up_proj"), c, cfg.ffn_dim, false, l)?;
                    let down = b.linear(&format!("{p}.mlp.down_proj"), cfg.ffn_dim, c, false, l)?;
                    bl.push(Block { norm1, attn: Attention::Llama { q, k, v, o }, norm2, mlp: Mlp::Llama { gate, up, down } });
                }
                blocks = bl;
                final_norm = b.norm("model.norm", c, false)?;
                lm_head = if cfg.tied_embeddings { None } else { Some(b.linear("lm_head", c, cfg.vocab_size, false, WeightLayout::OutIn)?) };
                rope = Some(rope_tables(cfg, dtype, device)?);
            }
            Architecture::Gemma3 => return Err(candle_core::Error::Msg("training a Gemma 3 model is not supported yet".into())),
            Architecture::Gpt2 => {
                embed = b.normal("wte.weight", &[cfg.vocab_size, c], 0.02)?;
                pos_embed = Some(b.normal("wpe.weight", &[cfg.context_length, c], 0.02)?);
                let mut bl = Vec::with_capacity(cfg.num_layers);
                for i in 0..cfg.num_layers {
                    let p = format!("h.{i}");
                    let l = WeightLayout::InOut;
                    let norm1 = b.norm(&format!("{p}.ln_1"), c, true)?;
                    let c_attn = b.linear(&format!("{p}.attn.c_attn"), c, 3 * c, true, l)?;
                    let c_proj = b.linear(&format!("{p}.attn.c_proj"), c, c, true, l)?;
                    let norm2 = b.norm(&format!("{p}.ln_2"), c, true)?;
                    let c_fc = b.linear(&format!("{p}.mlp.c_fc"), c, cfg.ffn_dim, true, l)?;
                    let mlp_proj = b.linear(&format!("{p}.mlp.c_proj"), cfg.ffn_dim, c, true, l)?;
                    bl.push(Block { norm1, attn: Attention::Gpt2 { c_attn, c_proj }, norm2, mlp: Mlp::Gpt2 { c_fc, c_proj: mlp_proj } });
                }
                blocks = bl;
                final_norm = b.norm("ln_f", c, true)?;
                lm_head = None;
                rope = None;
            }
        }
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("var map poisoned".into()))?;
            for (k, v) in &b.params {
                data.insert(k.clone(), v.clone());
            }
        }
        Ok(TrainableModel {
            cfg: cfg.clone(),
            dtype,
            device: device.clone(),
            varmap,
            params: b.params,
            embed,
            pos_embed,
            blocks,
            final_norm,
            lm_head,
            rope,
            lora: BTreeMap::new(),
            lora_config: None,
            lora_enabled: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// Builds the model and fills it from a `model.safetensors` with HF names.
    pub fn load(cfg: &ModelConfig, path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::invalid_file(path, format!("not a readable safetensors file: {e}")))?;
        let model = Self::new(cfg, 0, dtype, device)?;
        model.set_weights(&tensors)?;
        Ok(model)
    }

    /// Copies every parameter from `tensors` (HF names; a `transformer.` prefix and GPT-2's
    /// attention-mask buffers are tolerated). Missing tensors and wrong shapes are errors.
    pub fn set_weights(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in &self.params {
            let t = tensors.get(name).or_else(|| tensors.get(&format!("transformer.{name}"))).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            if t.dims() != var.dims() {
                return Err(Error::ShapeMismatch { name: name.clone(), expected: var.dims().to_vec(), actual: t.dims().to_vec() });
            }
            let t = t.to_dtype(self.dtype).and_then(|t| t.to_device(&self.device)).map_err(candle_err)?;
            var.set(&t).map_err(candle_err)?;
        }
        Ok(())
    }

    /// Writes all parameters (as f32) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map = self.state_dict(DType::F32)?;
        candle_core::safetensors::save(&map, path).map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))
    }

    /// Copies of all parameters, converted to `dtype`, by HF name.
    pub fn state_dict(&self, dtype: DType) -> Result<HashMap<String, Tensor>> {
        let mut map = HashMap::new();
        for (k, v) in &self.params {
            map.insert(k.clone(), v.as_tensor().to_dtype(dtype).map_err(candle_err)?.detach());
        }
        Ok(map)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Parameters in a fixed (name-sorted) order.
    pub fn named_params(&self) -> Vec<(String, Var)> {
        self.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Attaches a fresh LoRA adapter to every layer `config` targets and freezes the base:
    /// from now on only the adapters train. `A` is initialised as PEFT does (Kaiming
    /// uniform, bound `1/√in`), `B` at zero, so the model starts as the base.
    pub fn add_lora(&mut self, config: &crate::lora::LoraConfig, seed: u64) -> Result<()> {
        config.validate()?;
        if self.cfg.architecture != Architecture::Llama {
            return Err(Error::UnsupportedArchitecture("LoRA training on GPT-2 (Llama-family models take adapters)".into()));
        }
        if self.lora_config.is_some() {
            return Err(Error::InvalidInput("the model already has LoRA adapters".into()));
        }
        let mut rng = SplitMix64::new(seed);
        let (dtype, device, scale, enabled) = (self.dtype, self.device.clone(), config.scale(), self.lora_enabled.clone());
        let mut lora = BTreeMap::new();
        let mut attach = |l: &mut Linear| -> CResult<()> {
            l.frozen = true;
            if !config.targets_module(&l.name) {
                return Ok(());
            }
            let (i, o, r) = (l.in_dim(), l.out_dim(), config.r);
            let bound = 1.0 / (i as f64).sqrt();
            let a: Vec<f64> = (0..r * i).map(|_| (rng.next_f64() * 2.0 - 1.0) * bound).collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (r, i), &device)?.to_dtype(dtype)?)?;
            let b = Var::from_tensor(&Tensor::zeros((o, r), dtype, &device)?)?;
            lora.insert(format!("{}.lora_A.weight", l.name), a.clone());
            lora.insert(format!("{}.lora_B.weight", l.name), b.clone());
            l.lora = Some(LoraVars { a, b, scale, enabled: enabled.clone() });
            Ok(())
        };
        for block in &mut self.blocks {
            block.norm1.frozen = true;
            block.norm2.frozen = true;
            if let (Attention::Llama { q, k, v, o }, Mlp::Llama { gate, up, down }) = (&mut block.attn, &mut block.mlp) {
                for l in [q, k, v, o, gate, up, down] {
                    attach(l).map_err(candle_err)?;
                }
            }
        }
        self.final_norm.frozen = true;
        if let Some(h) = &mut self.lm_head {
            h.frozen = true;
        }
        if lora.is_empty() {
            return Err(Error::InvalidConfig(format!("no layer of this model matches the LoRA targets {:?}", config.targets)));
        }
        self.lora = lora;
        self.lora_config = Some(config.clone());
        Ok(())
    }

    /// Runs `f` with the adapters switched off: the model is its frozen base (the
    /// reference policy of DPO, with no second copy of the weights).
    pub fn with_adapters_disabled<T>(&self, f: impl FnOnce() -> T) -> T {
        use std::sync::atomic::Ordering;
        let was = self.lora_enabled.swap(false, Ordering::Relaxed);
        let out = f();
        self.lora_enabled.store(was, Ordering::Relaxed);
        out
    }

    /// Σ log p(target) over each row's scored targets (not [`IGNORE`]): `tokens`,
    /// `targets` (b, t) u32 → (b).
    pub fn sequence_logprobs(&self, tokens: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (logits, _) = self.forward(tokens, None)?;
        (|| -> CResult<Tensor> {
            let (b, t, _) = logits.dims3()?;
            let keep = targets.ne(IGNORE)?; // (b, t)
            let safe = keep.where_cond(targets, &targets.zeros_like()?)?.unsqueeze(2)?; // (b, t, 1)
            let m = logits.max_keepdim(D::Minus1)?.detach(); // (b, t, 1)
            let lse = (logits.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &m)?; // (b, t, 1)
            let lp = (logits.gather(&safe, 2)? - lse)?.reshape((b, t))?; // (b, t)
            (lp * keep.to_dtype(logits.dtype())?)?.sum(1) // (b)
        })()
        .map_err(candle_err)
    }

    /// The parameters that train: the LoRA matrices when adapters are attached, else all.
    pub fn trainable_params(&self) -> Vec<(String, Var)> {
        if self.lora_config.is_some() {
            self.lora.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            self.named_params()
        }
    }

    /// The attached adapter as an in-memory PEFT adapter (`None` without one).
    pub fn lora_adapter(&self) -> Result<Option<crate::lora::LoraAdapter>> {
        let Some(config) = &self.lora_config else { return Ok(None) };
        let mut modules = BTreeMap::new();
        for (name, a) in &self.lora {
            let Some(module) = name.strip_suffix(".lora_A.weight") else { continue };
            let b = &self.lora[&format!("{module}.lora_B.weight")];
            let vec = |v: &Var| v.as_tensor().to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(candle_err);
            let (r, in_dim) = a.dims2().map_err(candle_err)?;
            let out_dim = b.dims()[0];
            modules.insert(module.to_string(), crate::lora::LoraModule { r, in_dim, out_dim, a: vec(a)?, b: vec(b)? });
        }
        Ok(Some(crate::lora::LoraAdapter { config: config.clone(), modules, base_model: None }))
    }

    /// Sets the attached adapter's matrices from `adapter` (same modules and shapes).
    pub fn set_lora(&self, adapter: &crate::lora::LoraAdapter) -> Result<()> {
        for (module, m) in &adapter.modules {
            let (Some(a), Some(b)) = (self.lora.get(&format!("{module}.lora_A.weight")), self.lora.get(&format!("{module}.lora_B.weight"))) else {
                return Err(Error::InvalidInput(format!("the model has no LoRA adapter on `{module}`")));
            };
            let set = |v: &Var, data: &[f32], shape: (usize, usize)| -> Result<()> {
                if v.dims() != [shape.0, shape.1] {
                    return Err(Error::ShapeMismatch { name: module.clone(), expected: v.dims().to_vec(), actual: vec![shape.0, shape.1] });
                }
                let t = Tensor::from_slice(data, shape, &self.device).and_then(|t| t.to_dtype(self.dtype)).map_err(candle_err)?;
                v.set(&t).map_err(candle_err)
            };
            set(a, &m.a, (m.r, m.in_dim))?;
            set(b, &m.b, (m.out_dim, m.r))?;
        }
        Ok(())
    }

    /// A trainable copy of an inference model's weights (Llama family), in Hugging Face
    /// names and rotary layout (the inference model keeps Llama's query and key rows
    /// interleaved; they are put back in the rotate-half order here).
    pub fn from_model(model: &crate::Model, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = &model.config;
        if cfg.architecture != Architecture::Llama {
            return Err(Error::UnsupportedArchitecture(format!("training {:?} models loaded for inference (Llama-family models can be)", cfg.architecture)));
        }
        let (hd, hq, hkv, d) = (cfg.head_dim, cfg.num_heads, cfg.num_kv_heads, cfg.hidden_size);
        let mut map = HashMap::new();
        let mut put = |name: String, shape: &[usize], data: Vec<f32>| -> Result<()> {
            let t = Tensor::from_vec(data, shape, device).map_err(candle_err)?;
            map.insert(name, t);
            Ok(())
        };
        let lin = |l: &crate::Linear| (l.rows, l.cols, l.to_f32());
        let (v, _, e) = lin(&model.embed);
        put("model.embed_tokens.weight".into(), &[v, d], e)?;
        for (i, layer) in model.layers.iter().enumerate() {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let gate = layer.gate.as_ref().ok_or_else(|| Error::InvalidInput("a Llama layer without a gate".into()))?;
            for (name, l, heads) in [
                ("self_attn.q_proj", &layer.q, Some(hq)),
                ("self_attn.k_proj", &layer.k, Some(hkv)),
                ("self_attn.v_proj", &layer.v, None),
                ("self_attn.o_proj", &layer.o, None),
                ("mlp.gate_proj", gate, None),
                ("mlp.up_proj", &layer.up, None),
                ("mlp.down_proj", &layer.down, None),
            ] {
                let (rows, cols, w) = lin(l);
                let w = match heads {
                    Some(h) => crate::load::unpermute_rotary_rows(&w, h, hd, cols),
                    None => w,
                };
                put(p(&format!("{name}.weight")), &[rows, cols], w)?;
                if let Some(b) = &l.bias {
                    let b = match heads {
                        Some(h) => crate::load::unpermute_rotary_rows(b, h, hd, 1),
                        None => b.clone(),
                    };
                    put(p(&format!("{name}.bias")), &[rows], b)?;
                }
            }
            put(p("input_layernorm.weight"), &[d], layer.attn_norm.weight.clone())?;
            put(p("post_attention_layernorm.weight"), &[d], layer.ffn_norm.weight.clone())?;
        }
        put("model.norm.weight".into(), &[d], model.final_norm.weight.clone())?;
        if !cfg.tied_embeddings {
            let (v, _, w) = lin(&model.output);
            put("lm_head.weight".into(), &[v, d], w)?;
        }
        let t = Self::new(cfg, 0, dtype, device)?;
        t.set_weights(&map)?;
        Ok(t)
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    /// nanoGPT-style forward: `tokens` (b, t) u32 → logits (b, t, v), plus the mean
    /// cross-entropy against `targets` (b, t) u32 when given.
    pub fn forward(&self, tokens: &Tensor, targets: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t) = tokens.dims2().map_err(|e| Error::InvalidInput(format!("tokens must be (batch, seq): {e}")))?;
        if t == 0 || b == 0 {
            return Err(Error::InvalidInput("empty token batch".into()));
        }
        if t > self.cfg.context_length {
            return Err(Error::PromptTooLong { prompt_tokens: t, context_length: self.cfg.context_length });
        }
        if tokens.dtype() != DType::U32 {
            return Err(Error::InvalidInput(format!("tokens must be u32, got {:?}", tokens.dtype())));
        }
        let max_id = tokens.flatten_all().and_then(|x| x.max(0)).and_then(|x| x.to_scalar::<u32>()).map_err(candle_err)?;
        if max_id as usize >= self.cfg.vocab_size {
            return Err(Error::InvalidInput(format!("token id {max_id} is outside the vocabulary ({})", self.cfg.vocab_size)));
        }
        if let Some(tg) = targets {
            if tg.dims() != tokens.dims() || tg.dtype() != DType::U32 {
                return Err(Error::InvalidInput(format!("targets must be u32 of shape {:?}, got {:?}", tokens.dims(), tg.dims())));
            }
        }
        let logits = self.forward_logits(tokens, b, t).map_err(candle_err)?;
        let loss = match targets {
            Some(tg) => Some(cross_entropy(&logits, tg).map_err(candle_err)?),
            None => None,
        };
        Ok((logits, loss))
    }

    fn forward_logits(&self, tokens: &Tensor, b: usize, t: usize) -> CResult<Tensor> {
        let c = self.cfg.hidden_size;
        let ids = tokens.flatten_all()?; // (b*t)
        let frozen = self.lora_config.is_some();
        let embed = param(&self.embed, frozen);
        let mut x = embed.index_select(&ids, 0)?.reshape((b, t, c))?; // (b, t, c)
        if let Some(wpe) = &self.pos_embed {
            let pos = param(wpe, frozen).narrow(0, 0, t)?; // (t, c)
            x = x.broadcast_add(&pos)?; // (b, t, c)
        }
        let mask = causal_mask(t, self.cfg.sliding_window, self.dtype, &self.device)?; // (t, t)
        for block in &self.blocks {
            let h = block.norm1.forward(&x)?; // (b, t, c)
            let a = self.attention(&block.attn, &h, &mask, b, t)?; // (b, t, c)
            x = (x + a)?;
            let h = block.norm2.forward(&x)?;
            let m = match &block.mlp {
                Mlp::Llama { gate, up, down } => {
                    let g = gate.forward(&h)?.silu()?; // (b, t, ffn)
                    let u = up.forward(&h)?; // (b, t, ffn)
                    down.forward(&(g * u)?)? // (b, t, c)
                }
                Mlp::Gpt2 { c_fc, c_proj } => c_proj.forward(&c_fc.forward(&h)?.gelu()?)?, // gelu = tanh approx
            };
            x = (x + m)?;
        }
        let x = self.final_norm.forward(&x)?; // (b, t, c)
        match &self.lm_head {
            Some(head) => head.forward(&x), // (b, t, v)
            None => {
                let x2 = x.reshape((b * t, c))?; // (b*t, c)
                x2.matmul(&embed.t()?)?.reshape((b, t, self.cfg.vocab_size))
                // (b*t, c) @ (c, v)
            }
        }
    }

    /// `h` (b, t, c) → attention output (b, t, c).
    fn attention(&self, attn: &Attention, h: &Tensor, mask: &Tensor, b: usize, t: usize) -> CResult<Tensor> {
        let (nh, nkv, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let (q, k, v, o) = match attn {
            Attention::Llama { q, k, v, o } => {
                let q = q.forward(h)?.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?; // (b, nh, t, hd)
                let k = k.forward(h)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?; // (b, nkv, t, hd)
                let v = v.forward(h)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?; // (b, nkv, t, hd)
                let (cos, sin) = self.rope.as_ref().ok_or_else(|| candle_core::Error::Msg("rope tables missing".into()))?;
                let cos = cos.narrow(0, 0, t)?; // (t, rd)
                let sin = sin.narrow(0, 0, t)?;
                let q = apply_rope(&q, &cos, &sin, self.cfg.rope_dim)?;
                let k = apply_rope(&k, &cos, &sin, self.cfg.rope_dim)?;
                (q, k, v, o)
            }
            Attention::Gpt2 { c_attn, c_proj } => {
                let c = self.cfg.hidden_size;
                let qkv = c_attn.forward(h)?; // (b, t, 3c)
                let split = |i: usize| -> CResult<Tensor> {
                    qkv.narrow(2, i * c, c)?.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()
                    // (b, nh, t, hd)
                };
                (split(0)?, split(1)?, split(2)?, c_proj)
            }
        };
        let (k, v) = if nkv != nh {
            let rep = nh / nkv;
            let expand = |x: Tensor| -> CResult<Tensor> {
                x.unsqueeze(2)? // (b, nkv, 1, t, hd)
                    .broadcast_as((b, nkv, rep, t, hd))?
                    .reshape((b, nh, t, hd)) // (b, nh, t, hd); head h uses kv head h / rep
            };
            (expand(k)?, expand(v)?)
        } else {
            (k, v)
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?; // (b, nh, t, hd) @ (b, nh, hd, t) → (b, nh, t, t)
        let att = att.broadcast_add(mask)?; // future positions → -inf
        let att = softmax_last_dim(&att)?; // (b, nh, t, t)
        let y = att.matmul(&v)?; // (b, nh, t, hd)
        let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?; // (b, t, nh*hd)
        o.forward(&y) // (b, t, c)
    }
}

/// RoPE cos/sin tables, each (context_length, rope_dim), duplicated halves (HF layout).
fn rope_tables(cfg: &ModelConfig, dtype: DType, device: &Device) -> CResult<(Tensor, Tensor)> {
    let inv = cfg.rope_inv_freq(); // rope_dim / 2
    let rd = cfg.rope_dim;
    let mut cos = Vec::with_capacity(cfg.context_length * rd);
    let mut sin = Vec::with_capacity(cfg.context_length * rd);
    for p in 0..cfg.context_length {
        for rep in 0..2 {
            let _ = rep;
            for f in &inv {
                let a = p as f64 * *f as f64;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    let cos = Tensor::from_vec(cos, (cfg.context_length, rd), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (cfg.context_length, rd), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// HF "rotate_half" RoPE on the first `rd` dims of each head: pairs (i, i + rd/2).
/// `x` (b, h, t, hd), `cos`/`sin` (t, rd) → (b, h, t, hd).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, rd: usize) -> CResult<Tensor> {
    let hd = x.dim(D::Minus1)?;
    if rd == 0 {
        return Ok(x.clone());
    }
    let xr = if rd == hd { x.clone() } else { x.narrow(D::Minus1, 0, rd)? }; // (b, h, t, rd)
    let x1 = xr.narrow(D::Minus1, 0, rd / 2)?; // (b, h, t, rd/2)
    let x2 = xr.narrow(D::Minus1, rd / 2, rd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?; // (b, h, t, rd) = [-x2, x1]
    let out = (xr.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?; // (b, h, t, rd)
    if rd == hd {
        Ok(out)
    } else {
        Tensor::cat(&[&out, &x.narrow(D::Minus1, rd, hd - rd)?], D::Minus1) // (b, h, t, hd)
    }
}

/// Additive causal mask (t, t): 0 where key ≤ query (within the sliding window), -inf else.
fn causal_mask(t: usize, window: Option<usize>, dtype: DType, device: &Device) -> CResult<Tensor> {
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in 0..t {
            let visible = j <= i && window.is_none_or(|w| i - j < w);
            if !visible {
                m[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (t, t), device)?.to_dtype(dtype)
}

/// Softmax over the last dim from primitive ops (differentiable); the max is detached.
pub fn softmax_last_dim(x: &Tensor) -> CResult<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach(); // (..., 1)
    let e = x.broadcast_sub(&m)?.exp()?; // (..., n)
    let s = e.sum_keepdim(D::Minus1)?; // (..., 1)
    e.broadcast_div(&s)
}

/// The target id of a position whose prediction is not scored (a prompt token in
/// supervised fine-tuning, padding).
pub const IGNORE: u32 = u32::MAX;

/// Mean cross-entropy of `logits` (b, t, v) against `targets` (b, t) u32 over the targets
/// that are not [`IGNORE`] → scalar (0 when every target is ignored).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> CResult<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let n = logits.elem_count() / v;
    let x = logits.reshape((n, v))?; // (n, v)
    let targets = targets.reshape((n, 1))?; // (n, 1)
    let keep = targets.ne(IGNORE)?; // (n, 1) u8
    let safe = keep.where_cond(&targets, &targets.zeros_like()?)?; // ignored → 0 (any valid id)
    let m = x.max_keepdim(1)?.detach(); // (n, 1)
    let lse = (x.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + &m)?; // (n, 1) log-sum-exp
    let picked = x.gather(&safe, 1)?; // (n, 1) logit of the target
    let w = keep.to_dtype(x.dtype())?; // (n, 1) 1 = scored
    let count = w.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    ((lse - picked)? * w)?.sum_all()? / count.max(1.0) // ()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_cfg() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 11,
            hidden_size: 8,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            ffn_dim: 12,
            context_length: 8,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_dim: 4,
            rope_scaling: None,
            tied_embeddings: true,
            qkv_bias: false,
            sliding_window: None,
            local_layers: None,
        }
    }

    #[test]
    fn forward_shapes_and_initial_loss() {
        let cfg = llama_cfg();
        let m = TrainableModel::new(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
        let tok = Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &Device::Cpu).unwrap();
        let tgt = Tensor::new(&[[7u32, 8, 9], [10, 0, 1]], &Device::Cpu).unwrap();
        let (logits, loss) = m.forward(&tok, Some(&tgt)).unwrap();
        assert_eq!(logits.dims(), &[2, 3, 11]);
        let l = loss.unwrap().to_scalar::<f32>().unwrap();
        assert!((l - (11f32).ln()).abs() < 0.1, "{l}");
    }

    #[test]
    fn out_of_vocab_is_an_error() {
        let m = TrainableModel::new(&llama_cfg(), 1, DType::F32, &Device::Cpu).unwrap();
        let tok = Tensor::new(&[[1u32, 20]], &Device::Cpu).unwrap();
        assert!(m.forward(&tok, None).is_err());
    }
}
