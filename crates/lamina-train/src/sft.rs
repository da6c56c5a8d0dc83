//! Supervised fine-tuning: next-token loss on the assistant's tokens of instruction data
//! ([`crate::instruct`]), with LoRA adapters on a frozen base or every weight trained.
//!
//! Batches are `batch` examples padded to the longest (padding is neither attended to by
//! real tokens, which come first under the causal mask, nor scored). The loss of a batch
//! is the mean over its scored tokens; the held-out loss is the mean over all the held-out
//! set's scored tokens, and its exponential the held-out perplexity. Gradients come from
//! candle's autograd on [`TrainableModel`] (the reference the fused pre-training engine is
//! checked against).

use crate::instruct::Example;
use crate::optim::{clip_grad_norm, lr_at, AdamW, AdamWConfig};
use candle_core::{DType, Tensor};
use lamina_core::{Error, Result};
use lamina_model::trainable::{candle_err, SplitMix64, TrainableModel};
use std::time::Instant;

/// Hyper-parameters of a fine-tuning run.
#[derive(Debug, Clone)]
pub struct SftConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// Held-out evaluation every this many steps (0: at the start and the end only).
    pub eval_every: usize,
    pub seed: u64,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig { steps: 100, batch: 4, lr: 2e-4, min_lr: 2e-5, warmup: 10, weight_decay: 0.0, grad_clip: 1.0, eval_every: 0, seed: 1 }
    }
}

/// One line of the run's log.
#[derive(Debug, Clone, PartialEq)]
pub enum SftEvent {
    Step { step: usize, loss: f64, lr: f64, grad_norm: f64, tokens_per_s: f64 },
    Eval { step: usize, loss: f64, perplexity: f64 },
}

impl SftEvent {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SftEvent::Step { step, loss, lr, grad_norm, tokens_per_s } => {
                serde_json::json!({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s})
            }
            SftEvent::Eval { step, loss, perplexity } => serde_json::json!({"step": step, "held_out_loss": loss, "held_out_ppl": perplexity}),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct SftSummary {
    pub steps: usize,
    /// Tokens of the training batches (padding excluded).
    pub tokens: usize,
    pub held_out_before: f64,
    pub held_out_after: f64,
    /// Training tokens per second of training steps (evaluations not counted).
    pub tokens_per_s: f64,
    pub trainable_params: usize,
}

/// The trainable f32 copy of `model` (on the CPU) with fresh LoRA adapters per `lora`.
pub fn with_lora(model: &lamina_model::Model, lora: &lamina_model::lora::LoraConfig, seed: u64) -> Result<TrainableModel> {
    let mut t = TrainableModel::from_model(model, DType::F32, &candle_core::Device::Cpu)?;
    t.add_lora(lora, seed)?;
    Ok(t)
}

/// Mean loss over every scored token of `examples`, `batch` at a time, without gradients.
pub fn held_out_loss(model: &TrainableModel, examples: &[Example], batch: usize) -> Result<f64> {
    let (mut sum, mut count) = (0f64, 0usize);
    let idx: Vec<usize> = (0..examples.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let scored: usize = chunk.iter().map(|&i| examples[i].scored()).sum();
        let loss = batch_loss(model, examples, chunk)?.detach();
        sum += scalar(&loss)? * scored as f64;
        count += scored;
    }
    if count == 0 {
        return Err(Error::InvalidInput("the held-out examples score no tokens".into()));
    }
    Ok(sum / count as f64)
}

/// The next `batch` indices of `0..n` in shuffled epochs (`order` holds what is left of
/// the current one and is refilled, reshuffled, when used up).
pub(crate) fn next_batch(order: &mut Vec<usize>, rng: &mut SplitMix64, n: usize, batch: usize) -> Vec<usize> {
    let mut idx = Vec::with_capacity(batch);
    while idx.len() < batch {
        if order.is_empty() {
            *order = (0..n).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        idx.push(order.pop().expect("refilled"));
    }
    idx
}

/// `(tokens, targets)` tensors of `examples[idx]` padded to the longest.
pub(crate) fn batch_tensors(model: &TrainableModel, examples: &[&Example]) -> Result<(Tensor, Tensor)> {
    let t = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
    let (mut tokens, mut targets) = (Vec::with_capacity(examples.len() * t), Vec::with_capacity(examples.len() * t));
    for e in examples {
        tokens.extend(e.tokens.iter().copied().chain(std::iter::repeat_n(0, t - e.tokens.len())));
        targets.extend(e.targets.iter().copied().chain(std::iter::repeat_n(lamina_model::trainable::IGNORE, t - e.targets.len())));
    }
    let dev = model.device();
    Ok((Tensor::from_vec(tokens, (examples.len(), t), dev).map_err(candle_err)?, Tensor::from_vec(targets, (examples.len(), t), dev).map_err(candle_err)?))
}

fn batch_loss(model: &TrainableModel, examples: &[Example], idx: &[usize]) -> Result<Tensor> {
    let rows: Vec<&Example> = idx.iter().map(|&i| &examples[i]).collect();
    let (x, y) = batch_tensors(model, &rows)?;
    let (_, loss) = model.forward(&x, Some(&y))?;
    loss.ok_or_else(|| Error::Other("no loss".into()))
}

pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).map_err(candle_err)
}

