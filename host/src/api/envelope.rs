//! The one answer shape of the API: `{code, msg, data}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Envelope<T> {
    pub code: u16,
    pub msg: String,
    pub data: T,
}

impl<T: Serialize> Envelope<T> {
    pub fn into_response_with(self, status: StatusCode) -> Response {
        (status, Json(self)).into_response()
    }
}

/// A successful answer: `{code: 200, msg: "success", data}`.
#[derive(Debug)]
pub struct ApiOk<T>(pub T);

impl<T: Serialize> IntoResponse for ApiOk<T> {
    fn into_response(self) -> Response {
        Envelope {
            code: 200,
            msg: "success".to_owned(),
            data: self.0,
        }
        .into_response_with(StatusCode::OK)
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<ApiOk<T>, crate::error::ApiError>;
