//! `lamina eval`: log-likelihood evaluation on the inference engine, the way
//! lm-evaluation-harness scores its `loglikelihood` tasks, with or without a LoRA adapter.
//!
//! A task file's records say what it measures:
//! - multiple choice, `{"question", "choices": [...], "answer": index | choice}`: each
//!   choice `" {choice}"` is scored after `"Question: {question}\nAnswer:"`; `acc` picks
//!   the choice of highest total log-probability, `acc_norm` the highest per byte of the
//!   choice (lm-evaluation-harness's two accuracies);
//! - preferences, `{"chosen", "rejected"}` (Anthropic HH dialogues, or with a `prompt`):
//!   both answers are scored after the rendered conversation; `accuracy` is the share of
//!   pairs whose chosen answer is the more likely, `margin` the mean log-probability gap;
//! - instruction records (as [`crate::instruct`] reads them): `loss`, the mean negative
//!   log-likelihood of the assistant tokens, and `perplexity`, its exponential.

use crate::instruct::{encode_conversation, encode_pair, preference_pair, read_records, record_messages};
use lamina_core::{Error, Result};
use lamina_engine::{loglikelihood::log_softmax_at, loglikelihoods_with, Continuation, Engine};
use lamina_model::trainable::IGNORE;
use lamina_model::ModelLora;
use std::collections::BTreeMap;
use std::path::Path;

/// Tokens per forward pass of the scoring batches.
const BATCH_TOKENS: usize = 2048;

/// What a task measures, read off its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    MultipleChoice,
    Preference,
    Loss,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::MultipleChoice => "multiple_choice",
            TaskKind::Preference => "preference",
            TaskKind::Loss => "loss",
        }
    }
}

/// One task's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub task: String,
    pub kind: TaskKind,
    pub records: usize,
    pub metrics: BTreeMap<String, f64>,
}

impl TaskReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"task": self.task, "kind": self.kind.name(), "records": self.records, "metrics": self.metrics})
    }

    /// `task (kind, N records): name value, …`.
    pub fn line(&self) -> String {
        let m: Vec<String> = self.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        format!("{} ({}, {} records): {}", self.task, self.kind.name(), self.records, m.join(", "))
    }
}

/// Which records of a file to use: the last `last` (a held-out split), then at most `limit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Select {
    pub last: Option<usize>,
    pub limit: Option<usize>,
}

