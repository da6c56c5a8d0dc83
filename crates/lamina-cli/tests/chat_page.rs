//! The chat page at `/`: its files and headers over plain HTTP, then the page in headless
//! Chromium against a real `lamina serve` with the default model and an API key: the page
//! loads without the key and asks for it, lists
//! the models, streams a two-turn conversation (text seen growing, tokens/s and the
//! prompt/cached token figures shown and equal to what the server counted), shows markup
//! in messages as text, shows an API error readably, stops a long reply (and the server
//! cancels its sequence), works in a narrow window and in dark mode; screenshots are kept
//! in `target/test-artifacts/`.

mod serve_support;
mod webdriver;

use serde_json::{json, Value};
use serve_support::Server;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use webdriver::{Browser, ENTER, SHIFT};

const KEY: &str = "sk-page-test";
const MODEL: &str = "smollm2-135m-instruct";
const WAIT: Duration = Duration::from_secs(60);

/// The newest assistant message: its state, text, and the figures of its stats line.
const LAST_REPLY: &str = "const all = document.querySelectorAll('#messages .message.assistant');
    const m = all[all.length - 1];
    if (!m) return null;
    const s = m.querySelector('.stats');
    const e = m.querySelector('.error');
    return {count: all.length, state: m.dataset.state || '', text: m.querySelector('.content').textContent,
            stats: s ? s.textContent : '', figures: s ? Object.assign({}, s.dataset) : {}, error: e ? e.textContent : ''};";

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn last_reply(b: &Browser) -> Value {
    b.exec(LAST_REPLY, json!([]))
}

/// Types `text` and Enter into the message box, then watches the reply until it is no
/// longer waiting or streaming; returns the reply and the text lengths seen while it streamed.
fn send_and_watch(b: &Browser, text: &str) -> (Value, Vec<usize>) {
    let before = last_reply(b)["count"].as_u64().unwrap_or(0);
    b.type_into(&b.find("#prompt"), &format!("{text}{ENTER}"));
    let mut lengths = Vec::new();
    let reply = b.wait_for("the reply to finish", WAIT, || {
        let r = last_reply(b);
        if r["count"].as_u64().unwrap_or(0) <= before {
            return None;
        }
        match r["state"].as_str() {
            Some("streaming") => {
                lengths.push(r["text"].as_str().unwrap_or("").chars().count());
                None
            }
            Some("waiting") => None,
            _ => Some(r),
        }
    });
    (reply, lengths)
}

fn figure(reply: &Value, name: &str) -> u64 {
    reply["figures"][name].as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name} figure: {reply}"))
}

