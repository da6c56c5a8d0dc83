//! The classifier: a rule that lets a model choose the route. When the rule's conditions
//! hold, the request's last message goes to the classifier's route (a small local model,
//! `lamina serve` with SmolLM2 for one) with the labels as a JSON-schema enum, so a
//! backend with structured output (`lamina serve`, llama-server) can only answer one of
//! them. The label picks its route; an answer that is no label, a backend that fails or an
//! empty message leaves the rule's own `route`. The log line's `classifier` says which.

use crate::internal;
use crate::proxy::{ms, Endpoint};
use crate::Gateway;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Classifier {
    /// The route that classifies.
    pub route: usize,
    /// Label → the route it picks, in the order written.
    pub labels: Vec<(String, usize)>,
    /// The system prompt; a default that lists the labels when `None`.
    pub instructions: Option<String>,
}

/// What the classifier answered, for the log line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Classified {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Classifier {
    fn names(&self) -> Vec<&str> {
        self.labels.iter().map(|(l, _)| l.as_str()).collect()
    }

    /// The chat request sent to the classifier's route for `text`.
    pub fn request(&self, text: &str) -> Map<String, Value> {
        let names = self.names();
        let system = self.instructions.clone().unwrap_or_else(|| {
            format!(
                "You route requests. Choose the one label that fits the user's message best: {}. Answer with JSON: {{\"label\": \"...\"}}.",
                names.join(", ")
            )
        });
        let schema = json!({
            "type": "object",
            "properties": {"label": {"type": "string", "enum": names}},
            "required": ["label"],
            "additionalProperties": false
        });
        let body = json!({
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
            "temperature": 0,
            "max_tokens": 32,
            "response_format": {"type": "json_schema", "json_schema": {"name": "route", "strict": true, "schema": schema}}
        });
        body.as_object().cloned().unwrap_or_default()
    }

    /// The label and its route in a classifier's reply.
    pub fn read(&self, reply: &Value) -> Result<(String, usize), String> {
        let content = reply["choices"][0]["message"]["content"].as_str().ok_or("the reply has no message content")?;
        let label = serde_json::from_str::<Value>(content).ok().and_then(|v| v["label"].as_str().map(str::to_string));
        let shown: String = content.chars().take(120).collect();
        let label = label.ok_or_else(|| format!("the answer `{shown}` is not {{\"label\": ...}}"))?;
        match self.labels.iter().find(|(l, _)| *l == label) {
            Some((_, route)) => Ok((label, *route)),
            None => Err(format!("the label `{label}` is none of {}", self.names().join(", "))),
        }
    }

    /// Classifies `text`: the route its label picks, or `None` (with the reason logged).
    pub async fn classify(&self, gw: &Gateway, text: &str) -> (Option<usize>, Classified) {
        let t0 = Instant::now();
        if text.trim().is_empty() {
            return (None, Classified { error: Some("the request has no text to classify".into()), ..Classified::default() });
        }
        match internal::call(gw, self.route, Endpoint::Chat, &self.request(text), |v| self.read(v)).await {
            Ok(((label, route), backend)) => (Some(route), Classified { label: Some(label), backend: Some(backend), ms: ms(t0.elapsed()), error: None }),
            Err(e) => (None, Classified { ms: ms(t0.elapsed()), error: Some(e), ..Classified::default() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier() -> Classifier {
        Classifier { route: 0, labels: vec![("code".into(), 1), ("chat".into(), 2)], instructions: None }
    }

    #[test]
    fn the_request_constrains_the_answer_to_the_labels() {
        let r = classifier().request("Write a Rust function.");
        assert_eq!(r["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"], json!(["code", "chat"]));
        assert_eq!(r["messages"][1]["content"], "Write a Rust function.");
        assert!(r["messages"][0]["content"].as_str().unwrap().contains("code, chat"));
        assert_eq!(r["temperature"], 0);
    }

    #[test]
    fn only_a_known_label_picks_a_route() {
        let c = classifier();
        let reply = |content: &str| json!({"choices": [{"message": {"content": content}}]});
        assert_eq!(c.read(&reply(r#"{"label": "chat"}"#)).unwrap(), ("chat".to_string(), 2));
        assert!(c.read(&reply(r#"{"label": "poetry"}"#)).unwrap_err().contains("none of code, chat"));
        assert!(c.read(&reply("code")).unwrap_err().contains("is not {\"label\""));
        assert!(c.read(&json!({"choices": []})).is_err());
    }
}
