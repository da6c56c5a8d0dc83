//! The pre-training loop.

use crate::checkpoint::{load_checkpoint, prune_checkpoints, run_dir_of, save_checkpoint, TrainerState, FORMAT_VERSION};
use crate::config::TrainConfig;
use crate::data::{prepare, Dataset, Split, TokenizerSpec};
use crate::fused::{FusedAdamW, FusedModel};
use crate::memory::TrainingMemory;
use crate::optim::{clip_grad_norm, lr_at, AdamW, AdamWConfig};
use crate::plot::plot_log;
use candle_core::{DType, Device, Tensor, Var};
use lamina_core::{Error, Result};
use lamina_kernels::cpu::Isa;
use lamina_model::trainable::{candle_err, SplitMix64, TrainableModel};
use lamina_tokenizer::Tokenizer;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Metrics of one optimizer step.
#[derive(Debug, Clone)]
pub struct StepMetrics {
    /// Steps completed (1 after the first update).
    pub step: usize,
    pub max_iters: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Training tokens per second over this run so far.
    pub tokens_per_sec: f64,
}

/// Result of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalMetrics {
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_ppl: f64,
}

/// Hooks the trainer calls; all default to doing nothing.
pub trait Callbacks {
    fn on_start(&mut self, _start_step: usize, _max_iters: usize, _num_params: usize) {}
    fn on_step(&mut self, _m: &StepMetrics) {}
    fn on_eval(&mut self, _e: &EvalMetrics) {}
    fn on_sample(&mut self, _step: usize, _text: &str) {}
    fn on_checkpoint(&mut self, _step: usize, _dir: &Path) {}
    fn message(&mut self, _msg: &str) {}
    fn on_finish(&mut self) {}
}

/// Callbacks that do nothing.
pub struct NoCallbacks;
impl Callbacks for NoCallbacks {}

/// An indicatif progress bar (step, loss, lr, tok/s, ETA) with evaluations and samples
/// printed above it.
pub struct ProgressCallbacks {
    bar: Option<indicatif::ProgressBar>,
    show_bar: bool,
}

impl ProgressCallbacks {
    pub fn new() -> Self {
        ProgressCallbacks { bar: None, show_bar: true }
    }

    /// No bar: evaluations, samples and checkpoints as plain lines on stderr (for logs).
    pub fn plain() -> Self {
        ProgressCallbacks { bar: None, show_bar: false }
    }

    fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
}

impl Default for ProgressCallbacks {
    fn default() -> Self {
        Self::new()
    }
}

