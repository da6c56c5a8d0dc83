//! Server-sent events: the encoder's exact bytes, and the decoder reading the same
//! stream however it is split into chunks.

use lamina_api::sse::{self, SseDecoder, SseEvent, DONE, KEEP_ALIVE};
use lamina_api::{ChatCompletionChunk, FinishReason};
use serde_json::json;

fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> SseEvent {
    SseEvent { event: event.map(str::to_owned), data: data.to_owned(), id: id.map(str::to_owned) }
}

#[test]
fn encodes_data_events_and_done() {
    assert_eq!(sse::data(&json!({"a": 1, "b": "x\ny"})), "data: {\"a\":1,\"b\":\"x\\ny\"}\n\n");
    assert_eq!(DONE, "data: [DONE]\n\n");
    assert_eq!(KEEP_ALIVE, ": keep-alive\n\n");
    assert_eq!(sse::event(Some("error"), "a\nb"), "event: error\ndata: a\ndata: b\n\n");
    assert_eq!(sse::event(None, ""), "data: \n\n");
}

/// A stream using every feature the decoder handles: `\r\n`, `\r` and `\n` line ends,
/// comments, event names, multi-line data, ids, retry, a field without a colon,
/// multi-byte UTF-8, an event with empty data, and blank lines with no data.
const STREAM: &[u8] = "\u{feff}: welcome\r\n\
    data: {\"x\":\"h\u{e9}llo \u{1f980}\"}\r\n\r\n\
    event: ping\n\
    data: first\n\
    data:second\n\
    data:  third\n\
    \n\
    \n\
    id: 7\r\
    retry: 1000\r\
    data\r\
    \r\
    : just a comment\n\
    \n\
    event: message\n\
    data: \u{65e5}\u{672c}\u{8a9e}\n\
    \n\
    data: [DONE]\n\n"
    .as_bytes();

fn expected() -> Vec<SseEvent> {
    vec![
        ev(None, "{\"x\":\"h\u{e9}llo \u{1f980}\"}", None),
        ev(Some("ping"), "first\nsecond\n third", None),
        ev(None, "", Some("7")),
        ev(Some("message"), "\u{65e5}\u{672c}\u{8a9e}", Some("7")),
        ev(None, "[DONE]", Some("7")),
    ]
}

#[test]
fn decodes_whole_stream() {
    let mut d = SseDecoder::new();
    assert_eq!(d.feed(STREAM), expected());
    assert!(expected()[4].is_done());
}

#[test]
fn decodes_stream_split_at_every_position() {
    for cut in 0..=STREAM.len() {
        let mut d = SseDecoder::new();
        let mut got = d.feed(&STREAM[..cut]);
        got.extend(d.feed(&[]));
        got.extend(d.feed(&STREAM[cut..]));
        assert_eq!(got, expected(), "split at byte {cut}");
    }
}

#[test]
fn decodes_stream_split_at_every_pair_of_positions() {
    for a in 0..=STREAM.len() {
        for b in a..=STREAM.len() {
            let mut d = SseDecoder::new();
            let mut got = d.feed(&STREAM[..a]);
            got.extend(d.feed(&STREAM[a..b]));
            got.extend(d.feed(&STREAM[b..]));
            assert_eq!(got, expected(), "split at bytes {a} and {b}");
        }
    }
}

#[test]
fn decodes_stream_byte_by_byte() {
    let mut d = SseDecoder::new();
    let got: Vec<SseEvent> = STREAM.iter().flat_map(|b| d.feed(&[*b])).collect();
    assert_eq!(got, expected());
}

#[test]
fn unterminated_event_is_not_dispatched() {
    let mut d = SseDecoder::new();
    assert_eq!(d.feed(b"data: a\n\ndata: b\n"), vec![ev(None, "a", None)]);
    assert_eq!(d.feed(b""), vec![]);
}

#[test]
fn cr_then_lf_in_the_next_chunk_is_one_line_end() {
    let mut d = SseDecoder::new();
    assert_eq!(d.feed(b"data: a\r"), vec![]);
    assert_eq!(d.feed(b"\n"), vec![]);
    assert_eq!(d.feed(b"\r\n"), vec![ev(None, "a", None)]);
}

#[test]
fn invalid_utf8_is_replaced() {
    let mut d = SseDecoder::new();
    assert_eq!(d.feed(b"data: a\xffb\n\n"), vec![ev(None, "a\u{fffd}b", None)]);
}

#[test]
fn round_trips_a_server_stream() {
    let mut wire = String::new();
    let chunk = ChatCompletionChunk::new("chatcmpl-1", 1, "m", vec![lamina_api::ChatChunkChoice::finished(0, FinishReason::Stop, None)]);
    wire.push_str(&sse::data(&chunk));
    wire.push_str(KEEP_ALIVE);
    wire.push_str(DONE);
    let mut d = SseDecoder::new();
    let events = d.feed(wire.as_bytes());
    assert_eq!(events.len(), 2);
    let back: ChatCompletionChunk = events[0].json().unwrap();
    assert_eq!(back, chunk);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&events[0].data).unwrap(),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "system_fingerprint": null,
               "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}],
               "usage": null})
    );
    assert!(events[1].is_done());
}
