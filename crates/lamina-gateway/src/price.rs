//! Prices and exact costs.
//!
//! A price table gives each model's price per million tokens of each kind (input, cached
//! input, output, reasoning), in whatever currency the operator uses. Prices are held as
//! integer micro-units per million tokens — which is exactly pico-units per token — so a
//! request's cost is an integer sum with no rounding at all; floating point appears only
//! when a cost is shown.

use serde::Serialize;

/// Per-token prices in pico-units (= micro-units per million tokens).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// Token counts by the kinds that are priced differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// All prompt tokens, cached ones included (as OpenAI's `prompt_tokens`).
    pub prompt: u64,
    /// Of `prompt`, the ones served from a prompt cache.
    pub cached: u64,
    /// All completion tokens, reasoning included (as OpenAI's `completion_tokens`).
    pub completion: u64,
    /// Of `completion`, the reasoning ones.
    pub reasoning: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }

    /// Reads an OpenAI `usage` object (chat, completions or embeddings); missing counts
    /// are 0, and details larger than their totals are capped at them.
    pub fn from_usage(usage: &serde_json::Value) -> Option<Tokens> {
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        if !usage.is_object() {
            return None;
        }
        let prompt = n(&usage["prompt_tokens"]);
        let completion = n(&usage["completion_tokens"]);
        Some(Tokens {
            prompt,
            cached: n(&usage["prompt_tokens_details"]["cached_tokens"]).min(prompt),
            completion,
            reasoning: n(&usage["completion_tokens_details"]["reasoning_tokens"]).min(completion),
        })
    }

    pub fn add(&mut self, o: &Tokens) {
        self.prompt += o.prompt;
        self.cached += o.cached;
        self.completion += o.completion;
        self.reasoning += o.reasoning;
    }
}

/// A cost in pico-units (10⁻¹² of the price table's currency unit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Cost(pub u128);

impl Cost {
    pub const ZERO: Cost = Cost(0);

    /// In currency units, for display and JSON.
    pub fn units(self) -> f64 {
        self.0 as f64 / 1e12
    }

    /// The exact decimal value with at least 6 decimal places, e.g. `"0.000123"` or
    /// `"0.0001234567"`.
    pub fn decimal(self) -> String {
        let whole = self.0 / 1_000_000_000_000;
        let frac = format!("{:012}", self.0 % 1_000_000_000_000);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 6 { &frac[..6] } else { trimmed };
        format!("{whole}.{shown}")
    }

    /// Reads [`Cost::decimal`]'s form back exactly (up to 12 decimal places).
    pub fn parse_decimal(s: &str) -> Option<Cost> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() || frac.len() > 12 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let w: u128 = whole.parse().ok()?;
        let f: u128 = if frac.is_empty() { 0 } else { format!("{frac:0<12}").parse().ok()? };
        Some(Cost(w.checked_mul(1_000_000_000_000)?.checked_add(f)?))
    }

    pub fn from_units(units: f64) -> Cost {
        Cost((units.max(0.0) * 1e12).round() as u128)
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost(self.0 + o.0)
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.0 += o.0;
    }
}

/// The largest price per million tokens accepted (a guard against a misplaced decimal point).
const MAX_PER_MILLION: f64 = 1_000_000.0;

fn micro(v: f64, what: &str) -> Result<u64, String> {
    if !(v.is_finite() && (0.0..=MAX_PER_MILLION).contains(&v)) {
        return Err(format!("price `{what}` = {v} must be between 0 and {MAX_PER_MILLION} per million tokens"));
    }
    let m = v * 1e6;
    let r = m.round();
    if (m - r).abs() > 1e-6 * r.max(1.0) {
        return Err(format!("price `{what}` = {v} has more than 6 decimal places per million tokens"));
    }
    Ok(r as u64)
}

impl Price {
    /// From prices per million tokens (at most 6 decimal places each).
    pub fn per_million(input: f64, cached_input: f64, output: f64, reasoning: f64) -> Result<Price, String> {
        Ok(Price {
            input: micro(input, "input")?,
            cached_input: micro(cached_input, "cached_input")?,
            output: micro(output, "output")?,
            reasoning: micro(reasoning, "reasoning")?,
        })
    }

    /// The exact cost of `t`: uncached prompt tokens at the input price, cached ones at the
    /// cached-input price, reasoning tokens at the reasoning price and the other
    /// completion tokens at the output price.
    pub fn cost(&self, t: &Tokens) -> Cost {
        let cached = t.cached.min(t.prompt);
        let reasoning = t.reasoning.min(t.completion);
        let p = |n: u64, price: u64| n as u128 * price as u128;
        Cost(p(t.prompt - cached, self.input) + p(cached, self.cached_input) + p(t.completion - reasoning, self.output) + p(reasoning, self.reasoning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact_sums_of_integer_prices() {
        // $0.15 / $0.075 / $0.60 / $2.40 per million tokens.
        let p = Price::per_million(0.15, 0.075, 0.6, 2.4).unwrap();
        assert_eq!(p, Price { input: 150_000, cached_input: 75_000, output: 600_000, reasoning: 2_400_000 });
        let t = Tokens { prompt: 1_234, cached: 200, completion: 77, reasoning: 7 };
        // 1034 × 0.15e-6 + 200 × 0.075e-6 + 70 × 0.6e-6 + 7 × 2.4e-6
        //   = 155.1e-6 + 15e-6 + 42e-6 + 16.8e-6 = 228.9e-6
        assert_eq!(p.cost(&t), Cost(228_900_000));
        assert_eq!(p.cost(&t).decimal(), "0.0002289");
        assert_eq!(Cost(228_000_000).decimal(), "0.000228");
        assert_eq!(Cost(3 * 1_000_000_000_000 + 1).decimal(), "3.000000000001");
        assert_eq!(Cost::ZERO.decimal(), "0.000000");
        for c in [Cost(228_900_000), Cost(3 * 1_000_000_000_000 + 1), Cost::ZERO] {
            assert_eq!(Cost::parse_decimal(&c.decimal()), Some(c));
        }
        assert_eq!(Cost::parse_decimal("2"), Some(Cost(2_000_000_000_000)));
        assert!(Cost::parse_decimal("-1").is_none() && Cost::parse_decimal("0.0000000000001").is_none() && Cost::parse_decimal(".5").is_none());
    }

    #[test]
    fn prices_out_of_range_or_too_fine_are_refused() {
        assert!(Price::per_million(-1.0, 0.0, 0.0, 0.0).is_err());
        assert!(Price::per_million(f64::NAN, 0.0, 0.0, 0.0).is_err());
        assert!(Price::per_million(0.0000001, 0.0, 0.0, 0.0).unwrap_err().contains("6 decimal places"));
        assert_eq!(Price::per_million(0.000001, 0.0, 0.0, 0.0).unwrap().input, 1);
    }

    #[test]
    fn usage_objects_are_read_leniently() {
        let u = serde_json::json!({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 99}});
        assert_eq!(Tokens::from_usage(&u).unwrap(), Tokens { prompt: 10, cached: 10, completion: 5, reasoning: 0 });
        let e = serde_json::json!({"prompt_tokens": 8, "total_tokens": 8});
        assert_eq!(Tokens::from_usage(&e).unwrap().total(), 8);
        assert!(Tokens::from_usage(&serde_json::Value::Null).is_none());
    }
}
