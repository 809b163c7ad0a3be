//! API errors: each a status code and a JSON `{"error": "..."}` that says what to do.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("missing or wrong bearer token: send Authorization: Bearer <token>")]
    Unauthorized,
    #[error("the body is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{0}; retry later")]
    QueueFull(String),
    #[error("the queue is not available: {0}")]
    Unavailable(String),
    /// The data dir's disk is full; the message says which and how much is free.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Gone(String),
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> ApiError {
        match e {
            crate::queue::QueueError::NoSpace(why) => ApiError::InsufficientStorage(why),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl ApiError {
    pub fn response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        if matches!(
            self,
            ApiError::QueueFull(_) | ApiError::InsufficientStorage(_) | ApiError::Unavailable(_)
        ) {
            builder.insert_header(("Retry-After", "1"));
        }
        if matches!(self, ApiError::Unauthorized) {
            builder.insert_header(("WWW-Authenticate", "Bearer"));
        }
        builder.json(json!({"error": self.to_string()}))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Gone(_) => StatusCode::GONE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}
