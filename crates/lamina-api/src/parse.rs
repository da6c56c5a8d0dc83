//! Parsing a request body into a wire type, with errors in OpenAI's shape: what the
//! server calls on every body.
//!
//! OpenAI answers a body it cannot read with 400 `invalid_request_error` ("We could not
//! parse the JSON body of your request", see the API reference's "Error codes"); a field
//! of the wrong type is reported with that field as `param`.

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parses `bytes` as a JSON document of type `T`.
///
/// Errors (all 400 `invalid_request_error`):
/// - not UTF-8: the message gives the byte offset of the first invalid byte;
/// - not JSON (or trailing data, or truncated): "could not parse the JSON body of your
///   request" with serde's description, line and column;
/// - JSON of the wrong shape: `param` is the field path (`messages[1].content`; for a
///   missing field, the path of the missing field) and the message starts with it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::invalid_request(format!("the request body is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to())).with_code("invalid_utf8")
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(from_path_error)?;
    de.end().map_err(|e| unparsable(&e))?;
    Ok(value)
}

fn unparsable(e: &serde_json::Error) -> ApiError {
    ApiError::invalid_request(format!("could not parse the JSON body of your request: {e}")).with_code("invalid_json")
}

fn from_path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if !inner.is_data() {
        return unparsable(&inner);
    }
    let detail = inner.to_string();
    let at = if path == "." { None } else { Some(path) };
    let param = match missing_field(&detail) {
        Some(field) => Some(match &at {
            Some(p) => format!("{p}.{field}"),
            None => field.to_owned(),
        }),
        None => at.clone(),
    };
    let message = match &at {
        Some(p) => format!("{p}: {detail}"),
        None => detail,
    };
    let mut err = ApiError::invalid_request(message);
    err.param = param;
    err
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(detail: &str) -> Option<&str> {
    let rest = detail.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        need: u8,
    }

    #[test]
    fn missing_field_name_is_extracted() {
        assert_eq!(missing_field("missing field `role` at line 1 column 3"), Some("role"));
        assert_eq!(missing_field("invalid type: map"), None);
    }

    #[test]
    fn nested_missing_field_joins_the_path() {
        let e = parse_json::<Outer>(br#"{"inner": [{"need": 1}, {}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("inner[1].need"));
        assert!(e.message.starts_with("inner[1]: missing field `need`"), "{}", e.message);
    }

    #[test]
    fn out_of_range_integer_names_the_field() {
        let e = parse_json::<Outer>(br#"{"inner": [{"need": 300}]}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("inner[0].need"));
    }
}
