//! The fused training step: the trainable transformer's forward and backward pass written
//! out by hand over flat f32 buffers, as llm.c does for GPT-2.
//!
//! Why: on the nanoGPT CPU recipe the candle-autograd step of [`TrainableModel`] ran at
//! ~0.17× PyTorch's speed (docs/training.md). Its time went into per-op buffer allocation,
//! single-threaded element-wise maps, scalar `expf`/`tanhf`, and the autograd graph —
//! not into the matrix products. Here every activation has a preallocated buffer, the
//! element-wise work is fused into a few row kernels ([`kernels`]) that vectorise, the
//! products go to `gemm`, and the backward pass is a fixed sequence of calls instead of a
//! graph walk. With several threads, each runs the whole pass on its share of the
//! batch's sequences (data-parallel shards, `FusedModel::run_sharded`); a batch
//! with fewer sequences than threads splits each operation over the worker pool instead.
//!
//! It is the same model: [`FusedModel`] takes its parameter names, shapes and values from
//! a [`TrainableModel`] and writes them back ([`FusedModel::store_into`]), and the tests
//! check its loss and every gradient against candle autograd on both architectures
//! (`tests/fused.rs`). The autograd model stays the reference, and the path for f64.
//!
//! Buffers (`n = b·t` token rows, `c` hidden, `f` MLP width, `v` vocabulary):
//! residual stream `resid[l]` (n, c) per layer boundary, per layer the normed inputs
//! (n, c) with their row statistics, `qkv` (n, q_dim + 2·kv_dim), attention probabilities
//! (b, nh, t, t), attention output (n, q_dim), `resid_mid` (n, c), MLP pre-activation
//! (n, f or 2f) and activation (n, f); logits (n, v), overwritten by their gradient.

pub mod gemm;
pub mod kernels;

use self::gemm::{matmul, Mat, MatMut};
use self::kernels::AttnShape;
use candle_core::{Device, Tensor};
use lamina_core::{Architecture, Error, ModelConfig, Result};
use lamina_kernels::cpu::Isa;
use lamina_kernels::pool::ThreadPool;
use lamina_model::trainable::{candle_err, TrainableModel};
use std::collections::HashMap;

/// One parameter's place in the flat buffers.
#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    off: usize,
    len: usize,
}

/// A linear layer inside the flat buffer. `w_rs`/`w_cs` address the weight as the
/// logical `in × out` matrix `Wt` of `y = x · Wt + b`, whatever its storage
/// (torch `[out, in]` for Llama, GPT-2 Conv1D `[in, out]`).
#[derive(Debug, Clone, Copy)]
struct Lin {
    w: Slot,
    b: Option<Slot>,
    in_dim: usize,
    out_dim: usize,
    w_rs: isize,
    w_cs: isize,
}

#[derive(Debug, Clone, Copy)]
struct NormP {
    w: Slot,
    b: Option<Slot>,
}

#[derive(Debug, Clone)]
struct LayerP {
    norm1: NormP,
    /// Projections writing column ranges of `qkv`: `(layer, first column)`.
    qkv: Vec<(Lin, usize)>,
    o: Lin,
    norm2: NormP,
    /// Projections writing column ranges of the MLP pre-activation.
    mlp_in: Vec<(Lin, usize)>,
    mlp_out: Lin,
}

/// Saved activations and backward scratch for one `(batch, seq)` shape.
#[derive(Default)]
struct Workspace {
    b: usize,
    t: usize,
    resid: Vec<Vec<f32>>,
    h1: Vec<Vec<f32>>,
    mean1: Vec<Vec<f32>>,
    rstd1: Vec<Vec<f32>>,
    qkv: Vec<Vec<f32>>,
    att: Vec<Vec<f32>>,
    y: Vec<Vec<f32>>,
    resid_mid: Vec<Vec<f32>>,
    h2: Vec<Vec<f32>>,
    mean2: Vec<Vec<f32>>,
    rstd2: Vec<Vec<f32>>,
    pre: Vec<Vec<f32>>,
    act: Vec<Vec<f32>>,
    /// GPT-2: the GELU's tanh per element of `pre` (n, f), saved for the backward pass.
    gelu_t: Vec<Vec<f32>>,
    hf: Vec<f32>,
    meanf: Vec<f32>,
    rstdf: Vec<f32>,
    logits: Vec<f32>,
    // backward scratch
    dres: Vec<f32>,
    dh: Vec<f32>,
    dqkv: Vec<f32>,
    dy: Vec<f32>,
    dpre: Vec<f32>,
    dact: Vec<f32>,
    /// Per-thread scratch (attention `dP`, t × t; norms `dn`, c).
    scratch: Vec<f32>,
}

/// A raw pointer that may be shared with the pool's workers (each writes its own part).
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: used only for disjoint writes inside one `ThreadPool::run`, which returns after
// every worker is done.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// The shards' base address, handed to the pool's workers (thread `i` uses shard `i`).
#[derive(Clone, Copy)]
struct ShardsPtr(*mut FusedModel);
// SAFETY: each worker dereferences only its own shard inside one `ThreadPool::run`.
unsafe impl Send for ShardsPtr {}
unsafe impl Sync for ShardsPtr {}

impl ShardsPtr {
    fn get(self, i: usize) -> *mut FusedModel {
        // SAFETY (of the callers' use): `i` < the number of shards.
        unsafe { self.0.add(i) }
    }
}

impl Shared {
    /// The address (a method, so closures capture the `Sync` wrapper, not the field).
    fn ptr(self) -> *mut f32 {
        self.0
    }

    /// # Safety
    /// `start..start + len` must be in bounds and written by this thread alone.
    unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// The transformer's parameters and gradients in flat f32 buffers, with a hand-written
/// forward and backward pass.
pub struct FusedModel {
    cfg: ModelConfig,
    isa: Isa,
    pool: ThreadPool,
    params_info: Vec<ParamInfo>,
    /// All parameters, in [`FusedModel::params_info`] order.
    pub params: Vec<f32>,
    /// Their gradients, accumulated by [`FusedModel::step`] until [`FusedModel::zero_grads`].
    pub grads: Vec<f32>,
    embed: Slot,
    pos_embed: Option<Slot>,
    layers: Vec<LayerP>,
    final_norm: NormP,
    /// The output projection; the token embedding (read as `[v, c]`) when tied.
    head: Lin,
    rms: bool,
    /// RoPE tables (context × rope_dim/2).
    rope: Option<(Vec<f32>, Vec<f32>)>,
    ws: Workspace,
    /// Data-parallel replicas, one per thread of `pool` (none with one thread): each has
    /// a one-thread pool, a copy of the parameters, its own gradients and workspace, and
    /// runs forward and backward on its share of the batch's sequences with no
    /// synchronisation until the gradients are summed. Splitting every product and row
    /// kernel between threads instead costs ~100 barriers a step, each waiting for the
    /// slower thread, and both threads pack the same operands.
    shards: Vec<FusedModel>,
    /// In a shard during [`FusedModel::run_sharded`]: the address of the master's
    /// parameters, read in place instead of copied each step (0 otherwise).
    ext_params: usize,
    /// In shard 0 during a sharded run: the master's gradients, accumulated into
    /// directly, so one shard needs neither zeroing nor summing (0 otherwise).
    ext_grads: usize,
}

fn thread_count(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        lamina_core::settings::cpus()
    }
}

