//! Budgets and rate limits per client key, and spend totals per key, user, tag and model.
//!
//! Rate limits count over a sliding minute of one-second buckets: requests when they are
//! admitted, tokens when their usage is known. A budget is checked when a request arrives
//! and charged when its cost is known, so requests already in flight when the budget runs
//! out still finish (and may take the spend slightly past it); the next one is refused.

use crate::price::{Cost, Tokens};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SLOTS: usize = 60;

/// Counts over the last 60 seconds.
struct Window {
    origin: Instant,
    /// (second since `origin`, count) per slot.
    slots: [(u64, u64); SLOTS],
}

impl Window {
    fn new(origin: Instant) -> Window {
        Window { origin, slots: [(u64::MAX, 0); SLOTS] }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn add(&mut self, now: Instant, n: u64) {
        let s = self.second(now);
        let slot = &mut self.slots[(s % SLOTS as u64) as usize];
        if slot.0 != s {
            *slot = (s, 0);
        }
        slot.1 += n;
    }

    fn sum(&self, now: Instant) -> u64 {
        let s = self.second(now);
        self.slots.iter().filter(|(t, _)| *t != u64::MAX && *t + (SLOTS as u64) > s && *t <= s).map(|(_, n)| n).sum()
    }

    /// Seconds until the oldest counted second leaves the window.
    fn retry_after(&self, now: Instant) -> Duration {
        let s = self.second(now);
        let oldest = self.slots.iter().filter(|(t, n)| *t != u64::MAX && *n > 0 && *t + (SLOTS as u64) > s).map(|(t, _)| *t).min().unwrap_or(s);
        Duration::from_secs(oldest + SLOTS as u64 - s)
    }
}

/// Why a request was refused (answered with 429).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message: String,
    pub retry_after: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeyLimits {
    pub budget: Option<Cost>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

impl KeyLimits {
    pub fn of(key: &crate::config::KeyConfig) -> KeyLimits {
        KeyLimits { budget: key.budget.map(Cost::from_units), rpm: key.rpm, tpm: key.tpm }
    }

    pub fn any(&self) -> bool {
        self.budget.is_some() || self.rpm.is_some() || self.tpm.is_some()
    }
}

struct KeyState {
    limits: KeyLimits,
    spent: Cost,
    requests: Window,
    tokens: Window,
}

/// The limits and spend of every key, by name, in memory. Spend and windows outlive a
/// configuration reload: [`Ledger::sync`] changes a key's limits, not what it has used.
pub struct Ledger {
    origin: Instant,
    keys: Mutex<HashMap<String, KeyState>>,
}

impl Ledger {
    pub fn new(now: Instant) -> Ledger {
        Ledger { origin: now, keys: Mutex::new(HashMap::new()) }
    }

    /// Sets the keys' limits (adding keys not seen before; keys no longer configured keep
    /// their spend, in case they come back).
    pub fn sync<'a>(&self, keys: impl IntoIterator<Item = (&'a str, KeyLimits)>) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for (name, limits) in keys {
            match map.get_mut(name) {
                Some(k) => k.limits = limits,
                None => {
                    map.insert(name.to_string(), KeyState { limits, spent: Cost::ZERO, requests: Window::new(self.origin), tokens: Window::new(self.origin) });
                }
            }
        }
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut KeyState) -> T) -> Option<T> {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(name).map(f)
    }

    /// Admits a request for key `name` (counting it) or says why not.
    pub fn admit(&self, name: &str, now: Instant) -> Result<(), Refusal> {
        self.with(name, |k| {
            if let Some(budget) = k.limits.budget {
                if k.spent >= budget {
                    return Err(Refusal {
                        message: format!("key `{name}` has spent its budget of {} ({} spent)", budget.decimal(), k.spent.decimal()),
                        retry_after: None,
                    });
                }
            }
            if let Some(rpm) = k.limits.rpm {
                if k.requests.sum(now) >= rpm as u64 {
                    return Err(Refusal {
                        message: format!("key `{name}` is over its rate limit of {rpm} requests per minute"),
                        retry_after: Some(k.requests.retry_after(now)),
                    });
                }
            }
            if let Some(tpm) = k.limits.tpm {
                let used = k.tokens.sum(now);
                if used >= tpm {
                    return Err(Refusal {
                        message: format!("key `{name}` is over its rate limit of {tpm} tokens per minute ({used} used)"),
                        retry_after: Some(k.tokens.retry_after(now)),
                    });
                }
            }
            k.requests.add(now, 1);
            Ok(())
        })
        .unwrap_or(Ok(()))
    }

    /// Charges a finished request.
    pub fn charge(&self, name: &str, cost: Cost, tokens: u64, now: Instant) {
        self.with(name, |k| {
            k.spent += cost;
            k.tokens.add(now, tokens);
        });
    }

    pub fn spent(&self, name: &str) -> Cost {
        self.with(name, |k| k.spent).unwrap_or(Cost::ZERO)
    }
}

