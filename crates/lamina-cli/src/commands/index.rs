//! `lamina index`: collections of documents on disk (or in PostgreSQL) — add, rm, list,
//! info, search, drop. The work is lamina-rag's (`ingest`, `search`, `store`); this file
//! turns arguments into calls and results into lines.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use lamina_engine::resolve;
use lamina_kernels::ThreadPool;
use lamina_model::Precision;
use lamina_rag::ingest::{self, IngestEvent, IngestOptions, IngestReport};
use lamina_rag::store::{open_catalog, Catalog, Store};
use lamina_rag::{embed::EngineEmbedder, CollectionSpec, Filter, Metadata, RagError, SearchMode, SearchRequest};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Where collections live: a folder, or a postgres:// URL (default: $LAMINA_COLLECTIONS,
    /// else the user's data folder, lamina/collections).
    #[arg(long, value_name = "DIR|URL", global = true)]
    pub collections: Option<String>,
    #[command(subcommand)]
    pub command: IndexCommand,
}

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Add files and folders to a collection (created on first use). Unchanged files are
    /// skipped; changed ones replace their chunks.
    Add(AddArgs),
    /// Remove files from a collection (a folder removes every file under it).
    Rm(RmArgs),
    /// List the collections.
    List(ListArgs),
    /// Describe a collection: model, chunking, sources, size.
    Info(InfoArgs),
    /// Search a collection.
    Search(SearchArgs),
    /// Delete a collection and everything in it.
    Drop(DropArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    pub name: String,
    /// Text, Markdown, HTML and PDF files, or folders (read recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Embedding model (default: the collection's; for a new collection all-minilm-l6-v2).
    #[arg(long)]
    pub model: Option<String>,
    /// Chunk size in the model's tokens (new collections; default 200).
    #[arg(long)]
    pub chunk_tokens: Option<usize>,
    /// Tokens consecutive chunks share (new collections; default 30).
    #[arg(long)]
    pub chunk_overlap: Option<usize>,
    /// Metadata for every file added, `key=value` (repeatable; the value is JSON when it
    /// parses as JSON, else a string). `kind`, `title` and `path` are set by lamina.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Commit after this many new or changed files: a kill loses at most those.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_every: u64,
    /// Worker threads for embedding (default and 0: all logical CPUs).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    pub name: String,
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// One JSON object per collection.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    pub name: String,
    /// The collection and its sources as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    pub name: String,
    pub query: String,
    /// Results to show.
    #[arg(short = 'k', default_value_t = 5)]
    pub k: usize,
    #[arg(long, default_value = "hybrid", value_parser = ["vector", "keyword", "hybrid"])]
    pub mode: String,
    /// Only chunks whose source metadata matches: `key=value`, `key!=value`, `key^=prefix`
    /// (`source^=/docs/` for a folder). Repeatable; all must hold.
    #[arg(long = "filter", value_name = "CONDITION")]
    pub filter: Vec<String>,
    /// One JSON object per hit.
    #[arg(long)]
    pub json: bool,
    /// Embedding model, when the collection's is not a built-in one (its folder or file).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub rerank: crate::common::RerankArgs,
}

#[derive(Args, Debug)]
pub struct DropArgs {
    pub name: String,
}

pub fn run(args: IndexArgs) -> Result<()> {
    let location = crate::common::collections_location(args.collections.as_deref())?;
    let catalog = open_catalog(&location)?;
    match args.command {
        IndexCommand::Add(a) => add(catalog.as_ref(), a),
        IndexCommand::Rm(a) => rm(catalog.as_ref(), a),
        IndexCommand::List(a) => list(catalog.as_ref(), a),
        IndexCommand::Info(a) => info(catalog.as_ref(), a),
        IndexCommand::Search(a) => search(catalog.as_ref(), a),
        IndexCommand::Drop(a) => {
            catalog.delete(&a.name).map_err(|e| located(e, catalog.as_ref()))?;
            println!("dropped collection `{}`", a.name);
            Ok(())
        }
    }
}

/// An unknown collection's error, saying where it was looked for.
fn located(e: RagError, catalog: &dyn Catalog) -> anyhow::Error {
    match e {
        RagError::UnknownCollection(n) => {
            anyhow::anyhow!("no collection named `{n}` in {} (`lamina index list` shows them; `lamina index add` makes one)", catalog.location())
        }
        e => e.into(),
    }
}

