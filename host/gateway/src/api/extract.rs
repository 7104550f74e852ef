//! Request extractors whose rejections are [`ApiError`]s, so every malformed request gets the
//! same JSON error shape: the authenticated caller, size- and depth-limited JSON, and a
//! size-limited raw body.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiState;
use super::error::ApiError;
use crate::tenants::Principal;

/// The caller, authenticated by its API key.
pub struct Auth(pub Principal);

/// The key secret from `X-PROVENANCE-API-KEY`, `Authorization: Bearer …` or `X-API-Key`.
fn key_secret(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("x-provenance-api-key")
        .or_else(|| {
            header("authorization").and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        })
        .or_else(|| header("x-api-key"))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl FromRequestParts<ApiState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let secret = key_secret(&parts.headers).ok_or(ApiError::Unauthorized)?;
        state
            .app
            .tenants()
            .authenticate(secret)
            .map(Auth)
            .ok_or(ApiError::Unauthorized)
    }
}

/// No key at all is `None`; a key that is not a live one is still refused.
impl OptionalFromRequestParts<ApiState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Option<Self>, ApiError> {
        if key_secret(&parts.headers).is_none() {
            return Ok(None);
        }
        <Self as FromRequestParts<ApiState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// A JSON body of at most [`ApiState::max_json_bytes`], nested at most
/// [`ApiState::max_json_depth`] deep.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let bytes = limited_body(req, state.max_json_bytes).await?;
        parse_json(&bytes, state.max_json_depth).map(AppJson)
    }
}

/// Parses a JSON request body nested at most `max_depth` deep, as every route does.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, ApiError> {
    if exceeds_depth(bytes, max_depth) {
        return Err(ApiError::bad_request(
            "too_deep",
            format!("JSON is nested more than {max_depth} levels"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, e.to_string())
    })
}

/// A raw body of at most [`ApiState::max_policy_bytes`] (a policy component).
pub struct PolicyBody(pub Bytes);

impl FromRequest<ApiState> for PolicyBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        limited_body(req, state.max_policy_bytes)
            .await
            .map(PolicyBody)
    }
}

/// A JSON body's bytes, unparsed (relayed as they came): at most
/// [`ApiState::max_json_bytes`], nested at most [`ApiState::max_json_depth`] deep.
pub struct RawJson(pub Bytes);

impl FromRequest<ApiState> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let bytes = limited_body(req, state.max_json_bytes).await?;
        if exceeds_depth(&bytes, state.max_json_depth) {
            return Err(ApiError::bad_request(
                "too_deep",
                format!("JSON is nested more than {} levels", state.max_json_depth),
            ));
        }
        Ok(Self(bytes))
    }
}

async fn limited_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::bad_request("invalid_body", format!("reading the body: {e}"))
            }
        })
}

/// Whether `json` nests arrays and objects more than `max` deep (strings are skipped; the
/// text need not be valid JSON, the parser judges that).
fn exceeds_depth(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::exceeds_depth;

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert!(!exceeds_depth(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(exceeds_depth(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(!exceeds_depth(br#"{"a":"[[[[[[\"[["}"#, 1));
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(exceeds_depth(deep.as_bytes(), 64));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(!exceeds_depth(ok.as_bytes(), 64));
    }
}
