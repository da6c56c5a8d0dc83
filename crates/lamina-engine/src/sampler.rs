//! Token sampling: turns one row of logits into the next token id.
//!
//! The stages run in llama.cpp's default order (penalties → top-k → top-p →
//! min-p → temperature → draw) so that settings people bring over from
//! llama.cpp or Ollama behave the same way here.
//!
//! Vocabularies are 50k–150k entries and `sample` runs once per generated
//! token, so the hot path avoids sorting the whole vocabulary and keeps its
//! scratch buffers in the [`Sampler`] instead of allocating per call.
//!
//! Randomness comes from a small xoshiro256** generator of our own rather
//! than a library RNG: the same seed must reproduce the same tokens on every
//! run, platform and dependency version.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// User-facing sampling settings. The "off" value of each stage is noted on
/// its field; [`SamplingParams::validate`] says which values are accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose
    /// probabilities add up to at least `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times that of the most
    /// likely token; 0 = off.
    pub min_p: f32,
    /// Multiplicative penalty for tokens seen in the recent window
    /// (llama.cpp/CTRL style); 1 = off.
    pub repetition_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the window; 0 = off.
    pub frequency_penalty: f32,
    /// Subtracted from a token's logit if it occurs in the window at all; 0 = off.
    pub presence_penalty: f32,
    /// How many of the most recent tokens the penalties look at; 0 = none.
    pub penalty_last_n: usize,
    /// Fixed seed for reproducible output; `None` seeds from time and process id.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults, so an unconfigured request samples like it would there.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Deterministic argmax decoding with every filter and penalty off;
    /// what reference tests and evaluation want.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
        }
    }

    /// Checks every field, so that bad request values can be reported to the
    /// user instead of being silently clamped by [`Sampler::new`].
    /// The error message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        use lamina_core::sampling::*;
        check_temperature(self.temperature)?;
        check_top_p(self.top_p)?;
        check_min_p(self.min_p)?;
        check_repetition_penalty(self.repetition_penalty)?;
        check_additive_penalty("frequency_penalty", self.frequency_penalty)?;
        check_additive_penalty("presence_penalty", self.presence_penalty)
    }
}

/// The parameters as the sampling code uses them: every value is in range,
/// so the hot path needs no checks and cannot produce NaN from settings.
#[derive(Debug, Clone, Copy)]
struct Effective {
    /// `<= 0` means greedy; otherwise finite and positive.
    temperature: f32,
    top_k: usize,
    /// `>= 1` means off.
    top_p: f32,
    /// `<= 0` means off; never above 1.
    min_p: f32,
    repetition_penalty: f32,
    frequency_penalty: f32,
    presence_penalty: f32,
    penalty_last_n: usize,
}

impl Effective {
    /// Maps out-of-range values to the nearest meaningful setting instead of
    /// failing, because `Sampler::new` must not panic on any input:
    /// - temperature NaN or < 0 → greedy; +inf → `f32::MAX` (flat distribution);
    /// - top_p NaN or > 1 → off; <= 0 → keep only the single most likely token;
    /// - min_p NaN → off; > 1 → 1;
    /// - repetition_penalty NaN, infinite or <= 0 → off;
    /// - frequency/presence penalty not finite → off.
    fn from_params(p: &SamplingParams) -> Self {
        let temperature = if p.temperature.is_nan() || p.temperature <= 0.0 { 0.0 } else { p.temperature.min(f32::MAX) };
        let top_p = if p.top_p.is_nan() { 1.0 } else { p.top_p.min(1.0) };
        let min_p = if p.min_p.is_nan() { 0.0 } else { p.min_p.clamp(0.0, 1.0) };
        let repetition_penalty = if p.repetition_penalty.is_finite() && p.repetition_penalty > 0.0 { p.repetition_penalty } else { 1.0 };
        let finite_or_zero = |x: f32| if x.is_finite() { x } else { 0.0 };
        Self {
            temperature,
            top_k: p.top_k,
            top_p,
            min_p,
            repetition_penalty,
            frequency_penalty: finite_or_zero(p.frequency_penalty),
            presence_penalty: finite_or_zero(p.presence_penalty),
            penalty_last_n: p.penalty_last_n,
        }
    }

    fn penalties_active(&self) -> bool {
        self.penalty_last_n > 0 && (self.repetition_penalty != 1.0 || self.frequency_penalty != 0.0 || self.presence_penalty != 0.0)
    }
}

/// One step of SplitMix64; used to expand a single u64 seed into the
/// xoshiro state, as that generator's authors recommend.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256**: small, fast, and fully specified, so a seed gives the same
/// stream everywhere.
#[derive(Debug, Clone)]
struct Xoshiro256StarStar {
    s: [u64; 4],
}

