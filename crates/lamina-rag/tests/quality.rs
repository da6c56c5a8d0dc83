//! Retrieval quality with the real all-MiniLM-L6-v2 on a part of the Alpaca set (records
//! 0–599 asked and answered, 4000–4199's outputs and 100 Shakespeare passages as
//! distractors, 4500–4599 unanswerable), over an in-memory collection through `search()`.
//! The whole set is `bench/rag/quality.sh`'s; docs/retrieval.md has both tables. This part
//! is easier than the whole (fewer distractors): vector search alone passes 0.75 here, which
//! it does not on the whole set; what this test holds is the floor of each mode and that
//! fusion does not lose to either side.
//!
//! Vectors are cached under the target folder, so a second run does not embed again.
//!
//! Reranking with the default chat model (`EngineReranker`): the passage that answers a
//! question is put first among look-alikes, and on a spread of the Alpaca questions the
//! reranked first hit is right at least as often as hybrid search's.

use lamina_rag::embed::{EmbedKind, EngineEmbedder, TextEmbedder};
use lamina_rag::eval::{self, AlpacaSplit, CachedEmbedder};
use lamina_rag::rerank::{EngineReranker, Reranker, DEFAULT_PASSAGE_TOKENS, DEFAULT_RERANK_CANDIDATES, DEFAULT_RERANK_WEIGHT};
use lamina_rag::{answer, CollectionSpec, SearchMode, SearchRequest};
use std::sync::Arc;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets");

fn set() -> eval::EvalSet {
    let json = std::fs::read_to_string(format!("{SHARED}/alpaca_5000.json")).unwrap();
    let shakespeare = std::fs::read_to_string(format!("{SHARED}/tinyshakespeare.txt")).unwrap();
    let split = AlpacaSplit { answered: 0..600, asked: 0..600, distractors: 4000..4200, unanswerable: 4500..4600, shakespeare_passages: 100 };
    eval::alpaca_set(&json, &shakespeare, &split).unwrap()
}

fn minilm() -> EngineEmbedder {
    let threads = lamina_core::Threads::resolve(0).used;
    let pool = Arc::new(lamina_kernels::ThreadPool::new(threads));
    let embedder = lamina_engine::resolve::load_embedder(None, lamina_model::Precision::Native, pool, None, &mut |m| eprintln!("{m}")).unwrap();
    EngineEmbedder { model_id: lamina_core::registry::DEFAULT_EMBEDDING_MODEL.into(), embedder: Arc::new(embedder) }
}

fn smollm2_reranker() -> EngineReranker {
    let (model, tok) = lamina_engine::resolve::load(None, lamina_model::Precision::Native, &mut |m| eprintln!("{m}")).unwrap();
    let pool = Arc::new(lamina_kernels::ThreadPool::new(lamina_core::Threads::resolve(0).used));
    EngineReranker::new(lamina_core::registry::DEFAULT_MODEL, Arc::new(model), Arc::new(tok), pool, DEFAULT_PASSAGE_TOKENS).unwrap()
}

#[test]
fn the_chat_model_reranks_answers_above_look_alikes() {
    let r = smollm2_reranker();
    // Each passage shares words with the question; one answers it.
    let question = "How do bees make honey?";
    let passages = [
        "Honey badgers are fearless animals that raid beehives for larvae.",
        "Bees collect nectar from flowers, break it down with enzymes and store it in wax cells, where it thickens into honey as water evaporates.",
        "The Honey Bee is a popular pub name in England.",
        "Bees have five eyes and six legs.",
    ];
    let scores = r.score(question, &passages).unwrap();
    let best = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(best, 1, "{scores:?}");
    // The same passages score the same the second time (the unconditional term is remembered).
    assert_eq!(r.score(question, &passages).unwrap(), scores);
    let err = r.score(&"word ".repeat(5000), &passages[..1]).unwrap_err();
    assert!(err.to_string().contains("no room"), "{err}");
    let err = r.score(question, &[passages[0], ""]).unwrap_err();
    assert!(err.to_string().contains("passage 1 to rerank is empty"), "{err}");
}

#[test]
fn reranking_the_first_hits_loses_nothing_on_a_spread_of_questions() {
    let set = set();
    let engine = minilm();
    let cached = CachedEmbedder::new(&engine);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rag-quality");
    let corpus: Vec<&str> = set.corpus.iter().map(|d| d.text.as_str()).collect();
    let vectors = cached.embed_all_cached(&dir, &corpus, EmbedKind::Passage, 32, &mut |_, _| {}).unwrap();
    let store = eval::build_store(&set, CollectionSpec::new("alpaca", cached.model_id(), cached.dimensions()), &vectors).unwrap();
    // Every 8th question: 75 of them.
    let qs: Vec<_> = set.queries.iter().step_by(8).cloned().collect();
    let reranker = smollm2_reranker();
    let req = SearchRequest::new("-", 10, SearchMode::Hybrid);
    let rescored = eval::rescore(&store, &cached, &set, &qs, &req, &reranker, DEFAULT_RERANK_CANDIDATES, &mut |_, _| {}).unwrap();
    let before = eval::metrics(&rescored.iter().map(|r| r.rank(0, 0.0)).collect::<Vec<_>>());
    let after = eval::metrics(&rescored.iter().map(|r| r.rank(DEFAULT_RERANK_CANDIDATES, DEFAULT_RERANK_WEIGHT)).collect::<Vec<_>>());
    eprintln!("{} questions: hybrid {before:?}\nreranked {after:?}", qs.len());
    // Reranking only reorders the first candidates: hit@10 cannot change.
    assert_eq!(before.hit_at_10, after.hit_at_10);
    // Measured (native arithmetic): hit@1 0.800 → 0.907, MRR@10 0.864 → 0.918 (8 of 75
    // questions gained their first place). Three questions' worth is the floor.
    assert!(after.hit_at_1 >= before.hit_at_1 + 0.04 && after.mrr_at_10 > before.mrr_at_10, "hybrid {before:?}, reranked {after:?}");
}

