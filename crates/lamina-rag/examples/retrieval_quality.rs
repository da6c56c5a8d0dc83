//! Retrieval quality on the Alpaca set (`lamina_rag::eval`): hit@1, hit@10 and MRR@10 of
//! vector, keyword and hybrid search with all-MiniLM-L6-v2, on the tuning half (records
//! 0–1999), the held-out half (2000–3999) and all of it; the cosine of the best hit of
//! answerable and unanswerable questions (for the relevance threshold); with `--tune`, the
//! analysis and fusion variants docs/retrieval.md reports; with `--rerank`, hybrid search's
//! first hits reranked by the default chat model (`lamina_rag::rerank::EngineReranker`).
//!
//! cargo run -p lamina-rag --features engine --example retrieval_quality -- [--tune] [--threads N]
//!   [--precision native|f32] [--shared DIR] [--cache DIR]
//!   [--rerank [--rerank-queries N (400; 0: all)] [--candidates C (10)] [--rerank-tokens T (128)]]

use lamina_rag::embed::{EmbedKind, EngineEmbedder, TextEmbedder};
use lamina_rag::eval::{self, AlpacaSplit, CachedEmbedder, EvalQuery, Metrics};
use lamina_rag::index::analyzer::StopWords;
use lamina_rag::index::{Analyzer, Bm25Index};
use lamina_rag::rerank::{EngineReranker, DEFAULT_RERANK_CANDIDATES, DEFAULT_RERANK_WEIGHT};
use lamina_rag::store::{Change, MemoryState, Store};
use lamina_rag::{ChunkId, ChunkRecord, CollectionInfo, CollectionSpec, Filter, Fusion, RagError, SearchMode, SearchRequest, SourceRecord};
use std::path::PathBuf;
use std::sync::Arc;

/// The evaluation's store with another keyword analysis: the same vectors and chunks, a BM25
/// index of its own.
struct WithAnalyzer<'a> {
    inner: &'a MemoryState,
    bm25: Bm25Index,
}

impl<'a> WithAnalyzer<'a> {
    fn new(inner: &'a MemoryState, analyzer: Analyzer) -> WithAnalyzer<'a> {
        let mut bm25 = Bm25Index::with_analyzer(analyzer);
        for c in inner.all_chunks() {
            bm25.insert(c.id, &c.text);
        }
        WithAnalyzer { inner, bm25 }
    }
}

impl Store for WithAnalyzer<'_> {
    fn spec(&self) -> &CollectionSpec {
        self.inner.spec()
    }
    fn info(&self) -> lamina_rag::Result<CollectionInfo> {
        Ok(self.inner.info(None))
    }
    fn source(&self, source: &str) -> lamina_rag::Result<Option<SourceRecord>> {
        Ok(self.inner.source(source))
    }
    fn sources(&self) -> lamina_rag::Result<Vec<SourceRecord>> {
        Ok(self.inner.sources())
    }
    fn apply(&mut self, _: Vec<Change>) -> lamina_rag::Result<()> {
        Err(RagError::InvalidInput("the evaluation's store is read-only".into()))
    }
    fn vector_search(&self, q: &[f32], k: usize, filter: &Filter) -> lamina_rag::Result<Vec<(ChunkId, f32)>> {
        self.inner.vector_search(q, k, filter)
    }
    fn keyword_search(&self, q: &str, k: usize, _: &Filter) -> lamina_rag::Result<Vec<(ChunkId, f32)>> {
        Ok(self.bm25.search(q, k, &|_| true))
    }
    fn chunks(&self, ids: &[ChunkId]) -> lamina_rag::Result<Vec<ChunkRecord>> {
        Ok(self.inner.chunks(ids))
    }
}

struct Args {
    tune: bool,
    threads: usize,
    precision: String,
    shared: PathBuf,
    cache: PathBuf,
    /// Rerank hybrid search's candidates with the default chat model.
    rerank: bool,
    rerank_queries: usize,
    rerank_tokens: usize,
    candidates: usize,
}

