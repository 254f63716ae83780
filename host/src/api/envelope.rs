//! The one answer shape of the API: `{code, msg, data}`.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
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

/// A successful answer encoded once, to be sent many times (a cached
/// listing): cloning it shares the bytes.
#[derive(Clone, Debug)]
pub struct EncodedOk(Bytes);

impl EncodedOk {
    pub fn encode<T: Serialize>(data: &T) -> Result<EncodedOk, crate::error::ApiError> {
        let envelope = Envelope {
            code: 200,
            msg: "success".to_owned(),
            data,
        };
        serde_json::to_vec(&envelope)
            .map(|bytes| EncodedOk(Bytes::from(bytes)))
            .map_err(|error| {
                crate::error::ApiError::Internal(format!("encoding the answer: {error}"))
            })
    }
}

impl IntoResponse for EncodedOk {
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
