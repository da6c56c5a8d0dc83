//! `lamina`: the command-line front end. Arguments in, library calls out; every command
//! lives in `commands/`, and errors end as one line on stderr with a non-zero exit.

mod commands;
mod common;
mod train_cmds;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lamina", version, about = "Local-first LLM toolkit: run, chat, tokenize, evaluate and benchmark models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the `pretrain` flags (one per config key) is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// One completion, streamed to stdout (prompt from -p or stdin).
    Run(commands::run::RunArgs),
    /// Interactive chat in the terminal.
    Chat(commands::chat::ChatArgs),
    /// Sentence embeddings, one per input line (JSONL or .npy).
    Embed(commands::embed::EmbedArgs),
    /// Collections of documents for retrieval: add, rm, list, info, search, drop.
    Index(commands::index::IndexArgs),
    /// Answer a question from a collection, citing its sources (retrieval-augmented).
    Ask(commands::ask::AskArgs),
    /// Print token ids and pieces of a text.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// What a prompt costs on several models (tokens by each one's tokenizer, exact prices).
    Cost(commands::cost::CostArgs),
    /// Prompt tests across models: assertions, a side-by-side table, JSON and HTML reports.
    Compare(commands::compare::CompareArgs),
    /// Describe a model: architecture, sizes, tensor types, vocabulary, template.
    Info(commands::info::InfoArgs),
    /// Perplexity over a text file, computed like llama.cpp's llama-perplexity.
    Perplexity(commands::perplexity::PerplexityArgs),
    /// Generate from a training checkpoint (a run folder or one of its step folders).
    Generate(commands::run::GenerateArgs),
    /// Tokenizer tools: `lamina tokenizer train`.
    Tokenizer(train_cmds::TokenizerArgs),
    /// Pre-train a model from scratch (next-token prediction).
    Pretrain(train_cmds::PretrainArgs),
    /// Plot train/validation loss from a metrics log.
    Plot(train_cmds::PlotArgs),
    /// Export a checkpoint as a Hugging Face folder or a GGUF file.
    Export(train_cmds::ExportArgs),
    /// Rewrite a GGUF model with its matrices in another quantization type.
    Quantize(commands::quantize::QuantizeArgs),
    /// Direct preference optimisation (DPO) of LoRA adapters on chosen/rejected pairs.
    Dpo(commands::dpo::DpoArgs),
    /// Log-likelihood evaluation: multiple choice, preference accuracy, held-out loss.
    Eval(commands::eval::EvalArgs),
    /// Supervised fine-tuning with LoRA on instruction data (chat messages, Alpaca, prompt/completion).
    Sft(commands::sft::SftArgs),
    /// Fold a LoRA adapter into its base model (GGUF or Hugging Face folder).
    Merge(commands::merge::MergeArgs),
    /// Measure prefill, decode and batched decode speed (optionally against llama.cpp).
    Bench(commands::bench::BenchArgs),
    /// Serve models over an OpenAI-compatible HTTP API.
    Serve(commands::serve::ServeArgs),
    /// An OpenAI-compatible gateway in front of several backends: routing, fallbacks, costs, budgets, logs.
    Gateway(commands::gateway::GatewayArgs),
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
        Command::Embed(a) => commands::embed::run(a),
        Command::Index(a) => commands::index::run(a),
        Command::Ask(a) => commands::ask::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Cost(a) => commands::cost::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Gateway(a) => commands::gateway::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Merge(a) => commands::merge::run(a),
        Command::Sft(a) => commands::sft::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Dpo(a) => commands::dpo::run(a),
        Command::Generate(a) => commands::run::generate(a),
        Command::Tokenizer(a) => train_cmds::run_tokenizer(a),
        Command::Pretrain(a) => train_cmds::run_pretrain(a),
        Command::Plot(a) => train_cmds::run_plot(a),
        Command::Export(a) => train_cmds::run_export(a),
    };
    if let Err(e) = result {
        // One line: the error and its causes.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
