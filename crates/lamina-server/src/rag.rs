//! Retrieval-augmented chat: the `rag` extension of a chat request. The user's last
//! message is the query; the hits retrieved from the collection become the numbered
//! sources of a grounded prompt (`lamina_rag::answer`, within the chat model's context
//! window); the conversation goes to the model with that system instruction and that
//! user turn in place of the last one. Afterwards [`Grounding::report`] says which
//! sources the answer cited. [`crate::chat_core`] calls this once for every chat-shaped
//! front-end.

use crate::collections::embedder::ServedEmbedder;
use crate::collections::{blocking, wire};
use crate::models::Loaded;
use crate::AppState;
use lamina_api::collections::{Citation, RagOptions, RagReport};
use lamina_api::{text_of, ApiError, ChatCompletionRequest, ChatMessage, MessageContent, Role};
use lamina_rag::answer::{self, Budget, RagPrompt};
use lamina_rag::{Hit, SearchRequest};

/// Tokens kept free for the answer when the request sets no `max_tokens`.
pub const DEFAULT_ANSWER_TOKENS: usize = 512;

/// A grounded request: the prompt built from what was retrieved.
#[derive(Debug, Clone)]
pub struct Grounding {
    pub collection: String,
    pub prompt: RagPrompt,
    pub hits: Vec<Hit>,
}

/// The user's last message: the query.
fn question(req: &ChatCompletionRequest) -> Result<String, ApiError> {
    let text = req.messages.iter().rev().find(|m| m.role == Role::User).map(text_of).unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::invalid_param("messages", "`rag` needs a user message with text: the last one is the query"));
    }
    Ok(text)
}

