//! Pieces shared by the chat and legacy completions endpoints: the `stop` parameter
//! (a string or an array of strings), `seed`, `stream_options`, the finish reason, and the
//! constant `object` tags such as `"chat.completion"`.
//!
//! Follows the OpenAI API reference, "Chat" → "Create chat completion" (request body:
//! `stop`, `seed`, `stream_options`; response: `finish_reason`) and "Completions".

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Up to four sequences where generation stops: OpenAI accepts one string or an array.
/// Kept as sent so that a gateway forwards it unchanged; use the requests' `stop_list()`
/// for the flattened list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences as a list (one element for the single-string form).
    pub fn to_list(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StopVisitor;
        impl<'de> Visitor<'de> for StopVisitor {
            type Value = Stop;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stop, E> {
                Ok(Stop::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Stop, E> {
                Ok(Stop::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stop, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Stop::Many(out))
            }
        }
        deserializer.deserialize_any(StopVisitor)
    }
}

/// The `seed` parameter. OpenAI documents it as an integer; clients send both negative
/// 64-bit values and values above `i64::MAX`, so any integer in `i64::MIN..=u64::MAX`
/// is accepted and serialised back exactly as received. Non-integers are an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seed(i128);

impl Seed {
    /// The seed as sent.
    pub fn get(self) -> i128 {
        self.0
    }

    /// The seed as 64 bits for a random number generator: non-negative values as they
    /// are, negative values as their two's-complement bit pattern (`-1` → `u64::MAX`).
    pub fn as_u64(self) -> u64 {
        self.0 as u64
    }
}

impl From<u64> for Seed {
    fn from(v: u64) -> Self {
        Seed(v.into())
    }
}

impl From<i64> for Seed {
    fn from(v: i64) -> Self {
        Seed(v.into())
    }
}

impl Serialize for Seed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match u64::try_from(self.0) {
            Ok(u) => serializer.serialize_u64(u),
            // The invariant keeps negative values within i64.
            Err(_) => serializer.serialize_i64(self.0 as i64),
        }
    }
}

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeedVisitor;
        impl Visitor<'_> for SeedVisitor {
            type Value = Seed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer between -2^63 and 2^64-1")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seed, E> {
                Ok(Seed::from(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seed, E> {
                Ok(Seed::from(v))
            }
        }
        deserializer.deserialize_any(SeedVisitor)
    }
}

/// `stream_options`: only meaningful when `stream` is true.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send one more chunk before `[DONE]` carrying the whole request's usage and an
    /// empty `choices`; every other chunk then has `"usage": null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// Why a choice stopped generating. Serialised in snake_case as OpenAI does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural stop point or a stop sequence.
    Stop,
    /// The token limit (`max_tokens` or the context length) was reached.
    Length,
    /// The model called a tool.
    ToolCalls,
    /// Content was omitted by a filter.
    ContentFilter,
}

impl FinishReason {
    /// The wire name, e.g. `"tool_calls"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Defines a zero-sized type that serialises as one constant string (an `object` field
/// such as `"chat.completion"`) and accepts only that string when deserialising.
macro_rules! object_tag {
    ($(#[$doc:meta])* $name:ident = $value:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl $name {
            /// The constant wire value.
            pub const VALUE: &'static str = $value;
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($value)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                if s == $value {
                    Ok($name)
                } else {
                    Err(<D::Error as ::serde::de::Error>::invalid_value(
                        ::serde::de::Unexpected::Str(&s),
                        &concat!("\"", $value, "\""),
                    ))
                }
            }
        }
    };
}

object_tag!(
    /// `"object": "chat.completion"`.
    ChatCompletionObject = "chat.completion"
);
object_tag!(
    /// `"object": "chat.completion.chunk"`.
    ChatCompletionChunkObject = "chat.completion.chunk"
);
object_tag!(
    /// `"object": "text_completion"` (legacy completions and their stream chunks).
    TextCompletionObject = "text_completion"
);
object_tag!(
    /// `"object": "list"`.
    ListObject = "list"
);
object_tag!(
    /// `"object": "model"`.
    ModelObjectTag = "model"
);
object_tag!(
    /// `"object": "response"` (the Responses API).
    ResponseObjectTag = "response"
);
object_tag!(
    /// `"type": "message"` (Anthropic's Messages API).
    MessageTag = "message"
);
object_tag!(
    /// `"type": "error"` (Anthropic's error body).
    ErrorTag = "error"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_accepts_the_whole_signed_and_unsigned_range() {
        for (text, bits) in [("0", 0u64), ("-1", u64::MAX), ("-9223372036854775808", 1 << 63), ("18446744073709551615", u64::MAX)] {
            let seed: Seed = serde_json::from_str(text).unwrap();
            assert_eq!(seed.as_u64(), bits, "{text}");
            assert_eq!(serde_json::to_string(&seed).unwrap(), text);
        }
        for bad in ["1.5", "\"7\"", "18446744073709551616", "-9223372036854775809"] {
            assert!(serde_json::from_str::<Seed>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stop_keeps_its_form() {
        let one: Stop = serde_json::from_str(r#""\n""#).unwrap();
        assert_eq!(one, Stop::One("\n".into()));
        assert_eq!(serde_json::to_string(&one).unwrap(), r#""\n""#);
        let many: Stop = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert_eq!(many.to_list(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(serde_json::to_string(&many).unwrap(), r#"["a","b"]"#);
    }

    #[test]
    fn object_tags_accept_only_their_value() {
        assert_eq!(serde_json::to_string(&ChatCompletionObject).unwrap(), r#""chat.completion""#);
        assert!(serde_json::from_str::<ChatCompletionObject>(r#""chat.completion""#).is_ok());
        assert!(serde_json::from_str::<ChatCompletionObject>(r#""text_completion""#).is_err());
    }
}

/// The sampling fields both completion endpoints share, borrowed from a request
/// ([`crate::ChatCompletionRequest::sampling`], [`crate::CompletionRequest::sampling`]):
/// validated once, and read by the server once.
#[derive(Clone, Copy, Debug)]
pub struct SamplingFields<'a> {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub stop: Option<&'a Stop>,
    pub logit_bias: Option<&'a std::collections::BTreeMap<String, f32>>,
    pub seed: Option<Seed>,
    pub stream: Option<bool>,
    /// Whether `stream_options` was given.
    pub stream_options: bool,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub ignore_eos: Option<bool>,
}

impl SamplingFields<'_> {
    /// The stop strings as a list (empty when none).
    pub fn stop_list(&self) -> Vec<String> {
        self.stop.map(Stop::to_list).unwrap_or_default()
    }

    /// `logit_bias` with parsed token ids, sorted by id. Errors as `validate` does on a
    /// key that is not a `u32` or a value outside [-100, 100]. Whether an id is inside
    /// the model's vocabulary is for the server to check.
    pub fn logit_bias_map(&self) -> Result<Vec<(u32, f32)>, crate::ApiError> {
        crate::validate::parse_logit_bias(self.logit_bias)
    }

    /// `top_k` as a count; `None` when absent or disabled (0 or -1).
    pub fn top_k(&self) -> Option<u32> {
        self.top_k.and_then(|k| u32::try_from(k).ok()).filter(|&k| k > 0)
    }
}
