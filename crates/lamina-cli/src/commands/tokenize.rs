//! `lamina tokenize`: ids, pieces and count.

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model whose tokenizer to use (.gguf, folder, built-in name).
    pub model: String,
    /// The text to tokenize.
    pub text: String,
    /// Add BOS/EOS as the model's settings say.
    #[arg(long)]
    pub add_special: bool,
    /// Print only the ids, as a JSON array.
    #[arg(long)]
    pub ids_only: bool,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let path = lamina_engine::resolve::resolve_model_path(Some(&args.model), &mut |m| eprintln!("{m}"))?;
    let tok = lamina_engine::resolve::load_tokenizer(&path)?;
    let ids = tok.encode(&args.text, args.add_special)?;
    if args.ids_only {
        println!("{}", serde_json::to_string(&ids)?);
        return Ok(());
    }
    for &id in &ids {
        println!("{id:>7} -> {:?}", tok.token_to_piece(id));
    }
    println!("{} tokens", ids.len());
    Ok(())
}