/// Retrieves for `req` (whose `rag` is `opts`) and builds the grounded prompt for `model`.
/// `key` is the API key the request presented (the collection may need one of its own).
pub async fn ground(state: &AppState, req: &ChatCompletionRequest, opts: &RagOptions, model: &Loaded, key: Option<&str>) -> Result<Grounding, ApiError> {
    let k = opts.validate()? as usize;
    let query = question(req)?;
    let mode = wire::mode(opts.mode.as_deref(), "rag.mode")?;
    let filter = wire::filter(opts.filter.as_ref(), "rag.filter")?;
    state.collections.keys().check(&opts.collection, key)?;
    let collection = state.collections.get(&opts.collection).await.map_err(|e| match e.param.as_deref() {
        Some("name") => e.with_param("rag.collection"),
        _ => e,
    })?;
    let embedder = ServedEmbedder::for_collection(state, collection.spec()).await?;
    let search = SearchRequest { filter, ..SearchRequest::new(&query, k, mode) };
    let hits = blocking(move || collection.read(|store| lamina_rag::search(store, &embedder, &search))).await?;
    let reserve = req.max_tokens().map_or(DEFAULT_ANSWER_TOKENS, |m| m as usize).min(model.context_length / 2);
    let budget = Budget { context_window: model.context_length, reserved_for_answer: reserve };
    let threshold = opts.threshold.unwrap_or(answer::DEFAULT_THRESHOLD);
    let (tokenizer, hits_for_prompt) = (model.tokenizer.clone(), hits.clone());
    let prompt = blocking(move || {
        answer::build_prompt(&query, &hits_for_prompt, &*tokenizer, budget, threshold).map_err(|e| ApiError::invalid_param("messages", e.to_string()))
    })
    .await?;
    if prompt.citations.is_empty() && !prompt.nothing_relevant {
        let why: Vec<String> = prompt.dropped.iter().map(|d| format!("{}: {}", d.source, d.reason)).collect();
        return Err(ApiError::invalid_param(
            "messages",
            format!(
                "no retrieved source fits the chat model's context window beside the conversation ({}); lower `max_tokens` or shorten the messages",
                why.join("; ")
            ),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(Grounding { collection: opts.collection.clone(), prompt, hits })
}

impl Grounding {
    /// The request the model answers: the grounding instruction first (before the
    /// request's own system message, in the same turn), the last user turn replaced by
    /// the sources and the question; earlier turns kept.
    pub fn apply(&self, req: &ChatCompletionRequest) -> ChatCompletionRequest {
        let mut out = req.clone();
        out.rag = None;
        if let Some(last) = out.messages.iter().rposition(|m| m.role == Role::User) {
            out.messages[last] = ChatMessage::new(Role::User, self.prompt.user.clone());
        }
        match out.messages.first_mut() {
            Some(first) if matches!(first.role, Role::System | Role::Developer) => {
                let own = text_of(first);
                first.content = Some(MessageContent::Text(format!("{}\n\n{own}", self.prompt.system)));
            }
            _ => out.messages.insert(0, ChatMessage::new(Role::System, self.prompt.system.clone())),
        }
        out
    }

    /// What the answer says when nothing retrieved was relevant (the model is not called).
    pub fn nothing_relevant_answer(&self) -> Option<String> {
        self.prompt.nothing_relevant.then(|| answer::nothing_relevant_answer(&self.collection))
    }

    /// The sources `answers` (one text per choice) cite, each once by number, and what
    /// retrieval did.
    pub fn report<S: AsRef<str>>(&self, answers: &[S]) -> (Vec<Citation>, RagReport) {
        let sources: Vec<Citation> = self.prompt.citations.iter().map(|c| wire::citation(c, &self.hits)).collect();
        let mut cited: Vec<usize> = answers.iter().flat_map(|a| answer::cited(a.as_ref(), &self.prompt.citations)).collect();
        cited.sort_unstable();
        cited.dedup();
        let citations = sources.iter().filter(|c| cited.contains(&c.n)).cloned().collect();
        let report = RagReport {
            collection: self.collection.clone(),
            sources,
            dropped: self.prompt.dropped.iter().map(wire::dropped).collect(),
            nothing_relevant: self.prompt.nothing_relevant,
        };
        (citations, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_rag::{ChunkId, ChunkRecord};

    use lamina_rag::embed::WordCounter as Words;

    fn hit(id: u64, source: &str, text: &str, similarity: f32) -> Hit {
        let chunk = ChunkRecord {
            id: ChunkId(id),
            source: source.into(),
            text: text.into(),
            byte_range: 0..text.len() as u64,
            heading: None,
            metadata: Default::default(),
        };
        Hit { chunk, score: similarity, similarity: Some(similarity), vector_rank: Some(id as usize), keyword_rank: None, rerank_score: None }
    }

    fn grounding() -> Grounding {
        let hits =
            vec![hit(7, "zorblat", "The zorblat fruit is purple.", 0.8), hit(8, "bread", "Bake bread at 230 degrees.", 0.6), hit(9, "moon", "Far away.", 0.1)];
        let budget = Budget { context_window: 1000, reserved_for_answer: 100 };
        let prompt = answer::build_prompt("What colour is a zorblat?", &hits, &Words, budget, 0.3).unwrap();
        Grounding { collection: "kb".into(), prompt, hits }
    }

    #[test]
    fn the_report_gives_the_cited_sources_with_their_text() {
        let g = grounding();
        let (citations, report) = g.report(&["It is purple [1].", "Purple [1][2], see also [7]."]);
        assert_eq!(citations.iter().map(|c| (c.n, c.source.as_str())).collect::<Vec<_>>(), [(1, "zorblat"), (2, "bread")]);
        assert_eq!(citations[0].text, "The zorblat fruit is purple.");
        assert_eq!(citations[0].chunk_id, 7);
        assert_eq!(report.sources.len(), 2);
        assert_eq!(report.dropped.len(), 1);
        assert_eq!(report.dropped[0].source, "moon");
        assert!(report.dropped[0].reason.contains("below the threshold"), "{}", report.dropped[0].reason);
        let (citations, _) = g.report(&["No markers here."]);
        assert!(citations.is_empty());
    }

    #[test]
    fn the_grounded_request_keeps_the_conversation_and_its_system_text() {
        let g = grounding();
        let req: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "What colour is a zorblat?"}
            ],
            "rag": {"collection": "kb"}
        }))
        .unwrap();
        let out = g.apply(&req);
        assert!(out.rag.is_none());
        assert_eq!(out.messages.len(), 4);
        let system = text_of(&out.messages[0]);
        assert!(system.starts_with(answer::SYSTEM_PROMPT) && system.ends_with("Be brief."), "{system}");
        assert_eq!(text_of(&out.messages[1]), "Hi");
        let user = text_of(&out.messages[3]);
        assert!(user.contains("[1] (zorblat)") && user.contains("What colour is a zorblat?"), "{user}");
        // Without a system message one is added first.
        let mut plain = req.clone();
        plain.messages.remove(0);
        let out = g.apply(&plain);
        assert_eq!((out.messages[0].role, out.messages.len()), (Role::System, 4));
        assert_eq!(question(&req).unwrap(), "What colour is a zorblat?");
    }
}