/// Fine-tunes `model`'s trainable parameters ([`TrainableModel::trainable_params`]: its
/// LoRA adapters when it has them) on `train`, evaluating on `held_out`.
pub fn finetune(model: &TrainableModel, train: &[Example], held_out: &[Example], cfg: &SftConfig, log: &mut dyn FnMut(&SftEvent)) -> Result<SftSummary> {
    if train.is_empty() || held_out.is_empty() {
        return Err(Error::InvalidInput(format!("fine-tuning needs training and held-out examples ({} and {})", train.len(), held_out.len())));
    }
    if cfg.batch == 0 || cfg.steps == 0 {
        return Err(Error::InvalidConfig("--batch and --steps must be at least 1".into()));
    }
    let params = model.trainable_params();
    let trainable_params = params.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(params.clone(), AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: cfg.weight_decay })?;
    let held_out_before = held_out_loss(model, held_out, cfg.batch)?;
    log(&SftEvent::Eval { step: 0, loss: held_out_before, perplexity: held_out_before.exp() });
    let mut rng = SplitMix64::new(cfg.seed);
    let mut order: Vec<usize> = Vec::new();
    let (mut tokens, mut train_secs) = (0usize, 0f64);
    let mut last = held_out_before;
    for step in 1..=cfg.steps {
        let idx = next_batch(&mut order, &mut rng, train.len(), cfg.batch);
        let ts = Instant::now();
        let loss = batch_loss(model, train, &idx)?;
        let lv = scalar(&loss)?;
        if !lv.is_finite() {
            return Err(Error::Other(format!("step {step}: the loss is {lv} (lower the learning rate?)")));
        }
        let grads = loss.backward().map_err(candle_err)?;
        let mut g: Vec<Option<Tensor>> = params.iter().map(|(_, v)| grads.get(v.as_tensor()).cloned()).collect();
        let grad_norm = clip_grad_norm(&mut g, cfg.grad_clip)?;
        let lr = lr_at(step - 1, cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps);
        opt.step(&g, lr)?;
        let n: usize = idx.iter().map(|&i| train[i].tokens.len()).sum();
        let secs = ts.elapsed().as_secs_f64();
        (tokens, train_secs) = (tokens + n, train_secs + secs);
        log(&SftEvent::Step { step, loss: lv, lr, grad_norm, tokens_per_s: n as f64 / secs });
        if (cfg.eval_every > 0 && step % cfg.eval_every == 0) || step == cfg.steps {
            last = held_out_loss(model, held_out, cfg.batch)?;
            log(&SftEvent::Eval { step, loss: last, perplexity: last.exp() });
        }
    }
    Ok(SftSummary { steps: cfg.steps, tokens, held_out_before, held_out_after: last, tokens_per_s: tokens as f64 / train_secs, trainable_params })
}
