//! What upsession's tests check again and again, written once: reading a Graph
//! error answer and asserting its status and code.

use serde_json::Value;

/// A Graph error answer, as a test saw it.
#[derive(Clone, Debug)]
pub struct GraphErrorSeen {
    /// The HTTP status.
    pub status: u16,
    /// `error.code`, Graph's top-level code.
    pub code: String,
    /// `error.innerError.code`, the detailed code, when there is one.
    pub inner: Option<String>,
    /// The whole body.
    pub body: Value,
}

impl GraphErrorSeen {
    /// The most specific code: `innerError.code` if present, else `error.code`.
    pub fn detail(&self) -> &str {
        self.inner.as_deref().unwrap_or(&self.code)
    }
}

/// Reads a Graph error answer.
///
/// # Panics
/// When the body is not Graph's error JSON (`error.code` and `error.message`
/// strings, `innerError` with `request-id` and `date`).
pub fn graph_error(status: u16, body: &[u8]) -> GraphErrorSeen {
    let text = String::from_utf8_lossy(body);
    let json: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("a {status} answer that is not JSON ({e}): {text}"));
    let error = &json["error"];
    let code = error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("a {status} answer without error.code: {text}"))
        .to_owned();
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a {status} answer without error.message: {text}"
    );
    let inner = &error["innerError"];
    assert!(
        inner["request-id"].is_string() && inner["date"].is_string(),
        "a {status} answer without innerError.request-id and date: {text}"
    );
    GraphErrorSeen {
        status,
        code,
        inner: inner["code"].as_str().map(str::to_owned),
        body: json,
    }
}

/// Asserts that `res` is Graph's error JSON with `status`, and that `code` is its
/// most specific code (`innerError.code`, or `error.code` when there is none) or,
/// written `top/inner`, both of its codes. Returns what was seen.
///
/// # Panics
/// When it is not.
pub async fn expect_graph_error(res: reqwest::Response, status: u16, code: &str) -> GraphErrorSeen {
    let got = res.status().as_u16();
    let body = res.bytes().await.expect("the answer's body arrives");
    let seen = graph_error(got, &body);
    let matches = match code.split_once('/') {
        Some((top, inner)) => seen.code == top && seen.inner.as_deref() == Some(inner),
        None => seen.detail() == code,
    };
    assert!(
        got == status && matches,
        "expected {status} {code}, got {got} {}{}: {}",
        seen.code,
        seen.inner
            .as_ref()
            .map(|i| format!("/{i}"))
            .unwrap_or_default(),
        seen.body
    );
    seen
}

#[cfg(test)]
mod tests {
    use super::graph_error;

    #[test]
    fn the_detail_is_the_inner_code_when_there_is_one() {
        let body = br#"{"error":{"code":"invalidRange","message":"m","innerError":{"code":"fragmentOverlap","request-id":"r","date":"d"}}}"#;
        let seen = graph_error(416, body);
        assert_eq!(
            (seen.code.as_str(), seen.detail()),
            ("invalidRange", "fragmentOverlap")
        );
        let body = br#"{"error":{"code":"ErrorItemNotFound","message":"m","innerError":{"request-id":"r","date":"d"}}}"#;
        assert_eq!(graph_error(404, body).detail(), "ErrorItemNotFound");
    }

    #[test]
    #[should_panic(expected = "without innerError")]
    fn an_answer_without_a_request_id_is_not_graphs() {
        graph_error(400, br#"{"error":{"code":"x","message":"m"}}"#);
    }
}
