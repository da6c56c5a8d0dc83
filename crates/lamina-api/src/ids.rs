//! Response and tool-call ids in OpenAI's shapes (`chatcmpl-…`, `cmpl-…`, `call_…`).
//! Deterministic: the caller supplies the number (a counter, or random bits it drew),
//! so this crate holds no randomness and no state.
//!
//! The prefixes follow the examples in the OpenAI API reference ("The chat completion
//! object", "The completion object", `tool_calls[].id`).

/// Prefix of chat completion ids.
pub const CHAT_COMPLETION_PREFIX: &str = "chatcmpl";
/// Prefix of legacy completion ids.
pub const COMPLETION_PREFIX: &str = "cmpl";

/// `"{prefix}-{n as 16 lower-case hex digits}"`, e.g. `completion_id("chatcmpl", 255)`
/// is `"chatcmpl-00000000000000ff"`.
pub fn completion_id(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n:016x}")
}

/// `"{prefix}_{n as 16 lower-case hex digits}"`: the Responses API's ids (`resp_…`,
/// `msg_…`, `fc_…`) and Anthropic's (`msg_…`).
pub fn object_id(prefix: &str, n: u64) -> String {
    format!("{prefix}_{n:016x}")
}

/// `"call_{n as 16 lower-case hex digits}"`, the shape of a tool call's id.
pub fn tool_call_id(n: u64) -> String {
    format!("call_{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_openai_shapes() {
        assert_eq!(completion_id(CHAT_COMPLETION_PREFIX, 255), "chatcmpl-00000000000000ff");
        assert_eq!(completion_id(COMPLETION_PREFIX, 0), "cmpl-0000000000000000");
        assert_eq!(tool_call_id(u64::MAX), "call_ffffffffffffffff");
        assert_eq!(object_id("resp", 1), "resp_0000000000000001");
    }
}
