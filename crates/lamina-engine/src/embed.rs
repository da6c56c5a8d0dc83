//! Sentence embeddings: texts (or token ids) in, one L2-normalised vector per input out.
//!
//! An [`Embedder`] runs either a BERT-family [`Encoder`] (all-MiniLM-L6-v2: mean pooling
//! over the final hidden states, as sentence-transformers' pooling module does) or a
//! decoder [`Model`] (a chat model's final-norm hidden states, pooled by the last token —
//! the only one that has seen the whole text under causal attention — or by their mean).
//!
//! Inputs are grouped into forward calls by a token budget, packed back to back with no
//! padding (the encoder's attention is block-diagonal; the decoder gives every input its
//! own KV blocks), so a batch costs the sum of its lengths.
//!
//! Lengths: text longer than an encoder's limit (`max_seq_length`, 256 word pieces for
//! MiniLM) is truncated to it, keeping `[CLS] … [SEP]`, which is what sentence-transformers
//! does and what its vectors mean; [`Embedding::truncated`] says so. Token ids given
//! directly, and text for a decoder past its context window, are refused instead: there is
//! no documented truncation to follow for them.

use lamina_core::{Error, Result};
use lamina_kernels::ThreadPool;
use lamina_model::{BatchInput, Encoder, EncoderScratch, Model, Scratch, SeqChunk};
use lamina_tokenizer::Tokenizer;
use std::sync::Arc;

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the input's tokens (special tokens included, as sentence-transformers).
    Mean,
    /// The last token's state.
    LastToken,
}

impl Pooling {
    pub fn parse(s: &str) -> Result<Pooling> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "last" => Ok(Pooling::LastToken),
            other => Err(Error::InvalidInput(format!("unknown pooling `{other}` (mean or last)"))),
        }
    }
}

/// The network behind an [`Embedder`].
#[derive(Clone)]
pub enum EmbeddingNet {
    Encoder(Arc<Encoder>),
    Decoder(Arc<Model>),
}

/// One input: text to tokenize, or token ids used as given.
#[derive(Debug, Clone, Copy)]
pub enum EmbedInput<'a> {
    Text(&'a str),
    Tokens(&'a [u32]),
}

/// One output vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// Unit length (L2).
    pub vector: Vec<f32>,
    /// Tokens the model read for it (after truncation).
    pub tokens: usize,
    /// Whether the text was cut to the model's limit.
    pub truncated: bool,
}

/// Turns inputs into embedding vectors on a worker pool. Holds no per-call state, so one
/// embedder serves concurrent callers.
pub struct Embedder {
    net: EmbeddingNet,
    tokenizer: Arc<Tokenizer>,
    pool: Arc<ThreadPool>,
    pooling: Pooling,
    batch_tokens: usize,
}

/// Default token budget of one forward call.
pub const DEFAULT_BATCH_TOKENS: usize = 8192;

impl Embedder {
    /// An embedder over `net`; `pooling` defaults to mean for encoders and last token for
    /// decoders.
    pub fn new(net: EmbeddingNet, tokenizer: Arc<Tokenizer>, pool: Arc<ThreadPool>, pooling: Option<Pooling>) -> Result<Embedder> {
        let vocab = match &net {
            EmbeddingNet::Encoder(e) => e.config.vocab_size,
            EmbeddingNet::Decoder(m) => m.config.vocab_size,
        };
        if tokenizer.vocab_size() > vocab {
            return Err(Error::InvalidInput(format!("the tokenizer has {} ids, the model's vocabulary {vocab}", tokenizer.vocab_size())));
        }
        let pooling = pooling.unwrap_or(match net {
            EmbeddingNet::Encoder(_) => Pooling::Mean,
            EmbeddingNet::Decoder(_) => Pooling::LastToken,
        });
        Ok(Embedder { net, tokenizer, pool, pooling, batch_tokens: DEFAULT_BATCH_TOKENS })
    }

