//! `lamina run`: one completion, streamed.

use crate::common::{self, LoraArgs, ModelArgs, SamplingArgs, SpeculativeArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use lamina_engine::Request;
use lamina_grammar::{Grammar, Lookahead};
use lamina_tokenizer::ChatMessage;
use std::io::Read;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A .gguf file, a Hugging Face folder, a built-in name or a hub id (default: smollm2-135m-instruct).
    pub model: Option<String>,
    /// The prompt; read from stdin when absent.
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// System prompt (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Constrain the output to JSON valid against the JSON schema in FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    pub json_schema: Option<std::path::PathBuf>,
    /// Constrain the output to the grammar in FILE: GBNF when it ends in `.gbnf`, else Lark.
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub spec: SpeculativeArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The grammar the output must follow, read from the file the flags name.
fn grammar(args: &RunArgs) -> Result<Option<Grammar>> {
    if let Some(path) = &args.json_schema {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the JSON schema {}", path.display()))?;
        let schema = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        return Ok(Some(Grammar::JsonSchema(schema)));
    }
    if let Some(path) = &args.grammar {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the grammar {}", path.display()))?;
        return Ok(Some(Grammar::from_grammar_file(path, text)));
    }
    Ok(None)
}

pub fn read_stdin_prompt() -> Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).context("reading the prompt from stdin")?;
    String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("the prompt on stdin is not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()))
}

pub fn run(args: RunArgs) -> Result<()> {
    let params = args.sampling.params()?;
    let grammar = grammar(&args)?;
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => read_stdin_prompt()?,
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty (pass -p TEXT or pipe text on stdin)");
    }
    let (model, tok) = common::load(args.model.as_deref(), &args.model_args)?;
    let lora = args.lora.prepare(&model)?;
    let text = if args.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &args.system {
            msgs.push(ChatMessage::system(s));
        }
        msgs.push(ChatMessage::user(&prompt));
        tok.apply_chat_template(&msgs, true)?
    } else {
        prompt
    };
    let ctx = args.model_args.context(&model);
    // A text that cannot fit is refused by its length, before tokenizing it.
    tok.check_fits(&text, ctx - 1)?;
    let ids = tok.encode(&text, true)?;
    let speculative = args.spec.config(&args.model_args)?;
    let mut request = Request::new(ids, params).with_callback(common::stream_to_stdout()).with_lora(lora);
    if let Some(g) = &grammar {
        let compiler = lamina_engine::grammar_compiler(tok.clone())?;
        let constraint = compiler.compile(g).with_context(|| format!("the {}", g.kind().name()))?;
        request = request.with_processor(Box::new(Lookahead::new(constraint)));
    }
    let mut engine = common::engine(model, tok, &args.model_args, 1, speculative)?;
    let done = engine.complete(request)?;
    println!();
    if args.sampling.verbose {
        let s = &done.stats;
        eprintln!(
            "prompt tokens: {} ({} cached) | generated tokens: {}{}{}{} | finish: {} | threads: {} | kernels: {}",
            s.prompt_tokens,
            s.cached_tokens,
            s.generated_tokens,
            common::rate("prefill:", s.prefill_tok_s()),
            common::rate("decode:", s.decode_tok_s()),
            common::acceptance(s),
            done.reason.as_str(),
            engine.threads(),
            engine.model.kernels.isa.name()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A training run folder (its latest checkpoint is used) or one step folder.
    pub checkpoint: std::path::PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `lamina generate CKPT`: a checkpoint step folder is a Hugging Face folder, so this is
/// `lamina run` on the checkpoint that CKPT resolves to.
pub fn generate(mut args: GenerateArgs) -> Result<()> {
    let step = lamina_train::resolve_checkpoint(&args.checkpoint, &mut |m| eprintln!("{m}"))?;
    args.run.model = Some(step.to_string_lossy().into_owned());
    run(args.run)
}
