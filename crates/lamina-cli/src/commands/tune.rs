//! What the fine-tuning commands (`sft`, `dpo`) share: their arguments, loading the base
//! with a LoRA config, the held-out split, the JSON-lines log and saving the adapter.

use anyhow::{bail, Context, Result};
use clap::Args;
use lamina_model::lora::{LoraAdapter, LoraConfig};
use lamina_model::Model;
use lamina_tokenizer::Tokenizer;
use lamina_train::instruct::OnBadRecord;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// The base model: a .gguf file, a Hugging Face folder, a built-in name or a hub id
    /// (default: smollm2-135m-instruct).
    pub model: Option<String>,
    /// Training data: JSON lines or a JSON array, gzip-compressed or not (the record
    /// shapes are in the command's description).
    #[arg(long)]
    pub data: PathBuf,
    /// Where the adapter (PEFT's format) and the log (`log.jsonl`) go.
    #[arg(long)]
    pub out: PathBuf,
    /// LoRA rank.
    #[arg(long, value_name = "R")]
    pub lora: usize,
    /// LoRA α (the update is scaled by α/r); default 2·r.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Projections to adapt.
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',')]
    pub target: Vec<String>,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Steps of linear learning-rate warm-up (then cosine decay to a tenth).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Longest training sequence in tokens (longer records are bad records).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// The last N usable records are held out for evaluation (default: the dataset
    /// convention, 500 for `sft` and 312 for `dpo`, at most a tenth of the data).
    #[arg(long)]
    pub held_out: Option<usize>,
    /// Evaluate on the held-out records every N steps (0: at the start and the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// A record that is malformed, cannot be rendered or is too long: `fail` (with its
    /// file and line) or `skip` it.
    #[arg(long, default_value = "fail")]
    pub on_bad_record: OnBadRecord,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (default: all CPUs).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

impl TuneArgs {
    /// Sets the thread count, checks the LoRA settings and loads the base (f32) with its
    /// tokenizer, which must have a chat template.
    pub fn start(&self) -> Result<(Model, Tokenizer, LoraConfig)> {
        lamina_train::set_threads(self.threads.unwrap_or(0));
        let targets: Vec<&str> = self.target.iter().map(|s| s.trim()).collect();
        let lora = LoraConfig::new(self.lora, self.alpha.unwrap_or(2.0 * self.lora as f64), 0.0, &targets)?;
        let (model, tok) = lamina_engine::resolve::load(self.model.as_deref(), lamina_model::Precision::F32, &mut |m| eprintln!("{m}"))?;
        if tok.chat_template().is_none() {
            bail!("this model has no chat template to format the records with");
        }
        Ok((model, tok, lora))
    }

    /// The longest sequence to train on.
    pub fn max_len(&self, model: &Model) -> usize {
        self.max_len.min(model.config.context_length)
    }

    /// Writes the trained adapter into `--out`, recording the base it was trained on.
    pub fn save(&self, mut adapter: LoraAdapter) -> Result<()> {
        adapter.base_model = Some(self.model.clone().unwrap_or_else(|| lamina_core::registry::DEFAULT_MODEL.to_string()));
        Ok(adapter.save(&self.out)?)
    }

    /// Says how many records were left out.
    pub fn report_skipped(&self, skipped: usize, too_long: usize) {
        if skipped > 0 {
            eprintln!("skipped {skipped} bad records ({too_long} longer than {} tokens)", self.max_len);
        }
    }
}

/// The last `held_out` records (default: `default`, at most a tenth) and the rest.
pub fn split_held_out<T>(mut all: Vec<T>, held_out: Option<usize>, default: usize) -> Result<(Vec<T>, Vec<T>)> {
    let held = held_out.unwrap_or(default.min(all.len() / 10)).max(1);
    if held >= all.len() {
        bail!("{} usable records: too few to hold {held} out and train on the rest", all.len());
    }
    let tail = all.split_off(all.len() - held);
    Ok((all, tail))
}

/// A run's `OUT/log.jsonl`, one JSON object per line; the first write error is kept and
/// reported by [`JsonLog::finish`].
pub struct JsonLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    error: Option<std::io::Error>,
}

impl JsonLog {
    pub fn create(out: &Path) -> Result<JsonLog> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let path = out.join("log.jsonl");
        let file = std::io::BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
        Ok(JsonLog { path, file, error: None })
    }

    pub fn write(&mut self, v: &serde_json::Value) {
        if let Err(e) = writeln!(self.file, "{v}") {
            self.error.get_or_insert(e);
        }
    }

    pub fn finish(mut self) -> Result<()> {
        let flushed = self.file.flush();
        match self.error.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("writing {}", self.path.display())),
        }
    }
}
