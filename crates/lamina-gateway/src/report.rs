//! `lamina gateway report LOG`: a request log summarised — spend, tokens, latency
//! percentiles, errors, fallbacks and cache hits by model and by key. Lines that are not
//! log records (a torn last line after a crash, say) are counted and named by number,
//! never fatal.

use crate::price::{Cost, Tokens};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::BufRead;

#[derive(Default)]
struct Group {
    requests: u64,
    errors: u64,
    fallbacks: u64,
    resumed: u64,
    cache_hits: u64,
    semantic_hits: u64,
    tokens: Tokens,
    cost: Cost,
    latency: Vec<f64>,
    ttft: Vec<f64>,
    failures: BTreeMap<String, u64>,
}

/// One group's figures.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub fallbacks: u64,
    pub resumed: u64,
    /// Exact hits.
    pub cache_hits: u64,
    /// Semantic hits.
    pub semantic_hits: u64,
    pub tokens: Tokens,
    /// Exact decimal.
    pub cost: String,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p90: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub ttft_ms_p50: Option<f64>,
    pub ttft_ms_p99: Option<f64>,
    /// Failed backend tries by kind (`connect`, `timeout`, ...), answered requests included.
    pub failed_tries: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub lines: u64,
    /// 1-based numbers of lines that are not log records (at most 20 listed).
    pub bad_lines: Vec<u64>,
    pub bad_line_count: u64,
    pub total: Summary,
    pub by_model: BTreeMap<String, Summary>,
    pub by_key: BTreeMap<String, Summary>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p).round() as usize])
}

