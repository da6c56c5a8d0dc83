//! Tool calls found in a reply as it is generated: `<tool_call>{"name": …, "arguments":
//! …}</tool_call>` blocks (the format of our fallback prompt, and of Hermes- and
//! Qwen-style templates) become calls; the text around them stays content. Markup is
//! never passed on as content while it may still turn out to be a call: text that could
//! be the start of `<tool_call>` is held back, and a block is held whole until it closes.
//! A block that does not parse, names an unknown tool or has arguments that do not match
//! the tool's schema is given back as content, as the model wrote it.

use serde_json::Value;

pub const OPEN: &str = "<tool_call>";
pub const CLOSE: &str = "</tool_call>";

/// One call, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    /// The arguments as compact JSON.
    pub arguments: String,
}

impl ParsedCall {
    /// The arguments in the pieces a stream sends them in: cut after each `,` and `:`
    /// outside strings (they concatenate to [`arguments`](Self::arguments)).
    pub fn fragments(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (mut cur, mut in_str, mut esc) = (String::new(), false, false);
        for c in self.arguments.chars() {
            cur.push(c);
            if in_str {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
            } else if c == '"' {
                in_str = true;
            } else if c == ',' || c == ':' {
                out.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// What a piece of the reply gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Content(String),
    Call(ParsedCall),
}

/// Checks a call: the tool exists and the arguments match its schema.
pub type Check<'a> = &'a dyn Fn(&str, &Value) -> bool;

/// One choice's reply, fed as it is generated.
#[derive(Default)]
pub struct CallParser {
    /// Text not yet passed on: a possible start of `<tool_call>`, or an open block.
    pending: String,
    in_block: bool,
    calls: usize,
}

impl CallParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls found so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds generated text; returns what can be passed on now.
    pub fn push(&mut self, text: &str, check: Check) -> Vec<Output> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.in_block {
                let Some(end) = self.pending.find(CLOSE) else { break };
                let block: String = self.pending.drain(..end + CLOSE.len()).collect();
                self.in_block = false;
                match parse_call(&block[OPEN.len()..block.len() - CLOSE.len()], check) {
                    Some(call) => {
                        self.calls += 1;
                        out.push(Output::Call(call));
                    }
                    None => out.push(Output::Content(block)),
                }
            } else if let Some(start) = self.pending.find(OPEN) {
                let before: String = self.pending.drain(..start).collect();
                self.content(before, &mut out);
                self.in_block = true;
            } else {
                // Everything but a tail that may begin `<tool_call>` can go.
                let keep = (1..OPEN.len().min(self.pending.len() + 1))
                    .rev()
                    .find(|&k| self.pending.is_char_boundary(self.pending.len() - k) && OPEN.starts_with(&self.pending[self.pending.len() - k..]))
                    .unwrap_or(0);
                let ready: String = self.pending.drain(..self.pending.len() - keep).collect();
                self.content(ready, &mut out);
                break;
            }
        }
        out
    }

    /// The reply ended: whatever is held back is content (an unclosed block included).
    pub fn finish(&mut self) -> Vec<Output> {
        let rest = std::mem::take(&mut self.pending);
        self.in_block = false;
        let mut out = Vec::new();
        self.content(rest, &mut out);
        out
    }

    /// Content, except the whitespace between and after calls.
    fn content(&self, text: String, out: &mut Vec<Output>) {
        if text.is_empty() || (self.calls > 0 && text.trim().is_empty()) {
            return;
        }
        out.push(Output::Content(text));
    }
}

