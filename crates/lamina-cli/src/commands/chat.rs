//! `lamina chat`: an interactive conversation.
//!
//! The whole conversation is re-rendered with the model's chat template each turn; the
//! engine's prefix cache recognises the part already in the KV cache, so only the new
//! turn's tokens are computed. When the rendered conversation no longer fits the context
//! window (leaving room for the reply), the oldest turns are dropped with a notice.

use crate::common::{self, LoraArgs, ModelArgs, SamplingArgs, SpeculativeArgs};
use anyhow::Result;
use clap::Args;
use lamina_tokenizer::ChatMessage;
use std::io::{BufRead, Write};

#[derive(Args, Debug)]
pub struct ChatArgs {
    pub model: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub spec: SpeculativeArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let params = args.sampling.params()?;
    let (model, tok) = common::load(args.model.as_deref(), &args.model_args)?;
    let lora = args.lora.prepare(&model)?;
    if tok.chat_template().is_none() {
        anyhow::bail!("this model has no chat template; use `lamina run` for plain completion");
    }
    let speculative = args.spec.config(&args.model_args)?;
    let mut engine = common::engine(model, tok.clone(), &args.model_args, 1, speculative)?;
    let ctx = engine.context_length();
    let system: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();
    let mut turns: Vec<ChatMessage> = Vec::new();
    eprintln!("chatting with {} — /reset clears the conversation, /exit quits", engine.model.source.display());
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!("> ");
        std::io::stdout().flush()?;
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?;
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                turns.clear();
                engine.clear_cache();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        if tok.check_fits(input, ctx - 1).is_err() {
            eprintln!("(this message alone is at least {} tokens, more than the {ctx}-token context; not sent)", tok.min_tokens(input));
            continue;
        }
        turns.push(ChatMessage::user(input));
        // Render, dropping the oldest turns until the prompt leaves room for a reply.
        let reserve = params.max_tokens.min(ctx / 2);
        let ids = loop {
            let msgs: Vec<ChatMessage> = system.iter().chain(turns.iter()).cloned().collect();
            let text = tok.apply_chat_template(&msgs, true)?;
            let ids = tok.encode(&text, true)?;
            if ids.len() + reserve <= ctx || turns.len() <= 1 {
                break ids;
            }
            // Drop the oldest user turn and the assistant reply after it.
            let n = if turns.len() >= 2 { 2 } else { 1 };
            turns.drain(..n);
            eprintln!("(context full: dropped the oldest turn)");
        };
        if ids.len() >= ctx {
            eprintln!("(this message alone is {} tokens, more than the {ctx}-token context; not sent)", ids.len());
            turns.pop();
            continue;
        }
        if params.max_tokens == 0 {
            // --max-tokens 0: no reply is generated.
            println!();
            turns.push(ChatMessage::assistant(""));
            continue;
        }
        let mut p = params.clone();
        p.max_tokens = p.max_tokens.min(ctx - ids.len());
        let callback = common::stream_to_stdout();
        let done = engine.complete(lamina_engine::Request::new(ids, p).with_callback(callback).with_lora(lora.clone()))?;
        println!();
        if args.sampling.verbose {
            let s = &done.stats;
            eprintln!(
                "[prompt {} tokens, {} from cache | {} generated{}{}{}]",
                s.prompt_tokens,
                s.cached_tokens,
                s.generated_tokens,
                common::rate("prefill", s.prefill_tok_s()),
                common::rate("decode", s.decode_tok_s()),
                common::acceptance(s)
            );
        }
        turns.push(ChatMessage::assistant(done.text.trim()));
    }
    Ok(())
}