impl Xoshiro256StarStar {
    fn from_seed(seed: u64) -> Self {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut sm);
        }
        // The all-zero state is a fixed point of the generator.
        if s == [0; 4] {
            s[0] = 1;
        }
        Self { s }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed for unseeded samplers. Time alone could collide when several
/// samplers are created in the same instant (a batch of requests), so the
/// process id and a per-process counter are mixed in too.
fn entropy_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let pid = u64::from(std::process::id());
    let count = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    let mut state = nanos ^ pid.rotate_left(32);
    let a = splitmix64(&mut state);
    state ^= count.wrapping_mul(0xD1B5_4A32_D192_ED03);
    a ^ splitmix64(&mut state)
}

/// NaN logits (a numerical fault upstream) must never be chosen, and +inf
/// would turn the softmax into NaN; map them to values the math handles.
#[inline]
fn clean_logit(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::MAX
    } else {
        x
    }
}

/// Most likely first; equal logits by lower id, which makes the order total
/// and therefore the result independent of the sort algorithm used.
#[inline]
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Index of the largest logit; ties go to the lowest id so greedy decoding
/// is deterministic. NaN counts as -inf; an all-NaN/-inf row yields 0.
/// The index of the first largest logit (NaN never picked; 0 when nothing beats -inf).
///
/// Two passes the compiler vectorises — the largest value over eight independent lanes,
/// then the first index holding it — instead of one compare-and-branch per logit: with
/// eight sequences decoding, greedy sampling scans 8 × 49152 logits per step on one thread.
pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = logits.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &l) in lanes.iter_mut().zip(c) {
            // `l > m` is false for NaN: as in the scalar scan, NaN never wins.
            *m = if l > *m { l } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &l in lanes.iter().chain(tail) {
        if l > max {
            max = l;
        }
    }
    if max == f32::NEG_INFINITY {
        // Nothing beats -inf: the scalar scan's answer is index 0.
        return 0;
    }
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

/// The one-pass scan [`argmax`] replaces (kept as its reference in tests).
#[cfg(test)]
fn argmax_scan(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        // Any comparison with NaN is false, so NaN is never picked, and +inf
        // compares correctly; no cleaning needed on this hot loop.
        if l > best_value {
            best_value = l;
            best = i;
        }
    }
    best as u32
}

/// Up to this top_k the candidates are gathered with a bounded heap; above
/// it the heap's log k per insertion loses to one linear-time selection.
const HEAP_TOP_K_LIMIT: usize = 1024;

/// Heap entry ordered so that the *worst* candidate is the heap's maximum,
/// which makes `BinaryHeap` a bounded "best k" container.
#[derive(Debug, Clone, Copy)]
struct WorstFirst((u32, f32));

impl Ord for WorstFirst {
    fn cmp(&self, other: &Self) -> Ordering {
        by_logit_desc(&self.0, &other.0)
    }
}
impl PartialOrd for WorstFirst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for WorstFirst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for WorstFirst {}

/// Probability mass of the candidates grouped by distance below the top
/// logit. It tells top-p roughly where the nucleus ends, so only the tokens
/// that can be in it are sorted instead of the whole vocabulary.
#[derive(Debug, Clone, Copy)]
struct MassHistogram {
    /// `mass[b]`: sum of `exp(l - max)` for tokens in bucket `b`.
    mass: [f64; Self::BUCKETS],
    /// Sum over all buckets: the softmax normaliser.
    total: f64,
}

impl MassHistogram {
    const BUCKETS: usize = 128;
    /// Buckets per unit of logit; 128 buckets of 0.25 cover 32 nats, beyond
    /// which probabilities are below 1e-13 of the top token's.
    const PER_UNIT: f32 = 4.0;

    #[inline]
    fn bucket(max: f32, l: f32) -> usize {
        // `as` saturates, so an infinite distance lands in the last bucket.
        (((max - l) * Self::PER_UNIT) as usize).min(Self::BUCKETS - 1)
    }

    fn measure(candidates: &[(u32, f32)], max: f32) -> Self {
        let mut mass = [0.0f64; Self::BUCKETS];
        let mut total = 0.0f64;
        for &(_, l) in candidates {
            let w = f64::from((l - max).exp());
            mass[Self::bucket(max, l)] += w;
            total += w;
        }
        Self { mass, total }
    }

    /// Moves the candidates of the buckets needed to reach `top_p` to the
    /// front and returns how many there are. Buckets are ordered by logit,
    /// so every moved candidate outranks every other one.
    fn partition_nucleus(&self, candidates: &mut [(u32, f32)], max: f32, top_p: f64) -> usize {
        let target = top_p * self.total;
        let mut cumulative = 0.0;
        let mut last = Self::BUCKETS - 1;
        for (b, &m) in self.mass.iter().enumerate() {
            cumulative += m;
            if cumulative >= target {
                last = b;
                break;
            }
        }
        let mut front = 0;
        for i in 0..candidates.len() {
            if Self::bucket(max, candidates[i].1) <= last {
                candidates.swap(front, i);
                front += 1;
            }
        }
        front
    }
}

