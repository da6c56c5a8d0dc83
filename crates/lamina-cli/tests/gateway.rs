//! `lamina gateway` end to end on loopback: a backend that fails on command
//! (`gateway_support`) for every fallback path, and real `lamina serve` replicas for a
//! transparent proxy, a replica killed mid-stream, and the `openai` and `anthropic`
//! Python clients (an Anthropic-dialect backend, and `/v1/messages` in front).

mod gateway_support;
mod redis_support;
mod serve_support;

use gateway_support::{FaultBackend, OK_TEXT};
use serde_json::{json, Value};
use serve_support::{anthropic_python, free_port, openai_python, stream_events, stream_text, Server};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// A configuration `body` with the request log in a temporary folder.
    fn new(body: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        let text = format!("[gateway]\nlog = \"{}\"\n\n{body}", dir.path().join("requests.jsonl").display());
        std::fs::write(&config, text).unwrap();
        Setup { dir, config }
    }

    fn start(&self) -> Server {
        Server::gateway(&self.config)
    }

    fn log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("requests.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))).collect()
    }
}

fn chat(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 50})
}

fn check(config: &Path, envs: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lamina")).args(["gateway", "--check", "--config"]).arg(config).envs(envs.iter().copied()).output().unwrap()
}

/// A loopback port nothing listens on.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}/v1", free_port())
}

fn fault_backend(name: &str, kind: &str, url: &str) -> String {
    format!("[[backend]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\ntimeout = \"400ms\"\nstream_idle_timeout = \"400ms\"\n\n")
}

fn lamina_backend(name: &str, server: &Server) -> String {
    format!("[[backend]]\nname = \"{name}\"\nkind = \"lamina\"\nurl = \"{}\"\n\n", server.base_url())
}

const FAST_RETRY: &str = "[retry]\nattempts = 1\nbackoff = \"1ms\"\nmax_backoff = \"5ms\"\n\n[health]\nfailures = 1000\n\n";