fn args() -> Args {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut a = Args {
        tune: false,
        threads: 0,
        precision: "native".into(),
        shared: root.join("../shared"),
        cache: root.join("target/rag-eval"),
        rerank: false,
        rerank_queries: 400,
        rerank_tokens: 128,
        candidates: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{x} needs a value"));
        match x.as_str() {
            "--tune" => a.tune = true,
            "--threads" => a.threads = value().parse().expect("--threads N"),
            "--precision" => a.precision = value(),
            "--shared" => a.shared = value().into(),
            "--cache" => a.cache = value().into(),
            "--rerank" => a.rerank = true,
            "--rerank-queries" => a.rerank_queries = value().parse().expect("--rerank-queries N (0: all)"),
            "--rerank-tokens" => a.rerank_tokens = value().parse().expect("--rerank-tokens N"),
            "--candidates" => a.candidates = value().parse().expect("--candidates N"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args();
    let json = std::fs::read_to_string(a.shared.join("datasets/alpaca_5000.json"))?;
    let shakespeare = std::fs::read_to_string(a.shared.join("datasets/tinyshakespeare.txt"))?;
    let set = eval::alpaca_set(&json, &shakespeare, &AlpacaSplit::full())?;
    eprintln!("corpus: {} passages; {} questions, {} unanswerable", set.corpus.len(), set.queries.len(), set.unanswerable.len());

    let threads = lamina_core::Threads::resolve(a.threads).used;
    let pool = Arc::new(lamina_kernels::ThreadPool::new(threads));
    let precision = if a.precision == "f32" { lamina_model::Precision::F32 } else { lamina_model::Precision::Native };
    let embedder = lamina_engine::resolve::load_embedder(None, precision, pool, None, &mut |m| eprintln!("{m}"))?;
    let model_id = format!("{}-{}", lamina_core::registry::DEFAULT_EMBEDDING_MODEL, a.precision);
    let engine = EngineEmbedder { model_id: model_id.clone(), embedder: Arc::new(embedder) };
    let cached = CachedEmbedder::new(&engine);
    let progress = |what: &'static str| {
        move |done: usize, all: usize| {
            if done.is_multiple_of(256) || done == all {
                eprintln!("embedding {what}: {done}/{all}");
            }
        }
    };
    let corpus: Vec<&str> = set.corpus.iter().map(|d| d.text.as_str()).collect();
    let vectors = cached.embed_all_cached(&a.cache, &corpus, EmbedKind::Passage, 32, &mut progress("passages"))?;
    let questions: Vec<&str> = set.queries.iter().chain(&set.unanswerable).map(|q| q.text.as_str()).collect();
    cached.embed_all_cached(&a.cache, &questions, EmbedKind::Query, 32, &mut progress("questions"))?;
    let store = eval::build_store(&set, CollectionSpec::new("alpaca", &model_id, cached.dimensions()), &vectors)?;

    let tune: Vec<EvalQuery> = set.queries.iter().filter(|q| q.record < 2000).cloned().collect();
    let held: Vec<EvalQuery> = set.queries.iter().filter(|q| q.record >= 2000).cloned().collect();
    let run = |store: &dyn Store, queries: &[EvalQuery], req: &SearchRequest| -> Result<eval::Run, RagError> { eval::run(store, &cached, &set, queries, req) };

    // The defaults, every mode, each half and the whole.
    let mut rows: Vec<(String, Metrics)> = Vec::new();
    let mut answerable_best = Vec::new();
    for mode in eval::MODES {
        let req = SearchRequest::new("-", 10, mode);
        for (name, qs) in [("0–1999", &tune), ("2000–3999", &held), ("0–3999", &set.queries)] {
            let r = run(&store, qs, &req)?;
            if mode == SearchMode::Vector && name == "0–3999" {
                answerable_best = r.best_similarity.clone();
            }
            rows.push((format!("{mode:?} {name}").to_lowercase(), r.metrics()));
        }
    }
    println!("## Retrieval quality, {} ({} passages)\n\n{}", model_id, set.corpus.len(), eval::table(&rows));
    threshold_study(&answerable_best, &run(&store, &set.unanswerable, &SearchRequest::new("-", 10, SearchMode::Vector))?.best_similarity);

    if a.tune {
        tune_variants(&store, &tune, &held, &run)?;
    }
    if a.rerank {
        rerank_study(&a, &store, &cached, &set, &tune, &held)?;
    }
    Ok(())
}

/// Every `n`-th question of `qs`, `count` of them at most (spread over the whole half).
fn spread(qs: &[EvalQuery], count: usize) -> Vec<EvalQuery> {
    let step = qs.len().div_ceil(count.max(1)).max(1);
    qs.iter().step_by(step).cloned().collect()
}

/// Hybrid search's first `--candidates` rescored by the default chat model, on a spread of
/// `--rerank-queries` questions from each half (0: every question); hit@1 and MRR@10 for
/// several candidate counts and weights. Scores are cached in the cache folder.
fn rerank_study(
    a: &Args,
    store: &MemoryState,
    embedder: &dyn TextEmbedder,
    set: &eval::EvalSet,
    tune: &[EvalQuery],
    held: &[EvalQuery],
) -> Result<(), Box<dyn std::error::Error>> {
    let threads = lamina_core::Threads::resolve(a.threads).used;
    let pool = Arc::new(lamina_kernels::ThreadPool::new(threads));
    let (model, tok) = lamina_engine::resolve::load(None, lamina_model::Precision::Native, &mut |m| eprintln!("{m}"))?;
    let reranker = EngineReranker::new(lamina_core::registry::DEFAULT_MODEL, Arc::new(model), Arc::new(tok), pool, a.rerank_tokens)?;
    let req = SearchRequest::new("-", 10, SearchMode::Hybrid);
    let pick = |qs: &[EvalQuery]| if a.rerank_queries == 0 { qs.to_vec() } else { spread(qs, a.rerank_queries / 2) };
    let mut halves = Vec::new();
    let t = std::time::Instant::now();
    let mut scored = 0;
    for (name, qs) in [("tune", pick(tune)), ("held-out", pick(held))] {
        let path = a.cache.join(format!("rerank-pmi-{}-{}-{name}-{}.json", a.rerank_tokens, a.candidates, qs.len()));
        let rescored: Vec<eval::Rescored> = match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(r) => r,
            None => {
                let r = eval::rescore(store, embedder, set, &qs, &req, &reranker, a.candidates, &mut |d, n| {
                    if d % 100 == 0 || d == n {
                        eprintln!("reranking {name}: {d}/{n} ({:.2} s a question)", t.elapsed().as_secs_f64() / (scored + d) as f64);
                    }
                })?;
                scored += r.len();
                lamina_core::fs::write_bytes_atomic(&path, &serde_json::to_vec(&r)?)?;
                r
            }
        };
        halves.push((name, rescored));
    }
    let metrics = |rs: &[eval::Rescored], k: usize, w: f32| eval::metrics(&rs.iter().map(|x| x.rank(k, w)).collect::<Vec<_>>());
    println!(
        "## Reranking hybrid search's first hits with {} (passages cut to {} tokens; {} + {} questions)\n",
        lamina_core::registry::DEFAULT_MODEL,
        a.rerank_tokens,
        halves[0].1.len(),
        halves[1].1.len()
    );
    println!("| candidates | weight | hit@1 tune | held-out | MRR@10 tune | held-out |\n| ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut ks = vec![3, 5, a.candidates];
    ks.retain(|&k| k <= a.candidates);
    ks.dedup();
    for k in ks {
        for w in [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0] {
            let (m0, m1) = (metrics(&halves[0].1, k, w), metrics(&halves[1].1, k, w));
            println!("| {k} | {w:.1} | {:.3} | {:.3} | {:.3} | {:.3} |", m0.hit_at_1, m1.hit_at_1, m0.mrr_at_10, m1.mrr_at_10);
        }
    }
    let all: Vec<eval::Rescored> = halves.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
    let (before, after) = (metrics(&all, 0, 0.0), metrics(&all, DEFAULT_RERANK_CANDIDATES, DEFAULT_RERANK_WEIGHT));
    println!("\n| run | queries | hit@1 | hit@10 | MRR@10 |\n| --- | ---: | ---: | ---: | ---: |");
    println!("| hybrid | {} | {:.3} | {:.3} | {:.3} |", before.queries, before.hit_at_1, before.hit_at_10, before.mrr_at_10);
    println!(
        "| hybrid + rerank (defaults: {DEFAULT_RERANK_CANDIDATES} candidates, weight {DEFAULT_RERANK_WEIGHT}) | {} | {:.3} | {:.3} | {:.3} |",
        after.queries, after.hit_at_1, after.hit_at_10, after.mrr_at_10
    );
    if scored > 0 {
        println!("\nreranking: {:.2} s a question ({scored} questions, {} candidates each)", t.elapsed().as_secs_f64() / scored as f64, a.candidates);
    }
    Ok(())
}

fn threshold_study(answerable: &[Option<f32>], unanswerable: &[Option<f32>]) {
    let quantile = |v: &[Option<f32>], q: f64| {
        let mut s: Vec<f32> = v.iter().map(|x| x.unwrap_or(f32::NEG_INFINITY)).collect();
        s.sort_by(f32::total_cmp);
        s[((s.len() - 1) as f64 * q).round() as usize]
    };
    println!("## Cosine of the best hit\n\n| questions | n | 1% | 5% | 10% | median |\n| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, v) in [("answerable (0–3999)", answerable), ("unanswerable (4500–4999)", unanswerable)] {
        println!("| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |", v.len(), quantile(v, 0.01), quantile(v, 0.05), quantile(v, 0.10), quantile(v, 0.5));
    }
    println!("\n| threshold | answerable kept | unanswerable kept |\n| ---: | ---: | ---: |");
    for t in [0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5] {
        println!("| {t:.2} | {:.3} | {:.3} |", eval::share_at_least(answerable, t), eval::share_at_least(unanswerable, t));
    }
    println!();
}

type RunFn<'a> = dyn Fn(&dyn Store, &[EvalQuery], &SearchRequest) -> Result<eval::Run, RagError> + 'a;

/// Each variant on both halves: keyword and hybrid hit@1 / MRR@10.
fn tune_variants(store: &MemoryState, tune: &[EvalQuery], held: &[EvalQuery], run: &RunFn<'_>) -> Result<(), RagError> {
    let plain = Analyzer::PLAIN;
    let english = Analyzer::english();
    let analyzers: Vec<(&str, Analyzer)> = vec![
        ("plain: lower-cased alphanumeric runs (default)", plain),
        ("+ short stop words", Analyzer { stop_words: StopWords::Short, ..plain }),
        ("+ English stop words", Analyzer { stop_words: StopWords::English, ..plain }),
        ("+ stems only", Analyzer { stem: true, ..plain }),
        ("+ English stop words + stems", Analyzer { apostrophes: false, ..english }),
        ("+ English stop words + stems + apostrophes", english),
    ];
    println!("## Keyword analysis (hybrid: the default fusion)\n\n| analysis | keyword hit@1 tune | held-out | hybrid hit@1 tune | held-out | hybrid MRR@10 held-out |\n| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, an) in &analyzers {
        let s = WithAnalyzer::new(store, *an);
        let kw = SearchRequest::new("-", 10, SearchMode::Keyword);
        let hy = SearchRequest::new("-", 10, SearchMode::Hybrid);
        let (k1, k2) = (run(&s, tune, &kw)?.metrics(), run(&s, held, &kw)?.metrics());
        let (h1, h2) = (run(&s, tune, &hy)?.metrics(), run(&s, held, &hy)?.metrics());
        println!("| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |", k1.hit_at_1, k2.hit_at_1, h1.hit_at_1, h2.hit_at_1, h2.mrr_at_10);
    }
    println!("\n## Fusion (default analysis)\n\n| fusion | candidates | hybrid hit@1 tune | held-out | MRR@10 tune | held-out |\n| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut variants: Vec<(Fusion, Option<usize>)> = vec![(Fusion::RRF, None), (Fusion::Rrf { vector_weight: 1.0, keyword_weight: 0.5, k0: 5.0 }, None)];
    for a in [0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9] {
        variants.push((Fusion::Convex { vector_weight: a }, None));
    }
    for c in [20, 100, 200] {
        variants.push((Fusion::default(), Some(c)));
    }
    for (fusion, cand) in variants {
        let req = SearchRequest { candidates: cand, fusion, ..SearchRequest::new("-", 10, SearchMode::Hybrid) };
        let (a, b) = (run(store, tune, &req)?.metrics(), run(store, held, &req)?.metrics());
        let c = cand.map_or("max(4k, 50)".to_string(), |c| c.to_string());
        let name = match fusion {
            Fusion::Rrf { vector_weight, keyword_weight, k0 } => format!("RRF k0 {k0}, weights {vector_weight} / {keyword_weight}"),
            Fusion::Convex { vector_weight } => format!("convex, vector weight {vector_weight}"),
        };
        println!("| {name} | {c} | {:.3} | {:.3} | {:.3} | {:.3} |", a.hit_at_1, b.hit_at_1, a.mrr_at_10, b.mrr_at_10);
    }
    Ok(())
}