/// Turns logits into token ids according to [`SamplingParams`]. Holds its own
/// RNG, so one `Sampler` per sequence gives reproducible per-sequence output.
#[derive(Clone)]
pub struct Sampler {
    params: SamplingParams,
    effective: Effective,
    rng: Xoshiro256StarStar,
    /// (token id, logit) of the tokens still in the running.
    candidates: Vec<(u32, f32)>,
    /// Sorted copy of the penalty window, for counting occurrences without a map.
    window: Vec<u32>,
    /// Unnormalised probabilities of the final candidates.
    weights: Vec<f32>,
    /// Best `top_k` so far, worst on top; used for small k.
    heap: BinaryHeap<WorstFirst>,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler").field("params", &self.params).finish_non_exhaustive()
    }
}

impl Sampler {
    /// Never fails: out-of-range values are mapped to the nearest meaningful
    /// setting (see the field docs of [`SamplingParams`]; NaN temperature →
    /// greedy, NaN top_p/min_p/penalties → off, top_p <= 0 → keep one token,
    /// min_p > 1 → 1). Use [`Sampler::try_new`] or
    /// [`SamplingParams::validate`] to reject such values instead.
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Self {
            effective: Effective::from_params(&params),
            rng: Xoshiro256StarStar::from_seed(seed),
            params,
            candidates: Vec::new(),
            window: Vec::new(),
            weights: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    /// Like [`Sampler::new`] but rejects invalid parameters with the message
    /// from [`SamplingParams::validate`].
    pub fn try_new(params: SamplingParams) -> Result<Self, String> {
        params.validate()?;
        Ok(Self::new(params))
    }

    /// The parameters as given to the constructor (before any clamping).
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token.
    ///
    /// `logits`: one row of raw logits, one per vocabulary entry; penalties
    /// are applied to it in place. `history`: the tokens so far (prompt and
    /// generated), of which the last `penalty_last_n` are penalised; ids
    /// outside the row are ignored.
    ///
    /// NaN logits are treated as -inf and never chosen unless every logit is
    /// NaN/-inf, in which case the lowest id (0) is returned, as it is for an
    /// empty row.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.sample_checking(logits, history, None)
    }

    /// Picks the next token given a proposed one (speculative decoding's verification):
    /// returns `draft` with the probability `p(draft)` that [`sample`](Self::sample) gives
    /// it, and otherwise a token drawn from the same distribution with `draft` removed and
    /// the rest renormalised. Whatever proposed `draft` (a deterministic drafter: prompt
    /// lookup, a draft model's greedy choice), each token `x` comes out with probability
    /// `p(x)` — speculative sampling with a point-mass proposal, whose `min(1, p/q)`
    /// acceptance is `p(draft)`. Greedy: the argmax, whatever the draft.
    pub fn sample_draft(&mut self, logits: &mut [f32], history: &[u32], draft: u32) -> u32 {
        self.sample_checking(logits, history, Some(draft))
    }

    fn sample_checking(&mut self, logits: &mut [f32], history: &[u32], draft: Option<u32>) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        self.apply_penalties(logits, history);
        let e = self.effective;
        if e.temperature <= 0.0 {
            return argmax(logits);
        }

        let max = self.collect_candidates(logits, e.top_k);
        if self.candidates.is_empty() {
            return argmax(logits);
        }
        // Every stage below keeps the most likely token, so `max` stays the
        // largest candidate logit throughout.
        // After top-k the candidates' order depends on the selection
        // algorithm; they are sorted before the draw so that a seed gives
        // the same token whatever that order was.
        let mut needs_sort = e.top_k > 0 && e.top_k < logits.len();

        // top-p's cumulative probabilities are over the post-top-k set, so
        // its mass is measured before min-p shrinks the set.
        let top_p_on = e.top_p < 1.0;
        let mass = if top_p_on { Some(MassHistogram::measure(&self.candidates, max)) } else { None };

        // min-p before top-p: both keep a prefix of the sorted order and
        // min-p's threshold is relative to the top token, which top-p always
        // keeps, so the result is the same as llama.cpp's order — but min-p
        // needs no sort and usually leaves only a handful of tokens.
        if e.min_p > 0.0 {
            let threshold = max + e.min_p.ln();
            self.candidates.retain(|&(_, l)| l >= threshold);
        }

        if let Some(mass) = mass {
            // Sort only the buckets up to the one where the mass reaches
            // top_p; top_p_prefix sorts further lazily should rounding make
            // that short.
            let front = mass.partition_nucleus(&mut self.candidates, max, f64::from(e.top_p));
            self.candidates[..front].sort_unstable_by(by_logit_desc);
            let keep = top_p_prefix(&mut self.candidates, front, max, mass.total, f64::from(e.top_p));
            self.candidates.truncate(keep);
            // top_p_prefix leaves the kept prefix sorted.
            needs_sort = false;
        }
        if needs_sort {
            self.candidates.sort_unstable_by(by_logit_desc);
        }