impl Callbacks for ProgressCallbacks {
    fn on_start(&mut self, start_step: usize, max_iters: usize, num_params: usize) {
        if !self.show_bar {
            eprintln!("model: {:.2} M parameters, steps {start_step}..{max_iters}", num_params as f64 / 1e6);
            return;
        }
        let bar = indicatif::ProgressBar::new(max_iters as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(start_step as u64);
        bar.reset_eta();
        bar.println(format!("model: {:.2} M parameters", num_params as f64 / 1e6));
        self.bar = Some(bar);
    }
    fn on_step(&mut self, m: &StepMetrics) {
        if let Some(b) = &self.bar {
            b.set_position(m.step as u64);
            b.set_message(format!("loss {:.4} lr {:.2e} {:.0} tok/s", m.loss, m.lr, m.tokens_per_sec));
        }
    }
    fn on_eval(&mut self, e: &EvalMetrics) {
        self.println(&format!("step {}: train loss {:.4}, val loss {:.4}, val ppl {:.2}", e.step, e.train_loss, e.val_loss, e.val_ppl));
    }
    fn on_sample(&mut self, _step: usize, text: &str) {
        self.println(&format!("--- sample ---\n{text}\n--------------"));
    }
    fn on_checkpoint(&mut self, step: usize, dir: &Path) {
        self.println(&format!("step {step}: checkpoint {}", dir.display()));
    }
    fn message(&mut self, msg: &str) {
        self.println(msg);
    }
    fn on_finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub start_step: usize,
    pub final_step: usize,
    /// Training loss of every step run here: `(step, loss)`.
    pub train_losses: Vec<(usize, f64)>,
    pub evals: Vec<EvalMetrics>,
    pub last_checkpoint: Option<PathBuf>,
    pub metrics_log: PathBuf,
    pub plot: Option<PathBuf>,
    pub elapsed_sec: f64,
    pub iters_per_sec: f64,
    pub tokens_per_sec: f64,
    /// Seconds spent in training steps only (no evaluation, sampling or checkpoints).
    pub train_sec: f64,
    /// Steps per second of training time alone (`train_sec`).
    pub train_iters_per_sec: f64,
    pub num_params: usize,
}

/// Makes candle's CPU kernels use `n` threads (0 = all CPUs). Candle's matmul reads
/// `RAYON_NUM_THREADS` on every call and rayon's global pool reads it when first used, so
/// this must run before any tensor work in the process. Returns the thread count in force.
pub fn set_threads(n: usize) -> usize {
    if n > 0 {
        // SAFETY (edition 2021: safe fn): called at start-up, before training threads exist.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        n
    } else {
        std::env::var("RAYON_NUM_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or_else(lamina_core::settings::cpus)
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).map_err(candle_err)
}

/// Mean loss over `iters` batches of a split (no gradients kept).
pub fn estimate_loss(model: &TrainableModel, data: &Dataset, split: Split, batch: usize, iters: usize, rng: &mut SplitMix64) -> Result<f64> {
    let mut total = 0.0;
    for _ in 0..iters {
        let (x, y) = data.batch(split, batch, rng, model.device())?;
        let (_, loss) = model.forward(&x, Some(&y))?;
        total += scalar(&loss.ok_or_else(|| Error::Other("no loss".into()))?)?;
    }
    Ok(total / iters as f64)
}

/// Generates `n` tokens after `prompt` (temperature 0 = greedy), cropping the context to
/// the model's window.
pub fn generate(model: &TrainableModel, prompt: &[u32], n: usize, temperature: f64, rng: &mut SplitMix64) -> Result<Vec<u32>> {
    let ctx = model.config().context_length;
    let mut ids: Vec<u32> = if prompt.is_empty() { vec![0] } else { prompt.to_vec() };
    let start = ids.len();
    for _ in 0..n {
        let window = &ids[ids.len().saturating_sub(ctx)..];
        let x = Tensor::from_slice(window, (1, window.len()), model.device()).map_err(candle_err)?;
        let (logits, _) = model.forward(&x, None)?; // (1, t, v)
        let last = logits
            .narrow(1, window.len() - 1, 1)
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.to_dtype(DType::F64))
            .and_then(|l| l.to_vec1::<f64>())
            .map_err(candle_err)?;
        let next = if temperature <= 0.0 {
            last.iter().enumerate().fold((0usize, f64::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a }).0
        } else {
            let m = last.iter().cloned().fold(f64::MIN, f64::max);
            let p: Vec<f64> = last.iter().map(|&v| ((v - m) / temperature).exp()).collect();
            let s: f64 = p.iter().sum();
            let mut r = rng.next_f64() * s;
            let mut pick = p.len() - 1;
            for (i, &pi) in p.iter().enumerate() {
                if r < pi {
                    pick = i;
                    break;
                }
                r -= pi;
            }
            pick
        };
        ids.push(next as u32);
    }
    Ok(ids[start..].to_vec())
}

/// How a run computes gradients and applies updates.
enum Engine {
    /// candle autograd on the [`TrainableModel`] itself (the reference; f32 or f64).
    Autograd { opt: AdamW, params: Vec<(String, Var)> },
    /// The hand-written kernels of [`crate::fused`] on a flat copy of the weights, which
    /// is written back into the [`TrainableModel`] before sampling and checkpoints.
    Fused { model: Box<FusedModel>, opt: FusedAdamW },
}

impl Engine {
    fn new(model: &TrainableModel, cfg: &TrainConfig, adam: AdamWConfig, saved: Option<(&HashMap<String, Tensor>, u64)>) -> Result<Self> {
        if cfg.fused() {
            let fm = FusedModel::from_trainable(model, cfg.threads, Isa::best())?;
            let mut opt = FusedAdamW::new(&fm, adam);
            if let Some((state, step)) = saved {
                opt.load_state(&fm, state, step)?;
            }
            Ok(Engine::Fused { model: Box::new(fm), opt })
        } else {
            let mut opt = AdamW::new(model.named_params(), adam)?;
            if let Some((state, step)) = saved {
                opt.load_state(state, step)?;
            }
            Ok(Engine::Autograd { opt, params: model.named_params() })
        }
    }

