//! The conversations of past Responses API answers, kept in memory so that a request
//! can continue one with `previous_response_id`. Bounded in count and in bytes (the
//! oldest go first) and each kept for a limited time; a server restart forgets them all.

use lamina_api::ChatMessage;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_entries: usize,
    /// Of the conversations' text, roughly (their JSON size).
    pub max_bytes: usize,
    /// How long a response can be continued.
    pub ttl: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { max_entries: 10_000, max_bytes: 256 << 20, ttl: Duration::from_secs(3600) }
    }
}

struct Entry {
    conversation: Arc<Vec<ChatMessage>>,
    bytes: usize,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Ids oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

pub struct ResponseStore {
    limits: StoreLimits,
    inner: Mutex<Inner>,
}

impl ResponseStore {
    pub fn new(limits: StoreLimits) -> Self {
        ResponseStore { limits, inner: Mutex::new(Inner::default()) }
    }

    /// Keeps `conversation` (every message up to and including the answer) under `id`.
    /// One larger than the whole byte budget is not kept.
    pub fn put(&self, id: String, conversation: Vec<ChatMessage>) {
        let bytes = serde_json::to_string(&conversation).map_or(0, |s| s.len()) + id.len();
        if bytes > self.limits.max_bytes || self.limits.max_entries == 0 {
            return;
        }
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = s.entries.remove(&id) {
            s.bytes -= old.bytes;
            s.order.retain(|x| *x != id);
        }
        s.expire(self.limits.ttl);
        while s.entries.len() >= self.limits.max_entries || s.bytes + bytes > self.limits.max_bytes {
            if !s.pop_oldest() {
                break;
            }
        }
        s.bytes += bytes;
        s.order.push_back(id.clone());
        s.entries.insert(id, Entry { conversation: Arc::new(conversation), bytes, at: Instant::now() });
    }

    /// The conversation kept under `id`, unless it is unknown or expired.
    pub fn get(&self, id: &str) -> Option<Arc<Vec<ChatMessage>>> {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.expire(self.limits.ttl);
        s.entries.get(id).map(|e| e.conversation.clone())
    }
}

impl Inner {
    /// Drops the oldest entry; `false` when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some(id) = self.order.pop_front() else { return false };
        if let Some(e) = self.entries.remove(&id) {
            self.bytes -= e.bytes;
        }
        true
    }

    fn expire(&mut self, ttl: Duration) {
        while let Some(e) = self.order.front().and_then(|id| self.entries.get(id)) {
            if e.at.elapsed() < ttl {
                break;
            }
            self.pop_oldest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_api::Role;

    fn convo(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage::new(Role::User, text)]
    }

    #[test]
    fn the_oldest_go_first_past_the_count() {
        let store = ResponseStore::new(StoreLimits { max_entries: 2, ..StoreLimits::default() });
        store.put("a".into(), convo("one"));
        store.put("b".into(), convo("two"));
        store.put("c".into(), convo("three"));
        assert!(store.get("a").is_none());
        assert_eq!(lamina_api::text_of(&store.get("b").unwrap()[0]), "two");
        assert!(store.get("c").is_some());
    }

    #[test]
    fn the_byte_budget_holds_and_an_oversized_conversation_is_not_kept() {
        let one = serde_json::to_string(&convo(&"x".repeat(100))).unwrap().len() + 1;
        let store = ResponseStore::new(StoreLimits { max_bytes: 2 * one, ..StoreLimits::default() });
        for id in ["a", "b", "c"] {
            store.put(id.into(), convo(&"x".repeat(100)));
        }
        assert!(store.get("a").is_none() && store.get("b").is_some() && store.get("c").is_some());
        store.put("big".into(), convo(&"x".repeat(1000)));
        assert!(store.get("big").is_none());
        assert!(store.get("c").is_some(), "an oversized entry evicts nothing");
    }

    #[test]
    fn entries_expire() {
        let store = ResponseStore::new(StoreLimits { ttl: Duration::from_millis(30), ..StoreLimits::default() });
        store.put("a".into(), convo("one"));
        assert!(store.get("a").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(store.get("a").is_none());
    }
}