/// Evaluates the task in `path` on `engine` (under `lora` when given). Every record must
/// be usable: a bad one is an error naming the file and its line.
pub fn evaluate(engine: &mut Engine, lora: Option<&ModelLora>, path: &Path, select: Select) -> Result<TaskReport> {
    let mut records = read_records(path)?;
    if let Some(n) = select.last {
        records.drain(..records.len().saturating_sub(n));
    }
    if let Some(n) = select.limit {
        records.truncate(n);
    }
    let Some((_, Ok(first))) = records.first() else {
        return Err(Error::invalid_file(path, records.first().map_or("no records".to_string(), |(at, r)| format!("{at}: {}", r.clone().unwrap_err()))));
    };
    let kind = if first.get("choices").is_some() {
        TaskKind::MultipleChoice
    } else if first.get("chosen").is_some() {
        TaskKind::Preference
    } else {
        TaskKind::Loss
    };
    let bad = |at: &str, why: String| Error::InvalidInput(format!("{}: {at}: {why}", path.display()));
    let tok = engine.tokenizer.clone();
    let ctx = engine.context_length();
    let fits = |at: &str, n: usize| if n > ctx { Err(bad(at, format!("{n} tokens, more than the context window of {ctx}"))) } else { Ok(()) };
    let mut metrics = BTreeMap::new();
    match kind {
        TaskKind::MultipleChoice => {
            let (mut acc, mut acc_norm) = (0usize, 0usize);
            for (at, rec) in &records {
                let rec = rec.clone().map_err(|e| bad(at, e))?;
                let (context, choices, answer) = multiple_choice(&rec).map_err(|e| bad(at, e))?;
                let c = tok.encode(&context, true)?;
                let conts: Vec<Vec<u32>> = choices.iter().map(|ch| tok.encode(&format!(" {ch}"), false)).collect::<Result<_>>()?;
                for k in &conts {
                    fits(at, c.len() + k.len())?;
                }
                let items: Vec<Continuation> = conts.iter().map(|k| Continuation { context: &c, continuation: k }).collect();
                let ll = loglikelihoods_with(engine, &items, BATCH_TOKENS, lora)?;
                let best = |score: &dyn Fn(usize) -> f64| (0..ll.len()).max_by(|&a, &b| score(a).total_cmp(&score(b))).expect("choices");
                acc += (best(&|i| ll[i].logprob) == answer) as usize;
                acc_norm += (best(&|i| ll[i].logprob / choices[i].len().max(1) as f64) == answer) as usize;
            }
            metrics.insert("acc".into(), acc as f64 / records.len() as f64);
            metrics.insert("acc_norm".into(), acc_norm as f64 / records.len() as f64);
        }
        TaskKind::Preference => {
            let (mut right, mut margin) = (0usize, 0f64);
            for (at, rec) in &records {
                let rec = rec.clone().map_err(|e| bad(at, e))?;
                let pair = preference_pair(&rec).map_err(|e| bad(at, e))?;
                let e = encode_pair(&tok, &pair).map_err(|e| bad(at, e))?;
                let (p, c, r) = (e.prompt, e.chosen, e.rejected);
                fits(at, p.len() + c.len().max(r.len()))?;
                let ll = loglikelihoods_with(
                    engine,
                    &[Continuation { context: &p, continuation: &c }, Continuation { context: &p, continuation: &r }],
                    BATCH_TOKENS,
                    lora,
                )?;
                right += (ll[0].logprob > ll[1].logprob) as usize;
                margin += ll[0].logprob - ll[1].logprob;
            }
            metrics.insert("accuracy".into(), right as f64 / records.len() as f64);
            metrics.insert("margin".into(), margin / records.len() as f64);
        }
        TaskKind::Loss => {
            let vocab = engine.model.config.vocab_size;
            let (mut nll, mut count) = (0f64, 0usize);
            let mut logits = Vec::new();
            for (at, rec) in &records {
                let rec = rec.clone().map_err(|e| bad(at, e))?;
                let e = record_messages(&rec).and_then(|m| encode_conversation(&tok, &m)).map_err(|e| bad(at, e))?;
                fits(at, e.tokens.len())?;
                let rows: Vec<usize> = (0..e.targets.len()).filter(|&i| e.targets[i] != IGNORE).collect();
                for chunk in rows.chunks(256) {
                    engine.logits_of_batch_with(&[&e.tokens], chunk, lora, &mut logits)?;
                    for (j, &r) in chunk.iter().enumerate() {
                        nll -= log_softmax_at(&logits[j * vocab..(j + 1) * vocab], e.targets[r] as usize).0;
                    }
                }
                count += rows.len();
            }
            let loss = nll / count.max(1) as f64;
            metrics.insert("loss".into(), loss);
            metrics.insert("perplexity".into(), loss.exp());
            metrics.insert("tokens".into(), count as f64);
        }
    }
    let task = path.file_name().map_or(path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(TaskReport { task, kind, records: records.len(), metrics })
}

/// The context, the choices and the index of the right one.
fn multiple_choice(v: &serde_json::Value) -> std::result::Result<(String, Vec<String>, usize), String> {
    let q = v.get("question").and_then(|x| x.as_str()).ok_or("a multiple-choice record needs a string `question`")?;
    let choices: Vec<String> = v
        .get("choices")
        .and_then(|x| x.as_array())
        .ok_or("`choices` must be an array")?
        .iter()
        .map(|c| c.as_str().map(String::from).ok_or("every choice must be a string"))
        .collect::<std::result::Result<_, _>>()?;
    if choices.len() < 2 {
        return Err("a multiple-choice record needs at least two choices".into());
    }
    let answer = match v.get("answer") {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|i| i as usize).filter(|&i| i < choices.len()).ok_or(format!("`answer` {n} is not the index of a choice"))?
        }
        Some(serde_json::Value::String(s)) => choices.iter().position(|c| c == s).ok_or(format!("`answer` {s:?} is not one of the choices"))?,
        _ => return Err("`answer` must be a choice's index or text".into()),
    };
    Ok((format!("Question: {q}\nAnswer:"), choices, answer))
}
