//! `lamina compare`: prompt tests across models. A TOML file names prompt variants (with
//! `{{variables}}`) and tests (variables and assertions); every test × variant × model is
//! sent to an OpenAI-compatible URL (the gateway, `lamina serve`, llama-server, a provider),
//! each answer is checked, and a side-by-side table, pass rates, latency and cost come out,
//! with the results as JSON and an HTML report on request.
//!
//! ```toml
//! prompts = ["Answer in one word: {{question}}", "{{question}} Reply with one word only."]
//! system = "You are terse."          # optional
//! max_tokens = 64                     # default 256
//! temperature = 0                     # default 0
//!
//! [[test]]
//! name = "capital"
//! vars = { question = "What is the capital of France?" }
//! assert = [
//!   { type = "icontains", value = "paris" },
//!   { type = "max_latency_ms", value = 5000 },
//!   { type = "judge", value = "names a city" },
//! ]
//! ```
//!
//! Assertions: `contains`, `icontains`, `not_contains`, `equals`, `regex`, `is_json`,
//! `json_schema` (value: a schema), `max_latency_ms`, `max_cost` (the reply's `usage.cost`,
//! as the gateway gives it, or `--price`), `judge` (value: a criterion; `--judge MODEL`
//! answers yes or no, constrained by a JSON schema).

use anyhow::{bail, Context, Result};
use clap::Args;
use lamina_gateway::price::{Cost, Price, Tokens};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Models to compare, comma-separated, as the URL knows them (gateway routes, ...).
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<String>,
    /// The test file (TOML: prompts and tests).
    #[arg(long)]
    pub prompts: PathBuf,
    /// The OpenAI-compatible base URL.
    #[arg(long, default_value = "http://127.0.0.1:4000/v1")]
    pub url: String,
    /// The environment variable holding the API key (sent as a bearer token).
    #[arg(long)]
    pub key_env: Option<String>,
    /// The model that judges `judge` assertions.
    #[arg(long)]
    pub judge: Option<String>,
    /// A price per million tokens, NAME=INPUT/OUTPUT, for replies without `usage.cost`.
    #[arg(long = "price")]
    pub prices: Vec<String>,
    /// Write every result as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write an HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Seconds to wait for one reply.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    prompts: Vec<String>,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    #[serde(default, rename = "test")]
    tests: Vec<TestSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSpec {
    name: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default, rename = "assert")]
    asserts: Vec<Assertion>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case", deny_unknown_fields)]
enum Assertion {
    Contains(String),
    Icontains(String),
    NotContains(String),
    Equals(String),
    Regex(String),
    IsJson,
    JsonSchema(Value),
    MaxLatencyMs(f64),
    MaxCost(f64),
    Judge(String),
}

