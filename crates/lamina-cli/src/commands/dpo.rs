//! `lamina dpo MODEL --data prefs.jsonl --lora R --out DIR`: preference optimisation (DPO)
//! of LoRA adapters, the reference being the base with the adapters switched off.

use super::tune::{split_held_out, JsonLog, TuneArgs};
use anyhow::Result;
use clap::Args;
use lamina_train::dpo::{dpo, DpoConfig, DpoEvent};
use lamina_train::instruct::load_pairs;

/// Pairs: `{"prompt", "chosen", "rejected"}`, or Anthropic HH `{"chosen", "rejected"}`
/// dialogues that differ in their last assistant turn.
#[derive(Args, Debug)]
pub struct DpoArgs {
    #[command(flatten)]
    pub tune: TuneArgs,
    /// DPO's β: how far the policy may move from the reference.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Pairs per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
}

pub fn run(args: DpoArgs) -> Result<()> {
    let t = &args.tune;
    let (model, tok, lora) = t.start()?;
    let loaded = load_pairs(&t.data, &tok, t.max_len(&model), t.on_bad_record, &mut |m| eprintln!("{m}"))?;
    t.report_skipped(loaded.skipped, loaded.too_long);
    let (train, held_out) = split_held_out(loaded.examples, t.held_out, 312)?;
    let policy = lamina_train::sft::with_lora(&model, &lora, t.seed)?;
    drop(model);
    let mut log = JsonLog::create(&t.out)?;
    eprintln!(
        "DPO on {} pairs ({} held out), β {}, LoRA r={} α={}, {} steps of {} pairs",
        train.len(),
        held_out.len(),
        args.beta,
        lora.r,
        lora.alpha,
        t.steps,
        args.batch
    );
    let cfg = DpoConfig {
        steps: t.steps,
        pairs: args.batch,
        beta: args.beta,
        lr: args.lr,
        min_lr: args.lr / 10.0,
        warmup: t.warmup.min(t.steps / 2),
        eval_every: t.eval_every,
        seed: t.seed,
        ..DpoConfig::default()
    };
    let summary = dpo(&policy, &train, &held_out, &cfg, &mut |e| {
        match e {
            DpoEvent::Step { step, stats, pairs_per_s, .. } if *step % 10 == 0 || *step == cfg.steps => eprintln!(
                "step {step:>5}  loss {:.4}  margin {:+.3}  reward acc {:.2}  {pairs_per_s:.3} pairs/s",
                stats.loss, stats.margin, stats.reward_accuracy
            ),
            DpoEvent::Eval { step, stats } => eprintln!(
                "step {step:>5}  held-out: loss {:.4}  margin {:+.3}  reward acc {:.3}  preference acc {:.3}  log p chosen {:.1} rejected {:.1}",
                stats.loss, stats.margin, stats.reward_accuracy, stats.policy_accuracy, stats.chosen_logp, stats.rejected_logp
            ),
            _ => {}
        }
        log.write(&e.to_json());
    })?;
    log.finish()?;
    t.save(policy.lora_adapter()?.expect("LoRA attached"))?;
    let (b, a) = (summary.held_out_before, summary.held_out_after);
    println!(
        "held-out preference accuracy {:.3} → {:.3}, DPO loss {:.4} → {:.4}, reward margin {:+.3} → {:+.3}; {:.3} pairs/s; adapter in {}",
        b.policy_accuracy,
        a.policy_accuracy,
        b.loss,
        a.loss,
        b.margin,
        a.margin,
        summary.pairs_per_s,
        t.out.display()
    );
    Ok(())
}
