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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueError;

    #[test]
    fn each_error_has_its_status_its_retry_hint_and_its_words_as_json() {
        let cases = [
            (ApiError::BadRequest("no".into()), 400, None),
            (ApiError::Unauthorized, 401, None),
            (ApiError::TooLarge(10), 413, None),
            (ApiError::QueueFull("full".into()), 429, Some("1")),
            (QueueError::Closed.into(), 503, Some("1")),
            (QueueError::NoSpace("disk".into()).into(), 507, Some("1")),
        ];
        for (error, status, retry) in cases {
            let response = error.response();
            assert_eq!(response.status().as_u16(), status, "{error}");
            let retry_after = response
                .headers()
                .get("Retry-After")
                .map(|v| v.to_str().unwrap());
            assert_eq!(retry_after, retry, "{error}");
        }
        let unauthorized = ApiError::Unauthorized.response();
        assert_eq!(
            unauthorized.headers().get("WWW-Authenticate").unwrap(),
            "Bearer"
        );
        assert_eq!(
            ApiError::from(QueueError::Closed).to_string(),
            "the queue is not available: the queue is shut down"
        );
        assert_eq!(
            ApiError::QueueFull("1000 queued".into()).to_string(),
            "1000 queued; retry later"
        );
    }

    #[actix_web::test]
    async fn the_body_is_the_message_under_error() {
        let response = ApiError::TooLarge(1024).response();
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": "the body is over the limit of 1024 bytes"})
        );
    }
}