#[test]
fn configuration_errors_name_the_line_and_column() {
    let backend = "[[backend]]\nname = \"a\"\nkind = \"lamina\"\nurl = \"http://127.0.0.1:1/v1\"\n";
    let model = "[[model]]\nname = \"chat\"\ndeployments = [{ backend = \"a\", model = \"m\" }]\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{backend}colour = \"red\"\n"), ":5:1:", "unknown field `colour`"),
        (format!("{backend}\n[[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"b\", model = \"m\" }}]\n"), ":8:28:", "unknown backend `b` (known: a)"),
        (format!("{backend}timeout = \"30\"\n"), ":5:11:", "timeout: `30` has no unit"),
        (format!("{backend}{model}fallbacks = [\"other\"]\n[[model]]\nname = \"other\"\ndeployments = [{{ backend = \"a\", model = \"m\" }}]\nfallbacks = [\"chat\"]\n"), ":8:14:", "lead back to it"),
        (format!("{backend}{model}price = {{ input = 0.0000001 }}\n"), ":8:9:", "more than 6 decimal places"),
        (format!("{backend}{model}[[key]]\nname = \"k\"\nkey = \"s1\"\nkey_env = \"X\"\n"), ":9:8:", "exactly one of `key` and `key_env`"),
        (format!("{backend}kind2 = 3\n"), ":5:1:", "unknown field `kind2`"),
        (format!("{backend}\n[[model]]\nname = \"chat\"\ndeployments = []\n"), ":8:15:", "has no deployments"),
        ("[gateway]\nlisten = 4000\n".to_string(), ":2:10:", "invalid type"),
        ("[gateway]\nstate = \"http://127.0.0.1:6379\"\n".to_string(), ":2:9:", "is not a Redis URL such as"),
        (format!("{backend}{model}[[rule]]\nroute = \"chat\"\nclassify = {{ route = \"nope\", labels = {{ a = \"chat\" }} }}\n"), ":10:22:", "unknown classifier route `nope`"),
        (format!("{backend}{model}[[rule]]\nroute = \"chat\"\nclassify = {{ route = \"chat\", labels = {{ a = \"big\" }} }}\n"), ":10:45:", "label `a`: unknown route `big` (known: chat)"),
        (format!("{backend}{model}[[rule]]\nroute = \"chat\"\nclassify = {{ route = \"chat\", labels = {{}} }}\n"), ":10:12:", "a classifier needs `labels`"),
        (format!("{backend}{model}[[rule]]\nroute = \"nope\"\n"), ":9:9:", "rule 1: unknown route `nope` (known: chat)"),
        (format!("{backend}{model}[[rule]]\nlast_message = \"(\"\nroute = \"chat\"\n"), ":9:16:", "not a regular expression"),
        (format!("{backend}{model}cache = {{ ttl = \"1m\", similarity = 0.9 }}\n"), ":8:36:", "a semantic cache needs `embeddings`"),
        (format!("{backend}{model}cache = {{ ttl = \"1m\", embeddings = \"chat\" }}\n"), ":8:36:", "a semantic cache needs `similarity`"),
        (format!("{backend}{model}cache = {{ ttl = \"1m\", similarity = 0.9, embeddings = \"nope\" }}\n"), ":8:54:", "unknown embeddings route `nope` (known: chat)"),
        (format!("{backend}{model}cache = {{ ttl = \"1m\", similarity = 1.5, embeddings = \"chat\" }}\n"), ":8:36:", "above 0 and at most 1, not 1.5"),
    ];
    for (text, at, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).unwrap();
        let out = check(&path, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(err.contains(&format!("gateway.toml{at}")) && err.contains(message), "expected `{at}` and `{message}` for\n{text}\ngot: {err}");
    }
    // Secrets come from the environment; a missing one is named, a present one never printed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, format!("{backend}api_key_env = \"LAMINA_GW_TEST_BACKEND_KEY\"\n{model}")).unwrap();
    let out = check(&path, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("environment variable LAMINA_GW_TEST_BACKEND_KEY is not set"), "{out:?}");
    let out = check(&path, &[("LAMINA_GW_TEST_BACKEND_KEY", "sk-secret-value")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("1 backend(s), 1 model route(s) (chat)"), "{out:?}");
    assert!(!stdout.contains("sk-secret-value"));
    let out = check(&dir.path().join("missing.toml"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration"), "{out:?}");
}

#[test]
fn every_failure_falls_back_to_the_next_deployment() {
    let fb = FaultBackend::start();
    let deployments =
        ["status:500", "status:429", "malformed", "no-choices", "hang", "ok"].map(|m| format!("{{ backend = \"fault\", model = \"{m}\" }}")).join(", ");
    let setup = Setup::new(&format!(
        "{FAST_RETRY}{}{}[[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"down\", model = \"m\" }}, {deployments}]\n",
        fault_backend("down", "openai", &dead_url()),
        fault_backend("fault", "openai", &fb.url())
    ));
    let gw = setup.start();
    let r = gw.post_json("/v1/chat/completions", &chat("chat", "hi"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["choices"][0]["message"]["content"], OK_TEXT);
    assert_eq!(r.json()["model"], "chat");
    assert_eq!(r.header("x-lamina-backend"), Some("fault"));
    // Retryable failures are tried twice (attempts = 1 retry); a hung backend once.
    for (m, n) in [("status:500", 2), ("status:429", 2), ("malformed", 2), ("no-choices", 2), ("hang", 1), ("ok", 1)] {
        assert_eq!(fb.count(m), n, "{m}");
    }
    let log = setup.log();
    assert_eq!(log.len(), 1);
    let outcomes: Vec<&str> = log[0]["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes,
        [
            "connect",
            "connect",
            "server_error",
            "server_error",
            "rate_limited",
            "rate_limited",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "timeout",
            "ok"
        ]
    );
    assert_eq!(log[0]["fallback"], true);
    assert_eq!(log[0]["backend"], "fault");

    // Everything down: a 502 that lists what was tried, in OpenAI's error shape.
    let setup = Setup::new(&format!(
        "{FAST_RETRY}{}[[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"down\", model = \"m\" }}]\n",
        fault_backend("down", "openai", &dead_url())
    ));
    let gw = setup.start();
    let r = gw.post_json("/v1/chat/completions", &chat("chat", "hi"));
    assert_eq!(r.status, 502);
    assert!(r.error()["message"].as_str().unwrap().contains("down (m): cannot connect"), "{}", r.error());
    // Bad requests to the gateway itself.
    let r = gw.request("POST", "/v1/chat/completions", &[], b"{not json");
    assert_eq!((r.status, r.error()["type"].as_str()), (400, Some("invalid_request_error")));
    let r = gw.post_json("/v1/chat/completions", &chat("nope", "hi"));
    assert_eq!(r.status, 404);
    assert!(r.error()["message"].as_str().unwrap().contains("this gateway routes: chat"));
    let r = gw.request("POST", "/v1/chat/completions", &[], &[0xff, 0xfe, b'{']);
    assert_eq!(r.status, 400);
    let r = gw.post_json("/v1/embeddings", &json!({"model": "chat", "input": "x", "stream": true}));
    assert_eq!(r.status, 400);
}

#[test]
fn client_errors_pass_through_and_context_overflows_go_to_a_larger_window() {
    let fb = FaultBackend::start();
    let setup = Setup::new(&format!(
        "{FAST_RETRY}{}[[model]]\nname = \"strict\"\ndeployments = [{{ backend = \"fault\", model = \"bad-request\" }}, {{ backend = \"fault\", model = \"ok\" }}]\n\n\
         [[model]]\nname = \"small\"\ncontext_window = 20\ndeployments = [{{ backend = \"fault\", model = \"overflow\" }}]\nfallbacks = [\"big\"]\n\n\
         [[model]]\nname = \"big\"\ncontext_window = 1000\ndeployments = [{{ backend = \"fault\", model = \"slow:1\" }}]\n",
        fault_backend("fault", "openai", &fb.url())
    ));
    let gw = setup.start();
    // A 400 about the request is the client's: passed back as the backend sent it, not retried.
    let r = gw.post_json("/v1/chat/completions", &chat("strict", "hi"));
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["message"], "temperature must be at most 2");
    assert_eq!((fb.count("bad-request"), fb.count("ok")), (1, 0));
    // The backend says the prompt is too long: the fallback with a larger window answers.
    let r = gw.post_json("/v1/chat/completions", &chat("small", "hi"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-lamina-route"), Some("big"));
    assert_eq!(fb.count("overflow"), 1);
    // The gateway's own estimate (about 100 tokens) skips the small window altogether.
    let r = gw.post_json("/v1/chat/completions", &chat("small", &"word ".repeat(80)));
    assert_eq!(r.status, 200);
    assert_eq!((fb.count("overflow"), fb.count("slow:1")), (1, 2));
    // Too long for every window: 400 context_length_exceeded.
    let r = gw.post_json("/v1/chat/completions", &chat("small", &"word ".repeat(1000)));
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["code"], "context_length_exceeded");
}

#[test]
fn rules_route_requests_by_what_they_ask_for() {
    let fb = FaultBackend::start();
    let setup = Setup::new(&format!(
        "{}[[model]]\nname = \"small\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n\n\
         [[model]]\nname = \"big\"\ndeployments = [{{ backend = \"fault\", model = \"slow:1\" }}]\n\n\
         [[rule]]\nname = \"json to big\"\nmodel = [\"auto\"]\njson_mode = true\nroute = \"big\"\n\n\
         [[rule]]\nmodel = [\"auto\"]\nlast_message = '(?i)\\btranslate\\b'\nroute = \"big\"\n\n\
         [[rule]]\nmodel = [\"auto\"]\nmin_prompt_tokens = 50\nroute = \"big\"\n\n\
         [[rule]]\nmodel = [\"auto\"]\nheaders = {{ x-task = \"code\" }}\nroute = \"big\"\n\n\
         [[rule]]\nmodel = [\"auto\", \"small\"]\ntools = true\nroute = \"big\"\n\n\
         [[rule]]\nname = \"default\"\nmodel = [\"auto\"]\nroute = \"small\"\n",
        fault_backend("fault", "openai", &fb.url())
    ));
    let gw = setup.start();
    let route_of = |body: Value, headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        let r = gw.request("POST", "/v1/chat/completions", &h, body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["model"], r.header("x-lamina-route").unwrap());
        r.header("x-lamina-route").unwrap().to_string()
    };
    assert_eq!(route_of(chat("auto", "hello"), &[]), "small");
    let mut json_mode = chat("auto", "hello");
    json_mode["response_format"] = json!({"type": "json_object"});
    assert_eq!(route_of(json_mode, &[]), "big");
    assert_eq!(route_of(chat("auto", "Please translate this into French."), &[]), "big");
    assert_eq!(route_of(chat("auto", "Translations are hard."), &[]), "small", "the regex wants the whole word");
    assert_eq!(route_of(chat("auto", &"long ".repeat(60)), &[]), "big");
    assert_eq!(route_of(chat("auto", "hello"), &[("x-task", "code")]), "big");
    let mut tools = chat("small", "hello");
    tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    assert_eq!(route_of(tools, &[]), "big");
    assert_eq!(route_of(chat("small", "hello"), &[]), "small");
    assert_eq!(gw.post_json("/v1/chat/completions", &chat("nope", "hi")).status, 404);
    let log = setup.log();
    assert_eq!((log[1]["requested"].as_str(), log[1]["rule"].as_str(), log[1]["model"].as_str()), (Some("auto"), Some("json to big"), Some("big")));
    assert_eq!(log[0]["rule"], "default");
    assert!(log[7].get("rule").is_none() && log[7].get("requested").is_none(), "{}", log[7]);
    let models = gw.request("GET", "/v1/models", &[], b"").json();
    assert_eq!(models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect::<Vec<_>>(), ["small", "big", "auto"]);
}

/// 1234 prompt tokens (200 cached) and 77 completion tokens (7 reasoning) at 0.15 / 0.075 /
/// 0.60 / 2.40 per million: 1034 × 0.15 + 200 × 0.075 + 70 × 0.6 + 7 × 2.4 = 228.9 millionths.
const PRICE: &str = "price = { input = 0.15, cached_input = 0.075, output = 0.60, reasoning = 2.40 }\n";
const COST: &str = "0.0002289";

#[test]
fn costs_are_exact_for_every_token_kind_streamed_or_not() {
    let fb = FaultBackend::start();
    let setup = Setup::new(&format!(
        "{}[[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}",
        fault_backend("fault", "openai", &fb.url())
    ));
    let gw = setup.start();
    let r = gw.post_json("/v1/chat/completions", &chat("chat", "hi"));
    assert_eq!(r.header("x-lamina-cost"), Some(COST));
    let usage = &r.json()["usage"];
    assert_eq!(usage["cost"].as_f64(), Some(0.0002289));
    assert_eq!((usage["prompt_tokens"].as_u64(), usage["prompt_tokens_details"]["cached_tokens"].as_u64()), (Some(1234), Some(200)));

    // Streamed with include_usage: OpenAI's usage chunk (no choices) carries the cost.
    let mut body = chat("chat", "hi");
    body["stream"] = true.into();
    body["stream_options"] = json!({"include_usage": true});
    let (status, events) = stream_events(gw.port, "/v1/chat/completions", &body, |_| false);
    assert_eq!(status, 200);
    assert_eq!(stream_text(&events, 0), OK_TEXT);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage_chunk = &events[events.len() - 2];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["cost"].as_f64(), Some(0.0002289));
    assert!(events.iter().all(|e| e == "[DONE]" || e["model"] == "chat"));
    // Streamed without it: the final chunk (the one with the finish reason) carries usage.
    body.as_object_mut().unwrap().remove("stream_options");
    let (_, events) = stream_events(gw.port, "/v1/chat/completions", &body, |_| false);
    let last = &events[events.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["cost"].as_f64(), Some(0.0002289));
    // The backend was asked for usage either way.
    assert!(fb.bodies("ok").iter().filter(|b| b["stream"] == true).all(|b| b["stream_options"]["include_usage"] == true));

    // Three requests: the totals and every log line are exact.
    let spend = gw.request("GET", "/gateway/spend", &[], b"").json();
    assert_eq!(spend["model"]["chat"]["cost_decimal"], "0.0006867");
    assert_eq!(spend["model"]["chat"]["requests"], 3);
    assert_eq!(spend["model"]["chat"]["tokens"]["reasoning"], 21);
    let log = setup.log();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|l| l["cost"] == COST && l["tokens"]["completion"] == 77), "{log:?}");
    assert!(log[1]["stream"] == true && log[1]["ttft_ms"].is_number());
    let metrics = String::from_utf8(gw.request("GET", "/metrics", &[], b"").body).unwrap();
    assert!(metrics.contains("lamina_gateway_cost_micro_units_total{model=\"chat\"} 686"), "{metrics}");

    // `lamina gateway report` sums the log exactly; a torn last line is named, not fatal.
    let log = setup.dir.path().join("requests.jsonl");
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"{\"model\": \"chat\", \"sta").unwrap();
    let report = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lamina"));
        cmd.args(["gateway", "report"]).arg(&log);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let r: Value = serde_json::from_str(&report(true)).unwrap();
    assert_eq!((r["by_model"]["chat"]["cost"].as_str(), r["by_model"]["chat"]["requests"].as_u64()), (Some("0.0006867"), Some(3)));
    assert_eq!((r["bad_line_count"].as_u64(), r["bad_lines"][0].as_u64()), (Some(1), Some(4)));
    assert!(report(false).contains("1 line(s) are not log records (line 4)"));
}

