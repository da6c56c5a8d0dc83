//! `lamina ask`: a retrieval-augmented answer. Search the collection with its own embedding
//! model, put the best chunks in the chat model's prompt as numbered sources
//! (`lamina_rag::answer`), stream the answer, then list the sources it cited.

use crate::common::{self, CollectionsArgs, ModelArgs, RerankArgs, SamplingArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use lamina_rag::answer::{self, Budget, Citation, RagPrompt};
use lamina_rag::embed::EngineEmbedder;
use lamina_rag::{Filter, Hit, SearchMode, SearchRequest};
use lamina_tokenizer::ChatMessage;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct AskArgs {
    /// The collection to answer from.
    pub name: String,
    /// The question.
    pub question: String,
    /// The chat model (default: smollm2-135m-instruct).
    pub model: Option<String>,
    /// Chunks retrieved (those that pass the threshold and fit the window become sources).
    #[arg(short, default_value_t = 4)]
    pub k: usize,
    /// Search mode: vector, keyword or hybrid.
    #[arg(long, default_value = "hybrid", value_parser = ["vector", "keyword", "hybrid"])]
    pub mode: String,
    /// Only chunks whose source or metadata match: key=value, key!=value, key^=prefix (repeatable).
    #[arg(long)]
    pub filter: Vec<String>,
    /// Least cosine similarity of a chunk to the question for it to be used; when no chunk
    /// reaches it, the answer is "I don't know" and the chat model is not run.
    #[arg(long, default_value_t = answer::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Print the prompt given to the chat model on stderr.
    #[arg(long)]
    pub show_prompt: bool,
    /// Print one JSON object (answer, cited sources, all sources, dropped chunks, hits)
    /// instead of streaming text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub collections: CollectionsArgs,
    #[command(flatten)]
    pub model_args: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub rerank: RerankArgs,
}

/// `path:bytes a–b (heading)`.
fn locate(c: &Citation) -> String {
    let heading = c.heading.as_deref().map(|h| format!(" ({h})")).unwrap_or_default();
    format!("{}:bytes {}–{}{heading}", c.source, c.byte_range.start, c.byte_range.end)
}

fn hits_json(hits: &[Hit]) -> serde_json::Value {
    hits.iter()
        .enumerate()
        .map(|(i, h)| {
            serde_json::json!({
                "rank": i + 1,
                "chunk_id": h.chunk.id,
                "source": h.chunk.source,
                "byte_range": h.chunk.byte_range,
                "heading": h.chunk.heading,
                "score": h.score,
                "similarity": h.similarity,
                "vector_rank": h.vector_rank,
                "keyword_rank": h.keyword_rank,
                "rerank_score": h.rerank_score,
            })
        })
        .collect()
}

/// The answer when no hit reaches the threshold.
fn nothing_relevant(args: &AskArgs, collection: &str, hits: &[Hit]) -> Result<()> {
    let text = answer::nothing_relevant_answer(collection);
    if args.json {
        let out = serde_json::json!({
            "answer": text, "nothing_relevant": true, "cited": [], "citations": [], "dropped": [], "hits": hits_json(hits), "threshold": args.threshold,
        });
        println!("{out}");
    } else {
        println!("{text}");
    }
    Ok(())
}

pub fn run(args: AskArgs) -> Result<()> {
    if args.question.trim().is_empty() {
        bail!("the question is empty");
    }
    if !(args.threshold.is_finite() && (-1.0..=1.0).contains(&args.threshold)) {
        bail!("--threshold {}: a cosine similarity is between -1 and 1", args.threshold);
    }
    let params = args.sampling.params()?;
    let rerank = args.rerank.options()?;
    let mode = SearchMode::parse(&args.mode)?;
    let filter = Filter::parse_cli(&args.filter)?;
    let catalog = lamina_rag::store::open_catalog(&args.collections.location()?)?;
    let store = catalog.open(&args.name)?;
    let spec = store.spec().clone();

    // Retrieval, with the model that made the collection's vectors.
    let pool = Arc::new(lamina_kernels::ThreadPool::new(args.model_args.threads()));
    let embedder = lamina_engine::resolve::load_embedder(Some(&spec.embedding_model), args.model_args.precision(), pool, None, &mut |m| eprintln!("{m}"))
        .with_context(|| format!("loading `{}`, the embedding model of collection `{}`", spec.embedding_model, spec.name))?;
    let embedder = EngineEmbedder { model_id: spec.embedding_model.clone(), embedder: Arc::new(embedder) };
    let retrieve = rerank.map_or(args.k, |o| args.k.max(o.candidates));
    let request = SearchRequest { filter, ..SearchRequest::new(&args.question, retrieve, mode) };
    let mut hits = lamina_rag::search(store.as_ref(), &embedder, &request)?;

    // Nothing relevant: say so without loading the chat model.
    if answer::nothing_relevant(&hits, args.threshold) {
        return nothing_relevant(&args, &spec.name, &hits);
    }

    let (model, tok) = common::load(args.model.as_deref(), &args.model_args)?;
    if tok.chat_template().is_none() {
        bail!("this model has no chat template; `lamina ask` needs a chat model");
    }
    if let Some(options) = rerank {
        // The answering model reranks unless --rerank-model names another.
        let (name, rm, rt) = match &args.rerank.rerank_model {
            Some(m) => {
                let (rm, rt) = common::load(Some(m), &args.model_args)?;
                (m.as_str(), rm, rt)
            }
            None => (args.model.as_deref().unwrap_or(lamina_core::registry::DEFAULT_MODEL), model.clone(), tok.clone()),
        };
        let reranker = RerankArgs::reranker(name, rm, rt, args.model_args.threads())?;
        hits = lamina_rag::rerank(hits, &args.question, &reranker, options)?;
        hits.truncate(args.k);
        if answer::nothing_relevant(&hits, args.threshold) {
            return nothing_relevant(&args, &spec.name, &hits);
        }
    }
    let ctx = args.model_args.context(&model);
    let reserved = params.max_tokens.min(ctx / 2);
    let prompt: RagPrompt =
        answer::build_prompt(&args.question, &hits, tok.as_ref(), Budget { context_window: ctx, reserved_for_answer: reserved }, args.threshold)?;
    for d in &prompt.dropped {
        eprintln!("dropped chunk {} of {}: {}", d.chunk_id.0, d.source, d.reason);
    }
    if prompt.citations.is_empty() {
        bail!(
            "no retrieved chunk fits the {ctx}-token context window with {reserved} tokens kept for the answer (try a smaller --max-tokens or a larger --ctx)"
        );
    }
    let text = tok.apply_chat_template(&[ChatMessage::system(&prompt.system), ChatMessage::user(&prompt.user)], true)?;
    let ids = tok.encode(&text, true)?;
    if ids.len() + reserved > ctx {
        bail!("the prompt is {} tokens; with {reserved} kept for the answer it does not fit the {ctx}-token window", ids.len());
    }
    if args.show_prompt {
        eprintln!("--- prompt ({} tokens) ---\n{text}\n--- end of prompt ---", ids.len());
    }
    let mut engine = common::engine(model, tok, &args.model_args, 1, None)?;
    let mut p = params;
    p.max_tokens = p.max_tokens.min(ctx - ids.len());
    let callback = (!args.json).then(common::stream_to_stdout);
    let done = engine.generate(ids, p, callback)?;
    let cited = answer::cited(&done.text, &prompt.citations);

    if args.json {
        let out = serde_json::json!({
            "answer": done.text.trim(),
            "nothing_relevant": false,
            "cited": cited,
            "citations": prompt.citations,
            "dropped": prompt.dropped,
            "hits": hits_json(&hits),
            "threshold": args.threshold,
            "prompt_tokens": prompt.prompt_tokens,
            "finish_reason": done.reason.as_str(),
        });
        println!("{out}");
        return Ok(());
    }
    println!("\n");
    if cited.is_empty() {
        println!("The answer cites no source. Retrieved:");
        for c in &prompt.citations {
            println!("[{}] {}", c.n, locate(c));
        }
    } else {
        println!("Sources:");
        for c in prompt.citations.iter().filter(|c| cited.contains(&c.n)) {
            println!("[{}] {}", c.n, locate(c));
        }
    }
    Ok(())
}
