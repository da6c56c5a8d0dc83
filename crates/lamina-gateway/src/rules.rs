//! Routing by task: rules that send a request to a route by what it asks for — its tags or
//! headers, the prompt's size, JSON mode, tools, or a regular expression on the last
//! message. Rules are tried in the order written and the first whose conditions all hold
//! picks the route. A rule's `model` list names the requested models it applies to: routes
//! (to redirect some of their requests) or names of their own, such as `auto`, that exist
//! only through rules.

use regex::Regex;

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    /// Requested model names the rule applies to (empty: any).
    pub models: Vec<String>,
    /// Any of these tags (the key's or the `x-lamina-tags` header's).
    pub tags: Vec<String>,
    /// Each header (lower-case name) has this value.
    pub headers: Vec<(String, String)>,
    pub min_prompt_tokens: Option<u64>,
    pub max_prompt_tokens: Option<u64>,
    pub json_mode: Option<bool>,
    pub tools: Option<bool>,
    pub last_message: Option<Regex>,
    /// The route chosen (when there is a classifier: when it cannot tell).
    pub route: usize,
    /// A model that chooses among routes.
    pub classify: Option<crate::classify::Classifier>,
}

/// What the rules look at in a request.
pub struct Facts<'a> {
    pub model: &'a str,
    pub tags: &'a [String],
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub prompt_tokens: u64,
    pub json_mode: bool,
    pub tools: bool,
    pub last_message: &'a str,
}

impl Rule {
    pub fn matches(&self, f: &Facts) -> bool {
        (self.models.is_empty() || self.models.iter().any(|m| m == f.model))
            && (self.tags.is_empty() || self.tags.iter().any(|t| f.tags.contains(t)))
            && self.headers.iter().all(|(k, v)| (f.header)(k).as_deref() == Some(v.as_str()))
            && self.min_prompt_tokens.is_none_or(|n| f.prompt_tokens >= n)
            && self.max_prompt_tokens.is_none_or(|n| f.prompt_tokens <= n)
            && self.json_mode.is_none_or(|j| j == f.json_mode)
            && self.tools.is_none_or(|t| t == f.tools)
            && self.last_message.as_ref().is_none_or(|r| r.is_match(f.last_message))
    }
}

/// The first rule that matches.
pub fn choose<'r>(rules: &'r [Rule], facts: &Facts) -> Option<&'r Rule> {
    rules.iter().find(|r| r.matches(facts))
}

/// The text of a request's last message (chat) or its prompt (completions), for
/// `last_message` rules.
pub fn last_message(body: &serde_json::Map<String, serde_json::Value>) -> String {
    fn text(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str().or(p.as_str())).collect::<Vec<_>>().join("\n"),
            _ => String::new(),
        }
    }
    if let Some(m) = body.get("messages").and_then(|m| m.as_array()).and_then(|m| m.last()) {
        return text(&m["content"]);
    }
    body.get("prompt").or(body.get("input")).map(text).unwrap_or_default()
}

/// Whether the request asks for JSON output (`response_format` json_object or json_schema).
pub fn json_mode(body: &serde_json::Map<String, serde_json::Value>) -> bool {
    body.get("response_format").and_then(|f| f["type"].as_str()).is_some_and(|t| t == "json_object" || t == "json_schema")
}

/// Whether the request offers tools.
pub fn has_tools(body: &serde_json::Map<String, serde_json::Value>) -> bool {
    body.get("tools").and_then(|t| t.as_array()).is_some_and(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(route: usize) -> Rule {
        Rule {
            name: "r".into(),
            models: vec!["auto".into()],
            tags: vec![],
            headers: vec![],
            min_prompt_tokens: None,
            max_prompt_tokens: None,
            json_mode: None,
            tools: None,
            last_message: None,
            route,
            classify: None,
        }
    }

    #[test]
    fn the_first_rule_whose_conditions_all_hold_wins() {
        let rules = vec![
            Rule { last_message: Some(Regex::new("(?i)translate").unwrap()), ..rule(1) },
            Rule { min_prompt_tokens: Some(100), json_mode: Some(true), ..rule(2) },
            Rule { headers: vec![("x-task".into(), "code".into())], ..rule(3) },
            rule(0),
        ];
        let no_header = |_: &str| None;
        let code = |k: &str| (k == "x-task").then(|| "code".to_string());
        fn facts<'a>(msg: &'a str, tokens: u64, json: bool, header: &'a dyn Fn(&str) -> Option<String>) -> Facts<'a> {
            Facts { model: "auto", tags: &[], header, prompt_tokens: tokens, json_mode: json, tools: false, last_message: msg }
        }
        assert_eq!(choose(&rules, &facts("Please TRANSLATE this", 5, false, &no_header)).unwrap().route, 1);
        assert_eq!(choose(&rules, &facts("hi", 500, true, &no_header)).unwrap().route, 2);
        assert_eq!(choose(&rules, &facts("hi", 50, true, &no_header)).unwrap().route, 0, "both conditions must hold");
        assert_eq!(choose(&rules, &facts("hi", 5, false, &code)).unwrap().route, 3);
        let other = Facts { model: "chat", ..facts("translate", 5, false, &no_header) };
        assert!(choose(&rules, &other).is_none(), "rules for `auto` leave `chat` alone");
    }

    #[test]
    fn request_facts_are_read_from_the_body() {
        let body = serde_json::json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}]}],
            "response_format": {"type": "json_schema"}, "tools": [{"type": "function"}]});
        let b = body.as_object().unwrap();
        assert_eq!(last_message(b), "b\nc");
        assert!(json_mode(b) && has_tools(b));
        let plain = serde_json::json!({"prompt": "once upon", "tools": []});
        assert_eq!(last_message(plain.as_object().unwrap()), "once upon");
        assert!(!has_tools(plain.as_object().unwrap()) && !json_mode(plain.as_object().unwrap()));
    }
}