    fn name(&self) -> String {
        match self {
            Engine::Autograd { .. } => "candle autograd".into(),
            Engine::Fused { model, .. } => format!("fused kernels ({}, {} threads)", model.isa().name(), model.threads()),
        }
    }

    /// One optimizer step over `grad_accum` batches; returns (mean loss, gradient norm).
    fn train_step(&mut self, model: &TrainableModel, data: &Dataset, cfg: &TrainConfig, rng: &mut SplitMix64, lr: f64) -> Result<(f64, f64)> {
        let accum = cfg.grad_accum;
        let mut loss_sum = 0.0;
        let finite = |loss: f64| -> Result<f64> {
            if loss.is_finite() {
                Ok(loss)
            } else {
                Err(Error::Other(format!("loss became {loss}: training diverged (lower lr?)")))
            }
        };
        match self {
            Engine::Fused { model: fm, opt } => {
                fm.zero_grads();
                for _ in 0..accum {
                    let (x, y) = data.batch_ids(Split::Train, cfg.batch_size, rng);
                    loss_sum += finite(fm.step(&x, &y, cfg.batch_size, data.block(), 1.0 / accum as f32)?)?;
                }
                let norm = opt.step(fm, lr, cfg.grad_clip)?;
                Ok((loss_sum / accum as f64, norm))
            }
            Engine::Autograd { opt, params } => {
                let device = model.device().clone();
                let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
                for _ in 0..accum {
                    let (x, y) = data.batch(Split::Train, cfg.batch_size, rng, &device)?;
                    let (_, loss) = model.forward(&x, Some(&y))?;
                    let loss = loss.ok_or_else(|| Error::Other("no loss".into()))?;
                    loss_sum += finite(scalar(&loss)?)?;
                    let scaled = if accum > 1 { (loss / accum as f64).map_err(candle_err)? } else { loss };
                    let store = scaled.backward().map_err(candle_err)?;
                    for (acc, (_, var)) in grads.iter_mut().zip(params.iter()) {
                        if let Some(g) = store.get(var.as_tensor()) {
                            *acc = Some(match acc.take() {
                                Some(a) => (a + g).map_err(candle_err)?,
                                None => g.clone(),
                            });
                        }
                    }
                }
                let norm = clip_grad_norm(&mut grads, cfg.grad_clip)?;
                opt.step(&grads, lr)?;
                Ok((loss_sum / accum as f64, norm))
            }
        }
    }

    fn estimate_loss(&mut self, model: &TrainableModel, data: &Dataset, split: Split, batch: usize, iters: usize, rng: &mut SplitMix64) -> Result<f64> {
        match self {
            Engine::Autograd { .. } => estimate_loss(model, data, split, batch, iters, rng),
            Engine::Fused { model: fm, .. } => {
                let mut total = 0.0;
                for _ in 0..iters {
                    let (x, y) = data.batch_ids(split, batch, rng);
                    total += fm.loss(&x, &y, batch, data.block())?;
                }
                Ok(total / iters as f64)
            }
        }
    }

    /// Makes the [`TrainableModel`]'s variables current.
    fn sync(&self, model: &TrainableModel) -> Result<()> {
        match self {
            Engine::Autograd { .. } => Ok(()),
            Engine::Fused { model: fm, .. } => fm.store_into(model),
        }
    }