        // temperature + softmax + draw. Subtracting the max first keeps
        // exp() in range; the top token has weight exactly 1, so total >= 1.
        self.weights.clear();
        let mut total = 0.0f64;
        for &(_, l) in &self.candidates {
            let w = ((l - max) / e.temperature).exp();
            self.weights.push(w);
            total += f64::from(w);
        }
        if let Some(d) = draft {
            let w_d = self.candidates.iter().zip(&self.weights).find(|(c, _)| c.0 == d).map_or(0.0, |(_, &w)| f64::from(w));
            if w_d > 0.0 && self.rng.next_f64() * total < w_d {
                return d;
            }
            // Rejected: the residual distribution, `p` without the draft.
            if let Some(i) = self.candidates.iter().position(|c| c.0 == d) {
                if self.candidates.len() > 1 {
                    self.candidates.remove(i);
                    self.weights.remove(i);
                    total -= w_d;
                }
            }
        }
        let target = self.rng.next_f64() * total;
        let mut acc = 0.0f64;
        for (&(id, _), &w) in self.candidates.iter().zip(&self.weights) {
            acc += f64::from(w);
            if target < acc {
                return id;
            }
        }
        // Rounding left `target` at the very end: take the last token that
        // had any probability.
        self.candidates.iter().zip(&self.weights).rev().find(|(_, &w)| w > 0.0).map(|(&(id, _), _)| id).unwrap_or(self.candidates[0].0)
    }

    /// Fills `candidates` with the tokens that can still be drawn (logit
    /// above -inf, NaN counting as -inf), keeping only the best `top_k` when
    /// top-k is on; returns the largest logit (-inf if none).
    ///
    /// Small k, the usual case, uses a bounded heap in one pass: after the
    /// first few thousand tokens almost every logit is rejected by a single
    /// comparison. Large k falls back to collecting everything and a
    /// partial selection; neither sorts the vocabulary.
    fn collect_candidates(&mut self, logits: &[f32], top_k: usize) -> f32 {
        self.candidates.clear();
        let mut max = f32::NEG_INFINITY;
        if top_k > 0 && top_k <= HEAP_TOP_K_LIMIT && top_k < logits.len() {
            self.heap.clear();
            // Logit of the worst kept token once the heap is full. Ids come
            // in increasing order, so an equal logit loses the tie and can be
            // skipped too.
            let mut floor = f32::NEG_INFINITY;
            for (i, &l) in logits.iter().enumerate() {
                let l = clean_logit(l);
                if l <= floor {
                    continue;
                }
                let candidate = WorstFirst((i as u32, l));
                if self.heap.len() < top_k {
                    self.heap.push(candidate);
                    if self.heap.len() == top_k {
                        floor = self.heap.peek().map_or(floor, |w| w.0 .1);
                    }
                } else {
                    if let Some(mut worst) = self.heap.peek_mut() {
                        *worst = candidate;
                    }
                    floor = self.heap.peek().map_or(floor, |w| w.0 .1);
                }
            }
            self.candidates.extend(self.heap.drain().map(|w| w.0));
            for &(_, l) in &self.candidates {
                max = max.max(l);
            }
            return max;
        }
        for (i, &l) in logits.iter().enumerate() {
            let l = clean_logit(l);
            if l > f32::NEG_INFINITY {
                self.candidates.push((i as u32, l));
                max = max.max(l);
            }
        }
        if top_k > 0 && top_k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(top_k - 1, by_logit_desc);
            self.candidates.truncate(top_k);
        }
        max
    }

    /// Applies repetition, frequency and presence penalties, in that order,
    /// once per distinct token of the window (as llama.cpp does).
    fn apply_penalties(&mut self, logits: &mut [f32], history: &[u32]) {
        let e = self.effective;
        if !e.penalties_active() {
            return;
        }
        let start = history.len().saturating_sub(e.penalty_last_n);
        self.window.clear();
        self.window.extend_from_slice(&history[start..]);
        self.window.sort_unstable();
        for run in self.window.chunk_by(|a, b| a == b) {
            let Some(logit) = logits.get_mut(run[0] as usize) else {
                continue;
            };
            if e.repetition_penalty != 1.0 {
                // Dividing a negative logit would make it *more* likely,
                // hence multiply those instead.
                if *logit > 0.0 {
                    *logit /= e.repetition_penalty;
                } else {
                    *logit *= e.repetition_penalty;
                }
            }
            *logit -= run.len() as f32 * e.frequency_penalty + e.presence_penalty;
        }
    }
}