/// Floats of saved activations and scratch the fused engine allocates for a `b × t` batch
/// of a model shaped `cfg` run on `threads` threads (see [`Workspace`]); saturates
/// instead of overflowing, so absurd shapes give a huge number rather than a panic.
pub fn workspace_floats(cfg: &ModelConfig, b: usize, t: usize, threads: usize) -> u64 {
    let m = |a: u64, x: u64| a.saturating_mul(x);
    let n = m(b as u64, t as u64);
    let (c, l, f, qd) = (cfg.hidden_size as u64, cfg.num_layers as u64, cfg.ffn_dim as u64, cfg.q_dim() as u64);
    let qkvd = qd.saturating_add(m(2, cfg.kv_dim() as u64));
    let gpt2 = cfg.architecture == Architecture::Gpt2;
    // The MLP pre-activation: one projection (GPT-2) or gate and up side by side (Llama).
    let pre_w = if gpt2 { f } else { m(2, f) };
    let gelu_t = if gpt2 { f } else { 0 };
    let row = |parts: &[u64]| parts.iter().fold(0u64, |a, &x| a.saturating_add(x));
    let att = m(m(b as u64, cfg.num_heads as u64), m(t as u64, t as u64));
    let per_layer = m(n, row(&[m(4, c), qkvd, qd, pre_w, f, gelu_t, 4])).saturating_add(att);
    let rest = m(n, row(&[m(3, c), cfg.vocab_size as u64, qkvd, qd, pre_w, f, 2])).saturating_add(m(n, c));
    let scratch = m(threads as u64, c.max(m(t as u64, t as u64)).saturating_add(16));
    m(l, per_layer).saturating_add(rest).saturating_add(scratch)
}

