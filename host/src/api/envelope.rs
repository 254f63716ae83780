//! The one answer shape of the API, `{code, msg, data}` ([`Envelope`]), as
//! responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::{EncodedAnswer, Envelope};

/// `envelope` as the response with `status`.
pub fn respond<T: Serialize>(status: StatusCode, envelope: &Envelope<T>) -> Response {
    (status, Json(envelope)).into_response()
}

/// A successful answer: `{code: 200, msg: "success", data}`.
#[derive(Debug)]
pub struct ApiOk<T>(pub T);

impl<T: Serialize> IntoResponse for ApiOk<T> {
    fn into_response(self) -> Response {
        respond(StatusCode::OK, &Envelope::success(self.0))
    }
}

/// A successful answer encoded once (a cached listing): the same bytes.
impl IntoResponse for EncodedAnswer {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<ApiOk<T>, crate::error::ApiError>;