/// The rows of a query on a SQLite file, read by Python's own `sqlite3` module.
fn sqlite_query(db: &Path, sql: &str) -> Vec<Value> {
    let script = "import json, sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nprint(json.dumps([list(r) for r in c.execute(sys.argv[2])]))";
    let out = Command::new("python3").args(["-c", script]).arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[test]
fn a_sqlite_log_holds_every_request_and_survives_kill_minus_nine() {
    let fb = FaultBackend::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("requests.db");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlog = \"{}\"\n\n{FAST_RETRY}{}{}\
             [[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}\n\
             [[model]]\nname = \"detour\"\ndeployments = [{{ backend = \"dead\", model = \"m\" }}, {{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}",
            db.display(),
            fault_backend("fault", "openai", &fb.url()),
            fault_backend("dead", "openai", &dead_url()),
        ),
    )
    .unwrap();
    let mut gw = Server::gateway(&config);
    // 20 requests from 4 threads at once, and 2 that fall back.
    let port = gw.port;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let (status, _) = stream_events(
                        port,
                        "/v1/chat/completions",
                        &json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": true}),
                        |_| false,
                    );
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    for _ in 0..2 {
        assert_eq!(gw.post_json("/v1/chat/completions", &chat("detour", "hi")).status, 200);
    }
    let rows =
        sqlite_query(&db, "SELECT model, count(*), sum(fallback), min(cost), max(cost), sum(completion_tokens) FROM requests GROUP BY model ORDER BY model");
    assert_eq!(rows, vec![json!(["chat", 20, 0, COST, COST, 20 * 77]), json!(["detour", 2, 2, COST, COST, 2 * 77])]);
    let record: Value = serde_json::from_str(sqlite_query(&db, "SELECT record FROM requests WHERE model = 'detour' LIMIT 1")[0][0].as_str().unwrap()).unwrap();
    assert_eq!((record["attempts"][0]["outcome"].as_str(), record["backend"].as_str()), (Some("connect"), Some("fault")), "{record}");
    // kill -9 in the middle of a load: the database opens whole, with every answered request.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).to_string();
                    let headers = [("Content-Type", "application/json")];
                    let reply = serve_support::Connection::open(port, "POST", "/v1/chat/completions", &headers, body.as_bytes()).and_then(|mut c| {
                        while c.next_chunk()?.is_some() {}
                        Ok(c.status)
                    });
                    match reply {
                        Ok(200) => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    eventually("load under way", || answered.load(std::sync::atomic::Ordering::Relaxed) >= 50);
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(sqlite_query(&db, "PRAGMA integrity_check"), vec![json!(["ok"])]);
    let logged = sqlite_query(&db, "SELECT count(*) FROM requests WHERE model = 'chat'")[0][0].as_u64().unwrap();
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed) as u64;
    // Each answer's row is written before its reply is sent: none is lost.
    assert!(logged >= 20 + answered, "{logged} rows for {} answers", 20 + answered);
    // `lamina gateway report` reads the database as it reads JSON lines.
    let out = Command::new(env!("CARGO_BIN_EXE_lamina")).args(["gateway", "report", "--json"]).arg(&db).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["by_model"]["chat"]["requests"].as_u64(), r["by_model"]["detour"]["fallbacks"].as_u64()), (Some(logged), Some(2)));
    // A file that is not a database is refused at start, by name.
    std::fs::write(&db, b"not sqlite").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lamina")).args(["gateway", "--config"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("requests.db") && err.contains("not a usable SQLite database"), "{err}");
}