/// How many of the most likely candidates top-p keeps: the smallest prefix
/// (in `by_logit_desc` order) whose probability reaches `top_p`, at least 1.
///
/// `candidates[..sorted_len]` must already be sorted and not smaller than the
/// rest. Sorting is done lazily in growing blocks, because the nucleus is
/// usually a tiny fraction of the vocabulary; on return `candidates[..keep]`
/// is sorted. Probabilities are `exp(l - max) / norm`. If the candidates run
/// out before reaching `top_p` (min-p removed the tail), all are kept.
fn top_p_prefix(candidates: &mut [(u32, f32)], mut sorted_len: usize, max: f32, norm: f64, top_p: f64) -> usize {
    const FIRST_BLOCK: usize = 64;
    let mut cumulative = 0.0f64;
    let mut checked = 0;
    loop {
        while checked < sorted_len {
            cumulative += f64::from((candidates[checked].1 - max).exp()) / norm;
            checked += 1;
            if cumulative >= top_p {
                return checked;
            }
        }
        if sorted_len >= candidates.len() {
            return candidates.len().max(1);
        }
        let rest = &mut candidates[sorted_len..];
        let block = sorted_len.max(FIRST_BLOCK).min(rest.len());
        if block < rest.len() {
            rest.select_nth_unstable_by(block - 1, by_logit_desc);
        }
        rest[..block].sort_unstable_by(by_logit_desc);
        sorted_len += block;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-pass argmax agrees with the one-pass scan: ties (first index wins), NaN,
    /// infinities, all -inf, lengths with and without a tail.
    #[test]
    fn argmax_equals_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in [1usize, 2, 7, 8, 9, 15, 16, 17, 63, 100, 1000] {
            for case in 0..40 {
                let mut v: Vec<f32> = (0..len).map(|_| (rnd() % 17) as f32 - 8.0).collect();
                match case % 5 {
                    1 => v[(rnd() as usize) % len] = f32::NAN,
                    2 => v.iter_mut().for_each(|x| *x = f32::NEG_INFINITY),
                    3 => v[(rnd() as usize) % len] = f32::INFINITY,
                    4 => v.iter_mut().for_each(|x| {
                        if rnd() % 2 == 0 {
                            *x = f32::NAN
                        }
                    }),
                    _ => {}
                }
                assert_eq!(argmax(&v), argmax_scan(&v), "{v:?}");
            }
        }
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, 1.0, f32::NAN]), 1);
    }

    fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, min_p, seed: Some(1234), ..SamplingParams::greedy() }
    }

    /// Deterministic pseudo-random logits for tests.
    fn random_logits(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = Xoshiro256StarStar::from_seed(seed);
        (0..n).map(|_| (rng.next_f64() * 20.0 - 10.0) as f32).collect()
    }

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&mut [0.1, 3.0, -2.0, 2.9], &[]), 1);
        // ties go to the lowest id
        assert_eq!(s.sample(&mut [1.0, 5.0, 5.0, 2.0], &[]), 1);
        let logits = random_logits(7, 50_000);
        let expected = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        assert_eq!(s.sample(&mut logits.clone(), &[]), expected);
    }

    #[test]
    fn same_seed_same_sequence() {
        let p = SamplingParams { seed: Some(42), ..SamplingParams::default() };
        let mut a = Sampler::new(p.clone());
        let mut b = Sampler::new(p);
        let logits = random_logits(3, 1000).iter().map(|l| l * 0.2).collect::<Vec<_>>();
        for _ in 0..200 {
            assert_eq!(a.sample(&mut logits.clone(), &[]), b.sample(&mut logits.clone(), &[]));
        }
    }

    #[test]
    fn rng_stream_is_fixed() {
        // Guards cross-version reproducibility: a change to the generator
        // would silently change every seeded generation.
        let mut r = Xoshiro256StarStar::from_seed(0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(first, [0x99EC_5F36_CB75_F2B4, 0xBF6E_1F78_4956_452A, 0x1A5F_849D_4933_E6E0]);
        let mut sm = 0u64;
        assert_eq!(splitmix64(&mut sm), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn different_seeds_differ() {
        let flat = vec![0.0f32; 100];
        let draws = |seed| {
            let mut s = Sampler::new(params(1.0, 0, 1.0, 0.0).with_seed(seed));
            (0..100).map(|_| s.sample(&mut flat.clone(), &[])).collect::<Vec<_>>()
        };
        assert_ne!(draws(1), draws(2));
        // unseeded samplers differ from each other as well
        let mut a = Sampler::new(params(1.0, 0, 1.0, 0.0).without_seed());
        let mut b = Sampler::new(params(1.0, 0, 1.0, 0.0).without_seed());
        let da: Vec<u32> = (0..100).map(|_| a.sample(&mut flat.clone(), &[])).collect();
        let db: Vec<u32> = (0..100).map(|_| b.sample(&mut flat.clone(), &[])).collect();
        assert_ne!(da, db);
    }

    impl SamplingParams {
        fn with_seed(mut self, seed: u64) -> Self {
            self.seed = Some(seed);
            self
        }
        fn without_seed(mut self) -> Self {
            self.seed = None;
            self
        }
    }

    fn assert_matches_greedy(p: SamplingParams, with_ties: bool) {
        let mut greedy = Sampler::new(SamplingParams::greedy());
        let mut s = Sampler::new(p);
        for seed in 0..50 {
            let mut logits = random_logits(seed, 5000);
            if with_ties {
                // duplicate the maximum at a higher id
                let (i, &m) = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
                let j = (i + 17) % logits.len();
                logits[j] = m;
            }
            let expected = greedy.sample(&mut logits.clone(), &[]);
            assert_eq!(s.sample(&mut logits.clone(), &[]), expected, "seed {seed}");
        }
    }

    #[test]
    fn top_k_one_is_greedy() {
        assert_matches_greedy(params(1.5, 1, 1.0, 0.0), false);
        assert_matches_greedy(params(1.5, 1, 1.0, 0.0), true);
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        assert_matches_greedy(params(1.5, 0, 1e-6, 0.0), false);
        assert_matches_greedy(params(1.5, 0, 1e-6, 0.0), true);
        assert_matches_greedy(params(1.5, 100, 1e-6, 0.0), true);
    }

    #[test]
    fn min_p_one_is_greedy() {
        assert_matches_greedy(params(1.5, 0, 1.0, 1.0), false);
    }

    /// Verifying a fixed proposal keeps the sampler's distribution, whatever the
    /// proposal (likely, unlikely, filtered out by top-k): 40,000 draws per case, each
    /// frequency within 0.015 of its probability (more than 5 standard deviations at
    /// p = 0.5), and the proposal accepted exactly when it is the token returned.
    #[test]
    fn verifying_a_draft_keeps_the_distribution() {
        let expected = [0.5f64, 0.3, 0.15, 0.05, 0.0];
        let logits: Vec<f32> = expected.iter().map(|&p| if p > 0.0 { (p as f32).ln() } else { f32::NEG_INFINITY }).collect();
        for draft in [0u32, 1, 3, 4] {
            let mut s = Sampler::new(params(1.0, 0, 1.0, 0.0));
            let mut counts = [0usize; 5];
            let n = 40_000;
            for _ in 0..n {
                counts[s.sample_draft(&mut logits.clone(), &[], draft) as usize] += 1;
            }
            for (i, (&c, p)) in counts.iter().zip(expected).enumerate() {
                let f = c as f64 / n as f64;
                assert!((f - p).abs() < 0.015, "draft {draft}: token {i} drawn {f:.4} of the time, p = {p}");
            }
        }
        // With top-k 2 the distribution is (0.625, 0.375): a proposal outside it is never kept.
        let mut s = Sampler::new(params(1.0, 2, 1.0, 0.0));
        let mut kept = 0;
        for _ in 0..10_000 {
            let t = s.sample_draft(&mut logits.clone(), &[], 2);
            assert!(t < 2, "token {t} is outside the top 2");
            kept += usize::from(t == 0);
        }
        assert!((kept as f64 / 10_000.0 - 0.625).abs() < 0.03, "{kept}");
        // Greedy ignores the proposal.
        let mut g = Sampler::new(SamplingParams::greedy());
        assert_eq!(g.sample_draft(&mut logits.clone(), &[], 1), 0);
    }

    #[test]
    fn empirical_distribution_matches_softmax() {
        let expected = [0.5f32, 0.3, 0.2];
        let logits: Vec<f32> = expected.iter().map(|p| p.ln()).collect();
        let mut s = Sampler::new(params(1.0, 0, 1.0, 0.0));
        let mut counts = [0usize; 3];
        let n = 20_000;
        for _ in 0..n {
            counts[s.sample(&mut logits.clone(), &[]) as usize] += 1;
        }
        for (c, p) in counts.iter().zip(expected) {
            let freq = *c as f32 / n as f32;
            assert!((freq - p).abs() < 0.02, "counts {counts:?}");
        }
    }

    #[test]
    fn top_p_keeps_smallest_sufficient_prefix() {
        // probabilities 0.5, 0.3, 0.2: top_p 0.4 keeps {0}, 0.7 keeps
        // {0, 1}, 0.85 keeps all three.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        let seen = |top_p: f32| {
            let mut s = Sampler::new(params(1.0, 0, top_p, 0.0));
            let mut seen = [false; 3];
            for _ in 0..2000 {
                seen[s.sample(&mut logits.clone(), &[]) as usize] = true;
            }
            seen
        };
        assert_eq!(seen(0.4), [true, false, false]);
        assert_eq!(seen(0.7), [true, true, false]);
        assert_eq!(seen(0.85), [true, true, true]);
    }

    #[test]
    fn top_p_over_large_vocab_uses_lazy_blocks() {
        // A flat distribution over 1000 tokens: top_p 0.5 must keep exactly
        // the 500 lowest ids (ties resolved by id), crossing several blocks.
        let logits = vec![0.0f32; 1000];
        let mut s = Sampler::new(params(1.0, 0, 0.5, 0.0));
        let mut max_seen = 0;
        for _ in 0..20_000 {
            max_seen = max_seen.max(s.sample(&mut logits.clone(), &[]));
        }
        assert!((490..=500).contains(&max_seen), "max_seen {max_seen}");
    }

    /// The stages applied literally as llama.cpp describes them: sort
    /// everything, top-k, top-p, min-p. Returns the kept ids, sorted.
    fn reference_kept(logits: &[f32], top_k: usize, top_p: f32, min_p: f32) -> Vec<u32> {
        let mut c: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, clean_logit(l))).filter(|&(_, l)| l > f32::NEG_INFINITY).collect();
        c.sort_by(by_logit_desc);
        if top_k > 0 && top_k < c.len() {
            c.truncate(top_k);
        }
        let max = c[0].1;
        if top_p < 1.0 {
            let z: f64 = c.iter().map(|&(_, l)| f64::from((l - max).exp())).sum();
            let mut cum = 0.0;
            let mut keep = c.len();
            for (i, &(_, l)) in c.iter().enumerate() {
                cum += f64::from((l - max).exp()) / z;
                if cum >= f64::from(top_p) {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
        }
        if min_p > 0.0 {
            c.retain(|&(_, l)| l >= max + min_p.ln());
        }
        let mut ids: Vec<u32> = c.into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn filters_match_reference_implementation() {
        let mut case_rng = Xoshiro256StarStar::from_seed(77);
        for case in 0..300u64 {
            let n = [3usize, 10, 3000, 20_000][case as usize % 4];
            let scale = [0.1f32, 1.0, 5.0, 30.0][(case as usize / 4) % 4];
            let mut logits: Vec<f32> = random_logits(case, n).iter().map(|l| l * scale).collect();
            if case % 3 == 0 {
                // coarse rounding creates many ties
                logits.iter_mut().for_each(|l| *l = l.round());
            }
            if case % 5 == 0 {
                logits[case as usize % n] = f32::NAN;
            }
            let top_k = [0usize, 1, 5, 40, 1500, 5000][case_rng.next_u64() as usize % 6];
            let top_p = [1.0f32, 0.5, 0.9, 0.95, 0.999][case_rng.next_u64() as usize % 5];
            let min_p = [0.0f32, 0.05, 0.3][case_rng.next_u64() as usize % 3];
            let mut s = Sampler::new(params(1.0, top_k, top_p, min_p));
            let token = s.sample(&mut logits.clone(), &[]);
            let mut kept: Vec<u32> = s.candidates.iter().map(|&(id, _)| id).collect();
            kept.sort_unstable();
            let expected = reference_kept(&logits, top_k, top_p, min_p);
            assert_eq!(kept, expected, "case {case}: n {n} k {top_k} p {top_p} min_p {min_p}");
            assert!(expected.contains(&token));
        }
    }

    #[test]
    fn min_p_filters_relative_to_top() {
        // probabilities 0.5, 0.3, 0.2: min_p 0.5 keeps tokens >= 0.25.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        let mut s = Sampler::new(params(1.0, 0, 1.0, 0.5));
        for _ in 0..2000 {
            assert_ne!(s.sample(&mut logits.clone(), &[]), 2);
        }
    }

    #[test]
    fn repetition_penalty_changes_argmax() {
        let p = SamplingParams { repetition_penalty: 1.5, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p);
        // 2.0 / 1.5 = 1.33 < 1.5, so token 1 wins once token 0 was seen.
        assert_eq!(s.sample(&mut [2.0, 1.5], &[]), 0);
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0]), 1);
        // negative logits get more negative, not less
        assert_eq!(s.sample(&mut [-1.0, -1.2], &[0]), 1);
    }

    #[test]
    fn penalty_math() {
        let p = SamplingParams { repetition_penalty: 2.0, frequency_penalty: 0.5, presence_penalty: 0.25, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p);
        let mut logits = [1.0f32, -1.0, 2.0, 0.5];
        // out-of-range id 99 is ignored
        s.apply_penalties(&mut logits, &[0, 0, 1, 2, 2, 2, 99]);
        let expected = [1.0 / 2.0 - 2.0 * 0.5 - 0.25, -2.0 - 0.5 - 0.25, 2.0 / 2.0 - 3.0 * 0.5 - 0.25, 0.5];
        for (a, b) in logits.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{logits:?} vs {expected:?}");
        }
    }

    #[test]
    fn penalty_window_is_last_n() {
        let p = SamplingParams { frequency_penalty: 1.0, penalty_last_n: 2, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p);
        let mut logits = [0.0f32; 3];
        s.apply_penalties(&mut logits, &[0, 0, 0, 1, 2]);
        assert_eq!(logits, [0.0, -1.0, -1.0]);

        let mut none = Sampler::new(SamplingParams { frequency_penalty: 1.0, penalty_last_n: 0, ..SamplingParams::greedy() });
        let mut logits = [0.0f32; 3];
        none.apply_penalties(&mut logits, &[0, 1, 2]);
        assert_eq!(logits, [0.0; 3]);
    }

    #[test]
    fn nan_and_inf_logits_do_not_panic() {
        for p in [SamplingParams::greedy(), params(1.0, 0, 1.0, 0.0), params(1.0, 2, 0.9, 0.1)] {
            let mut s = Sampler::new(p);
            for _ in 0..200 {
                let t = s.sample(&mut [f32::NAN, 1.0, f32::NAN, 0.5], &[]);
                assert!(t == 1 || t == 3);
            }
            assert_eq!(s.sample(&mut [f32::NAN; 4], &[]), 0);
            assert_eq!(s.sample(&mut [f32::NEG_INFINITY; 4], &[]), 0);
            assert_eq!(s.sample(&mut [0.0, f32::INFINITY, f32::NAN], &[1]), 1);
            assert_eq!(s.sample(&mut [], &[5]), 0);
        }
    }

    #[test]
    fn all_equal_logits() {
        let mut g = Sampler::new(SamplingParams::greedy());
        assert_eq!(g.sample(&mut [3.0; 8], &[]), 0);
        let mut s = Sampler::new(params(1.0, 0, 1.0, 0.0));
        let mut counts = [0usize; 8];
        for _ in 0..8000 {
            counts[s.sample(&mut [3.0; 8], &[]) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn defaults_work_on_large_vocab() {
        let mut s = Sampler::new(SamplingParams { seed: Some(9), ..SamplingParams::default() });
        let logits = random_logits(11, 150_000);
        for _ in 0..20 {
            let t = s.sample(&mut logits.clone(), &[1, 2, 3]) as usize;
            assert!(t < logits.len());
        }
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert!(SamplingParams::default().validate().is_ok());
        assert!(SamplingParams::greedy().validate().is_ok());
        let bad = [
            (SamplingParams { temperature: -0.1, ..Default::default() }, "temperature"),
            (SamplingParams { temperature: f32::NAN, ..Default::default() }, "temperature"),
            (SamplingParams { top_p: 0.0, ..Default::default() }, "top_p"),
            (SamplingParams { top_p: 1.01, ..Default::default() }, "top_p"),
            (SamplingParams { top_p: f32::NAN, ..Default::default() }, "top_p"),
            (SamplingParams { min_p: -0.01, ..Default::default() }, "min_p"),
            (SamplingParams { min_p: 1.5, ..Default::default() }, "min_p"),
            (SamplingParams { min_p: f32::NAN, ..Default::default() }, "min_p"),
            (SamplingParams { repetition_penalty: 0.0, ..Default::default() }, "repetition_penalty"),
            (SamplingParams { repetition_penalty: f32::NAN, ..Default::default() }, "repetition_penalty"),
            (SamplingParams { frequency_penalty: f32::NAN, ..Default::default() }, "frequency_penalty"),
            (SamplingParams { presence_penalty: f32::INFINITY, ..Default::default() }, "presence_penalty"),
        ];
        for (p, field) in bad {
            let err = p.validate().unwrap_err();
            assert!(err.starts_with(field), "{err}");
            assert!(Sampler::try_new(p).is_err());
        }
    }

    #[test]
    fn invalid_params_are_clamped_without_panic() {
        let logits = random_logits(5, 100);
        for p in [
            SamplingParams { temperature: f32::NAN, top_p: f32::NAN, min_p: f32::NAN, ..Default::default() },
            SamplingParams { temperature: f32::INFINITY, top_p: -1.0, min_p: 7.0, ..Default::default() },
            SamplingParams { temperature: -3.0, repetition_penalty: -1.0, ..Default::default() },
            SamplingParams {
                repetition_penalty: f32::MIN_POSITIVE,
                frequency_penalty: f32::MAX,
                presence_penalty: f32::NEG_INFINITY,
                penalty_last_n: usize::MAX,
                top_k: usize::MAX,
                ..Default::default()
            },
            SamplingParams { temperature: 1e-30, ..Default::default() },
        ] {
            let mut s = Sampler::new(p);
            for _ in 0..10 {
                assert!((s.sample(&mut logits.clone(), &[1, 1, 2]) as usize) < logits.len());
            }
        }
    }
}