impl Group {
    fn add(&mut self, v: &serde_json::Value, cost: Cost) {
        self.requests += 1;
        self.errors += (v["status"].as_u64().unwrap_or(0) >= 400) as u64;
        self.fallbacks += (v["fallback"] == true) as u64;
        self.resumed += (v["resumed"] == true) as u64;
        self.cache_hits += (v["cache"] == "hit") as u64;
        self.semantic_hits += (v["cache"] == "semantic") as u64;
        let t = &v["tokens"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        self.tokens.add(&Tokens { prompt: n("prompt"), cached: n("cached"), completion: n("completion"), reasoning: n("reasoning") });
        self.cost += cost;
        if let Some(l) = v["latency_ms"].as_f64() {
            self.latency.push(l);
        }
        if let Some(t) = v["ttft_ms"].as_f64() {
            self.ttft.push(t);
        }
        for a in v["attempts"].as_array().into_iter().flatten() {
            match a["outcome"].as_str() {
                Some("ok") | None => {}
                Some(kind) => *self.failures.entry(kind.to_string()).or_default() += 1,
            }
        }
    }

    fn summary(mut self) -> Summary {
        self.latency.sort_by(f64::total_cmp);
        self.ttft.sort_by(f64::total_cmp);
        Summary {
            requests: self.requests,
            errors: self.errors,
            fallbacks: self.fallbacks,
            resumed: self.resumed,
            cache_hits: self.cache_hits,
            semantic_hits: self.semantic_hits,
            tokens: self.tokens,
            cost: self.cost.decimal(),
            latency_ms_p50: percentile(&self.latency, 0.5),
            latency_ms_p90: percentile(&self.latency, 0.9),
            latency_ms_p99: percentile(&self.latency, 0.99),
            ttft_ms_p50: percentile(&self.ttft, 0.5),
            ttft_ms_p99: percentile(&self.ttft, 0.99),
            failed_tries: self.failures,
        }
    }
}

/// Reads a request log.
pub fn summarize(log: impl BufRead) -> std::io::Result<Report> {
    let (mut total, mut models, mut keys) = (Group::default(), BTreeMap::<String, Group>::new(), BTreeMap::<String, Group>::new());
    let (mut lines, mut bad, mut bad_count) = (0u64, Vec::new(), 0u64);
    for line in log.split(b'\n') {
        let line = line?;
        lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = serde_json::from_slice::<serde_json::Value>(&line).ok().filter(|v| v["model"].is_string() && v["status"].is_u64());
        let Some(v) = record else {
            bad_count += 1;
            if bad.len() < 20 {
                bad.push(lines);
            }
            continue;
        };
        let cost = v["cost"].as_str().and_then(Cost::parse_decimal).unwrap_or(Cost::ZERO);
        total.add(&v, cost);
        models.entry(v["model"].as_str().unwrap_or_default().to_string()).or_default().add(&v, cost);
        keys.entry(v["key"].as_str().unwrap_or("(no key)").to_string()).or_default().add(&v, cost);
    }
    Ok(Report {
        lines,
        bad_lines: bad,
        bad_line_count: bad_count,
        total: total.summary(),
        by_model: models.into_iter().map(|(k, g)| (k, g.summary())).collect(),
        by_key: keys.into_iter().map(|(k, g)| (k, g.summary())).collect(),
    })
}

impl Report {
    /// Tables for a terminal.
    pub fn render(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
        let mut out = String::new();
        for (title, groups) in [("model", &self.by_model), ("key", &self.by_key)] {
            out.push_str(&format!(
                "{:<24} {:>8} {:>6} {:>9} {:>7} {:>8} {:>10} {:>10} {:>14} {:>8} {:>8} {:>8} {:>9}\n",
                title, "requests", "errors", "fallbacks", "cached", "semantic", "prompt", "completion", "cost", "p50 ms", "p90 ms", "p99 ms", "ttft p50"
            ));
            for (name, s) in groups.iter().chain(std::iter::once((&"(all)".to_string(), &self.total))) {
                out.push_str(&format!(
                    "{:<24} {:>8} {:>6} {:>9} {:>7} {:>8} {:>10} {:>10} {:>14} {:>8} {:>8} {:>8} {:>9}\n",
                    name,
                    s.requests,
                    s.errors,
                    s.fallbacks,
                    s.cache_hits,
                    s.semantic_hits,
                    s.tokens.prompt,
                    s.tokens.completion,
                    s.cost,
                    ms(s.latency_ms_p50),
                    ms(s.latency_ms_p90),
                    ms(s.latency_ms_p99),
                    ms(s.ttft_ms_p50)
                ));
            }
            out.push('\n');
        }
        if !self.total.failed_tries.is_empty() {
            let kinds: Vec<String> = self.total.failed_tries.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out.push_str(&format!("failed backend tries: {}\n", kinds.join(", ")));
        }
        if self.bad_line_count > 0 {
            let nums: Vec<String> = self.bad_lines.iter().map(u64::to_string).collect();
            out.push_str(&format!("{} line(s) are not log records (line {})\n", self.bad_line_count, nums.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_summed_exactly_and_bad_lines_are_named() {
        let log = concat!(
            r#"{"model":"chat","key":"a","status":200,"cost":"0.0002289","tokens":{"prompt":10,"cached":2,"completion":5,"reasoning":0},"latency_ms":10.0,"attempts":[{"outcome":"connect"},{"outcome":"ok"}],"fallback":true,"cache":"miss"}"#,
            "\n",
            r#"{"model":"chat","key":"b","status":502,"cost":"0.000000","tokens":{},"latency_ms":30.0,"attempts":[{"outcome":"timeout"}],"cache":"off"}"#,
            "\n{\"model\": \"chat\", \"sta\n",
            r#"{"model":"big","status":200,"cost":"1.000000000001","tokens":{"prompt":1,"completion":1},"latency_ms":20.0,"ttft_ms":4.0,"cache":"hit"}"#,
            "\n",
            r#"{"model":"big","status":200,"cost":"0","tokens":{"prompt":1,"completion":1},"latency_ms":3.0,"ttft_ms":3.0,"cache":"semantic"}"#,
            "\n"
        );
        let r = summarize(log.as_bytes()).unwrap();
        assert_eq!((r.total.requests, r.total.errors, r.total.fallbacks, r.total.cache_hits), (4, 1, 1, 1));
        assert_eq!((r.by_model["big"].semantic_hits, r.by_model["chat"].semantic_hits), (1, 0));
        assert_eq!(r.total.cost, "1.000228900001");
        assert_eq!(r.by_model["chat"].cost, "0.0002289");
        assert_eq!(r.by_model["chat"].latency_ms_p50, Some(30.0));
        assert_eq!(r.by_key["(no key)"].requests, 2);
        assert_eq!(r.total.failed_tries, BTreeMap::from([("connect".to_string(), 1), ("timeout".to_string(), 1)]));
        assert_eq!((r.bad_line_count, r.bad_lines.clone()), (1, vec![3]));
        assert!(r.render().contains("1 line(s) are not log records (line 3)"));
    }
}