#[test]
fn the_page_needs_no_key_carries_a_strict_policy_and_shadows_no_api_route() {
    let s = Server::start(&["--api-key", KEY]);
    let page = s.request("GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = page.header("content-security-policy").unwrap_or_default().to_string();
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "require-trusted-types-for 'script'"] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("//"), "the page names an external resource");
    for (path, kind) in
        [("/page/chat.js", "text/javascript"), ("/page/markdown.js", "text/javascript"), ("/page/chat.css", "text/css"), ("/page/icon.svg", "image/svg+xml")]
    {
        assert!(html.contains(path), "the page does not load {path}");
        let r = s.request("GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").is_some_and(|t| t.starts_with(kind)), "{path}: {:?}", r.header("content-type"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("content-security-policy").is_some());
    }
    // The API keeps its key and its routes.
    assert_eq!(s.request("GET", "/v1/models", &[], b"").status, 401);
    assert_eq!(s.request("POST", "/v1/chat/completions", &[], b"{}").status, 401);
    assert_eq!(s.request("GET", "/health", &[], b"").json()["status"], "ok");
    assert_eq!(s.request("GET", "/metrics", &[], b"").status, 200);
    assert_eq!(s.request("GET", "/page/nothing.js", &[], b"").status, 404);
    assert_eq!(s.request("POST", "/", &[], b"").status, 405);
    // The picker's "loaded" mark follows the model.
    let auth = format!("Bearer {KEY}");
    let loaded = || s.request("GET", "/v1/models", &[("Authorization", &auth)], b"").json()["data"][0]["loaded"].clone();
    assert_eq!(loaded(), json!(false));
    let body = json!({"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    assert_eq!(s.request("POST", "/v1/chat/completions", &[("Authorization", &auth), ("Content-Type", "application/json")], body.as_bytes()).status, 200);
    assert_eq!(loaded(), json!(true));
}

#[test]
fn the_chat_page_streams_a_conversation_in_a_real_browser() {
    let Some((chromium, chromedriver)) = webdriver::chromium() else { return };
    let s = Server::start(&["--api-key", KEY, "--ctx", "2048"]);

    let b = Browser::start(&chromium, &chromedriver, 1100, 850);
    b.goto(&format!("http://127.0.0.1:{}/", s.port));

    // No key yet: the page says so and offers the field.
    b.wait_for("the API key field", WAIT, || b.exec("return !document.getElementById('key-form').hidden", json!([])).as_bool().filter(|&v| v));
    assert!(b.text(&b.find("#status")).contains("API key"), "{}", b.text(&b.find("#status")));
    b.type_into(&b.find("#api-key"), &format!("{KEY}{ENTER}"));
    b.wait_for("the model list", WAIT, || b.exec("return document.body.dataset.models === 'ready'", json!([])).as_bool().filter(|&v| v));
    let options = b.exec("return [...document.querySelectorAll('#model option')].map(o => [o.value, o.textContent])", json!([]));
    assert_eq!(options, json!([[MODEL, format!("{MODEL} (loads on first use)")]]));
    let storage = b.exec("return [sessionStorage.getItem('lamina.apiKey'), localStorage.length]", json!([]));
    assert_eq!(storage, json!([KEY, 0]), "the key lives in session storage only");

    // Settings: a system prompt long enough to fill a KV block, greedy, short replies.
    let system = "You are a helpful assistant for a test of a chat page. Answer briefly, in plain sentences, and keep to what the user asks for.";
    b.type_into(&b.find("#system"), system);
    let temperature = b.find("#temperature");
    b.clear(&temperature);
    b.type_into(&temperature, "0");
    let max_tokens = b.find("#max-tokens");
    b.clear(&max_tokens);
    b.type_into(&max_tokens, "48");

    // Turn 1, with markup in the message and (the model's greedy answer) in the reply.
    let markup = "<img src=x onerror=window.__pwned=1>";
    let (first, lengths) =
        send_and_watch(&b, &format!("Here is a tag: {markup}. Write an HTML img tag with src=x and an onerror attribute. Reply with the tag only."));
    assert_eq!(first["state"], "done", "{first}");
    let distinct_growth = lengths.windows(2).any(|w| w[0] > 0 && w[1] > w[0]);
    assert!(distinct_growth, "the reply did not grow while streaming (lengths seen {lengths:?}): {first}");
    let stats = first["stats"].as_str().unwrap();
    assert!(stats.contains(" tok/s") && stats.contains("prompt ") && stats.contains(" cached") && stats.contains("first token"), "stats: {stats}");
    let tps: f64 = first["figures"]["tokensPerSecond"].as_str().and_then(|v| v.parse().ok()).expect("tokens/s");
    assert!(tps.is_finite() && tps > 0.0, "{tps}");
    let (p1, c1, g1) = (figure(&first, "promptTokens"), figure(&first, "cachedTokens"), figure(&first, "completionTokens"));
    assert!(stats.contains(&format!("prompt {p1} tokens ({c1} cached)")), "stats: {stats}");
    assert!(p1 > 64 && g1 > 0 && g1 <= 48, "{first}");
    let user_text = b.exec("return document.querySelector('#messages .message.user .content').textContent", json!([]));
    assert!(user_text.as_str().unwrap().contains(markup), "{user_text}");
    // SmolLM2 answers with a bare `<img ... onerror="window.__pwned=1" />`, outside any code block.
    let reply_text = first["text"].as_str().unwrap();
    assert!(reply_text.contains("<img ") && reply_text.contains("onerror="), "the greedy reply was expected to hold an img tag: {reply_text:?}");

    // Turn 2: the conversation goes back with it, and its start comes from the prefix cache.
    let (second, _) = send_and_watch(&b, "Thank you. Now say hello in French.");
    assert_eq!(second["state"], "done", "{second}");
    let (p2, c2, g2) = (figure(&second, "promptTokens"), figure(&second, "cachedTokens"), figure(&second, "completionTokens"));
    assert!(p2 > p1 + g1, "turn 2 ({p2} prompt tokens) does not hold turn 1 ({p1} + {g1})");
    assert!(c2 >= 32 && c2 <= p2, "turn 2: {c2} of {p2} prompt tokens cached");
    // The figures shown are what the server counted.
    assert_eq!(s.metric("lamina_prompt_tokens_total"), (p1 + p2) as f64);
    assert_eq!(s.metric("lamina_cached_prompt_tokens_total"), (c1 + c2) as f64);
    assert_eq!(s.metric("lamina_generated_tokens_total"), (g1 + g2) as f64);

    let png = b.screenshot();
    let (w, h) = webdriver::png_size(&png).unwrap_or_else(|e| panic!("screenshot: {e}"));
    assert!(w >= 1000 && h >= 600 && png.len() > 10_000, "{w}×{h}, {} bytes", png.len());
    std::fs::write(artifacts().join("chat_page.png"), &png).unwrap();

    // Nothing in the conversation became an element, and no handler ran.
    let injected = b.exec("return [document.querySelectorAll('#messages img, #messages script').length, window.__pwned === undefined]", json!([]));
    assert_eq!(injected, json!([0, true]));

    // The renderer itself, on markup and Markdown a model could send (one string through
    // the page's own module; the model above may or may not have repeated the markup).
    let rendered = b.exec_async(
        "const done = arguments[arguments.length - 1];
         import('/page/markdown.js').then(({render}) => {
           const box = document.createElement('div');
           box.append(render(arguments[0]));
           document.body.append(box);
           const out = {
             html: [...box.querySelectorAll('*')].map(e => e.tagName.toLowerCase()).join(' '),
             text: box.textContent,
             links: [...box.querySelectorAll('a')].map(a => a.getAttribute('href')),
             code: box.querySelector('pre code') ? box.querySelector('pre code').textContent : null,
             pwned: window.__pwned === undefined ? null : window.__pwned,
           };
           box.remove();
           done(out);
         }, e => done({error: String(e)}));",
        json!([
            "# Title\n\nSome *em*, **strong** and `code <b>`.\n\n- one\n- two\n\n1. first\n2. second\n\n```html\n<script>window.__pwned=3</script>\n```\n\n<img src=x onerror=window.__pwned=4> [ok](https://example.com/a) [bad](javascript:window.__pwned=5)"
        ]),
    );
    assert_eq!(rendered["html"], "h1 p em strong code ul li li ol li li pre code p a", "{rendered}");
    assert_eq!(rendered["links"], json!(["https://example.com/a"]));
    assert_eq!(rendered["code"], "<script>window.__pwned=3</script>");
    let text = rendered["text"].as_str().unwrap();
    assert!(
        text.contains("<img src=x onerror=window.__pwned=4>") && text.contains("[bad](javascript:window.__pwned=5)") && text.contains("code <b>"),
        "{text}"
    );
    assert_eq!(rendered["pwned"], Value::Null);
    // And the policy forbids HTML from strings altogether (Trusted Types).
    let blocked = b.exec("try { document.createElement('div').innerHTML = '<b>x</b>'; return false } catch (e) { return e instanceof TypeError }", json!([]));
    assert_eq!(blocked, json!(true), "innerHTML with a string was allowed");

    // Shift+Enter is a new line, not a send.
    let prompt = b.find("#prompt");
    b.type_into(&prompt, "line one");
    b.chord(SHIFT, ENTER);
    b.type_into(&prompt, "line two");
    assert_eq!(b.exec("return document.getElementById('prompt').value", json!([])), "line one\nline two");
    assert_eq!(last_reply(&b)["count"], 2);
    b.clear(&prompt);

    // An API error is shown readably, and the message comes back to the box.
    b.clear(&max_tokens);
    b.type_into(&max_tokens, "100000");
    let (failed, _) = send_and_watch(&b, "This cannot fit.");
    assert_eq!(failed["state"], "error", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.starts_with("400") && error.contains("2048"), "error: {error}");
    assert_eq!(b.exec("return document.getElementById('prompt').value", json!([])), "This cannot fit.");
    b.clear(&prompt);

    // Stop: a long reply stops growing, and the server cancels its sequence (in a new
    // chat without the system prompt: SmolLM2 then writes a long story).
    b.click(&b.find("#new-chat"));
    assert_eq!(last_reply(&b), Value::Null);
    b.clear(&b.find("#system"));
    b.clear(&max_tokens);
    b.type_into(&max_tokens, "1500");
    b.type_into(&prompt, &format!("Write a long story about a dragon who learns to fly.{ENTER}"));
    b.wait_for("a long reply to start", WAIT, || {
        let r = last_reply(&b);
        (r["count"] == 1 && r["state"] == "streaming" && r["text"].as_str().unwrap_or("").len() >= 20).then_some(())
    });
    assert_eq!(s.metric("lamina_running_sequences"), 1.0);
    b.click(&b.find("#stop"));
    let stopped = b.wait_for("the reply to stop", WAIT, || Some(last_reply(&b)).filter(|r| r["state"] != "streaming"));
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(stopped["stats"].as_str().unwrap().contains("stopped"), "{stopped}");
    let t0 = Instant::now();
    while s.metric("lamina_running_sequences") != 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the server did not cancel the stopped sequence");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(800));
    let after = last_reply(&b);
    assert_eq!(after["text"], stopped["text"], "the reply grew after Stop");
    assert!(b.exec("return document.getElementById('stop').disabled && !document.getElementById('send').disabled", json!([])).as_bool().unwrap());

    // A narrow window: Settings folds away, nothing scrolls sideways, the conversation
    // and the controls are still there.
    b.set_window(390, 800);
    let narrow_layout = "return window.innerWidth <= 400 && !document.getElementById('settings').open";
    b.wait_for("the narrow layout", WAIT, || b.exec(narrow_layout, json!([])).as_bool().filter(|&v| v));
    let fits = b.exec(
        "const d = document.documentElement; const r = document.getElementById('send').getBoundingClientRect();
         const m = document.getElementById('messages').getBoundingClientRect();
         return [d.scrollWidth <= d.clientWidth, r.right <= d.clientWidth, r.width > 0, m.height > 150]",
        json!([]),
    );
    assert_eq!(fits, json!([true, true, true, true]), "the page does not fit a narrow window");
    let narrow = b.screenshot();
    assert!(webdriver::png_size(&narrow).is_ok_and(|(w, _)| w < 500));
    std::fs::write(artifacts().join("chat_page_narrow.png"), &narrow).unwrap();

    // Dark when the system is: the background turns dark and the text light.
    let luminance = "const rgb = c => c.match(/\\d+/g).slice(0, 3).map(Number).reduce((a, b) => a + b, 0) / 3;
        const s = getComputedStyle(document.body); return [rgb(s.backgroundColor), rgb(s.color)]";
    let light = b.exec(luminance, json!([]));
    b.color_scheme("dark");
    let dark = b.wait_for("the dark scheme", WAIT, || Some(b.exec(luminance, json!([]))).filter(|v| v != &light));
    let (bg, fg) = (dark[0].as_f64().unwrap(), dark[1].as_f64().unwrap());
    assert!(light[0].as_f64().unwrap() > 200.0 && bg < 60.0 && fg > 200.0, "light {light}, dark {dark}");
    std::fs::write(artifacts().join("chat_page_dark.png"), b.screenshot()).unwrap();

    // "New chat" during a reply ends it, and nothing of it comes back into the new chat.
    b.type_into(&b.find("#prompt"), &format!("Write a long story about a dragon who learns to fly.{ENTER}"));
    b.wait_for("another long reply", WAIT, || (last_reply(&b)["state"] == "streaming").then_some(()));
    b.click(&b.find("#new-chat"));
    b.wait_for("the send button back", WAIT, || b.exec("return !document.getElementById('send').disabled", json!([])).as_bool().filter(|&v| v));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.exec("return document.getElementById('messages').children.length", json!([])), 0);
    // The next message goes alone: the prompt the server counts is that of a fresh chat.
    // (Settings are folded in the narrow window: open them as a user would.)
    b.click(&b.find("#settings summary"));
    b.clear(&max_tokens);
    b.type_into(&max_tokens, "4");
    let (fresh, _) = send_and_watch(&b, "Hi.");
    assert_eq!(fresh["state"], "done", "{fresh}");
    let alone = json!({"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi."}]}).to_string();
    let r = s.request("POST", "/v1/chat/completions", &[("Authorization", &format!("Bearer {KEY}")), ("Content-Type", "application/json")], alone.as_bytes());
    assert_eq!(figure(&fresh, "promptTokens"), r.json()["usage"]["prompt_tokens"].as_u64().unwrap(), "{fresh}");
}