/// The name a model is recorded under in a collection: a built-in's name, a hub id, or the
/// model's folder or file name.
pub fn model_id(spec: &str) -> String {
    if let Some(b) = lamina_core::registry::find_builtin(spec) {
        return b.name.to_string();
    }
    let p = std::path::Path::new(spec);
    if !p.exists() && resolve::looks_like_hub_id(spec) {
        return spec.to_string();
    }
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_string())
}

/// Loads an embedding model (`None`: the default one) under the id it is recorded with.
pub fn load_embedder(model: Option<&str>, threads: Option<usize>) -> Result<EngineEmbedder> {
    let spec = model.unwrap_or(lamina_core::registry::DEFAULT_EMBEDDING_MODEL);
    let threads = lamina_core::Threads::resolve(threads.unwrap_or(0));
    if let Some(n) = threads.cap_notice("--threads") {
        eprintln!("{n}");
    }
    let pool = Arc::new(ThreadPool::new(threads.used));
    let embedder = resolve::load_embedder(Some(spec), Precision::Native, pool, None, &mut |m| eprintln!("{m}"))?;
    Ok(EngineEmbedder { model_id: model_id(spec), embedder: Arc::new(embedder) })
}

/// The embedder for a collection: `--model` if given, else the collection's own model, which
/// must then be one lamina can find by name.
pub fn collection_embedder(spec: &CollectionSpec, model: Option<&str>, threads: Option<usize>) -> Result<EngineEmbedder> {
    match model {
        Some(m) => load_embedder(Some(m), threads),
        None if lamina_core::registry::find_builtin(&spec.embedding_model).is_some() || resolve::looks_like_hub_id(&spec.embedding_model) => {
            load_embedder(Some(&spec.embedding_model), threads)
        }
        None => bail!("collection `{}` was made with the model `{}`: name its folder or file with --model", spec.name, spec.embedding_model),
    }
}

fn parse_meta(items: &[String]) -> Result<Metadata> {
    let mut m = Metadata::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else { bail!("--meta `{item}`: expected KEY=VALUE") };
        if k.is_empty() {
            bail!("--meta `{item}`: the key is empty");
        }
        if ingest::RESERVED_KEYS.contains(&k) {
            bail!("--meta `{k}`: lamina sets `{k}` itself (reserved: {})", ingest::RESERVED_KEYS.join(", "));
        }
        m.insert(k.to_string(), serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string())));
    }
    Ok(m)
}

