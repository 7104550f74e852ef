//! Server-sent events and bodies read from an upstream server (an MCP server the gateway
//! relays to), within bounds: the upstream is untrusted, so a JSON body, or the data of one
//! event, is at most [`MAX_MESSAGE_BYTES`], read with a bounded line reader (tokio-util's
//! `LinesCodec`): the SSE parsers on crates.io read events of any size.

use bytes::Bytes;
use reqwest::header::HeaderMap;
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::io::StreamReader;

/// Largest JSON body, or data of one event, read from an upstream server.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// One server-sent event, as read from an upstream server or written by the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`, for the client to resume from.
    pub id: Option<String>,
    /// `event:`.
    pub event: Option<String>,
    /// `data:` (a JSON-RPC message for the MCP events).
    pub data: String,
    /// `retry:`, in ms.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// An event carrying one message.
    pub fn message(data: String) -> Self {
        Self {
            data,
            ..Self::default()
        }
    }
}

/// A response header's value, if it is text.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn content_type_is(response: &reqwest::Response, kind: &str) -> bool {
    header(response.headers(), "content-type").is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(kind))
    })
}

/// Whether the answer is an event stream.
pub(crate) fn is_event_stream(response: &reqwest::Response) -> bool {
    content_type_is(response, "text/event-stream")
}

/// Whether the answer is JSON.
pub(crate) fn is_json(response: &reqwest::Response) -> bool {
    content_type_is(response, "application/json")
}

/// A body of at most `cap` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> std::result::Result<Bytes, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > cap {
            return Err(format!("over {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// The events of an upstream's event stream, each at most [`MAX_MESSAGE_BYTES`] of data.
/// (The SSE parsers on crates.io read events of any size; an upstream is untrusted.)
pub(crate) fn sse_events(
    response: reqwest::Response,
) -> impl Stream<Item = std::result::Result<SseEvent, String>> + Send + Unpin {
    let bytes = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let lines = FramedRead::new(
        StreamReader::new(bytes),
        LinesCodec::new_with_max_length(MAX_MESSAGE_BYTES),
    );
    let mut event = SseEvent::default();
    let mut has_data = false;
    // A block with only an `id` (a resumption point) or a `retry` is passed on too.
    let mut has_fields = false;
    Box::pin(lines.filter_map(move |line| {
        let line = match line {
            Ok(line) => line,
            Err(e) => return Some(Err(e.to_string())),
        };
        if line.is_empty() {
            let done = std::mem::take(&mut event);
            has_data = false;
            return std::mem::take(&mut has_fields).then_some(Ok(done));
        }
        let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                if event.data.len() + value.len() > MAX_MESSAGE_BYTES {
                    return Some(Err(format!("an event over {MAX_MESSAGE_BYTES} bytes")));
                }
                event.data.push_str(value);
                has_data = true;
            }
            "id" if !value.contains('\0') => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "retry" => event.retry = value.parse().ok(),
            _ => return None,
        }
        has_fields = true;
        None
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: String) -> reqwest::Response {
        reqwest::Response::from(
            axum::http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap(),
        )
    }

    async fn events(body: String) -> Vec<std::result::Result<SseEvent, String>> {
        sse_events(response(body)).collect().await
    }

    #[tokio::test]
    async fn an_event_stream_is_read_event_by_event_with_its_fields() {
        let body = "retry: 500\n\n: a comment\nid: 7\nevent: message\ndata: {\"a\":\ndata: 1}\n\ndata:x\r\n\r\n";
        let read = events(body.into()).await;
        assert_eq!(
            read,
            vec![
                Ok(SseEvent {
                    retry: Some(500),
                    ..SseEvent::default()
                }),
                Ok(SseEvent {
                    id: Some("7".into()),
                    event: Some("message".into()),
                    data: "{\"a\":\n1}".into(),
                    retry: None,
                }),
                Ok(SseEvent::message("x".into())),
            ]
        );
    }

    #[tokio::test]
    async fn an_upstream_event_over_the_bound_ends_the_stream_with_an_error() {
        let line = "x".repeat(MAX_MESSAGE_BYTES / 2);
        let body = format!("data: {line}\ndata: {line}\ndata: {line}\n\n");
        let read = events(body).await;
        assert!(read[0].as_ref().unwrap_err().contains("over"), "{read:?}");
        let one_line = format!("data: {}\n\n", "y".repeat(MAX_MESSAGE_BYTES + 1));
        assert!(events(one_line).await[0].is_err());
    }
}
