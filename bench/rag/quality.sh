#!/usr/bin/env bash
# Retrieval quality on the whole Alpaca set (records 0–3999 asked; 4000–4499's outputs and
# 500 tinyshakespeare passages as distractors; 4500–4999 unanswerable) with all-MiniLM-L6-v2:
# hit@1, hit@10 and MRR@10 of vector, keyword and hybrid search on the tuning half (0–1999),
# the held-out half (2000–3999) and all; the best hit's cosine for answerable and
# unanswerable questions; with --tune, the analysis and fusion variants of docs/retrieval.md;
# with --rerank, hybrid search's first hits reranked by the default chat model (SmolLM2-135M,
# fetched on first use) on a spread of --rerank-queries questions (400; 0: all 3,999, about
# 40 minutes on 2 cores), scoring --candidates hits each (10), with a table of candidate counts
# and weights and the defaults' figures. Reranker scores are cached beside the vectors.
#
#   bench/rag/quality.sh [--tune] [--threads N] [--precision native|f32]
#                        [--rerank [--rerank-queries N] [--candidates C] [--rerank-tokens T]]
#
# Vectors are cached in target/rag-eval (keyed by model and texts): the first run embeds
# ~9,500 texts, later runs only search. The figures are quality, not speed: any machine gives
# the same table (for one --precision).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p lamina-rag --features engine --example retrieval_quality
exec target/debug/examples/retrieval_quality "$@"