#[test]
fn lamina_cost_counts_with_each_models_tokenizer_and_prices_exactly() {
    // Hugging Face's SmolLM2 tokenizer gives this text 33 tokens (`../shared/reference/`).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/smollm2_tokenize.jsonl");
    let line: Value = serde_json::from_str(std::fs::read_to_string(path).unwrap().lines().nth(2).unwrap()).unwrap();
    let text = line["text"].as_str().unwrap();
    assert_eq!((line["ids"].as_array().unwrap().len(), text.len()), (33, 92));
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.txt");
    std::fs::write(&prompt, text).unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[[backend]]\nname = \"a\"\nkind = \"lamina\"\nurl = \"http://127.0.0.1:1/v1\"\napi_key_env = \"LAMINA_COST_TEST_UNSET\"\n\n\
         [[model]]\nname = \"small\"\ndeployments = [{ backend = \"a\", model = \"smollm2-135m-instruct\" }]\nprice = { input = 0.15, output = 0.60 }\n\n\
         [[model]]\nname = \"big\"\ndeployments = [{ backend = \"a\", model = \"gpt-4o\" }]\nprice = { input = 2.5, output = 10 }\n",
    )
    .unwrap();
    let cost = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_lamina")).arg("cost").args(args).output().unwrap();
    let out = cost(&[
        prompt.to_str().unwrap(),
        "--models",
        "small,big,other",
        "--price",
        "other=1/2",
        "--output-tokens",
        "100",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    // small: the route's deployment is local, so its own tokenizer counts: 33 × $0.15/M
    // = $0.00000495 in, 100 × $0.60/M = $0.00006 out. The backend key is not needed.
    assert_eq!(
        rows[0],
        json!({"model": "small", "tokenizer": "smollm2-135m-instruct", "estimated": false, "input_tokens": 33, "output_tokens": 100,
                               "input_cost": "0.00000495", "output_cost": "0.000060", "cost": "0.00006495"})
    );
    // big: no local tokenizer, so ⌈92 / 4⌉ = 23 estimated tokens × $2.5/M, 100 × $10/M.
    assert_eq!(
        rows[1],
        json!({"model": "big", "tokenizer": "estimate", "estimated": true, "input_tokens": 23, "output_tokens": 100,
                               "input_cost": "0.0000575", "output_cost": "0.001000", "cost": "0.0010575"})
    );
    assert_eq!((rows[2]["input_cost"].as_str(), rows[2]["cost"].as_str()), (Some("0.000023"), Some("0.000223")));
    // The table marks estimates.
    let out = cost(&[text, "--models", "small,big", "--config", config.to_str().unwrap()]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("≈23") && table.contains("estimate: 4 bytes a token") && !table.contains("≈33"), "{table}");
    // Refusals name what is missing.
    let out = cost(&["hi", "--models", "nope"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no price for `nope`"));
    let out = cost(&["hi", "--models", "x", "--price", "x=cheap"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("write NAME=INPUT/OUTPUT"));
    std::fs::write(&prompt, b"\xff\xfe").unwrap();
    let out = cost(&[prompt.to_str().unwrap(), "--models", "x", "--price", "x=1/1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not UTF-8"));
}

#[test]
fn lamina_compare_runs_prompt_tests_across_models() {
    let smol = Server::start(&["--ctx", "1024"]);
    let fb = FaultBackend::start();
    let setup = Setup::new(&format!(
        "{}{}[[model]]\nname = \"fault\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}\n\
         [[model]]\nname = \"smol\"\ndeployments = [{{ backend = \"s\", model = \"{SMOL}\" }}]\n{PRICE}",
        fault_backend("fault", "openai", &fb.url()),
        lamina_backend("s", &smol),
    ));
    let gw = setup.start();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("compare.toml");
    std::fs::write(
        &spec,
        "prompts = [\"Say: {{word}}\", \"Please say {{ word }}.\"]\nmax_tokens = 16\n\n\
         [[test]]\nname = \"echo\"\nvars = { word = \"hello\" }\n\
         assert = [{ type = \"contains\", value = \"fault backend ok\" }, { type = \"max_cost\", value = 0.001 }, { type = \"max_latency_ms\", value = 60000 }]\n\n\
         [[test]]\nname = \"shape\"\nvars = { word = \"hi\" }\n\
         assert = [{ type = \"is_json\" }, { type = \"regex\", value = \"^fault\" }, { type = \"json_schema\", value = { type = \"object\" } }]\n\n\
         [[test]]\nname = \"judged\"\nvars = { word = \"good morning\" }\nassert = [{ type = \"judge\", value = \"The answer is a greeting.\" }]\n",
    )
    .unwrap();
    let (out_json, out_html) = (dir.path().join("results.json"), dir.path().join("report.html"));
    let compare = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_lamina")).arg("compare").args(args).output().unwrap();
    let base = gw.base_url();
    let out = compare(&[
        "--models",
        "fault,smol",
        "--prompts",
        spec.to_str().unwrap(),
        "--url",
        &base,
        "--judge",
        "smol",
        "--out",
        out_json.to_str().unwrap(),
        "--html",
        out_html.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Some results fail (the fault backend's answer is no JSON), so the command fails.
    assert!(!out.status.success() && stderr.contains("results failed"), "{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 3 * 2 * 2);
    let find = |test: &str, prompt: u64, model: &str| results.iter().find(|x| x["test"] == test && x["prompt"] == prompt && x["model"] == model).unwrap();
    for p in 0..2 {
        let echo = find("echo", p, "fault");
        assert_eq!((echo["pass"].as_bool(), echo["cost"].as_str()), (Some(true), Some(COST)), "{echo}");
        let shape = find("shape", p, "fault");
        let passes: Vec<bool> = shape["checks"].as_array().unwrap().iter().map(|c| c["pass"].as_bool().unwrap()).collect();
        assert_eq!(passes, [false, true, false], "{shape}");
        assert_eq!(shape["checks"][0]["reason"], "is not JSON");
        // SmolLM2 does not say the fault backend's words.
        assert_eq!(find("echo", p, "smol")["checks"][0]["pass"], false);
        // The judge gave a verdict (pass or not), not an unreadable answer.
        let judged = find("judged", p, "smol");
        assert!(judged["checks"][0]["reason"].as_str().is_none_or(|r| r.starts_with("the judge says")), "{judged}");
    }
    // The variants were rendered and sent as written.
    let sent: Vec<String> = fb.bodies("ok").iter().map(|b| b["messages"][0]["content"].as_str().unwrap().to_string()).collect();
    assert!(sent.contains(&"Say: hello".to_string()) && sent.contains(&"Please say hello.".to_string()), "{sent:?}");
    // Per model: passes, and the exact cost of six answers at 0.0002289.
    let fault = r["summary"].as_array().unwrap().iter().find(|s| s["model"] == "fault").unwrap();
    assert_eq!(
        (fault["passed"].as_u64(), fault["total"].as_u64(), fault["cost"].as_str()),
        (Some(2 + fault_judged(results)), Some(6), Some("0.0013734")),
        "{fault}"
    );
    let html = std::fs::read_to_string(&out_html).unwrap();
    assert!(html.contains("<table") && html.contains("fault backend ok") && html.contains("Say: {{word}}") && html.contains("is not JSON"));
    // Mistakes in the file are found before anything is sent.
    let sent_before = fb.count("ok");
    std::fs::write(&spec, "prompts = [\"{{nope}}\"]\n[[test]]\nvars = {}\n").unwrap();
    let out = compare(&["--models", "fault", "--prompts", spec.to_str().unwrap(), "--url", &base]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no variable `nope`"));
    std::fs::write(&spec, "prompts = [\"x\"]\n[[test]]\nassert = [{ type = \"judge\", value = \"ok\" }]\n").unwrap();
    let out = compare(&["--models", "fault", "--prompts", spec.to_str().unwrap(), "--url", &base]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --judge MODEL"));
    std::fs::write(&spec, "prompts = [\"x\"]\n[[test]]\nassert = [{ type = \"regexp\", value = \"a\" }]\n").unwrap();
    let out = compare(&["--models", "fault", "--prompts", spec.to_str().unwrap(), "--url", &base]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("compare.toml:3:") && err.contains("regexp"), "{err}");
    assert_eq!(fb.count("ok"), sent_before);
    // All passing: success.
    std::fs::write(&spec, "prompts = [\"x\"]\n[[test]]\nassert = [{ type = \"icontains\", value = \"FAULT\" }]\n").unwrap();
    let out = compare(&["--models", "fault", "--prompts", spec.to_str().unwrap(), "--url", &base]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fault: 1/1 passed (100%)"));
}

/// How many `judged` results of the fault model passed (the judge's verdict on its text).
fn fault_judged(results: &[Value]) -> u64 {
    results.iter().filter(|x| x["test"] == "judged" && x["model"] == "fault" && x["pass"] == true).count() as u64
}

#[test]
fn a_stream_that_breaks_midway_is_completed_from_a_fallback() {
    let fb = FaultBackend::start();
    let route = |name: &str, first: &str, second_backend: &str| {
        format!("[[model]]\nname = \"{name}\"\ndeployments = [{{ backend = \"lamina-like\", model = \"{first}\" }}, {{ backend = \"{second_backend}\", model = \"continue\" }}]\n\n")
    };
    let setup = Setup::new(&format!(
        "{FAST_RETRY}{}{}{}{}{}{}",
        fault_backend("lamina-like", "lamina", &fb.url()),
        fault_backend("plain", "openai", &fb.url()),
        route("cut", "cut-after:3", "lamina-like"),
        route("garbage", "garbage-after:2", "lamina-like"),
        route("before", "cut-before", "lamina-like"),
        route("stuck", "cut-after:2", "plain"),
    ));
    let gw = setup.start();
    let stream = |model: &str| {
        let mut body = chat(model, "hi");
        body["stream"] = true.into();
        stream_events(gw.port, "/v1/chat/completions", &body, |_| false)
    };
    // Three chunks, then the connection drops: the fallback continues the same answer.
    let (status, events) = stream("cut");
    assert_eq!(status, 200);
    assert_eq!(stream_text(&events, 0), "w0 w1 w2 <continued:w0 w1 w2 >");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(events.iter().filter(|e| e["choices"][0]["delta"].get("role").is_some()).count(), 1, "{events:?}");
    let ids: std::collections::HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one id throughout: {ids:?}");
    let cont = fb.bodies("continue").pop().unwrap();
    assert_eq!(cont["continue_final_message"], true);
    assert_eq!(cont["messages"].as_array().unwrap().last().unwrap(), &json!({"role": "assistant", "content": "w0 w1 w2 "}));
    assert_eq!(cont["max_tokens"], 47, "the continuation's limit counts what was sent");
    let line = setup.log().pop().unwrap();
    assert_eq!((line["resumed"].as_bool(), line["status"].as_u64()), (Some(true), Some(200)));
    // An event that does not parse is a break too.
    let (_, events) = stream("garbage");
    assert_eq!(stream_text(&events, 0), "w0 w1 <continued:w0 w1 >");
    // A stream that closes before its first event is an ordinary failure: nothing was
    // sent, so the fallback answers from the start.
    let (status, events) = stream("before");
    assert_eq!(status, 200);
    assert_eq!(stream_text(&events, 0), "<fresh>");
    // No fallback can continue (a plain OpenAI backend): a clean error event, and neither
    // a finish reason nor [DONE] — the half answer is not passed off as whole.
    let (status, events) = stream("stuck");
    assert_eq!(status, 200);
    assert_eq!(stream_text(&events, 0), "w0 w1 ");
    let last = events.last().unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("the answer is incomplete"), "{last}");
    assert!(events.iter().all(|e| e != "[DONE]" && e["choices"][0]["finish_reason"].is_null()));
    assert_eq!(setup.log().pop().unwrap()["status"], 502);
}

#[test]
fn budgets_rate_limits_and_keys_refuse_with_the_right_status() {
    let fb = FaultBackend::start();
    let setup = Setup::new(&format!(
        "{}[[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}\n\
         [[model]]\nname = \"other\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n\n\
         [[key]]\nname = \"fast\"\nkey = \"sk-fast\"\nrpm = 2\n\n\
         [[key]]\nname = \"thrifty\"\nkey = \"sk-thrifty\"\nbudget = 0.0003\nuser = \"alice\"\ntags = [\"team-a\"]\n\n\
         [[key]]\nname = \"narrow\"\nkey = \"sk-narrow\"\nmodels = [\"other\"]\n",
        fault_backend("fault", "openai", &fb.url())
    ));
    let gw = setup.start();
    let post = |key: Option<&str>, model: &str| {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        gw.request("POST", "/v1/chat/completions", &headers, chat(model, "hi").to_string().as_bytes())
    };
    assert_eq!(post(None, "chat").status, 401);
    assert_eq!(post(Some("sk-wrong"), "chat").status, 401);
    let r = post(Some("sk-narrow"), "chat");
    assert_eq!(r.status, 403);
    assert!(r.error()["message"].as_str().unwrap().contains("may not use model `chat`"));
    assert_eq!(post(Some("sk-narrow"), "other").status, 200);
    // Two requests a minute, then 429 with Retry-After.
    assert_eq!(post(Some("sk-fast"), "chat").status, 200);
    assert_eq!(post(Some("sk-fast"), "chat").status, 200);
    let r = post(Some("sk-fast"), "chat");
    assert_eq!(r.status, 429);
    assert!(r.error()["message"].as_str().unwrap().contains("2 requests per minute"));
    assert!(r.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| (1..=60).contains(&s)));
    // A budget of 0.0003: two requests of 0.0002289 are admitted (the second starts below it), then 429.
    assert_eq!(post(Some("sk-thrifty"), "chat").status, 200);
    assert_eq!(post(Some("sk-thrifty"), "chat").status, 200);
    let r = post(Some("sk-thrifty"), "chat");
    assert_eq!(r.status, 429);
    assert!(r.error()["message"].as_str().unwrap().contains("spent its budget of 0.000300 (0.0004578 spent)"), "{}", r.error());
    // Totals by key, user and tag.
    let spend = gw.request("GET", "/gateway/spend", &[("Authorization", "Bearer sk-fast")], b"").json();
    assert_eq!(spend["key"]["thrifty"]["cost_decimal"], "0.0004578");
    assert_eq!(spend["user"]["alice"]["requests"], 2);
    assert_eq!(spend["tag"]["team-a"]["cost_decimal"], "0.0004578");
    assert_eq!(spend["key"]["fast"]["requests"], 2);
    assert_eq!(gw.request("GET", "/gateway/spend", &[], b"").status, 401);
    // The model list follows the key.
    let models = gw.request("GET", "/v1/models", &[("Authorization", "Bearer sk-narrow")], b"").json();
    assert_eq!(models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect::<Vec<_>>(), ["other"]);
}

/// Streams `body` (with usage) and checks the fault backend's text came back at no cost.
fn streamed_free(gw: &Server, body: &Value) {
    let mut body = body.clone();
    body["stream"] = true.into();
    body["stream_options"] = json!({"include_usage": true});
    let (_, events) = stream_events(gw.port, "/v1/chat/completions", &body, |_| false);
    assert_eq!(stream_text(&events, 0), OK_TEXT);
    assert_eq!(events[events.len() - 2]["usage"]["cost"].as_f64(), Some(0.0));
}

#[test]
fn exact_cache_hits_are_free_and_marked() {
    let fb = FaultBackend::start();
    let setup = Setup::new(&format!(
        "{}[[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}cache = {{ ttl = \"1m\" }}\n",
        fault_backend("fault", "openai", &fb.url())
    ));
    let gw = setup.start();
    let r = gw.post_json("/v1/chat/completions", &chat("chat", "hi"));
    assert_eq!((r.header("x-lamina-cache"), r.header("x-lamina-cost")), (Some("miss"), Some(COST)));
    // The same request, its fields in another order: a hit, priced 0, not sent on.
    let same: Value = serde_json::from_str(r#"{"max_tokens": 50, "messages": [{"content": "hi", "role": "user"}], "model": "chat"}"#).unwrap();
    let r = gw.post_json("/v1/chat/completions", &same);
    assert_eq!((r.header("x-lamina-cache"), r.header("x-lamina-cost")), (Some("hit"), Some("0.000000")));
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], OK_TEXT);
    assert_eq!((v["usage"]["cost"].as_f64(), v["usage"]["cache_hit"].as_bool()), (Some(0.0), Some(true)));
    assert_eq!(fb.count("ok"), 1);
    // Streamed from the cache.
    streamed_free(&gw, &chat("chat", "hi"));
    assert_eq!(fb.count("ok"), 1);
    // Another question misses; a stream fills the cache for a later plain request.
    let mut other = chat("chat", "hello");
    other["stream"] = true.into();
    let (_, events) = stream_events(gw.port, "/v1/chat/completions", &other, |_| false);
    assert_eq!(stream_text(&events, 0), OK_TEXT);
    other.as_object_mut().unwrap().remove("stream");
    let r = gw.post_json("/v1/chat/completions", &other);
    assert_eq!(r.header("x-lamina-cache"), Some("hit"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], OK_TEXT);
    assert_eq!(fb.count("ok"), 2);
    let log = setup.log();
    let caches: Vec<&str> = log.iter().map(|l| l["cache"].as_str().unwrap()).collect();
    assert_eq!(caches, ["miss", "hit", "hit", "miss", "hit"]);
}

/// The reference embedding of `text` (sentence-transformers' all-MiniLM-L6-v2, in
/// `../shared/reference/`).
fn reference_embedding(text: &str) -> Vec<f64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/minilm_embeddings.jsonl");
    let file = std::fs::read_to_string(path).unwrap();
    let line = file.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["text"] == text).unwrap();
    line["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

#[test]
fn semantic_cache_hits_paraphrases_and_nothing_else() {
    lamina_core::registry::default_embedding_model_dir().unwrap();
    let fb = FaultBackend::start();
    let embedder = Server::start(&["chat=smollm2-135m-instruct", "embed=all-minilm-l6-v2", "--ctx", "512"]);
    let dead = dead_url();
    let setup = Setup::new(&format!(
        "{FAST_RETRY}{}{}{}         [[model]]\nname = \"embed\"\ndeployments = [{{ backend = \"e\", model = \"embed\" }}]\n\n         [[model]]\nname = \"gone\"\ndeployments = [{{ backend = \"dead\", model = \"embed\" }}]\n\n         [[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}         cache = {{ ttl = \"1m\", similarity = 0.7, embeddings = \"embed\" }}\n\n         [[model]]\nname = \"blind\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}         cache = {{ ttl = \"1m\", similarity = 0.7, embeddings = \"gone\" }}\n",
        fault_backend("fault", "openai", &fb.url()),
        fault_backend("dead", "openai", &dead),
        lamina_backend("e", &embedder),
    ));
    let gw = setup.start();
    let (asked, paraphrase, unrelated) = ("How do I reset my password?", "Steps to change your account password", "Paris is the capital of France.");
    // The reference says how close the paraphrase is (0.77) and how far the other (0.03).
    let close = cosine(&reference_embedding(asked), &reference_embedding(paraphrase));
    let far = cosine(&reference_embedding(asked), &reference_embedding(unrelated));
    assert!(close > 0.75 && far < 0.1, "{close} {far}");
    let r = gw.post_json("/v1/chat/completions", &chat("chat", asked));
    assert_eq!((r.header("x-lamina-cache"), r.header("x-lamina-cost")), (Some("miss"), Some(COST)));
    // The paraphrase is answered from the cache, free, with the similarity the reference
    // gives (lamina's MiniLM is 1e-3 off it on this pair; 5e-3 allowed, a tenth of the
    // margin to the threshold).
    let r = gw.post_json("/v1/chat/completions", &chat("chat", paraphrase));
    assert_eq!((r.header("x-lamina-cache"), r.header("x-lamina-cost")), (Some("semantic"), Some("0.000000")), "{}", gw.log());
    let similarity: f64 = r.header("x-lamina-cache-similarity").unwrap().parse().unwrap();
    assert!((similarity - close).abs() < 5e-3, "{similarity} vs the reference's {close}");
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], OK_TEXT);
    assert_eq!((v["usage"]["cost"].as_f64(), v["usage"]["cache_hit"].as_bool()), (Some(0.0), Some(true)));
    assert_eq!(fb.count("ok"), 1);
    // Streamed, too.
    streamed_free(&gw, &chat("chat", paraphrase));
    assert_eq!(fb.count("ok"), 1);
    // Another question is sent on; so is the paraphrase at another temperature or under a
    // system prompt (everything but the last message must match exactly).
    let r = gw.post_json("/v1/chat/completions", &chat("chat", unrelated));
    assert_eq!(r.header("x-lamina-cache"), Some("miss"));
    let mut warm = chat("chat", paraphrase);
    warm["temperature"] = 0.5.into();
    assert_eq!(gw.post_json("/v1/chat/completions", &warm).header("x-lamina-cache"), Some("miss"));
    let mut system = chat("chat", paraphrase);
    system["messages"] = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": paraphrase}]);
    assert_eq!(gw.post_json("/v1/chat/completions", &system).header("x-lamina-cache"), Some("miss"));
    assert_eq!(fb.count("ok"), 4);
    // The answer to the other question is cached in turn, under its own meaning.
    let r = gw.post_json("/v1/chat/completions", &chat("chat", "What is the capital city of France?"));
    assert_eq!(r.header("x-lamina-cache"), Some("semantic"), "{}", gw.log());
    assert_eq!(fb.count("ok"), 4);
    // A dead embeddings route costs the cache, not the request.
    let r = gw.post_json("/v1/chat/completions", &chat("blind", asked));
    assert_eq!((r.status, r.header("x-lamina-cache")), (200, Some("miss")));
    assert_eq!(fb.count("ok"), 5);
    let log = setup.log();
    let caches: Vec<&str> = log.iter().map(|l| l["cache"].as_str().unwrap()).collect();
    assert_eq!(caches, ["miss", "semantic", "semantic", "miss", "miss", "miss", "semantic", "miss"]);
    let logged = log[1]["semantic"]["similarity"].as_f64().unwrap();
    assert!((logged - close).abs() < 5e-3 && log[1]["semantic"]["backend"] == "e", "{}", log[1]);
    let nearest = log[3]["semantic"]["similarity"].as_f64().unwrap();
    assert!((nearest - far).abs() < 5e-3, "the miss logs how close it came: {}", log[3]);
    assert!(log[7]["semantic"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", log[7]);
}

/// Polls `done` every 10 ms for up to 10 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !done() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "never happened: {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn two_gateways_share_budgets_limits_and_the_cache_through_redis() {
    let Some(binary) = redis_support::redis_server() else { return };
    let mut redis = redis_support::Redis::start(&binary);
    let fb = FaultBackend::start();
    let setup = Setup::new(&format!(
        "state = \"{}\"\n\n{FAST_RETRY}{}\
         [[model]]\nname = \"plain\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}\n\
         [[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{PRICE}cache = {{ ttl = \"1m\" }}\n\n\
         [[key]]\nname = \"capped\"\nkey = \"sk-capped\"\nbudget = 0.0002\n\n\
         [[key]]\nname = \"rated\"\nkey = \"sk-rated\"\nrpm = 3\n\n\
         [[key]]\nname = \"metered\"\nkey = \"sk-metered\"\nrpm = 1000\n\n\
         [[key]]\nname = \"open\"\nkey = \"sk-open\"\n",
        redis.url(),
        fault_backend("fault", "openai", &fb.url()),
    ));
    // Two replicas of one configuration, as behind a load balancer.
    let (a, b) = (setup.start(), setup.start());
    let post = |gw: &Server, key: &str, body: &Value| {
        let auth = format!("Bearer {key}");
        gw.request("POST", "/v1/chat/completions", &[("Content-Type", "application/json"), ("Authorization", &auth)], body.to_string().as_bytes())
    };
    let fleet_spent = |gw: &Server, key: &str| {
        let spend = gw.request("GET", "/gateway/spend", &[("Authorization", "Bearer sk-open")], b"").json();
        spend["fleet"]["spent"][key].as_str().map(str::to_string)
    };
    // A budget spent through one gateway is spent on the other.
    let r = post(&a, "sk-capped", &chat("plain", "hi"));
    assert_eq!((r.status, r.header("x-lamina-cost")), (200, Some(COST)), "{}", a.log());
    eventually("b sees a's charge", || fleet_spent(&b, "capped").as_deref() == Some(COST));
    let r = post(&b, "sk-capped", &chat("plain", "hi"));
    let message = r.error()["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(r.status, 429, "{message}");
    assert!(message.contains("budget of 0.000200") && message.contains("0.0002289 spent across the fleet"), "{message}");
    assert_eq!(post(&a, "sk-capped", &chat("plain", "hi")).status, 429);
    // One request-per-minute window for both: three admitted in all, the fourth refused.
    for gw in [&a, &b, &a] {
        assert_eq!(post(gw, "sk-rated", &chat("plain", "hi")).status, 200);
    }
    let r = post(&b, "sk-rated", &chat("plain", "hi"));
    assert_eq!(r.status, 429);
    assert!(r.error()["message"].as_str().unwrap().contains("3 requests per minute (across the fleet)"));
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    assert_eq!(fb.count("ok"), 4);
    // An answer cached through a is a hit on b.
    let r = post(&a, "sk-open", &chat("chat", "hello"));
    assert_eq!(r.header("x-lamina-cache"), Some("miss"));
    eventually("the answer is in Redis", || redis.command(&["KEYS", "lamina:cache:*"]).contains("lamina:cache:"));
    let r = post(&b, "sk-open", &chat("chat", "hello"));
    assert_eq!((r.header("x-lamina-cache"), r.header("x-lamina-cost")), (Some("hit"), Some("0.000000")));
    assert_eq!(r.json()["choices"][0]["message"]["content"], OK_TEXT);
    assert_eq!(fb.count("ok"), 5);
    // Spend is an exact integer of 1e-12 units in Redis.
    assert!(redis.command(&["GET", "lamina:spent:capped"]).contains("228900000"), "{}", redis.command(&["GET", "lamina:spent:capped"]));
    // Redis gone: a key with limits is refused with 503 rather than served unmetered; a key
    // without limits is served (the cache misses); both gateways stay up.
    redis.kill();
    let r = post(&a, "sk-metered", &chat("plain", "hi"));
    assert_eq!((r.status, r.error()["code"].as_str()), (503, Some("state_unavailable")), "{}", String::from_utf8_lossy(&r.body));
    let r = post(&b, "sk-open", &chat("chat", "hello"));
    assert_eq!((r.status, r.header("x-lamina-cache")), (200, Some("miss")));
    assert_eq!(fb.count("ok"), 6);
}

#[test]
fn a_reload_on_sighup_keeps_streams_in_flight_and_spend() {
    let fb = FaultBackend::start();
    let backend = fault_backend("fault", "openai", &fb.url());
    let setup = Setup::new(&format!("{backend}[[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"fault\", model = \"drip:150\" }}]\n{PRICE}"));
    let gw = setup.start();
    let port = gw.port;
    let mut body = chat("chat", "hi");
    body["stream"] = true.into();
    let in_flight = std::thread::spawn(move || stream_events(port, "/v1/chat/completions", &body, |_| false));
    while fb.count("drip:150") == 0 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The new configuration: another deployment at twice the price, and a new route.
    let doubled = "price = { input = 0.30, cached_input = 0.15, output = 1.20, reasoning = 4.80 }\n";
    let v2 = format!(
        "{backend}[[model]]\nname = \"chat\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n{doubled}\n[[model]]\nname = \"added\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n"
    );
    std::fs::write(&setup.config, format!("[gateway]\nlog = \"{}\"\n\n{v2}", setup.dir.path().join("requests.jsonl").display())).unwrap();
    let hup = || assert!(Command::new("kill").args(["-HUP", &gw.child.id().to_string()]).status().unwrap().success());
    hup();
    let routes = || {
        gw.request("GET", "/v1/models", &[], b"").json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let t0 = std::time::Instant::now();
    while !routes().contains(&"added".to_string()) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "not reloaded: {}", gw.log());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The stream that started before the reload ends whole, on its old route and price.
    let (status, events) = in_flight.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(stream_text(&events, 0), OK_TEXT);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(events[events.len() - 2]["usage"]["cost"].as_f64(), Some(0.0002289));
    // New requests follow the new file; the spend so far carries over.
    let r = gw.post_json("/v1/chat/completions", &chat("chat", "hi"));
    assert_eq!(r.header("x-lamina-cost"), Some("0.0004578"));
    assert_eq!(gw.post_json("/v1/chat/completions", &chat("added", "hi")).status, 200);
    let spend = gw.request("GET", "/gateway/spend", &[], b"").json();
    assert_eq!(spend["model"]["chat"]["cost_decimal"], "0.0006867");
    // A broken file is refused with its line; the configuration in force stays.
    std::fs::write(&setup.config, "[[model]]\nname = 3\n").unwrap();
    hup();
    let t0 = std::time::Instant::now();
    while !gw.log().contains("reload refused") {
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "no refusal: {}", gw.log());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(gw.log().contains("gateway.toml:2:8"), "{}", gw.log());
    assert_eq!(gw.post_json("/v1/chat/completions", &chat("added", "hi")).status, 200);
}

const SMOL: &str = "smollm2-135m-instruct";

fn lamina_routes(a: &Server, b: &Server) -> String {
    format!(
        "[retry]\nbackoff = \"1ms\"\n\n\
         [[backend]]\nname = \"a\"\nkind = \"lamina\"\nurl = \"{}\"\n\n\
         [[backend]]\nname = \"b\"\nkind = \"lamina\"\nurl = \"{}\"\n\n\
         [[model]]\nname = \"smol\"\ndeployments = [{{ backend = \"a\", model = \"{SMOL}\" }}, {{ backend = \"b\", model = \"{SMOL}\" }}]\n{PRICE}",
        a.base_url(),
        b.base_url()
    )
}

fn greedy(model: &str, content: &str, max_tokens: u64) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0})
}

#[test]
fn a_replica_killed_mid_stream_is_taken_over_by_another() {
    let mut a = Server::start(&["--ctx", "1024"]);
    let b = Server::start(&["--ctx", "1024"]);
    let setup = Setup::new(&lamina_routes(&a, &b));
    let gw = setup.start();
    let question = "Write a short story about a lighthouse keeper.";
    // Transparent: the gateway's answer is the replica's, with the exact cost.
    let direct = b.post_json("/v1/chat/completions", &greedy(SMOL, question, 48)).json();
    let via = gw.post_json("/v1/chat/completions", &greedy("smol", question, 48));
    assert_eq!(via.header("x-lamina-backend"), Some("a"));
    let v = via.json();
    assert_eq!(v["choices"][0]["message"]["content"], direct["choices"][0]["message"]["content"]);
    let (p, c) = (v["usage"]["prompt_tokens"].as_u64().unwrap(), v["usage"]["completion_tokens"].as_u64().unwrap());
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let pico = (p - cached) * 150_000 + cached * 75_000 + c * 600_000;
    assert_eq!(v["usage"]["cost"].as_f64(), Some(pico as f64 / 1e12));

    // Kill replica a after the stream's fourth content chunk: b finishes the answer.
    let mut body = greedy("smol", question, 48);
    body["stream"] = true.into();
    let mut chunks = 0;
    let mut killed = false;
    let pid = a.child.id();
    let (status, events) = stream_events(gw.port, "/v1/chat/completions", &body, |e| {
        if e["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()) {
            chunks += 1;
        }
        if chunks == 4 && !killed {
            Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
            killed = true;
        }
        false
    });
    let _ = a.child.wait();
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}\n{}", gw.log());
    let text = stream_text(&events, 0);
    let line = setup.log().pop().unwrap();
    assert_eq!((line["resumed"].as_bool(), line["backend"].as_str()), (Some(true), Some("b")), "{line}");
    // What b was asked: to continue the text the client had when a died. Asked directly,
    // b continues it the same way (greedy), so the client's answer is the sent text plus b's.
    let sent = line["resumed_at"][0].as_u64().unwrap() as usize;
    assert!(sent > 0 && sent < text.len(), "{sent} of {text:?}");
    let mut cont = greedy(SMOL, question, 64);
    cont["messages"].as_array_mut().unwrap().push(json!({"role": "assistant", "content": &text[..sent]}));
    cont["continue_final_message"] = true.into();
    let rest = b.post_json("/v1/chat/completions", &cont).json()["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(rest.starts_with(&text[sent..]), "the answer after the break is b's continuation:\n{:?}\n{rest:?}", &text[sent..]);
    // It begins as the uninterrupted answer does (the break came after the fourth chunk).
    let whole = direct["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(whole.starts_with(&text[..sent]), "{whole:?} / {text:?}");
    // Later requests skip the dead replica after a refused connection.
    let r = gw.post_json("/v1/chat/completions", &greedy("smol", "Hi", 4));
    assert_eq!((r.status, r.header("x-lamina-backend")), (200, Some("b")));
}

#[test]
fn prefix_affinity_keeps_a_conversation_on_the_replica_that_caches_it() {
    let a = Server::start(&["--ctx", "1024"]);
    let b = Server::start(&["--ctx", "1024"]);
    let config = lamina_routes(&a, &b).replace("name = \"smol\"\n", "name = \"smol\"\nstrategy = \"prefix-affinity\"\n");
    let setup = Setup::new(&config);
    // Two gateways with no state in common: the hash alone agrees.
    let (g1, g2) = (setup.start(), setup.start());
    let system = "You are a terse assistant. Answer in one short sentence, and never use lists.";
    let mut messages = vec![json!({"role": "system", "content": system}), json!({"role": "user", "content": "Name a colour."})];
    let mut backends = Vec::new();
    for turn in 0..4 {
        let gw = if turn % 2 == 0 { &g1 } else { &g2 };
        let r = gw.post_json("/v1/chat/completions", &json!({"model": "smol", "messages": messages, "max_tokens": 8, "temperature": 0}));
        assert_eq!(r.status, 200, "{}", gw.log());
        backends.push(r.header("x-lamina-backend").unwrap().to_string());
        let v = r.json();
        let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
        if turn > 0 {
            // The replica still holds the earlier turns' blocks (16 tokens each).
            assert!(cached >= 16, "turn {turn}: {cached} cached tokens of {}", v["usage"]);
        }
        messages.push(v["choices"][0]["message"].clone());
        messages.push(json!({"role": "user", "content": format!("And another, number {turn}?")}));
    }
    assert!(backends.iter().all(|b| *b == backends[0]), "{backends:?}");
    // Other conversations spread over both replicas (all 16 on one: 2 in 65,536).
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..16 {
        let r = g1.post_json("/v1/chat/completions", &greedy("smol", &format!("Conversation {i}: say hi."), 1));
        seen.insert(r.header("x-lamina-backend").unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn a_classifier_model_chooses_the_route() {
    let smol = Server::start(&["--ctx", "1024"]);
    let fb = FaultBackend::start();
    let instructions = "Label the user's message: code if it asks for a program, chat otherwise. Reply as JSON.";
    let classify =
        |by: &str| format!("classify = {{ route = \"{by}\", labels = {{ code = \"coder\", chat = \"talker\" }}, instructions = \"{instructions}\" }}\n");
    let config = format!(
        "{FAST_RETRY}{}{}{}\
         [[model]]\nname = \"smol\"\ndeployments = [{{ backend = \"s\", model = \"{SMOL}\" }}]\n\n\
         [[model]]\nname = \"coder\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n\n\
         [[model]]\nname = \"talker\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n\n\
         [[model]]\nname = \"gone\"\ndeployments = [{{ backend = \"dead\", model = \"m\" }}]\n\n\
         [[model]]\nname = \"babbler\"\ndeployments = [{{ backend = \"fault\", model = \"ok\" }}]\n\n\
         [[rule]]\nname = \"classified\"\nmodel = [\"auto\"]\nroute = \"talker\"\n{}\n\
         [[rule]]\nname = \"classifier down\"\nmodel = [\"auto-down\"]\nroute = \"talker\"\n{}\n\
         [[rule]]\nname = \"classifier babbles\"\nmodel = [\"auto-babble\"]\nroute = \"talker\"\n{}",
        fault_backend("fault", "openai", &fb.url()),
        fault_backend("dead", "openai", &dead_url()),
        lamina_backend("s", &smol),
        classify("smol"),
        classify("gone"),
        classify("babbler"),
    );
    let setup = Setup::new(&config);
    let gw = setup.start();
    let labels = |l: &str| match l {
        "code" => "coder",
        "chat" => "talker",
        other => panic!("not a label: {other}"),
    };
    for (i, text) in ["Write a Python function that reverses a list.", "How was your weekend?"].iter().enumerate() {
        // What the model itself answers to the classifier's question, asked directly.
        let direct = smol.post_json(
            "/v1/chat/completions",
            &json!({"model": SMOL, "temperature": 0, "max_tokens": 32,
                    "messages": [{"role": "system", "content": instructions}, {"role": "user", "content": text}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "route", "strict": true, "schema": {
                        "type": "object", "properties": {"label": {"type": "string", "enum": ["chat", "code"]}},
                        "required": ["label"], "additionalProperties": false}}}}),
        );
        let content = direct.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        let label: Value = serde_json::from_str(&content).unwrap_or_else(|e| panic!("structured output is not JSON ({e}): {content}"));
        let label = label["label"].as_str().unwrap().to_string();
        // Through the gateway the same label picks its route.
        let r = gw.post_json("/v1/chat/completions", &chat("auto", text));
        assert_eq!(r.status, 200, "{}", gw.log());
        assert_eq!(r.json()["model"], labels(&label), "{text}: the model said {label}");
        let line = &setup.log()[i];
        assert_eq!((line["rule"].as_str(), line["classifier"]["label"].as_str()), (Some("classified"), Some(label.as_str())), "{line}");
        assert_eq!(line["classifier"]["backend"], "s");
    }
    // A classifier that is down, or answers no label, leaves the rule's own route.
    let r = gw.post_json("/v1/chat/completions", &chat("auto-down", "Write a program."));
    assert_eq!((r.status, r.json()["model"].as_str()), (200, Some("talker")));
    let r = gw.post_json("/v1/chat/completions", &chat("auto-babble", "Write a program."));
    assert_eq!((r.status, r.json()["model"].as_str()), (200, Some("talker")));
    let log = setup.log();
    assert!(log[2]["classifier"]["error"].as_str().unwrap().contains("cannot connect"), "{}", log[2]);
    assert!(log[3]["classifier"]["error"].as_str().unwrap().contains("is not {\"label\""), "{}", log[3]);
}

#[test]
fn the_openai_python_client_works_through_the_gateway() {
    let Some(python) = openai_python() else { return };
    let a = Server::start(&["--ctx", "1024"]);
    let b = Server::start(&["--ctx", "1024"]);
    let setup = Setup::new(&format!("{}\n[[key]]\nname = \"py\"\nkey = \"sk-py\"\n", lamina_routes(&a, &b)));
    let gw = setup.start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/check_gateway.py");
    let out = Command::new(python).arg(script).args([&gw.base_url(), "sk-py", "smol"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "openai client checks failed:\n{stdout}\n{}\ngateway log:\n{}", String::from_utf8_lossy(&out.stderr), gw.log());
    assert!(stdout.contains("all checks passed"));
}

/// Runs one of `tests/openai/`'s client scripts; panics with its output and the gateway's
/// log unless it ends with "all checks passed".
fn run_client(python: &Path, script: &str, args: &[&str], gw: &Server) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai").join(script);
    let out = Command::new(python).arg(&path).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{script} {args:?}\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{script} {args:?} failed:\n{stdout}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
}

#[test]
fn the_anthropic_dialect_works_both_ways_through_the_gateway() {
    let Some(python) = anthropic_python() else { return };
    let a = Server::start(&["--ctx", "1024"]);
    let b = Server::start(&["--ctx", "1024"]);
    // Route "smol" goes to a in OpenAI's dialect; route "claude" to b in Anthropic's
    // (lamina serve has /v1/messages), so every request on it is translated there and back.
    let config = format!(
        "[[backend]]\nname = \"a\"\nkind = \"lamina\"\nurl = \"{}\"\n\n\
         [[backend]]\nname = \"c\"\nkind = \"anthropic\"\nurl = \"{}\"\n\n\
         [[model]]\nname = \"smol\"\ndeployments = [{{ backend = \"a\", model = \"{SMOL}\" }}]\n{PRICE}\n\
         [[model]]\nname = \"claude\"\ndeployments = [{{ backend = \"c\", model = \"{SMOL}\" }}]\n{PRICE}\n\
         [[key]]\nname = \"py\"\nkey = \"sk-py\"\n",
        a.base_url(),
        b.base_url()
    );
    let setup = Setup::new(&config);
    let gw = setup.start();
    let root = format!("http://127.0.0.1:{}", gw.port);
    // The anthropic client on /v1/messages, over both dialects behind.
    for route in ["smol", "claude"] {
        run_client(&python, "check_anthropic.py", &[&root, "sk-py", route, "--via-gateway"], &gw);
        run_client(&python, "check_anthropic.py", &[&root, "sk-py", route, "--tools", "--via-gateway"], &gw);
    }
    // The openai client on an Anthropic backend.
    run_client(&python, "check_gateway.py", &[&gw.base_url(), "sk-py", "claude", "--backends", "c", "--chat-only"], &gw);
    // Translation loses nothing: a greedy answer through c is b's own answer, token for token.
    let question = "Write a haiku about rain.";
    let direct = b.post_json("/v1/chat/completions", &greedy(SMOL, question, 32)).json();
    let post = |body: &Value| {
        let headers = [("Content-Type", "application/json"), ("Authorization", "Bearer sk-py")];
        gw.request("POST", "/v1/chat/completions", &headers, body.to_string().as_bytes())
    };
    let via = post(&greedy("claude", question, 32)).json();
    assert_eq!(via["choices"][0]["message"]["content"], direct["choices"][0]["message"]["content"], "{via}");
    assert_eq!(via["choices"][0]["finish_reason"], direct["choices"][0]["finish_reason"]);
    assert_eq!(via["usage"]["completion_tokens"], direct["usage"]["completion_tokens"]);
    // A field Anthropic's API has no place for is refused, not dropped.
    let mut n2 = greedy("claude", question, 8);
    n2["n"] = 2.into();
    let r = post(&n2);
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("unsupported_request")), "{body}");
    // Every request is logged with its route and backend.
    let log = setup.log();
    assert!(log.iter().any(|l| l["model"] == "claude" && l["backend"] == "c" && l["status"] == 200), "{log:?}");
    assert!(log.iter().any(|l| l["model"] == "smol" && l["backend"] == "a" && l["status"] == 200), "{log:?}");
}

/// Two real models behind one gateway, chosen by the prompt's size: short requests go to
/// SmolLM2-135M, long ones to Gemma 3 270M. Each answer is the one its model gives when
/// asked directly, and the log names the rule that chose it.
#[test]
fn short_requests_go_to_smollm2_and_long_ones_to_gemma3() {
    const GEMMA: &str = "gemma-3-270m";
    let both = Server::start(&["--ctx", "1024", SMOL, GEMMA]);
    let config = format!(
        "{FAST_RETRY}{}\
         [[model]]\nname = \"quick\"\ndeployments = [{{ backend = \"s\", model = \"{SMOL}\" }}]\n\n\
         [[model]]\nname = \"thorough\"\ndeployments = [{{ backend = \"s\", model = \"{GEMMA}\" }}]\n\n\
         [[rule]]\nname = \"short\"\nmodel = [\"auto\"]\nmax_prompt_tokens = 64\nroute = \"quick\"\n\n\
         [[rule]]\nname = \"long\"\nmodel = [\"auto\"]\nroute = \"thorough\"\n",
        lamina_backend("s", &both)
    );
    let setup = Setup::new(&config);
    let gw = setup.start();
    let text = std::fs::read_to_string(format!("{}/../../../shared/datasets/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let passage: String = text.chars().take(1200).collect();
    let cases = [
        ("What is the capital of France?".to_string(), "quick", SMOL, "short"),
        (format!("Who speaks first in this scene?\n\n{passage}"), "thorough", GEMMA, "long"),
    ];
    for (prompt, route, model, _) in &cases {
        let r = gw.post_json("/v1/chat/completions", &greedy("auto", prompt, 16));
        assert_eq!(r.status, 200, "{}", gw.log());
        assert_eq!(r.header("x-lamina-route"), Some(*route));
        let direct = both.post_json("/v1/chat/completions", &greedy(model, prompt, 16));
        assert_eq!(direct.status, 200);
        let content = |v: &Value| v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        assert_eq!(content(&r.json()), content(&direct.json()), "{route}");
        assert!(!content(&r.json()).is_empty());
    }
    let log = setup.log();
    for (i, (_, route, _, rule)) in cases.iter().enumerate() {
        assert_eq!((log[i]["rule"].as_str(), log[i]["model"].as_str()), (Some(*rule), Some(*route)), "{}", log[i]);
    }
}