#[test]
fn hybrid_search_holds_its_floor_and_loses_to_neither_side() {
    let json = std::fs::read_to_string(format!("{SHARED}/alpaca_5000.json")).unwrap();
    let shakespeare = std::fs::read_to_string(format!("{SHARED}/tinyshakespeare.txt")).unwrap();
    let split = AlpacaSplit { answered: 0..600, asked: 0..600, distractors: 4000..4200, unanswerable: 4500..4600, shakespeare_passages: 100 };
    let set = eval::alpaca_set(&json, &shakespeare, &split).unwrap();
    assert!(set.queries.len() >= 595 && set.corpus.len() >= 850, "{} questions, {} passages", set.queries.len(), set.corpus.len());

    let threads = lamina_core::Threads::resolve(0).used;
    let pool = Arc::new(lamina_kernels::ThreadPool::new(threads));
    let embedder = lamina_engine::resolve::load_embedder(None, lamina_model::Precision::Native, pool, None, &mut |m| eprintln!("{m}")).unwrap();
    let engine = EngineEmbedder { model_id: lamina_core::registry::DEFAULT_EMBEDDING_MODEL.into(), embedder: Arc::new(embedder) };
    let cached = CachedEmbedder::new(&engine);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rag-quality");
    let corpus: Vec<&str> = set.corpus.iter().map(|d| d.text.as_str()).collect();
    let vectors = cached.embed_all_cached(&dir, &corpus, EmbedKind::Passage, 32, &mut |_, _| {}).unwrap();
    let questions: Vec<&str> = set.queries.iter().chain(&set.unanswerable).map(|q| q.text.as_str()).collect();
    cached.embed_all_cached(&dir, &questions, EmbedKind::Query, 32, &mut |_, _| {}).unwrap();
    let store = eval::build_store(&set, CollectionSpec::new("alpaca", cached.model_id(), cached.dimensions()), &vectors).unwrap();

    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for mode in eval::MODES {
        let r = eval::run(&store, &cached, &set, &set.queries, &SearchRequest::new("-", 10, mode)).unwrap();
        rows.push((format!("{mode:?}"), r.metrics()));
        runs.push(r);
    }
    eprintln!("{}", eval::table(&rows));
    let (vector, keyword, hybrid) = (rows[0].1, rows[1].1, rows[2].1);
    for m in [vector, keyword, hybrid] {
        assert!(m.hit_at_1 <= m.hit_at_10 && m.mrr_at_10 >= m.hit_at_1 && m.mrr_at_10 <= m.hit_at_10, "{m:?}");
    }
    // Measured on this part (native arithmetic): vector 0.783 / 0.938 / 0.839, keyword 0.678 /
    // 0.808 / 0.721, hybrid 0.788 / 0.940 / 0.845 (hit@1 / hit@10 / MRR@10). The floors leave
    // room for another machine's rounding; a worse analysis or fusion falls through them.
    assert!(hybrid.hit_at_1 >= 0.77, "hybrid hit@1 {:.3}", hybrid.hit_at_1);
    assert!(hybrid.hit_at_10 >= 0.92 && hybrid.mrr_at_10 >= 0.83, "{hybrid:?}");
    assert!(vector.hit_at_1 >= 0.76 && keyword.hit_at_1 >= 0.65, "{rows:?}");
    // RRF at its paper's settings loses to vector search alone on this data (docs/retrieval.md);
    // the default fusion must not.
    assert!(hybrid.hit_at_1 >= vector.hit_at_1 - 0.005 && hybrid.mrr_at_10 >= vector.mrr_at_10 - 0.005, "{rows:?}");
    assert!(hybrid.hit_at_1 >= keyword.hit_at_1 + 0.05, "{rows:?}");

    // The default relevance threshold keeps nearly every answerable question and turns away
    // more of the unanswerable ones than of the answerable ones.
    let unanswerable = eval::run(&store, &cached, &set, &set.unanswerable, &SearchRequest::new("-", 10, SearchMode::Vector)).unwrap();
    let kept = eval::share_at_least(&runs[0].best_similarity, answer::DEFAULT_THRESHOLD);
    let kept_unanswerable = eval::share_at_least(&unanswerable.best_similarity, answer::DEFAULT_THRESHOLD);
    eprintln!("best hit ≥ {}: answerable {kept:.3}, unanswerable {kept_unanswerable:.3}", answer::DEFAULT_THRESHOLD);
    assert!(kept >= 0.98, "{kept}");
    assert!(kept_unanswerable < kept, "{kept_unanswerable} vs {kept}");
}