fn add(catalog: &dyn Catalog, a: AddArgs) -> Result<()> {
    let metadata = parse_meta(&a.meta)?;
    let existing = match catalog.open(&a.name) {
        Ok(s) => Some(s),
        Err(RagError::UnknownCollection(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (store, embedder) = match existing {
        Some(store) => {
            let spec = store.spec();
            for (flag, given, has) in [("--chunk-tokens", a.chunk_tokens, spec.chunk_tokens), ("--chunk-overlap", a.chunk_overlap, spec.chunk_overlap)] {
                if given.is_some_and(|g| g != has) {
                    bail!("collection `{}` chunks with {flag} {has}; to change it, drop the collection and add its files again", spec.name);
                }
            }
            let embedder = collection_embedder(spec, a.model.as_deref(), a.threads)?;
            (store, embedder)
        }
        None => {
            let embedder = load_embedder(a.model.as_deref(), a.threads)?;
            let mut spec = CollectionSpec::new(&a.name, &embedder.model_id, lamina_rag::TextEmbedder::dimensions(&embedder));
            spec.chunk_tokens = a.chunk_tokens.unwrap_or(spec.chunk_tokens);
            spec.chunk_overlap = a.chunk_overlap.unwrap_or(spec.chunk_overlap);
            ingest::check_fit(&spec, &embedder)?;
            let store = catalog.create(spec)?;
            eprintln!("created collection `{}` in {} ({}, {} dimensions)", a.name, catalog.location(), embedder.model_id, store.spec().dimensions);
            (store, embedder)
        }
    };
    ingest_into(store, &embedder, &a, metadata)
}

fn ingest_into(mut store: Box<dyn Store>, embedder: &EngineEmbedder, a: &AddArgs, metadata: Metadata) -> Result<()> {
    let opts = IngestOptions { metadata, batch_files: a.commit_every as usize, ..IngestOptions::default() };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files {msg}").expect("a valid template"));
    let t0 = std::time::Instant::now();
    let mut on_event = |e: IngestEvent| match e {
        IngestEvent::Found { files } => bar.set_length(files as u64),
        IngestEvent::Skipped { path, reason } => bar.suspend(|| eprintln!("skipped {}: {reason}", path.display())),
        IngestEvent::Unchanged { .. } => bar.inc(1),
        IngestEvent::Embedded { source, chunks, .. } => {
            bar.inc(1);
            bar.set_message(format!("{chunks} chunks: {source}"));
        }
        IngestEvent::Committed { .. } => {}
    };
    let counter = embedder.embedder.tokenizer();
    let result = ingest::add_paths(store.as_mut(), embedder, counter, &a.paths, &opts, &mut on_event);
    bar.finish_and_clear();
    let report = result?;
    println!("{}", summary(&report, t0.elapsed().as_secs_f64()));
    Ok(())
}

/// One line: what `add` did.
fn summary(r: &IngestReport, secs: f64) -> String {
    format!(
        "{} added, {} replaced, {} unchanged, {} skipped: {} chunks, {} tokens in {secs:.1} s",
        r.added,
        r.replaced,
        r.unchanged,
        r.skipped.len(),
        r.chunks,
        r.tokens
    )
}

fn rm(catalog: &dyn Catalog, a: RmArgs) -> Result<()> {
    let mut store = catalog.open(&a.name).map_err(|e| located(e, catalog))?;
    let removed = ingest::remove_paths(store.as_mut(), &a.paths)?;
    if removed.is_empty() {
        let shown: Vec<_> = a.paths.iter().map(|p| p.display().to_string()).collect();
        bail!("collection `{}` holds nothing at {}", a.name, shown.join(", "));
    }
    for k in &removed {
        println!("removed {k}");
    }
    println!("{} sources removed", removed.len());
    Ok(())
}

fn human_bytes(b: Option<u64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b < 1024 => format!("{b} B"),
        Some(b) if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) if b < 1 << 30 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
    }
}

fn list(catalog: &dyn Catalog, a: ListArgs) -> Result<()> {
    let all = catalog.list()?;
    if a.json {
        for i in &all {
            println!("{}", serde_json::to_string(i)?);
        }
        return Ok(());
    }
    if all.is_empty() {
        eprintln!("no collections in {}", catalog.location());
        return Ok(());
    }
    println!("{:<24} {:<24} {:>8} {:>8} {:>10}", "NAME", "MODEL", "SOURCES", "CHUNKS", "SIZE");
    for i in all {
        println!("{:<24} {:<24} {:>8} {:>8} {:>10}", i.spec.name, i.spec.embedding_model, i.sources, i.chunks, human_bytes(i.stored_bytes));
    }
    Ok(())
}

fn info(catalog: &dyn Catalog, a: InfoArgs) -> Result<()> {
    let store = catalog.open(&a.name).map_err(|e| located(e, catalog))?;
    let info = store.info()?;
    let sources = store.sources()?;
    if a.json {
        let v = serde_json::json!({
            "location": catalog.location(),
            "spec": info.spec,
            "sources": sources,
            "source_count": info.sources,
            "chunks": info.chunks,
            "stored_bytes": info.stored_bytes,
            "vector_index": info.vector_index,
        });
        println!("{v}");
        return Ok(());
    }
    let s = &info.spec;
    println!("collection  {}", s.name);
    println!("location    {}", catalog.location());
    println!("model       {} ({} dimensions)", s.embedding_model, s.dimensions);
    println!("chunking    {} tokens, {} overlap", s.chunk_tokens, s.chunk_overlap);
    println!("sources     {}", info.sources);
    println!("chunks      {}", info.chunks);
    println!("stored      {}", human_bytes(info.stored_bytes));
    println!("index       {}", info.vector_index);
    if !sources.is_empty() {
        println!();
        println!("{:>7} {:>10}  SOURCE", "CHUNKS", "BYTES");
        for src in sources {
            println!("{:>7} {:>10}  {}", src.chunks, src.bytes, src.source);
        }
    }
    Ok(())
}

fn search(catalog: &dyn Catalog, a: SearchArgs) -> Result<()> {
    let rerank = a.rerank.options()?;
    let store = catalog.open(&a.name).map_err(|e| located(e, catalog))?;
    let mut req = SearchRequest::new(&a.query, a.k, SearchMode::parse(&a.mode)?);
    req.filter = Filter::parse_cli(&a.filter)?;
    let embedder = collection_embedder(store.spec(), a.model.as_deref(), a.threads)?;
    if let Some(o) = &rerank {
        req.k = req.k.max(o.candidates);
    }
    let mut hits = lamina_rag::search(store.as_ref(), &embedder, &req)?;
    if let Some(options) = rerank {
        let name = a.rerank.rerank_model.as_deref().unwrap_or(lamina_core::registry::DEFAULT_MODEL);
        let (model, tok) = lamina_engine::resolve::load(Some(name), lamina_model::Precision::Native, &mut |m| eprintln!("{m}"))?;
        let threads = lamina_core::Threads::resolve(a.threads.unwrap_or(0)).used;
        let reranker = crate::common::RerankArgs::reranker(name, Arc::new(model), Arc::new(tok), threads)?;
        hits = lamina_rag::rerank(hits, &a.query, &reranker, options)?;
        hits.truncate(a.k);
    }
    if a.json {
        for (i, h) in hits.iter().enumerate() {
            let v = serde_json::json!({
                "rank": i + 1,
                "score": h.score,
                "similarity": h.similarity,
                "vector_rank": h.vector_rank,
                "keyword_rank": h.keyword_rank,
                "rerank_score": h.rerank_score,
                "chunk_id": h.chunk.id.0,
                "source": h.chunk.source,
                "byte_start": h.chunk.byte_range.start,
                "byte_end": h.chunk.byte_range.end,
                "heading": h.chunk.heading,
                "text": h.chunk.text,
                "metadata": h.chunk.metadata,
            });
            println!("{v}");
        }
        return Ok(());
    }
    if hits.is_empty() {
        eprintln!("no matches in `{}`", a.name);
    }
    for (i, h) in hits.iter().enumerate() {
        let c = &h.chunk;
        let heading = c.heading.as_deref().map(|h| format!("  [{h}]")).unwrap_or_default();
        println!("{:>2}. {:.4}  {}:{}-{}{heading}", i + 1, h.score, c.source, c.byte_range.start, c.byte_range.end);
        println!("    {}", excerpt(&c.text, 200));
    }
    Ok(())
}

/// The text on one line, cut at a character boundary after about `max` bytes.
fn excerpt(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() <= max {
        return flat;
    }
    let mut end = max;
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &flat[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_names_not_paths() {
        assert_eq!(model_id("all-MiniLM-L6-v2"), "all-minilm-l6-v2");
        assert_eq!(model_id("/models/bge-small/"), "bge-small");
        assert_eq!(model_id("/models/x.gguf"), "x.gguf");
        assert_eq!(model_id("BAAI/bge-small-en-v1.5"), "BAAI/bge-small-en-v1.5");
    }

    #[test]
    fn meta_values_are_json_or_strings_and_reserved_keys_are_refused() {
        let m = parse_meta(&["year=2024".into(), "team=docs".into(), "tags=[\"a\"]".into()]).unwrap();
        assert_eq!(m.get("year"), Some(&serde_json::json!(2024)));
        assert_eq!(m.get("team"), Some(&serde_json::json!("docs")));
        assert_eq!(m.get("tags"), Some(&serde_json::json!(["a"])));
        assert!(parse_meta(&["kind=pdf".into()]).unwrap_err().to_string().contains("reserved"));
        assert!(parse_meta(&["novalue".into()]).is_err());
    }

    #[test]
    fn excerpts_are_one_line_and_cut_on_a_character() {
        assert_eq!(excerpt("a\n b\tc", 10), "a b c");
        let e = excerpt(&"é".repeat(150), 201);
        assert!(e.ends_with('…') && e.len() <= 204);
    }
}
