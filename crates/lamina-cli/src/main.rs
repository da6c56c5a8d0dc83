//! `lamina`: the command-line front end. Arguments in, library calls out; every command
//! lives in `commands/`, and errors end as one line on stderr with a non-zero exit.

mod commands;
mod common;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lamina", version, about = "Local-first LLM toolkit: run, chat, tokenize, evaluate and benchmark models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One completion, streamed to stdout (prompt from -p or stdin).
    Run(commands::run::RunArgs),
    /// Interactive chat in the terminal.
    Chat(commands::chat::ChatArgs),
    /// Print token ids and pieces of a text.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Describe a model: architecture, sizes, tensor types, vocabulary, template.
    Info(commands::info::InfoArgs),
    /// Perplexity over a text file, computed like llama.cpp's llama-perplexity.
    Perplexity(commands::perplexity::PerplexityArgs),
    /// Measure prefill, decode and batched decode speed (optionally against llama.cpp).
    Bench(commands::bench::BenchArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LAMINA_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
        Command::Bench(a) => commands::bench::run(a),
    };
    if let Err(e) = result {
        // One line: the error and its causes.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
