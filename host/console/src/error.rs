//! The console's one error type, answered once as an HTML page with the right status (a
//! signed-out request is sent to the sign-in page instead).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use writ_gateway::api::status_of;
use writ_gateway::app::AppError;

use crate::layout;

/// A console request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No live session: sign in first (`expired`: the request named one that has ended), then
    /// go on to `next`.
    #[error("sign in to continue")]
    SignedOut { expired: bool, next: Option<String> },
    /// A state-changing request that did not come from the console's own page.
    #[error(
        "this request did not come from a console page (its origin or form token is wrong); \
         reload the page and try again"
    )]
    Forged,
    /// No such page.
    #[error("there is no such page")]
    NoPage,
    /// A form or query value is wrong.
    #[error("{0}")]
    BadInput(String),
    /// An operation of the gateway failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            Self::SignedOut { .. } => StatusCode::SEE_OTHER,
            Self::Forged => StatusCode::FORBIDDEN,
            Self::NoPage => StatusCode::NOT_FOUND,
            Self::BadInput(_) => StatusCode::BAD_REQUEST,
            Self::App(e) => status_of(e).0,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if let Self::SignedOut { expired, next } = &self {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if *expired {
                query.append_pair("expired", "1");
            }
            if let Some(next) = next {
                query.append_pair("next", next);
            }
            return Redirect::to(&format!("/console/signin?{}", query.finish())).into_response();
        }
        let status = self.status();
        let message = match &self {
            Self::App(AppError::Internal(source)) => {
                tracing::error!(error = %source, "console request failed");
                "something went wrong on the gateway; the error is in its log".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, layout::error_page(status, &message)).into_response();
        if let Self::App(
            AppError::RateLimited { retry_after_s, .. } | AppError::Busy { retry_after_s, .. },
        ) = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        response
    }
}