#[derive(Serialize)]
struct Check {
    assertion: Assertion,
    pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct Outcome {
    test: String,
    prompt: usize,
    model: String,
    pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<String>,
    #[serde(skip)]
    cost_exact: Option<Cost>,
    checks: Vec<Check>,
}

/// `{{name}}` replaced by the variable's value; a name without a value is an error.
fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("`{{{{` without `}}}}` in `{template}`"))?;
        let name = after[..end].trim();
        out.push_str(vars.get(name).ok_or_else(|| format!("no variable `{name}` for `{template}`"))?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

struct Client {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
}

impl Client {
    /// One chat completion: the reply and its latency, or a readable failure.
    async fn chat(&self, body: &Value) -> Result<(Value, Duration), String> {
        let mut req = self.http.post(format!("{}/chat/completions", self.url.trim_end_matches('/'))).json(body);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let t0 = Instant::now();
        let resp = req.send().await.map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| format!("reading the reply: {e}"))?;
        let elapsed = t0.elapsed();
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("HTTP {status}: the reply is not JSON: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])))?;
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("(no message)");
            return Err(format!("HTTP {}: {msg}", status.as_u16()));
        }
        Ok((v, elapsed))
    }

    /// Whether the judge model says `output` meets `criterion`.
    async fn judge(&self, model: &str, criterion: &str, output: &str) -> Result<bool, String> {
        let schema = json!({"type": "object", "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}}, "required": ["verdict"], "additionalProperties": false});
        let body = json!({
            "model": model, "temperature": 0, "max_tokens": 16,
            "messages": [
                {"role": "system", "content": "You grade answers. Say yes if the answer meets the criterion, else no. Reply as JSON."},
                {"role": "user", "content": format!("Criterion: {criterion}\n\nAnswer:\n{output}")}
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "strict": true, "schema": schema}}
        });
        let (v, _) = self.chat(&body).await?;
        let content = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        match serde_json::from_str::<Value>(content).ok().and_then(|j| j["verdict"].as_str().map(str::to_string)).as_deref() {
            Some("yes") => Ok(true),
            Some("no") => Ok(false),
            _ => Err(format!("the judge answered `{}`, not {{\"verdict\": \"yes\"|\"no\"}}", content.chars().take(120).collect::<String>())),
        }
    }
}

pub fn run(args: CompareArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.prompts).with_context(|| format!("reading {}", args.prompts.display()))?;
    let spec: Spec = toml::from_str(&text).map_err(|e| {
        let (line, col) = e.span().map_or((0, 0), |s| {
            let before = &text[..s.start.min(text.len())];
            (before.matches('\n').count() + 1, before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1)
        });
        anyhow::anyhow!("{}:{line}:{col}: {}", args.prompts.display(), e.message())
    })?;
    if spec.prompts.is_empty() || spec.tests.is_empty() {
        bail!("{}: needs at least one prompt in `prompts` and one [[test]]", args.prompts.display());
    }
    // Every prompt renders for every test, and every regex and schema compiles, before anything is sent.
    let validator = lamina_grammar::Compiler::new(lamina_grammar::Vocabulary::bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, t) in spec.tests.iter().enumerate() {
        for p in &spec.prompts {
            render(p, &t.vars).map_err(|e| anyhow::anyhow!("test {}: {e}", i + 1))?;
        }
        for a in &t.asserts {
            match a {
                Assertion::Regex(r) => drop(pattern(r).map_err(|e| anyhow::anyhow!("test {}: {e}", i + 1))?),
                Assertion::JsonSchema(s) => drop(validator.matches_json_schema(s, "{}").map_err(|e| anyhow::anyhow!("test {}: json_schema: {e}", i + 1))?),
                Assertion::Judge(_) if args.judge.is_none() => bail!("test {}: a `judge` assertion needs --judge MODEL", i + 1),
                _ => {}
            }
        }
    }
    let prices: Vec<(String, Price)> = args.prices.iter().map(|p| super::cost::parse_price(p)).collect::<Result<_>>()?;
    let key = match &args.key_env {
        Some(var) => Some(std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?),
        None => None,
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs_f64(args.timeout)).build()?;
    let client = Client { http, url: args.url.clone(), key };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut results = Vec::new();
    runtime.block_on(async {
        for (ti, t) in spec.tests.iter().enumerate() {
            let test = t.name.clone().unwrap_or_else(|| format!("test {}", ti + 1));
            for (pi, p) in spec.prompts.iter().enumerate() {
                let user = render(p, &t.vars).unwrap_or_default();
                let mut messages = Vec::new();
                if let Some(s) = &spec.system {
                    messages.push(json!({"role": "system", "content": s}));
                }
                messages.push(json!({"role": "user", "content": user}));
                for model in &args.models {
                    let body = json!({"model": model, "messages": messages, "max_tokens": spec.max_tokens.unwrap_or(256), "temperature": spec.temperature.unwrap_or(0.0)});
                    let outcome = match client.chat(&body).await {
                        Err(e) => Outcome { test: test.clone(), prompt: pi, model: model.clone(), pass: false, output: None, error: Some(e), latency_ms: 0.0, cost: None, cost_exact: None, checks: Vec::new() },
                        Ok((v, elapsed)) => {
                            let output = v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
                            let cost = v["usage"]["cost"].as_f64().map(Cost::from_units).or_else(|| {
                                let price = prices.iter().find(|(n, _)| n == model).map(|(_, p)| p)?;
                                Some(price.cost(&Tokens::from_usage(&v["usage"])?))
                            });
                            let latency_ms = elapsed.as_secs_f64() * 1e3;
                            let mut checks = Vec::new();
                            for a in &t.asserts {
                                let (pass, reason) = check(a, &output, latency_ms, cost, &validator, &client, args.judge.as_deref()).await;
                                checks.push(Check { assertion: a.clone(), pass, reason });
                            }
                            Outcome {
                                test: test.clone(),
                                prompt: pi,
                                model: model.clone(),
                                pass: checks.iter().all(|c| c.pass),
                                output: Some(output),
                                error: None,
                                latency_ms,
                                cost: cost.map(Cost::decimal),
                                cost_exact: cost,
                                checks,
                            }
                        }
                    };
                    eprintln!("{} · prompt {} · {}: {}", outcome.test, pi + 1, model, if outcome.pass { "pass" } else { "FAIL" });
                    results.push(outcome);
                }
            }
        }
    });
    print!("{}", table(&args.models, &results));
    let summary = summarize(&args.models, &results);
    if let Some(path) = &args.out {
        let doc = json!({"models": args.models, "prompts": spec.prompts, "summary": summary, "results": results});
        write_atomically(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    if let Some(path) = &args.html {
        write_atomically(path, html(&args.models, &spec.prompts, &results, &summary).as_bytes())?;
    }
    // A failed result fails the command, so a CI job can gate on it.
    let failed = results.iter().filter(|r| !r.pass).count();
    if failed > 0 {
        bail!("{failed} of {} results failed", results.len());
    }
    Ok(())
}

/// A regular expression (the syntax of the gateway's `last_message` rules).
fn pattern(r: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(r).map_err(|e| format!("`{r}` is not a regular expression: {e}"))
}

async fn check(
    a: &Assertion,
    out: &str,
    latency_ms: f64,
    cost: Option<Cost>,
    validator: &lamina_grammar::Compiler,
    client: &Client,
    judge: Option<&str>,
) -> (bool, Option<String>) {
    let verdict = |pass: bool, why: String| (pass, (!pass).then_some(why));
    match a {
        Assertion::Contains(s) => verdict(out.contains(s.as_str()), format!("does not contain `{s}`")),
        Assertion::Icontains(s) => verdict(out.to_lowercase().contains(&s.to_lowercase()), format!("does not contain `{s}` (any case)")),
        Assertion::NotContains(s) => verdict(!out.contains(s.as_str()), format!("contains `{s}`")),
        Assertion::Equals(s) => verdict(out.trim() == s.trim(), format!("is not `{s}`")),
        Assertion::Regex(r) => match pattern(r) {
            Ok(re) => verdict(re.is_match(out), format!("does not match `{r}`")),
            Err(e) => (false, Some(e)),
        },
        Assertion::IsJson => verdict(serde_json::from_str::<Value>(out.trim()).is_ok(), "is not JSON".into()),
        Assertion::JsonSchema(s) => match validator.matches_json_schema(s, out.trim()) {
            Ok(ok) => verdict(ok, "does not match the schema".into()),
            Err(e) => (false, Some(e.to_string())),
        },
        Assertion::MaxLatencyMs(max) => verdict(latency_ms <= *max, format!("took {latency_ms:.0} ms, over {max} ms")),
        Assertion::MaxCost(max) => match cost {
            Some(c) => verdict(c <= Cost::from_units(*max), format!("cost {}, over {max}", c.decimal())),
            None => (false, Some("the reply has no usage.cost and --price names no price for this model".into())),
        },
        Assertion::Judge(criterion) => match judge {
            Some(j) => match client.judge(j, criterion, out).await {
                Ok(pass) => verdict(pass, format!("the judge says it does not meet: {criterion}")),
                Err(e) => (false, Some(e)),
            },
            None => (false, Some("no --judge model".into())),
        },
    }
}

#[derive(Serialize)]
struct ModelSummary {
    model: String,
    passed: usize,
    total: usize,
    pass_rate: f64,
    mean_latency_ms: f64,
    cost: Option<String>,
}

fn summarize(models: &[String], results: &[Outcome]) -> Vec<ModelSummary> {
    models
        .iter()
        .map(|m| {
            let mine: Vec<&Outcome> = results.iter().filter(|r| &r.model == m).collect();
            let passed = mine.iter().filter(|r| r.pass).count();
            let answered: Vec<f64> = mine.iter().filter(|r| r.error.is_none()).map(|r| r.latency_ms).collect();
            let costs: Vec<Cost> = mine.iter().filter_map(|r| r.cost_exact).collect();
            ModelSummary {
                model: m.clone(),
                passed,
                total: mine.len(),
                pass_rate: if mine.is_empty() { 0.0 } else { passed as f64 / mine.len() as f64 },
                mean_latency_ms: if answered.is_empty() { 0.0 } else { answered.iter().sum::<f64>() / answered.len() as f64 },
                cost: (!costs.is_empty()).then(|| costs.into_iter().fold(Cost::ZERO, |a, b| a + b).decimal()),
            }
        })
        .collect()
}

/// The (test, prompt variant) pairs in the order they ran: the rows of the reports.
fn rows(results: &[Outcome]) -> Vec<(String, usize)> {
    let mut rows: Vec<(String, usize)> = Vec::new();
    for r in results {
        if !rows.contains(&(r.test.clone(), r.prompt)) {
            rows.push((r.test.clone(), r.prompt));
        }
    }
    rows
}

fn table(models: &[String], results: &[Outcome]) -> String {
    let mut out = format!("{:<28}", "test · prompt");
    for m in models {
        out.push_str(&format!(" {m:>24}"));
    }
    out.push('\n');
    let rows = rows(results);
    for (test, prompt) in &rows {
        out.push_str(&format!("{:<28}", format!("{test} · {}", prompt + 1)));
        for m in models {
            let cell = results.iter().find(|r| &r.test == test && r.prompt == *prompt && &r.model == m).map_or("-".to_string(), |r| {
                if r.error.is_some() {
                    "error".to_string()
                } else {
                    format!("{} {:.0} ms", if r.pass { "pass" } else { "FAIL" }, r.latency_ms)
                }
            });
            out.push_str(&format!(" {cell:>24}"));
        }
        out.push('\n');
    }
    for s in summarize(models, results) {
        out.push_str(&format!(
            "{}: {}/{} passed ({:.0}%), mean latency {:.0} ms, cost {}\n",
            s.model,
            s.passed,
            s.total,
            s.pass_rate * 100.0,
            s.mean_latency_ms,
            s.cost.as_deref().unwrap_or("unknown")
        ));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html(models: &[String], prompts: &[String], results: &[Outcome], summary: &[ModelSummary]) -> String {
    let mut h = String::from(
        "<!doctype html><meta charset=\"utf-8\"><title>lamina compare</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:6px;vertical-align:top;max-width:32em}\
         .pass{background:#e8f7e8}.fail{background:#fde8e8}pre{white-space:pre-wrap;margin:0}</style><h1>lamina compare</h1><h2>Summary</h2>\
         <table><tr><th>model</th><th>passed</th><th>pass rate</th><th>mean latency</th><th>cost</th></tr>",
    );
    for s in summary {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}/{}</td><td>{:.0}%</td><td>{:.0} ms</td><td>{}</td></tr>",
            escape(&s.model),
            s.passed,
            s.total,
            s.pass_rate * 100.0,
            s.mean_latency_ms,
            escape(s.cost.as_deref().unwrap_or("unknown"))
        ));
    }
    h.push_str("</table><h2>Prompts</h2><ol>");
    for p in prompts {
        h.push_str(&format!("<li><pre>{}</pre></li>", escape(p)));
    }
    h.push_str("</ol><h2>Results</h2><table><tr><th>test</th><th>prompt</th>");
    for m in models {
        h.push_str(&format!("<th>{}</th>", escape(m)));
    }
    h.push_str("</tr>");
    let rows = rows(results);
    for (test, prompt) in &rows {
        h.push_str(&format!("<tr><td>{}</td><td>{}</td>", escape(test), prompt + 1));
        for m in models {
            match results.iter().find(|r| &r.test == test && r.prompt == *prompt && &r.model == m) {
                None => h.push_str("<td>-</td>"),
                Some(r) => {
                    let failed: Vec<String> = r.checks.iter().filter_map(|c| c.reason.clone()).chain(r.error.clone()).collect();
                    h.push_str(&format!(
                        "<td class=\"{}\"><pre>{}</pre><small>{:.0} ms{}{}</small></td>",
                        if r.pass { "pass" } else { "fail" },
                        escape(r.output.as_deref().unwrap_or("")),
                        r.latency_ms,
                        r.cost.as_ref().map_or(String::new(), |c| format!(" · {}", escape(c))),
                        if failed.is_empty() { String::new() } else { format!("<br>{}", escape(&failed.join("; "))) }
                    ));
                }
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
    h
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("out")));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_every_variable_or_say_which_is_missing() {
        let vars = BTreeMap::from([("q".to_string(), "2+2?".to_string())]);
        assert_eq!(render("Answer: {{q}} and {{ q }}", &vars).unwrap(), "Answer: 2+2? and 2+2?");
        assert!(render("{{missing}}", &vars).unwrap_err().contains("no variable `missing`"));
        assert!(render("{{q", &vars).is_err());
    }

    #[test]
    fn assertions_parse_from_toml() {
        let spec: Spec = toml::from_str(
            "prompts = [\"x\"]\n[[test]]\nassert = [{ type = \"contains\", value = \"a\" }, { type = \"is_json\" }, { type = \"max_cost\", value = 0.01 }, { type = \"json_schema\", value = { type = \"object\" } }]\n",
        )
        .unwrap();
        assert!(matches!(spec.tests[0].asserts[..], [Assertion::Contains(_), Assertion::IsJson, Assertion::MaxCost(_), Assertion::JsonSchema(_)]));
        assert!(toml::from_str::<Spec>("prompts = [\"x\"]\n[[test]]\nassert = [{ type = \"containz\", value = \"a\" }]\n").is_err());
    }
}