/// The call in a block's inside, if it is one: a JSON object with a `name` string and
/// `arguments` (an object, or a string holding one; `parameters` is taken for it too).
fn parse_call(inside: &str, check: Check) -> Option<ParsedCall> {
    let v: Value = serde_json::from_str(inside.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let args = match v.get("arguments").or_else(|| v.get("parameters")) {
        None => Value::Object(Default::default()),
        Some(Value::String(s)) => serde_json::from_str(s).ok()?,
        Some(a) => a.clone(),
    };
    if !args.is_object() || !check(&name, &args) {
        return None;
    }
    Some(ParsedCall { name, arguments: args.to_string() })
}

/// A whole reply split into its content and its calls.
pub fn parse_reply(text: &str, check: Check) -> (String, Vec<ParsedCall>) {
    let mut p = CallParser::new();
    let mut outs = p.push(text, check);
    outs.extend(p.finish());
    let (mut content, mut calls) = (String::new(), Vec::new());
    for o in outs {
        match o {
            Output::Content(c) => content.push_str(&c),
            Output::Call(c) => calls.push(c),
        }
    }
    (content, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(name: &str, _: &Value) -> bool {
        name == "get_weather" || name == "get_time"
    }

    /// Feeds `text` in pieces of `step` bytes (at char boundaries).
    fn stream(text: &str, step: usize) -> Vec<Output> {
        let mut p = CallParser::new();
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let mut j = (i + step).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            out.extend(p.push(&text[i..j], &any));
            i = j;
        }
        out.extend(p.finish());
        // Adjacent content pieces joined, for comparison.
        let mut joined: Vec<Output> = Vec::new();
        for o in out {
            match (joined.last_mut(), o) {
                (Some(Output::Content(a)), Output::Content(b)) => a.push_str(&b),
                (_, o) => joined.push(o),
            }
        }
        joined
    }

    #[test]
    fn calls_are_found_whatever_the_pieces() {
        let text = "Let me check. <tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": \"{\\\"tz\\\": \\\"CET\\\"}\"}\n</tool_call>";
        let want = vec![
            Output::Content("Let me check. ".into()),
            Output::Call(ParsedCall { name: "get_weather".into(), arguments: "{\"city\":\"Paris\"}".into() }),
            Output::Call(ParsedCall { name: "get_time".into(), arguments: "{\"tz\":\"CET\"}".into() }),
        ];
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(stream(text, step), want, "pieces of {step}");
        }
    }

    #[test]
    fn markup_is_never_content_until_it_fails() {
        let mut p = CallParser::new();
        assert_eq!(p.push("a <tool", &any), vec![Output::Content("a ".into())]);
        assert_eq!(p.push("_call>{\"name\": \"get_", &any), vec![]);
        assert_eq!(p.push("weather\"}</tool_call>", &any), vec![Output::Call(ParsedCall { name: "get_weather".into(), arguments: "{}".into() })]);
        // A `<` that turns out not to start a call is released.
        assert_eq!(p.push(" x <t", &any), vec![Output::Content(" x ".into())]);
        assert_eq!(p.push("ab> é", &any), vec![Output::Content("<tab> é".into())]);
    }

    #[test]
    fn blocks_that_are_not_calls_stay_content() {
        for bad in [
            "<tool_call>{\"name\": \"delete_all\", \"arguments\": {}}</tool_call>",
            "<tool_call>not json</tool_call>",
            "<tool_call>{\"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"get_time\", \"arguments\": [1]}</tool_call>",
        ] {
            let (content, calls) = parse_reply(bad, &any);
            assert_eq!((content.as_str(), calls.len()), (bad, 0));
        }
        let (content, calls) = parse_reply("<tool_call>{\"name\": \"get_time\"", &any);
        assert_eq!((content.as_str(), calls.len()), ("<tool_call>{\"name\": \"get_time\"", 0), "an unclosed block");
    }

    #[test]
    fn argument_fragments_concatenate_to_the_arguments() {
        let c = ParsedCall { name: "f".into(), arguments: "{\"a\":\"x, y: z\",\"b\":[1,2]}".into() };
        let f = c.fragments();
        assert_eq!(f, vec!["{\"a\":", "\"x, y: z\",", "\"b\":", "[1,", "2]}"]);
        assert_eq!(f.concat(), c.arguments);
    }
}
