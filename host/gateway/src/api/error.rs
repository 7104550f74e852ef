//! The one mapping from errors to HTTP: every failure leaves as
//! `{"error": {"code", "message"}}` with the right status. Internal details are logged, never
//! sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No key, or not a live key.
    #[error(
        "a valid API key is required (X-PROVENANCE-API-KEY, Authorization: Bearer or X-API-Key)"
    )]
    Unauthorized,
    /// The body is over the route's limit.
    #[error("body is over the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The body or query is malformed.
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such route.
    #[error("no such route")]
    NoRoute,
    /// An operation failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            Self::App(e) => status_of(e),
        }
    }
}

/// The status and stable code an operation's failure is answered with.
pub fn status_of(e: &AppError) -> (StatusCode, &'static str) {
    match e {
        AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AppError::Invalid { code, .. } => (StatusCode::BAD_REQUEST, code),
        AppError::InvalidPolicy(_) => (StatusCode::BAD_REQUEST, "invalid_policy"),
        AppError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
        AppError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
        AppError::TooLarge { code, .. } => (StatusCode::PAYLOAD_TOO_LARGE, code),
        AppError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        AppError::Busy { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
        AppError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
        AppError::BadGateway { code, .. } => (StatusCode::BAD_GATEWAY, code),
        AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::App(AppError::Internal(source)) = &self {
            tracing::error!(error = %source, "request failed");
        }
        let body = serde_json::json!({
            "error": { "code": code, "message": self.to_string() }
        });
        let mut response = (status, Json(body)).into_response();
        if let Self::App(
            AppError::RateLimited { retry_after_s, .. } | AppError::Busy { retry_after_s, .. },
        ) = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_s),
            );
        }
        response
    }
}