impl FusedModel {
    /// Copies `model`'s f32 parameters into flat buffers. `threads = 0` uses every CPU;
    /// `isa` picks the kernel build ([`Isa::best`] normally).
    pub fn from_trainable(model: &TrainableModel, threads: usize, isa: Isa) -> Result<Self> {
        let cfg = model.config().clone();
        let mut params_info = Vec::new();
        let mut params = Vec::new();
        for (name, var) in model.named_params() {
            let t = var.as_tensor().to_dtype(candle_core::DType::F32).and_then(|t| t.flatten_all()).map_err(candle_err)?;
            let v = t.to_vec1::<f32>().map_err(candle_err)?;
            params_info.push(ParamInfo { name, shape: var.dims().to_vec(), offset: params.len(), len: v.len() });
            params.extend_from_slice(&v);
        }
        let index: HashMap<&str, &ParamInfo> = params_info.iter().map(|p| (p.name.as_str(), p)).collect();
        let slot =
            |name: &str| -> Result<Slot> { index.get(name).map(|p| Slot { off: p.offset, len: p.len }).ok_or_else(|| Error::MissingTensor(name.to_string())) };
        let opt_slot = |name: &str| index.get(name).map(|p| Slot { off: p.offset, len: p.len });
        let gpt2 = cfg.architecture == Architecture::Gpt2;
        let lin = |name: &str, in_dim: usize, out_dim: usize| -> Result<Lin> {
            let w = slot(&format!("{name}.weight"))?;
            if w.len != in_dim * out_dim {
                return Err(Error::InvalidConfig(format!("{name}: {} weights for {in_dim}×{out_dim}", w.len)));
            }
            // GPT-2 Conv1D stores [in, out]; torch Linear stores [out, in].
            let (w_rs, w_cs) = if gpt2 { (out_dim as isize, 1) } else { (1, in_dim as isize) };
            Ok(Lin { w, b: opt_slot(&format!("{name}.bias")), in_dim, out_dim, w_rs, w_cs })
        };
        let norm = |name: &str| -> Result<NormP> { Ok(NormP { w: slot(&format!("{name}.weight"))?, b: opt_slot(&format!("{name}.bias")) }) };
        let (c, f, qd, kvd) = (cfg.hidden_size, cfg.ffn_dim, cfg.q_dim(), cfg.kv_dim());
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let l = if gpt2 {
                let p = format!("h.{i}");
                LayerP {
                    norm1: norm(&format!("{p}.ln_1"))?,
                    qkv: vec![(lin(&format!("{p}.attn.c_attn"), c, 3 * c)?, 0)],
                    o: lin(&format!("{p}.attn.c_proj"), c, c)?,
                    norm2: norm(&format!("{p}.ln_2"))?,
                    mlp_in: vec![(lin(&format!("{p}.mlp.c_fc"), c, f)?, 0)],
                    mlp_out: lin(&format!("{p}.mlp.c_proj"), f, c)?,
                }
            } else {
                let p = format!("model.layers.{i}");
                LayerP {
                    norm1: norm(&format!("{p}.input_layernorm"))?,
                    qkv: vec![
                        (lin(&format!("{p}.self_attn.q_proj"), c, qd)?, 0),
                        (lin(&format!("{p}.self_attn.k_proj"), c, kvd)?, qd),
                        (lin(&format!("{p}.self_attn.v_proj"), c, kvd)?, qd + kvd),
                    ],
                    o: lin(&format!("{p}.self_attn.o_proj"), qd, c)?,
                    norm2: norm(&format!("{p}.post_attention_layernorm"))?,
                    mlp_in: vec![(lin(&format!("{p}.mlp.gate_proj"), c, f)?, 0), (lin(&format!("{p}.mlp.up_proj"), c, f)?, f)],
                    mlp_out: lin(&format!("{p}.mlp.down_proj"), f, c)?,
                }
            };
            layers.push(l);
        }
        let (embed, pos_embed, final_norm) = if gpt2 {
            (slot("wte.weight")?, Some(slot("wpe.weight")?), norm("ln_f")?)
        } else {
            (slot("model.embed_tokens.weight")?, None, norm("model.norm")?)
        };
        let v = cfg.vocab_size;
        let head = if gpt2 || cfg.tied_embeddings {
            // logits = h · E^T with E stored [v, c]: Wt(i, o) = E[o, i].
            Lin { w: embed, b: None, in_dim: c, out_dim: v, w_rs: 1, w_cs: c as isize }
        } else {
            lin("lm_head", c, v)?
        };
        let rope = if gpt2 || cfg.rope_dim == 0 {
            None
        } else {
            let inv = cfg.rope_inv_freq();
            let half = cfg.rope_dim / 2;
            let mut cos = Vec::with_capacity(cfg.context_length * half);
            let mut sin = Vec::with_capacity(cfg.context_length * half);
            for p in 0..cfg.context_length {
                for fr in &inv[..half] {
                    let a = p as f64 * *fr as f64;
                    cos.push(a.cos() as f32);
                    sin.push(a.sin() as f32);
                }
            }
            Some((cos, sin))
        };
        let grads = vec![0f32; params.len()];
        let mut fm = FusedModel {
            rms: !gpt2,
            cfg,
            isa: if isa.supported() { isa } else { Isa::Scalar },
            pool: ThreadPool::new(thread_count(threads)),
            params_info,
            params,
            grads,
            embed,
            pos_embed,
            layers,
            final_norm,
            head,
            rope,
            ws: Workspace::default(),
            shards: Vec::new(),
            ext_params: 0,
            ext_grads: 0,
        };
        if fm.pool.threads() > 1 {
            fm.shards = (0..fm.pool.threads()).map(|_| fm.replica()).collect();
        }
        Ok(fm)
    }

    /// A one-thread copy of this model (same layout and values, zero gradients).
    fn replica(&self) -> FusedModel {
        FusedModel {
            cfg: self.cfg.clone(),
            isa: self.isa,
            pool: ThreadPool::new(1),
            params_info: self.params_info.clone(),
            params: Vec::new(),
            grads: vec![0f32; self.grads.len()],
            embed: self.embed,
            pos_embed: self.pos_embed,
            layers: self.layers.clone(),
            final_norm: self.final_norm,
            head: self.head,
            rms: self.rms,
            rope: self.rope.clone(),
            ws: Workspace::default(),
            shards: Vec::new(),
            ext_params: 0,
            ext_grads: 0,
        }
    }

    /// The parameters the passes read: a shard's view of its master's during a run.
    fn p(&self) -> &[f32] {
        if self.ext_params != 0 {
            // SAFETY: set by `run_sharded` to the master's parameter buffer (as long as
            // `grads`), which outlives the run and is not written during it.
            unsafe { std::slice::from_raw_parts(self.ext_params as *const f32, self.grads.len()) }
        } else {
            &self.params
        }
    }

    /// Where the backward pass adds gradients.
    fn g_ptr(&mut self) -> *mut f32 {
        if self.ext_grads != 0 {
            self.ext_grads as *mut f32
        } else {
            self.grads.as_mut_ptr()
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Parameter names, shapes and places in [`FusedModel::params`] (name-sorted, the
    /// order of [`TrainableModel::named_params`]).
    pub fn params_info(&self) -> &[ParamInfo] {
        &self.params_info
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Turns the data-parallel shards off (every product and row kernel split between
    /// threads instead) or back on; on by default with more than one thread. For
    /// benchmarks comparing the two.
    pub fn set_data_parallel(&mut self, on: bool) {
        if !on {
            self.shards.clear();
        } else if self.shards.is_empty() && self.pool.threads() > 1 {
            self.shards = (0..self.pool.threads()).map(|_| self.replica()).collect();
        }
    }

    pub(crate) fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Writes the parameters back into `model`'s variables (for checkpoints, export and
    /// sampling with the candle model).
    pub fn store_into(&self, model: &TrainableModel) -> Result<()> {
        let vars: HashMap<String, candle_core::Var> = model.named_params().into_iter().collect();
        for p in &self.params_info {
            let var = vars.get(&p.name).ok_or_else(|| Error::MissingTensor(p.name.clone()))?;
            let t = Tensor::from_slice(&self.params[p.offset..p.offset + p.len], p.shape.as_slice(), &Device::Cpu)
                .and_then(|t| t.to_dtype(var.dtype()))
                .map_err(candle_err)?;
            var.set(&t).map_err(candle_err)?;
        }
        Ok(())
    }

    /// The gradient of parameter `name` (for tests).
    pub fn grad(&self, name: &str) -> Option<&[f32]> {
        self.params_info.iter().find(|p| p.name == name).map(|p| &self.grads[p.offset..p.offset + p.len])
    }

    pub fn zero_grads(&mut self) {
        self.grads.fill(0.0);
    }

    /// Mean next-token loss of `tokens` (b × t, row-major) against `targets`, without
    /// gradients.
    pub fn loss(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize) -> Result<f64> {
        self.run(tokens, targets, b, t, None)
    }

    /// Mean loss of the batch, and its gradient times `grad_scale` added to
    /// [`FusedModel::grads`] (`grad_scale = 1 / accumulation steps`).
    pub fn step(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, grad_scale: f32) -> Result<f64> {
        self.run(tokens, targets, b, t, Some(grad_scale))
    }

    fn check_batch(&self, tokens: &[u32], targets: &[u32], b: usize, t: usize) -> Result<()> {
        if b == 0 || t == 0 {
            return Err(Error::InvalidInput("empty token batch".into()));
        }
        if t > self.cfg.context_length {
            return Err(Error::PromptTooLong { prompt_tokens: t, context_length: self.cfg.context_length });
        }
        if tokens.len() != b * t || targets.len() != b * t {
            return Err(Error::InvalidInput(format!("{} tokens and {} targets for a {b}×{t} batch", tokens.len(), targets.len())));
        }
        let v = self.cfg.vocab_size as u32;
        if let Some(bad) = tokens.iter().chain(targets).find(|&&x| x >= v) {
            return Err(Error::InvalidInput(format!("token id {bad} is outside the vocabulary ({v})")));
        }
        Ok(())
    }

    /// Floats of saved activations and scratch for a `b × t` batch (see [`Workspace`]).
    pub fn workspace_floats(&self, b: usize, t: usize) -> u64 {
        workspace_floats(&self.cfg, b, t, self.pool.threads())
    }

    /// Allocates the workspace for a `b × t` batch, refusing (instead of letting the
    /// allocator abort the process) when it would not fit in the memory the system reports
    /// as available: the saved attention probabilities grow as `layers · b · heads · t²`.
    fn ensure_workspace(&mut self, b: usize, t: usize) -> Result<()> {
        if self.ws.b == b && self.ws.t == t {
            return Ok(());
        }
        // The old workspace is given back first: it is not needed beside the new one.
        self.ws = Workspace::default();
        let bytes = self.workspace_floats(b, t).saturating_mul(4);
        lamina_core::memory::check_fits(
            &format!(
                "the fused engine's activations for a batch of {b} × {t} tokens (lower batch_size or block_size and \
                 raise grad_accum, or use engine = \"autograd\")"
            ),
            bytes,
        )?;
        let cfg = &self.cfg;
        let n = b * t;
        let (c, l) = (cfg.hidden_size, cfg.num_layers);
        let qkvd = cfg.q_dim() + 2 * cfg.kv_dim();
        let pre_w: usize = self.layers.first().map_or(0, |lp| lp.mlp_in.iter().map(|(li, _)| li.out_dim).sum());
        let f = cfg.ffn_dim;
        let per = |len: usize| (0..l).map(|_| vec![0f32; len]).collect::<Vec<_>>();
        let threads = self.pool.threads();
        self.ws = Workspace {
            b,
            t,
            resid: (0..=l).map(|_| vec![0f32; n * c]).collect(),
            h1: per(n * c),
            mean1: per(n),
            rstd1: per(n),
            qkv: per(n * qkvd),
            att: per(b * cfg.num_heads * t * t),
            y: per(n * cfg.q_dim()),
            resid_mid: per(n * c),
            h2: per(n * c),
            mean2: per(n),
            rstd2: per(n),
            pre: per(n * pre_w),
            act: per(n * f),
            gelu_t: per(if self.rms { 0 } else { n * f }),
            hf: vec![0f32; n * c],
            meanf: vec![0f32; n],
            rstdf: vec![0f32; n],
            logits: vec![0f32; n * cfg.vocab_size],
            dres: vec![0f32; n * c],
            dh: vec![0f32; n * c],
            dqkv: vec![0f32; n * qkvd],
            dy: vec![0f32; n * cfg.q_dim()],
            dpre: vec![0f32; n * pre_w],
            dact: vec![0f32; n * f],
            scratch: vec![0f32; threads * (c.max(t * t) + 16)],
        };
        Ok(())
    }

    /// Runs `f(range)` over row ranges of `0..rows` split between the threads.
    fn par_rows(pool: &ThreadPool, rows: usize, f: &(dyn Fn(std::ops::Range<usize>, usize) + Sync)) {
        if rows < 64 {
            f(0..rows, 0);
            return;
        }
        pool.run(&|i, n| {
            let r = ThreadPool::split(rows, i, n, 1);
            if !r.is_empty() {
                f(r, i);
            }
        });
    }

    fn wt(&self, lin: &Lin) -> Mat {
        Mat { ptr: self.p()[lin.w.off..].as_ptr(), rows: lin.in_dim, cols: lin.out_dim, rs: lin.w_rs, cs: lin.w_cs }
    }

    /// `out[:, col0..col0+out] = x · Wt + b` (or `+=` with `accumulate`).
    fn linear_fwd(&self, lin: &Lin, x: Mat, out: MatMut, accumulate: bool) {
        matmul(&self.pool, out, x, self.wt(lin), accumulate);
    }

    /// Gradients of `y = x · Wt + b` given `dy`: `dWt += xᵀ · dy`, `db += Σ dy`, and
    /// `dx (=|+=) dy · Wtᵀ` when `dx` is given.
    fn linear_bwd(&mut self, lin: &Lin, x: Mat, dy: Mat, dx: Option<(MatMut, bool)>) {
        let wt = self.wt(lin);
        if let Some((dx, acc)) = dx {
            matmul(&self.pool, dx, dy, wt.t(), acc);
        }
        // SAFETY: `wt` points into `params`; `grads` has the same length.
        let g = self.g_ptr();
        let dwt = unsafe { MatMut::like(wt, self.p().as_ptr(), g) };
        matmul(&self.pool, dwt, x.t(), dy, true);
        if let Some(bs) = lin.b {
            let gp = Shared(self.g_ptr());
            let (isa, out) = (self.isa, lin.out_dim);
            let dyp = Shared(dy.ptr as *mut f32);
            let (rows, ld) = (dy.rows, dy.rs as usize);
            self.pool.run(&|i, n| {
                let cr = ThreadPool::split(out, i, n, 8);
                if cr.is_empty() {
                    return;
                }
                // SAFETY: `dy` spans `rows` rows of stride `ld` (read only here); each
                // thread adds into its own column range of the bias gradient.
                let dyall = unsafe { std::slice::from_raw_parts(dyp.ptr() as *const f32, (rows - 1) * ld + out) };
                let db = unsafe { gp.slice(bs.off + cr.start, cr.len()) };
                kernels::colsum_acc(isa, dyall, ld, cr.start, db);
            });
        }
    }

    fn norm_fwd(&self, np: NormP, x: &[f32], out: &mut [f32], mean: &mut [f32], rstd: &mut [f32]) {
        let c = self.cfg.hidden_size;
        let (isa, rms, eps) = (self.isa, self.rms, self.cfg.norm_eps);
        let w = &self.p()[np.w.off..np.w.off + np.w.len];
        let b = np.b.map(|s| &self.p()[s.off..s.off + s.len]);
        let (o, m, r) = (Shared(out.as_mut_ptr()), Shared(mean.as_mut_ptr()), Shared(rstd.as_mut_ptr()));
        Self::par_rows(&self.pool, mean.len(), &|rg, _| {
            // SAFETY: each thread writes its own rows.
            let (o, m, r) = unsafe { (o.slice(rg.start * c, rg.len() * c), m.slice(rg.start, rg.len()), r.slice(rg.start, rg.len())) };
            kernels::norm_fwd(isa, &x[rg.start * c..rg.end * c], w, b, rms, eps, o, m, r);
        });
    }

    /// `dx += norm'(dout)`, and the norm's weight/bias gradients.
    #[allow(clippy::too_many_arguments)]
    fn norm_bwd(&mut self, np: NormP, dout: &[f32], x: &[f32], mean: &[f32], rstd: &[f32], dx: &mut [f32], scratch: &mut [f32]) {
        let c = self.cfg.hidden_size;
        let (isa, rms) = (self.isa, self.rms);
        let w = &self.p()[np.w.off..np.w.off + np.w.len];
        let dxp = Shared(dx.as_mut_ptr());
        let sp = Shared(scratch.as_mut_ptr());
        let per = scratch.len() / self.pool.threads();
        Self::par_rows(&self.pool, mean.len(), &|rg, ti| {
            // SAFETY: own rows of dx, own scratch part.
            let (d, s) = unsafe { (dxp.slice(rg.start * c, rg.len() * c), sp.slice(ti * per, per)) };
            kernels::norm_bwd_dx(isa, &dout[rg.start * c..rg.end * c], &x[rg.start * c..rg.end * c], w, &mean[rg.clone()], &rstd[rg], rms, d, s);
        });
        let gp = Shared(self.g_ptr());
        self.pool.run(&|i, n| {
            let cr = ThreadPool::split(c, i, n, 8);
            if cr.is_empty() {
                return;
            }
            // SAFETY: each thread owns a column range of the weight/bias gradients.
            let dw = unsafe { gp.slice(np.w.off + cr.start, cr.len()) };
            let db = np.b.map(|b| unsafe { gp.slice(b.off + cr.start, cr.len()) });
            kernels::norm_bwd_params(isa, dout, x, c, cr.start, mean, rstd, dw, db);
        });
    }

    fn run(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, grad_scale: Option<f32>) -> Result<f64> {
        self.check_batch(tokens, targets, b, t)?;
        if self.shards.len() > 1 && b >= self.shards.len() {
            return self.run_sharded(tokens, targets, b, t, grad_scale);
        }
        self.run_checked(tokens, targets, b, t, grad_scale)
    }

    /// Data-parallel [`FusedModel::run`]: thread `i` copies the parameters into shard `i`
    /// and runs its contiguous share of the sequences there; the shards' gradients, each
    /// scaled by its share of the batch, are then summed into `grads`. The mean loss is
    /// the share-weighted mean of the shards' losses.
    fn run_sharded(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, grad_scale: Option<f32>) -> Result<f64> {
        let nt = self.shards.len();
        debug_assert_eq!(nt, self.pool.threads());
        for (i, sh) in self.shards.iter_mut().enumerate() {
            sh.ensure_workspace(ThreadPool::split(b, i, nt, 1).len(), t)?;
        }
        let mut losses = vec![0f64; nt];
        let with_grads = grad_scale.is_some();
        for (i, sh) in self.shards.iter_mut().enumerate() {
            sh.ext_params = self.params.as_ptr() as usize;
            sh.ext_grads = if i == 0 && with_grads { self.grads.as_mut_ptr() as usize } else { 0 };
        }
        {
            let shards = ShardsPtr(self.shards.as_mut_ptr());
            let lp = losses.as_mut_ptr() as usize;
            self.pool.run(&|i, _| {
                let r = ThreadPool::split(b, i, nt, 1);
                // SAFETY: thread i alone touches shard i and loss slot i.
                let sh = unsafe { &mut *shards.get(i) };
                let share = r.len() as f32 / b as f32;
                if with_grads && i > 0 {
                    sh.grads.fill(0.0);
                }
                let (lo, hi) = (r.start * t, r.end * t);
                let loss = sh.run_prepared(&tokens[lo..hi], &targets[lo..hi], r.len(), t, grad_scale.map(|g| g * share));
                unsafe { *(lp as *mut f64).add(i) = loss * share as f64 };
            });
        }
        for sh in &mut self.shards {
            sh.ext_params = 0;
            sh.ext_grads = 0;
        }
        if with_grads {
            let (isa, len) = (self.isa, self.grads.len());
            let gp = Shared(self.grads.as_mut_ptr());
            let shards = &self.shards;
            self.pool.run(&|i, n| {
                let r = ThreadPool::split(len, i, n, 1024);
                if r.is_empty() {
                    return;
                }
                // SAFETY: each thread sums its own range of the gradients.
                let g = unsafe { gp.slice(r.start, r.len()) };
                for sh in &shards[1..] {
                    kernels::add_into(isa, g, &sh.grads[r.clone()]);
                }
            });
        }
        Ok(losses.iter().sum())
    }

    fn run_checked(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, grad_scale: Option<f32>) -> Result<f64> {
        self.ensure_workspace(b, t)?;
        Ok(self.run_prepared(tokens, targets, b, t, grad_scale))
    }

    /// Forward (and backward with `grad_scale`) on a checked batch with its workspace in
    /// place; returns the mean loss.
    fn run_prepared(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, grad_scale: Option<f32>) -> f64 {
        let mut ws = std::mem::take(&mut self.ws);
        let loss = self.forward(&mut ws, tokens, targets, b, t, grad_scale.map(|g| g / (b * t) as f32));
        if grad_scale.is_some() {
            self.backward(&mut ws, tokens, b, t);
        }
        self.ws = ws;
        loss / (b * t) as f64
    }

    fn attn_shape(&self, t: usize) -> AttnShape {
        let cfg = &self.cfg;
        AttnShape {
            t,
            nh: cfg.num_heads,
            nkv: cfg.num_kv_heads,
            hd: cfg.head_dim,
            ld: cfg.q_dim() + 2 * cfg.kv_dim(),
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            window: cfg.sliding_window.unwrap_or(0),
        }
    }

    /// Forward pass; returns the summed loss. With `dlogit_scale` the logits buffer ends
    /// up holding d(loss · scale)/d(logits).
    fn forward(&mut self, ws: &mut Workspace, tokens: &[u32], targets: &[u32], b: usize, t: usize, dlogit_scale: Option<f32>) -> f64 {
        let cfg = self.cfg.clone();
        let (n, c, f, v) = (b * t, cfg.hidden_size, cfg.ffn_dim, cfg.vocab_size);
        let qd = cfg.q_dim();
        let isa = self.isa;

        // Embeddings (+ learned positions).
        {
            let e = &self.p()[self.embed.off..self.embed.off + self.embed.len];
            let pe = self.pos_embed.map(|s| &self.p()[s.off..s.off + s.len]);
            let out = Shared(ws.resid[0].as_mut_ptr());
            Self::par_rows(&self.pool, n, &|rg, _| {
                for row in rg {
                    // SAFETY: own row.
                    let o = unsafe { out.slice(row * c, c) };
                    let tok = tokens[row] as usize;
                    o.copy_from_slice(&e[tok * c..(tok + 1) * c]);
                    if let Some(pe) = pe {
                        let p = row % t;
                        for (x, y) in o.iter_mut().zip(&pe[p * c..(p + 1) * c]) {
                            *x += y;
                        }
                    }
                }
            });
        }

        for li in 0..cfg.num_layers {
            let lp = self.layers[li].clone();
            let (before, after) = ws.resid.split_at_mut(li + 1);
            let x_in = &before[li];
            let x_out = &mut after[0];
            self.norm_fwd(lp.norm1, x_in, &mut ws.h1[li], &mut ws.mean1[li], &mut ws.rstd1[li]);
            let h1 = Mat::rows_of(&ws.h1[li], n, c, c, 0);
            self.projections_fwd(&lp.qkv, h1, &mut ws.qkv[li], n);
            self.rope_rows(&mut ws.qkv[li], t, false);
            self.attention_fwd(&ws.qkv[li], &mut ws.att[li], &mut ws.y[li], b, t);
            // resid_mid = x_in + b_o + y · Wo
            self.add_bias_rows(x_in, lp.o.b, &mut ws.resid_mid[li]);
            self.linear_fwd(&lp.o, Mat::rows_of(&ws.y[li], n, qd, qd, 0), MatMut::rows_of(&mut ws.resid_mid[li], n, c, c, 0), true);
            self.norm_fwd(lp.norm2, &ws.resid_mid[li], &mut ws.h2[li], &mut ws.mean2[li], &mut ws.rstd2[li]);
            let h2 = Mat::rows_of(&ws.h2[li], n, c, c, 0);
            self.projections_fwd(&lp.mlp_in, h2, &mut ws.pre[li], n);
            {
                let pre = &ws.pre[li];
                let ap = Shared(ws.act[li].as_mut_ptr());
                let tp = Shared(ws.gelu_t[li].as_mut_ptr());
                let gpt2 = !self.rms;
                Self::par_rows(&self.pool, n, &|rg, _| {
                    // SAFETY: own rows.
                    let a = unsafe { ap.slice(rg.start * f, rg.len() * f) };
                    if gpt2 {
                        let th = unsafe { tp.slice(rg.start * f, rg.len() * f) };
                        kernels::gelu_fwd(isa, &pre[rg.start * f..rg.end * f], a, th);
                    } else {
                        kernels::swiglu_fwd(isa, &pre[rg.start * 2 * f..rg.end * 2 * f], f, a);
                    }
                });
            }
            self.add_bias_rows(&ws.resid_mid[li], lp.mlp_out.b, x_out);
            self.linear_fwd(&lp.mlp_out, Mat::rows_of(&ws.act[li], n, f, f, 0), MatMut::rows_of(x_out, n, c, c, 0), true);
        }

        let last = &ws.resid[cfg.num_layers];
        self.norm_fwd(self.final_norm, last, &mut ws.hf, &mut ws.meanf, &mut ws.rstdf);
        let head = self.head;
        self.linear_fwd(&head, Mat::rows_of(&ws.hf, n, c, c, 0), MatMut::rows_of(&mut ws.logits, n, v, v, 0), false);

        let threads = self.pool.threads();
        let mut partial = vec![0f64; threads];
        let pp = partial.as_mut_ptr() as usize;
        let lp = Shared(ws.logits.as_mut_ptr());
        Self::par_rows(&self.pool, n, &|rg, ti| {
            // SAFETY: own rows of the logits; own partial-sum slot.
            let rows = unsafe { lp.slice(rg.start * v, rg.len() * v) };
            let s = kernels::cross_entropy(isa, rows, v, &targets[rg], dlogit_scale);
            unsafe { *(pp as *mut f64).add(ti) += s };
        });
        partial.iter().sum()
    }

    /// Backward pass after [`FusedModel::forward`] with a gradient scale; adds into `grads`.
    fn backward(&mut self, ws: &mut Workspace, tokens: &[u32], b: usize, t: usize) {
        let cfg = self.cfg.clone();
        let (n, c, f, v) = (b * t, cfg.hidden_size, cfg.ffn_dim, cfg.vocab_size);
        let qd = cfg.q_dim();
        let isa = self.isa;
        let mut scratch = std::mem::take(&mut ws.scratch);

        // Head and final norm.
        let head = self.head;
        let dlogits = Mat::rows_of(&ws.logits, n, v, v, 0);
        self.linear_bwd(&head, Mat::rows_of(&ws.hf, n, c, c, 0), dlogits, Some((MatMut::rows_of(&mut ws.dh, n, c, c, 0), false)));
        ws.dres.fill(0.0);
        let last = &ws.resid[cfg.num_layers];
        self.norm_bwd(self.final_norm, &ws.dh, last, &ws.meanf, &ws.rstdf, &mut ws.dres, &mut scratch);

        for li in (0..cfg.num_layers).rev() {
            let lp = self.layers[li].clone();
            // MLP out: dact = dres · Woutᵀ
            self.linear_bwd(
                &lp.mlp_out,
                Mat::rows_of(&ws.act[li], n, f, f, 0),
                Mat::rows_of(&ws.dres, n, c, c, 0),
                Some((MatMut::rows_of(&mut ws.dact, n, f, f, 0), false)),
            );
            {
                let (pre, dact, th) = (&ws.pre[li], &ws.dact, &ws.gelu_t[li]);
                let dp = Shared(ws.dpre.as_mut_ptr());
                let gpt2 = !self.rms;
                Self::par_rows(&self.pool, n, &|rg, _| {
                    if gpt2 {
                        // SAFETY: own rows.
                        let d = unsafe { dp.slice(rg.start * f, rg.len() * f) };
                        kernels::gelu_bwd(isa, &pre[rg.start * f..rg.end * f], &th[rg.start * f..rg.end * f], &dact[rg.start * f..rg.end * f], d);
                    } else {
                        let d = unsafe { dp.slice(rg.start * 2 * f, rg.len() * 2 * f) };
                        kernels::swiglu_bwd(isa, &pre[rg.start * 2 * f..rg.end * 2 * f], &dact[rg.start * f..rg.end * f], f, d);
                    }
                });
            }
            self.projections_bwd(&lp.mlp_in, &ws.h2[li], &ws.dpre, &mut ws.dh, n);
            self.norm_bwd(lp.norm2, &ws.dh, &ws.resid_mid[li], &ws.mean2[li], &ws.rstd2[li], &mut ws.dres, &mut scratch);

            // Attention out: dy = dres · Woᵀ
            self.linear_bwd(
                &lp.o,
                Mat::rows_of(&ws.y[li], n, qd, qd, 0),
                Mat::rows_of(&ws.dres, n, c, c, 0),
                Some((MatMut::rows_of(&mut ws.dy, n, qd, qd, 0), false)),
            );
            self.attention_bwd(&ws.qkv[li], &ws.att[li], &ws.dy, &mut ws.dqkv, &mut scratch, b, t);
            self.rope_rows(&mut ws.dqkv, t, true);
            self.projections_bwd(&lp.qkv, &ws.h1[li], &ws.dqkv, &mut ws.dh, n);
            self.norm_bwd(lp.norm1, &ws.dh, &ws.resid[li], &ws.mean1[li], &ws.rstd1[li], &mut ws.dres, &mut scratch);
        }

        // Embeddings: scatter-add by columns, so threads never share a gradient element.
        let gp = Shared(self.g_ptr());
        let (eo, po) = (self.embed.off, self.pos_embed.map(|s| s.off));
        let dres = &ws.dres;
        self.pool.run(&|i, nt| {
            let cr = ThreadPool::split(c, i, nt, 8);
            if cr.is_empty() {
                return;
            }
            for row in 0..n {
                let src = &dres[row * c + cr.start..row * c + cr.end];
                let tok = tokens[row] as usize;
                // SAFETY: this thread's columns of row `tok` (and of position row % t).
                let de = unsafe { gp.slice(eo + tok * c + cr.start, cr.len()) };
                for (d, s) in de.iter_mut().zip(src) {
                    *d += s;
                }
                if let Some(po) = po {
                    let dp = unsafe { gp.slice(po + (row % t) * c + cr.start, cr.len()) };
                    for (d, s) in dp.iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        });
        ws.scratch = scratch;
    }

    /// Causal attention of every (sequence, key/value head) pair, split between threads:
    /// per query head `S = Q·Kᵀ` and `Y = softmax(S)·V` as small strided products read
    /// straight from `qkv` (no transposes), with the probabilities kept in `att`
    /// (b, nh, t, t) for the backward pass. Queries go in blocks of [`ATT_QB`] rows, each
    /// against the keys it can see (see [`causal_blocks`]), which skips a quarter of
    /// the products at t = 64; entries left uncomputed are zeroed by the softmax.
    fn attention_fwd(&self, qkv: &[f32], att: &mut [f32], y: &mut [f32], b: usize, t: usize) {
        let sh = self.attn_shape(t);
        let (nh, nkv, hd, ld) = (sh.nh, sh.nkv, sh.hd, sh.ld);
        let (qd, rep, isa) = (nh * hd, nh / nkv, self.isa);
        let (ap, yp) = (Shared(att.as_mut_ptr()), Shared(y.as_mut_ptr()));
        let jobs = b * nkv;
        let blocks = causal_blocks(&sh);
        self.pool.run(&|i, nt| {
            for job in ThreadPool::split(jobs, i, nt, 1) {
                let (bi, g) = (job / nkv, job % nkv);
                let base = bi * t * ld;
                let (koff, voff) = (base + qd + g * hd, base + qd + nkv * hd + g * hd);
                for h in g * rep..(g + 1) * rep {
                    // SAFETY: this job owns head h's probabilities of sequence bi and the
                    // rows of `y` of sequence bi in head h's columns.
                    let s = unsafe { ap.slice((bi * nh + h) * t * t, t * t) };
                    for &(r0, r1, k0) in &blocks {
                        let q = Mat::rows_of(qkv, r1 - r0, hd, ld, base + r0 * ld + h * hd);
                        let k = Mat::rows_of(qkv, r1 - k0, hd, ld, koff + k0 * ld);
                        // S[r0..r1, k0..r1] (t-strided rows of the head's t × t scores)
                        let sb = MatMut { ptr: s[r0 * t + k0..].as_mut_ptr(), rows: r1 - r0, cols: r1 - k0, rs: t as isize, cs: 1 };
                        unsafe { gemm::matmul_serial(sb, q, k.t(), false) };
                    }
                    kernels::softmax_causal(isa, s, sh);
                    for &(r0, r1, k0) in &blocks {
                        let v = Mat::rows_of(qkv, r1 - k0, hd, ld, voff + k0 * ld);
                        let pb = Mat { ptr: s[r0 * t + k0..].as_ptr(), rows: r1 - r0, cols: r1 - k0, rs: t as isize, cs: 1 };
                        let yb = MatMut { ptr: unsafe { yp.ptr().add((bi * t + r0) * qd + h * hd) }, rows: r1 - r0, cols: hd, rs: qd as isize, cs: 1 };
                        unsafe { gemm::matmul_serial(yb, pb, v, false) };
                    }
                }
            }
        });
    }

    /// Backward of [`FusedModel::attention_fwd`]: from `dy` (n, q_dim) writes the query,
    /// key and value gradients into `dqkv` (the layout of `qkv`), summing the key/value
    /// gradients over each group's query heads. `scratch` gives each thread t × t floats.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(&self, qkv: &[f32], att: &[f32], dy: &[f32], dqkv: &mut [f32], scratch: &mut [f32], b: usize, t: usize) {
        let sh = self.attn_shape(t);
        let (nh, nkv, hd, ld) = (sh.nh, sh.nkv, sh.hd, sh.ld);
        let (qd, rep, isa) = (nh * hd, nh / nkv, self.isa);
        let (dp_ptr, sp) = (Shared(dqkv.as_mut_ptr()), Shared(scratch.as_mut_ptr()));
        let per = scratch.len() / self.pool.threads();
        let jobs = b * nkv;
        let blocks = causal_blocks(&sh);
        self.pool.run(&|i, nt| {
            // SAFETY: this thread's part of the scratch.
            let ds = unsafe { sp.slice(i * per, t * t) };
            for job in ThreadPool::split(jobs, i, nt, 1) {
                let (bi, g) = (job / nkv, job % nkv);
                let base = bi * t * ld;
                let (koff, voff) = (base + qd + g * hd, base + qd + nkv * hd + g * hd);
                // Rows r0..r1 of sequence bi in the columns starting at `off`: this job's own.
                let dview = |off: usize, r0: usize, r1: usize| MatMut {
                    ptr: unsafe { dp_ptr.ptr().add(off + r0 * ld) },
                    rows: r1 - r0,
                    cols: hd,
                    rs: ld as isize,
                    cs: 1,
                };
                // dK and dV sum over blocks and query heads: start from zero.
                for row in 0..t {
                    for off in [koff, voff] {
                        unsafe { dp_ptr.slice(off + row * ld, hd) }.fill(0.0);
                    }
                }
                for h in g * rep..(g + 1) * rep {
                    let qoff = base + h * hd;
                    let p = &att[(bi * nh + h) * t * t..(bi * nh + h + 1) * t * t];
                    let dyoff = bi * t * qd + h * hd;
                    // dP = dY·Vᵀ on the visible blocks, zero elsewhere.
                    for &(r0, r1, k0) in &blocks {
                        let dyb = Mat::rows_of(dy, r1 - r0, hd, qd, dyoff + r0 * qd);
                        let v = Mat::rows_of(qkv, r1 - k0, hd, ld, voff + k0 * ld);
                        let db = MatMut { ptr: ds[r0 * t + k0..].as_mut_ptr(), rows: r1 - r0, cols: r1 - k0, rs: t as isize, cs: 1 };
                        unsafe { gemm::matmul_serial(db, dyb, v.t(), false) };
                        for row in ds[r0 * t..r1 * t].chunks_exact_mut(t) {
                            row[..k0].fill(0.0);
                            row[r1..].fill(0.0);
                        }
                    }
                    // dS in place; then dQ = dS·K, dK += dSᵀ·Q, dV += Pᵀ·dY per block.
                    kernels::softmax_bwd(isa, p, ds, t, sh.scale);
                    for &(r0, r1, k0) in &blocks {
                        let dsb = Mat { ptr: ds[r0 * t + k0..].as_ptr(), rows: r1 - r0, cols: r1 - k0, rs: t as isize, cs: 1 };
                        let pb = Mat { ptr: p[r0 * t + k0..].as_ptr(), rows: r1 - r0, cols: r1 - k0, rs: t as isize, cs: 1 };
                        let q = Mat::rows_of(qkv, r1 - r0, hd, ld, qoff + r0 * ld);
                        let k = Mat::rows_of(qkv, r1 - k0, hd, ld, koff + k0 * ld);
                        let dyb = Mat::rows_of(dy, r1 - r0, hd, qd, dyoff + r0 * qd);
                        unsafe {
                            gemm::matmul_serial(dview(qoff, r0, r1), dsb, k, false);
                            gemm::matmul_serial(dview(koff, k0, r1), dsb.t(), q, true);
                            gemm::matmul_serial(dview(voff, k0, r1), pb.t(), dyb, true);
                        }
                    }
                }
            }
        });
    }

    /// Projections of `x` (n, c) into column ranges of `out` (n, Σ out_dim): q/k/v into
    /// `qkv`, gate/up (or c_fc) into the MLP pre-activation; each starts from its bias.
    fn projections_fwd(&self, lins: &[(Lin, usize)], x: Mat, out: &mut [f32], n: usize) {
        let ld: usize = lins.iter().map(|(l, _)| l.out_dim).sum();
        for (lin, col0) in lins {
            let biased = self.fill_bias(lin, out, ld, *col0, n);
            self.linear_fwd(lin, x, MatMut::rows_of(out, n, lin.out_dim, ld, *col0), biased);
        }
    }

    /// Backward of [`FusedModel::projections_fwd`]: weight and bias gradients from the
    /// column ranges of `dout`, and `dx = Σ dout_range · Wtᵀ` written into `dx` (n, c).
    fn projections_bwd(&mut self, lins: &[(Lin, usize)], x: &[f32], dout: &[f32], dx: &mut [f32], n: usize) {
        let c = self.cfg.hidden_size;
        let ld: usize = lins.iter().map(|(l, _)| l.out_dim).sum();
        for (k, (lin, col0)) in lins.iter().enumerate() {
            let dy = Mat::rows_of(dout, n, lin.out_dim, ld, *col0);
            self.linear_bwd(lin, Mat::rows_of(x, n, c, c, 0), dy, Some((MatMut::rows_of(dx, n, c, c, 0), k > 0)));
        }
    }

    /// RoPE on the query and key heads of every row of a `qkv`-shaped buffer (positions
    /// `row % t`); `inverse` for the backward pass. No-op for GPT-2.
    fn rope_rows(&self, buf: &mut [f32], t: usize, inverse: bool) {
        let Some((cos, sin)) = &self.rope else { return };
        let cfg = &self.cfg;
        let ld = cfg.q_dim() + 2 * cfg.kv_dim();
        let (heads, hd, half, isa) = (cfg.num_heads + cfg.num_kv_heads, cfg.head_dim, cfg.rope_dim / 2, self.isa);
        let bp = Shared(buf.as_mut_ptr());
        Self::par_rows(&self.pool, buf.len() / ld, &|rg, _| {
            // SAFETY: own rows.
            let x = unsafe { bp.slice(rg.start * ld, rg.len() * ld) };
            kernels::rope(isa, x, ld, heads, hd, half, rg.start, t, cos, sin, inverse);
        });
    }

    /// Fills `out`'s columns of `lin` with its bias; returns whether it did (then the
    /// product is accumulated on top).
    fn fill_bias(&self, lin: &Lin, out: &mut [f32], ld: usize, col0: usize, rows: usize) -> bool {
        let Some(bs) = lin.b else { return false };
        let bias = &self.p()[bs.off..bs.off + bs.len];
        let (isa, op) = (self.isa, Shared(out.as_mut_ptr()));
        Self::par_rows(&self.pool, rows, &|rg, _| {
            // SAFETY: own rows.
            let o = unsafe { op.slice(rg.start * ld, rg.len() * ld) };
            kernels::fill_bias(isa, o, ld, col0, bias);
        });
        true
    }

    /// `out = x + bias` row by row (a copy without bias).
    fn add_bias_rows(&self, x: &[f32], bias: Option<Slot>, out: &mut [f32]) {
        let c = self.cfg.hidden_size;
        let bias = bias.map(|s| &self.p()[s.off..s.off + s.len]);
        let (isa, op) = (self.isa, Shared(out.as_mut_ptr()));
        Self::par_rows(&self.pool, x.len() / c, &|rg, _| {
            // SAFETY: own rows.
            let o = unsafe { op.slice(rg.start * c, rg.len() * c) };
            kernels::add_bias_rows(isa, &x[rg.start * c..rg.end * c], bias, c, o);
        });
    }
}

pub mod adamw;
pub use adamw::FusedAdamW;

/// Query rows per causal block of the attention products.
const ATT_QB: usize = 32;

/// `(first row, end row, first key)` of each block of [`ATT_QB`] query rows: the rows
/// see keys `first key .. end row` at most (causal, and the window's start for the
/// block's first row).
fn causal_blocks(sh: &AttnShape) -> Vec<(usize, usize, usize)> {
    (0..sh.t).step_by(ATT_QB).map(|r0| (r0, (r0 + ATT_QB).min(sh.t), sh.lo(r0))).collect()
}
