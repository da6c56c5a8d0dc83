//! One request's way through the gateway once it is admitted: the targets it tries, with
//! retries and fallbacks ([`try_targets`]), the non-streamed answer ([`answer`]), and
//! the accounting every request ends with — cost, ledger, totals, metrics, the log line
//! ([`Request::finish`]). Streams are in [`crate::relay`].

use crate::backend::{Backend, Failure};
use crate::cache::CacheKey;
use crate::config::Continuation;
use crate::log::{now_rfc3339, Attempt, LogLine};
use crate::price::{Cost, Tokens};
use crate::router::Target;
use crate::semantic::{Lookup, Probe};
use crate::Gateway;
use lamina_api::ApiError;
use rand::Rng;
use std::future::Future;
use std::time::{Duration, Instant};

/// The three proxied APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }

    /// The array a successful reply must hold.
    pub fn expect(self) -> &'static str {
        match self {
            Endpoint::Embeddings => "data",
            _ => "choices",
        }
    }
}

/// An admitted request and what has happened to it so far.
pub struct Request {
    pub id: String,
    pub endpoint: Endpoint,
    pub started: Instant,
    /// The client's body as sent.
    pub body: serde_json::Map<String, serde_json::Value>,
    /// The `model` the client asked for.
    pub requested: String,
    /// The route chosen (by a rule, or the requested name itself); replies carry it as `model`.
    pub alias: String,
    /// The routing rule that chose the route.
    pub rule: Option<String>,
    /// What the rule's classifier answered, if it has one.
    pub classified: Option<crate::classify::Classified>,
    pub route: usize,
    pub key: Option<usize>,
    pub user: Option<String>,
    pub tags: Vec<String>,
    pub stream: bool,
    /// The prompt's estimated size in tokens.
    pub estimate: u64,
    /// The hash of the conversation's start, for routes with prefix affinity.
    pub affinity: Option<u64>,
    pub cache_key: Option<CacheKey>,
    /// Where the answer goes in the semantic cache (after a lookup that missed).
    pub probe: Option<Probe>,
    /// The semantic cache lookup, for the log.
    pub lookup: Option<Lookup>,
    pub attempts: Vec<Attempt>,
    /// For the log line of a request dropped before it finished (the client hung up).
    pub gateway: std::sync::Arc<Gateway>,
    pub finished: bool,
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.finished {
            let gw = self.gateway.clone();
            self.finish(&gw, Outcome::failed(499, "the client went away before the answer".into()));
        }
    }
}

/// How a request ended, for [`Request::finish`].
pub struct Outcome {
    pub status: u16,
    /// The target that answered (the last one, for a resumed stream).
    pub target: Option<Target>,
    pub tokens: Tokens,
    pub cost: Cost,
    pub ttft: Option<Duration>,
    pub cache: &'static str,
    /// Bytes of text sent when a broken stream was resumed, per resume.
    pub resumed_at: Vec<usize>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn failed(status: u16, error: String) -> Outcome {
        Outcome { status, target: None, tokens: Tokens::default(), cost: Cost::ZERO, ttft: None, cache: "off", resumed_at: Vec::new(), error: Some(error) }
    }
}