    fn optimizer_state(&self) -> Result<HashMap<String, Tensor>> {
        match self {
            Engine::Autograd { opt, .. } => Ok(opt.state_tensors()),
            Engine::Fused { model, opt } => opt.state_tensors(model),
        }
    }
}

fn log_line(f: &mut std::fs::File, path: &Path, v: serde_json::Value) -> Result<()> {
    writeln!(f, "{v}").map_err(|e| Error::io(path, e))
}

/// Pre-trains a model by next-token prediction as configured, optionally continuing the
/// checkpoint at `resume` (a step folder or a run folder). A resumed run reproduces the
/// losses of an uninterrupted one exactly.
///
/// The run writes into `cfg.out_dir` only. On resume the metrics log kept up to the
/// resumed step is read from the resumed run's folder (see [`run_dir_of`]) and written
/// to `out_dir` atomically. `threads` above the CPU count are capped (with a message),
/// and a model or batch that cannot fit in memory is refused before anything is allocated.
pub fn pretrain(cfg: &TrainConfig, resume: Option<&Path>, cb: &mut dyn Callbacks) -> Result<TrainSummary> {
    cfg.validate()?;
    let mut cfg = cfg.clone();
    if cfg.threads > 0 {
        let threads = lamina_core::Threads::resolve(cfg.threads);
        if let Some(notice) = threads.cap_notice("threads =") {
            cb.message(&notice);
        }
        cfg.threads = threads.used;
    }
    let cfg = &cfg;
    set_threads(cfg.threads);
    let device = Device::Cpu;
    let dtype = cfg.candle_dtype()?;

    // Checkpoint first (its tokenizer wins, so ids stay the same).
    let loaded = match resume {
        Some(p) => Some(load_checkpoint(p, &device, &mut |m| cb.message(m))?),
        None => None,
    };
    let spec = TokenizerSpec::parse(&cfg.tokenizer);
    let mut logger = |m: &str| cb.message(m);
    let (tokenizer, tokens): (Tokenizer, _) = match &loaded {
        Some(l) => {
            let tp = l.dir.join("tokenizer.json");
            let (_, tf) = prepare(&cfg.data, &TokenizerSpec::File(tp), cfg.cache.as_deref(), &cfg.token_dtype, &mut logger)?;
            (l.tokenizer.clone(), tf)
        }
        None => prepare(&cfg.data, &spec, cfg.cache.as_deref(), &cfg.token_dtype, &mut logger)?,
    };
    let model_cfg = cfg.model_config(tokenizer.vocab_size())?;
    // What a resumed run already holds: the loaded weights and AdamW moments.
    let held: u64 = loaded.as_ref().map_or(0, |l| {
        let bytes = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let weights = model_cfg.num_parameters().saturating_mul(l.model.dtype().size_in_bytes() as u64);
        weights.saturating_add(l.optimizer_state.values().map(bytes).sum())
    });
    TrainingMemory::estimate(cfg, &model_cfg, cfg.threads).check(cfg, held)?;
    let data = Dataset::new(tokens, cfg.block_size)?;

    let adam = AdamWConfig { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weight_decay: cfg.weight_decay };
    let (model, mut engine, mut step, mut data_rng, mut eval_rng) = match loaded {
        Some(l) => {
            if l.state.model_config != model_cfg {
                return Err(Error::Checkpoint {
                    path: l.dir.clone(),
                    reason: format!("the checkpoint's model ({:?}) differs from the configured one ({:?})", l.state.model_config, model_cfg),
                });
            }
            if l.model.dtype() != dtype {
                return Err(Error::Checkpoint { path: l.dir.clone(), reason: format!("checkpoint was trained in {}", l.state.dtype) });
            }
            let engine = Engine::new(&l.model, cfg, adam, Some((&l.optimizer_state, l.state.step as u64)))
                .map_err(|e| Error::Checkpoint { path: l.dir.clone(), reason: format!("optimizer state: {e}") })?;
            (l.model, engine, l.state.step, l.state.data_rng, l.state.eval_rng)
        }
        None => {
            let model = TrainableModel::new(&model_cfg, cfg.seed, dtype, &device)?;
            let engine = Engine::new(&model, cfg, adam, None)?;
            (model, engine, 0, SplitMix64::new(cfg.seed ^ 0x5EED_DA7A), SplitMix64::new(cfg.seed ^ 0xE7A1_5A3B))
        }
    };
    let start_step = step;
    let end = cfg.stop_at.map_or(cfg.max_iters, |s| s.min(cfg.max_iters));

    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| Error::io(&cfg.out_dir, e))?;
    let log_path = cfg.out_dir.join("metrics.jsonl");
    // On resume keep only the resumed run's log lines up to the resumed step.
    let kept = if start_step > 0 {
        let source = resume.map(|p| run_dir_of(p).join("metrics.jsonl")).unwrap_or_else(|| log_path.clone());
        std::fs::read_to_string(&source)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v.get("step").and_then(|s| s.as_u64())).is_some_and(|s| s as usize <= start_step)
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    } else {
        String::new()
    };
    // Replaced atomically (temp + fsync + rename), like checkpoints: a kill at any moment
    // leaves either the old log or the new one, never an empty one.
    lamina_core::fs::write_bytes_atomic(&log_path, kept.as_bytes())?;
    let mut log = std::fs::OpenOptions::new().append(true).open(&log_path).map_err(|e| Error::io(&log_path, e))?;

    cb.on_start(start_step, cfg.max_iters, model.num_params());
    cb.message(&format!("gradients: {}", engine.name()));
    let tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum;
    let t0 = Instant::now();
    let mut summary = TrainSummary {
        start_step,
        final_step: step,
        train_losses: Vec::new(),
        evals: Vec::new(),
        last_checkpoint: None,
        metrics_log: log_path.clone(),
        plot: None,
        elapsed_sec: 0.0,
        iters_per_sec: 0.0,
        tokens_per_sec: 0.0,
        train_sec: 0.0,
        train_iters_per_sec: 0.0,
        num_params: model.num_params(),
    };
    let mut last_val = None;
    let prompt = if cfg.sample_prompt.is_empty() { Vec::new() } else { tokenizer.encode(&cfg.sample_prompt, false).unwrap_or_default() };

    let mut train_sec = 0.0;
    while step < end {
        let ts = Instant::now();
        let lr = lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters);
        let (loss, grad_norm) = engine.train_step(&model, &data, cfg, &mut data_rng, lr).map_err(|e| match e {
            Error::Other(m) => Error::Other(format!("step {}: {m}", step + 1)),
            e => e,
        })?;
        step += 1;
        train_sec += ts.elapsed().as_secs_f64();
        summary.train_losses.push((step, loss));
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
        let tps = (step - start_step) as f64 * tokens_per_step as f64 / elapsed;
        cb.on_step(&StepMetrics { step, max_iters: cfg.max_iters, loss, lr, grad_norm, tokens_per_sec: tps });
        if step % cfg.log_interval == 0 || step == end {
            log_line(
                &mut log,
                &log_path,
                serde_json::json!({"step": step, "train_loss": loss, "lr": lr, "grad_norm": grad_norm,
                    "tok_per_s": tps, "elapsed_s": elapsed}),
            )?;
        }
        let at_end = step == end;
        if step % cfg.eval_interval == 0 || at_end {
            let train_loss = engine.estimate_loss(&model, &data, Split::Train, cfg.batch_size, cfg.eval_iters, &mut eval_rng)?;
            let val_loss = engine.estimate_loss(&model, &data, Split::Val, cfg.batch_size, cfg.eval_iters, &mut eval_rng)?;
            let e = EvalMetrics { step, train_loss, val_loss, val_ppl: val_loss.exp() };
            log_line(&mut log, &log_path, serde_json::json!({"step": step, "eval_train_loss": train_loss, "val_loss": val_loss, "val_ppl": e.val_ppl}))?;
            cb.on_eval(&e);
            summary.evals.push(e);
            last_val = Some(val_loss);
            if cfg.sample_tokens > 0 {
                engine.sync(&model)?;
                let ids = generate(&model, &prompt, cfg.sample_tokens, cfg.temperature, &mut eval_rng)?;
                let text = tokenizer.decode(&ids, false)?;
                cb.on_sample(step, &format!("{}{text}", cfg.sample_prompt));
            }
        }
        if (cfg.checkpoint_interval > 0 && step % cfg.checkpoint_interval == 0) || at_end {
            let state = TrainerState {
                format_version: FORMAT_VERSION,
                step,
                data_rng,
                eval_rng,
                config: cfg.clone(),
                model_config: model_cfg.clone(),
                dtype: cfg.dtype.clone(),
                files: Default::default(),
                last_val_loss: last_val,
            };
            engine.sync(&model)?;
            let dir = save_checkpoint(&cfg.out_dir, &model, &engine.optimizer_state()?, &tokenizer, &state)?;
            cb.on_checkpoint(step, &dir);
            for old in prune_checkpoints(&cfg.out_dir, cfg.keep_last)? {
                cb.message(&format!("removed {} (keep_last = {})", old.display(), cfg.keep_last));
            }
            summary.last_checkpoint = Some(dir);
        }
    }
    drop(log);
    let elapsed = t0.elapsed().as_secs_f64();
    summary.final_step = step;
    summary.elapsed_sec = elapsed;
    summary.iters_per_sec = (step - start_step) as f64 / elapsed.max(1e-9);
    summary.tokens_per_sec = summary.iters_per_sec * tokens_per_step as f64;
    summary.train_sec = train_sec;
    summary.train_iters_per_sec = (step - start_step) as f64 / train_sec.max(1e-9);
    let png = cfg.out_dir.join("loss.png");
    match plot_log(&log_path, &png) {
        Ok(()) => summary.plot = Some(png),
        Err(e) => cb.message(&format!("no loss plot: {e}")),
    }
    cb.on_finish();
    Ok(summary)
}