    /// Sets the token budget of one forward call (at least the longest input fits alone).
    pub fn with_batch_tokens(mut self, tokens: usize) -> Embedder {
        self.batch_tokens = tokens.max(1);
        self
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn net(&self) -> &EmbeddingNet {
        &self.net
    }

    /// Length of the vectors.
    pub fn dimensions(&self) -> usize {
        match &self.net {
            EmbeddingNet::Encoder(e) => e.config.hidden_size,
            EmbeddingNet::Decoder(m) => m.config.hidden_size,
        }
    }

    /// Most tokens one input may have.
    pub fn max_tokens(&self) -> usize {
        match &self.net {
            EmbeddingNet::Encoder(e) => e.config.max_tokens,
            EmbeddingNet::Decoder(m) => m.config.context_length,
        }
    }

    /// Whether vectors may be cut to fewer dimensions (a model trained for it,
    /// Matryoshka-style). Neither MiniLM nor the chat models are.
    pub fn allows_dimensions(&self) -> bool {
        false
    }

    fn vocab_size(&self) -> usize {
        match &self.net {
            EmbeddingNet::Encoder(e) => e.config.vocab_size,
            EmbeddingNet::Decoder(m) => m.config.vocab_size,
        }
    }

    /// The token ids the model reads for `input`, and whether text was truncated; errors
    /// for empty inputs, ids outside the vocabulary, and inputs over the limit that are not
    /// truncated (see the module notes).
    pub fn tokenize(&self, input: EmbedInput<'_>) -> Result<(Vec<u32>, bool)> {
        let max = self.max_tokens();
        let (ids, cut) = match input {
            EmbedInput::Text(text) => match &self.net {
                EmbeddingNet::Encoder(_) => self.tokenizer.encode_truncated(text, max)?,
                EmbeddingNet::Decoder(_) => {
                    self.tokenizer.check_fits(text, max)?;
                    (self.tokenizer.encode(text, true)?, false)
                }
            },
            EmbedInput::Tokens(ids) => {
                if let Some(&t) = ids.iter().find(|&&t| t as usize >= self.vocab_size()) {
                    return Err(Error::InvalidInput(format!("token id {t} is outside the vocabulary ({})", self.vocab_size())));
                }
                (ids.to_vec(), false)
            }
        };
        if ids.is_empty() {
            return Err(Error::InvalidInput("an input has no tokens".into()));
        }
        if ids.len() > max {
            return Err(Error::PromptTooLong { prompt_tokens: ids.len(), context_length: max });
        }
        Ok((ids, cut))
    }

    /// Embeds every input, in order.
    pub fn embed(&self, inputs: &[EmbedInput<'_>]) -> Result<Vec<Embedding>> {
        let tokenized = inputs.iter().map(|&i| self.tokenize(i)).collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < tokenized.len() {
            // Greedy fill up to the token budget (always at least one input).
            let mut end = start + 1;
            let mut total = tokenized[start].0.len();
            while end < tokenized.len() && total + tokenized[end].0.len() <= self.batch_tokens {
                total += tokenized[end].0.len();
                end += 1;
            }
            let batch: Vec<&[u32]> = tokenized[start..end].iter().map(|(ids, _)| ids.as_slice()).collect();
            let vectors = self.embed_ids(&batch)?;
            out.extend(vectors.into_iter().zip(&tokenized[start..end]).map(|(vector, (ids, cut))| Embedding { vector, tokens: ids.len(), truncated: *cut }));
            start = end;
        }
        Ok(out)
    }

    /// One forward call over already checked token sequences: their pooled, normalised vectors.
    fn embed_ids(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let d = self.dimensions();
        // Rows of `states` and which of them belong to each sequence.
        let mut states = Vec::new();
        let rows_per_seq: Vec<(usize, usize)> = match &self.net {
            EmbeddingNet::Encoder(e) => {
                e.forward(&tokens, &lens, &mut EncoderScratch::default(), &self.pool, &mut states)?;
                let mut at = 0;
                lens.iter()
                    .map(|&l| {
                        at += l;
                        match self.pooling {
                            Pooling::Mean => (at - l, l),
                            Pooling::LastToken => (at - 1, 1),
                        }
                    })
                    .collect()
            }
            EmbeddingNet::Decoder(m) => self.decoder_states(m, &tokens, &lens, &mut states)?,
        };
        Ok(rows_per_seq
            .into_iter()
            .map(|(first, count)| {
                let mut v = vec![0.0f64; d];
                for row in states[first * d..(first + count) * d].chunks_exact(d) {
                    for (a, &x) in v.iter_mut().zip(row) {
                        *a += x as f64;
                    }
                }
                normalized(&v)
            })
            .collect())
    }

    /// A decoder's final hidden states for the pooled rows; returns, per sequence, its
    /// first row in `states` and how many rows it has there.
    fn decoder_states(&self, m: &Model, tokens: &[u32], lens: &[usize], states: &mut Vec<f32>) -> Result<Vec<(usize, usize)>> {
        let bs = lamina_model::DEFAULT_BLOCK_SIZE;
        let shape = m.kv_shape(bs);
        let per_seq: Vec<usize> = lens.iter().map(|&l| shape.blocks_for(l)).collect();
        let mut kv = m.new_kv(bs, per_seq.iter().sum());
        let mut tables = Vec::with_capacity(lens.len());
        let mut next = 0u32;
        for &b in &per_seq {
            tables.push((next..next + b as u32).collect::<Vec<u32>>());
            next += b as u32;
        }
        let seqs: Vec<SeqChunk<'_>> = lens.iter().zip(&tables).map(|(&len, blocks)| SeqChunk { len, start: 0, blocks, lora: None }).collect();
        let mut rows = Vec::new();
        let mut spans = Vec::with_capacity(lens.len());
        let mut at = 0;
        for &l in lens {
            let wanted: Vec<usize> = match self.pooling {
                Pooling::Mean => (at..at + l).collect(),
                Pooling::LastToken => vec![at + l - 1],
            };
            spans.push((rows.len(), wanted.len()));
            rows.extend(wanted);
            at += l;
        }
        m.hidden_states(BatchInput { tokens, seqs: &seqs, logits_rows: &rows }, &mut kv, &mut Scratch::default(), &self.pool, states)?;
        Ok(spans)
    }
}

/// `v / |v|` as f32 (a zero vector stays zero).
fn normalized(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|x| (x * scale) as f32).collect()
}

/// Cosine similarity of two vectors (f64 arithmetic).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
