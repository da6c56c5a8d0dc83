//! `lamina sft MODEL --data FILE --lora R --out DIR`: supervised fine-tuning with LoRA.

use super::tune::{split_held_out, JsonLog, TuneArgs};
use anyhow::Result;
use clap::Args;
use lamina_train::instruct::load_examples;
use lamina_train::sft::{finetune, SftConfig, SftEvent};

/// Records: `{"messages": [{"role", "content"}, ...]}`, Alpaca `{"instruction", "input",
/// "output"}` or `{"prompt", "completion"}`; the loss is on the assistant's tokens.
#[derive(Args, Debug)]
pub struct SftArgs {
    #[command(flatten)]
    pub tune: TuneArgs,
    /// Examples per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
}

pub fn run(args: SftArgs) -> Result<()> {
    let t = &args.tune;
    let (model, tok, lora) = t.start()?;
    let loaded = load_examples(&t.data, &tok, t.max_len(&model), t.on_bad_record, &mut |m| eprintln!("{m}"))?;
    t.report_skipped(loaded.skipped, loaded.too_long);
    let (examples, held_out) = split_held_out(loaded.examples, t.held_out, 500)?;
    let trainable = lamina_train::sft::with_lora(&model, &lora, t.seed)?;
    drop(model);
    let mut log = JsonLog::create(&t.out)?;
    eprintln!(
        "fine-tuning on {} records ({} held out), LoRA r={} α={} on {}, {} steps of {}",
        examples.len(),
        held_out.len(),
        lora.r,
        lora.alpha,
        lora.targets.join(","),
        t.steps,
        args.batch
    );
    let cfg = SftConfig {
        steps: t.steps,
        batch: args.batch,
        lr: args.lr,
        min_lr: args.lr / 10.0,
        warmup: t.warmup.min(t.steps / 2),
        eval_every: t.eval_every,
        seed: t.seed,
        ..SftConfig::default()
    };
    let summary = finetune(&trainable, &examples, &held_out, &cfg, &mut |e| {
        match e {
            SftEvent::Step { step, loss, lr, tokens_per_s, .. } if *step % 10 == 0 || *step == cfg.steps => {
                eprintln!("step {step:>5}  loss {loss:.4}  lr {lr:.2e}  {tokens_per_s:.0} tok/s")
            }
            SftEvent::Eval { step, loss, perplexity } => eprintln!("step {step:>5}  held-out loss {loss:.4}  ppl {perplexity:.2}"),
            _ => {}
        }
        log.write(&e.to_json());
    })?;
    log.finish()?;
    t.save(trainable.lora_adapter()?.expect("LoRA attached"))?;
    println!(
        "held-out loss {:.4} → {:.4} (ppl {:.2} → {:.2}); {} steps, {} tokens at {:.0} tok/s, {} trainable parameters; adapter in {}",
        summary.held_out_before,
        summary.held_out_after,
        summary.held_out_before.exp(),
        summary.held_out_after.exp(),
        summary.steps,
        summary.tokens,
        summary.tokens_per_s,
        summary.trainable_params,
        t.out.display()
    );
    Ok(())
}
