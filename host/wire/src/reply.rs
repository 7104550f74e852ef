//! The JSON response of the execute route, the one on every tool call's path.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Room for an execute answer (about 250 bytes) without growing the buffer.
const INITIAL_CAPACITY: usize = 512;

/// A JSON response serialized into a `Vec` sized for it up front, rather than grown token by
/// token as axum's `Json` does (BENCHMARKS.md).
pub struct JsonReply<T>(pub T);

impl<T: Serialize> IntoResponse for JsonReply<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(INITIAL_CAPACITY);
        let content_type = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (content_type, body).into_response(),
            // Only a map with non-string keys fails; the wire types have none.
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                content_type,
                r#"{"error":{"code":"internal","message":"the answer could not be encoded"}}"#,
            )
                .into_response(),
        }
    }
}