impl Request {
    /// The body sent to `target`'s backend: the client's, with the deployment's model
    /// name and, for streams, usage asked for.
    pub fn body_for(&self, gw: &Gateway, target: Target) -> serde_json::Map<String, serde_json::Value> {
        let mut body = self.body.clone();
        body.insert("model".into(), gw.config.models[target.route].deployments[target.deployment].model.clone().into());
        if can_continue(gw, target) == Continuation::AssistantPrefill {
            // These servers continue a final assistant message without being asked to
            // (and may not know the fields).
            body.remove("continue_final_message");
            body.remove("add_generation_prompt");
        }
        if self.stream {
            let opts = body.entry("stream_options").or_insert_with(|| serde_json::json!({}));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".into(), true.into());
            }
        }
        body
    }

    /// Keeps a successful answer in the route's caches (those the request was looked up in).
    pub fn store(&mut self, gw: &Gateway, answer: &serde_json::Value) {
        let Some(ttl) = gw.config.models[self.route].cache_ttl else { return };
        let now = Instant::now();
        if let Some(key) = self.cache_key {
            gw.shared.keep(key, answer, ttl, now);
        }
        if let Some(probe) = self.probe.take() {
            gw.shared.semantic.put(probe, answer.clone(), ttl, now);
        }
    }

    /// Charges, counts and logs the finished request.
    pub fn finish(&mut self, gw: &Gateway, o: Outcome) {
        self.finished = true;
        let now = Instant::now();
        let route = o.target.map(|t| gw.config.models[t.route].name.clone());
        let backend = o.target.map(|t| gw.backends[gw.config.models[t.route].deployments[t.deployment].backend].config.name.clone());
        let key_name = self.key.map(|k| gw.config.keys[k].name.clone());
        if let Some(k) = &key_name {
            gw.shared.charge(k, o.cost, o.tokens.total(), now);
        }
        if o.status < 400 {
            let mut groups: Vec<(&'static str, &str)> = vec![("model", self.alias.as_str())];
            if let Some(k) = &key_name {
                groups.push(("key", k));
            }
            if let Some(u) = &self.user {
                groups.push(("user", u));
            }
            groups.extend(self.tags.iter().map(|t| ("tag", t.as_str())));
            gw.shared.totals.add(&groups, &o.tokens, o.cost);
        }
        let fallback = self.attempts.iter().any(|a| a.outcome != "ok") && o.status < 400;
        crate::metrics::request(
            &self.alias,
            backend.as_deref().unwrap_or(""),
            o.status,
            o.cache,
            fallback,
            &o.tokens,
            gw.shared.totals.cost_of("model", &self.alias),
            self.started.elapsed(),
            o.ttft,
        );
        if let Some(log) = &gw.shared.log {
            log.write(&LogLine {
                time: now_rfc3339(),
                id: self.id.clone(),
                endpoint: self.endpoint.name(),
                model: self.alias.clone(),
                requested: (self.requested != self.alias).then(|| self.requested.clone()),
                rule: self.rule.clone(),
                classifier: self.classified.clone(),
                key: key_name,
                user: self.user.clone(),
                tags: self.tags.clone(),
                stream: self.stream,
                status: o.status,
                route,
                backend,
                attempts: self.attempts.clone(),
                fallback,
                resumed: !o.resumed_at.is_empty(),
                resumed_at: o.resumed_at,
                tokens: o.tokens,
                cost: o.cost.decimal(),
                latency_ms: ms(self.started.elapsed()),
                ttft_ms: o.ttft.map(ms),
                cache: o.cache,
                semantic: self.lookup.clone(),
                error: o.error,
            });
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Back-off before retry number `attempt` (0-based): exponential from the policy's base,
/// capped, with full jitter; a 429's `Retry-After` is honoured up to the cap.
fn backoff(gw: &Gateway, attempt: u32, failure: &Failure) -> Duration {
    let p = &gw.config.retry;
    if let Failure::RateLimited { retry_after: Some(after), .. } = failure {
        return (*after).min(p.max_backoff);
    }
    let ceiling = p.backoff.saturating_mul(1u32 << attempt.min(16)).min(p.max_backoff);
    ceiling.mul_f64(rand::rng().random::<f64>())
}

/// Tries `targets[from..]` in order, each up to 1 + `retry.attempts` times for retryable
/// failures, until `call` succeeds. A client error ends the search at once (another
/// backend would refuse it too); a context overflow skips the rest of that route.
/// Returns the index of the target that answered, or the last failure.
pub async fn try_targets<'g, T, F, Fut>(
    gw: &'g Gateway,
    req: &mut Request,
    targets: &[Target],
    from: usize,
    mut body_for: impl FnMut(&Request, Target) -> serde_json::Map<String, serde_json::Value>,
    call: F,
) -> Result<(usize, T), Failure>
where
    F: Fn(&'g Backend, serde_json::Map<String, serde_json::Value>) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut last = Failure::Connect("no deployment to try".into());
    let mut skip_route = None;
    for (i, &t) in targets.iter().enumerate().skip(from) {
        if skip_route == Some(t.route) {
            continue;
        }
        let d = &gw.config.models[t.route].deployments[t.deployment];
        let backend = &gw.backends[d.backend];
        let health = &gw.health[d.backend];
        for attempt in 0..=gw.config.retry.attempts {
            let body = body_for(req, t);
            let t0 = Instant::now();
            let result = {
                let _busy = health.start();
                call(backend, body).await
            };
            let elapsed = t0.elapsed();
            match result {
                Ok(v) => {
                    health.success(elapsed);
                    req.attempts.push(Attempt { backend: backend.config.name.clone(), model: d.model.clone(), outcome: "ok", error: None, ms: ms(elapsed) });
                    return Ok((i, v));
                }
                Err(f) => {
                    req.attempts.push(Attempt {
                        backend: backend.config.name.clone(),
                        model: d.model.clone(),
                        outcome: f.kind(),
                        error: Some(f.message()),
                        ms: ms(elapsed),
                    });
                    if f.is_backend_fault() && health.failure(&gw.config.health, Instant::now()) {
                        tracing::warn!("backend `{}` ejected for {:?} after repeated failures", backend.config.name, gw.config.health.cooldown);
                    }
                    let retry = f.retryable() && attempt < gw.config.retry.attempts;
                    match &f {
                        Failure::Client { .. } => return Err(f),
                        Failure::ContextOverflow(_) => skip_route = Some(t.route),
                        _ => {}
                    }
                    if retry {
                        tokio::time::sleep(backoff(gw, attempt, &f)).await;
                    }
                    last = f;
                    if !retry {
                        break;
                    }
                }
            }
        }
    }
    Err(last)
}

/// The error a client gets when every target failed (or the one that settles it).
pub fn failure_response(req: &Request, last: &Failure) -> Result<(u16, Vec<u8>), ApiError> {
    if let Failure::Client { status, body } = last {
        return Ok((*status, body.to_vec()));
    }
    let tried: Vec<String> = req.attempts.iter().map(|a| format!("{} ({}): {}", a.backend, a.model, a.error.as_deref().unwrap_or("ok"))).collect();
    let all_limited = req.attempts.iter().all(|a| a.outcome == "rate_limited");
    let e = match last {
        Failure::ContextOverflow(m) => ApiError::invalid_request(format!("no model of route `{}` or its fallbacks has room for this request: {m}", req.alias))
            .with_code("context_length_exceeded"),
        _ if req.attempts.iter().all(|a| a.outcome == "unsupported") => {
            ApiError::invalid_request(format!("no backend of `{}` can serve this request: {}", req.alias, tried.join("; "))).with_code("unsupported_request")
        }
        _ if all_limited => ApiError::rate_limited(format!("every backend of `{}` is rate limited: {}", req.alias, tried.join("; "))),
        Failure::Timeout(_) => ApiError::new(504, "upstream_timeout", format!("no backend of `{}` answered in time: {}", req.alias, tried.join("; "))),
        _ => ApiError::new(502, "upstream_error", format!("every backend of `{}` failed: {}", req.alias, tried.join("; "))),
    };
    Err(e)
}

/// The usage object a client sees: OpenAI's fields plus the exact `cost` (and whether it
/// came from the cache).
pub fn usage_json(t: &Tokens, cost: Cost, cache_hit: bool) -> serde_json::Value {
    let mut u = serde_json::json!({
        "prompt_tokens": t.prompt,
        "completion_tokens": t.completion,
        "total_tokens": t.total(),
        "prompt_tokens_details": { "cached_tokens": t.cached },
        "completion_tokens_details": { "reasoning_tokens": t.reasoning },
        "cost": cost.units(),
    });
    if cache_hit {
        u["cache_hit"] = true.into();
    }
    u
}

/// A non-streamed answer: the reply JSON (model renamed to the route, cost added to
/// `usage`) with the target and accounting.
pub async fn answer(gw: &Gateway, req: &mut Request, targets: &[Target]) -> Result<(Target, serde_json::Value, Tokens, Cost), Failure> {
    let endpoint = req.endpoint;
    let (i, mut v) = try_targets(gw, req, targets, 0, |r, t| r.body_for(gw, t), |b, body| async move { b.call(endpoint, &body).await }).await?;
    let t = targets[i];
    let tokens = Tokens::from_usage(&v["usage"]).unwrap_or_default();
    let cost = gw.config.models[t.route].price.cost(&tokens);
    v["model"] = req.alias.clone().into();
    let mut usage = usage_json(&tokens, cost, false);
    // Keep whatever else the backend reported (e.g. timings) beside ours.
    if let (Some(ours), Some(theirs)) = (usage.as_object_mut(), v["usage"].as_object()) {
        for (k, x) in theirs {
            ours.entry(k.clone()).or_insert_with(|| x.clone());
        }
    }
    v["usage"] = usage;
    Ok((t, v, tokens, cost))
}

/// Whether the backend behind `t` can continue a reply another one started.
pub fn can_continue(gw: &Gateway, t: Target) -> Continuation {
    gw.backends[gw.config.models[t.route].deployments[t.deployment].backend].config.continuation
}