/// Requests, tokens and cost of one group.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Total {
    pub requests: u64,
    pub tokens: Tokens,
    pub cost: f64,
    /// `cost`, exact.
    pub cost_decimal: String,
    #[serde(skip)]
    exact: Cost,
}

/// Spend totals by key, user, tag and model since the gateway started.
#[derive(Default)]
pub struct Totals {
    by: Mutex<BTreeMap<(&'static str, String), Total>>,
}

impl Totals {
    pub fn add(&self, groups: &[(&'static str, &str)], tokens: &Tokens, cost: Cost) {
        let mut by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, name) in groups {
            let t = by.entry((kind, name.to_string())).or_default();
            t.requests += 1;
            t.tokens.add(tokens);
            t.exact += cost;
            t.cost = t.exact.units();
            t.cost_decimal = t.exact.decimal();
        }
    }

    /// The exact cost so far of one group.
    pub fn cost_of(&self, kind: &'static str, name: &str) -> Cost {
        let by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        by.get(&(kind, name.to_string())).map_or(Cost::ZERO, |t| t.exact)
    }

    /// `{"key": {"team-a": {...}}, "model": {...}, ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        let by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = serde_json::Map::new();
        for ((kind, name), t) in by.iter() {
            let group = out.entry(kind.to_string()).or_insert_with(|| serde_json::json!({}));
            group[name] = serde_json::to_value(t).unwrap_or_default();
        }
        serde_json::Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_once_spent_and_rates_over_a_sliding_minute() {
        let t0 = Instant::now();
        let l = Ledger::new(t0);
        l.sync([("k", KeyLimits { budget: Some(Cost(1000)), rpm: Some(2), tpm: Some(100) })]);
        assert!(l.admit("k", t0).is_ok());
        assert!(l.admit("k", t0 + Duration::from_secs(10)).is_ok());
        let r = l.admit("k", t0 + Duration::from_secs(30)).unwrap_err();
        assert!(r.message.contains("2 requests per minute"), "{r:?}");
        assert_eq!(r.retry_after, Some(Duration::from_secs(30)));
        // The first request leaves the window at 60 s.
        assert!(l.admit("k", t0 + Duration::from_secs(61)).is_ok());
        l.charge("k", Cost(999), 100, t0 + Duration::from_secs(61));
        assert!(l.admit("k", t0 + Duration::from_secs(75)).unwrap_err().message.contains("tokens per minute"));
        assert!(l.admit("k", t0 + Duration::from_secs(200)).is_ok());
        l.charge("k", Cost(1), 0, t0 + Duration::from_secs(200));
        assert!(l.admit("k", t0 + Duration::from_secs(300)).unwrap_err().message.contains("budget"));
        assert_eq!(l.spent("k"), Cost(1000));
        // A reload that raises the budget keeps what was spent.
        l.sync([("k", KeyLimits { budget: Some(Cost(1001)), rpm: None, tpm: None })]);
        assert_eq!(l.spent("k"), Cost(1000));
        assert!(l.admit("k", t0 + Duration::from_secs(300)).is_ok());
    }
}
