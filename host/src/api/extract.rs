//! The API's own extractors: JSON bodies, queries and paths whose rejections
//! are the envelope with 400 (413 for a body over the limit) naming the
//! field, instead of axum's plain-text 422.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::service::validate::decode;

/// A JSON body; an empty body reads as `{}` (several endpoints take an
/// optional body), and the content type is not required (older clients
/// omit it).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(format!("body: {}", rejection.body_text()))
                } else {
                    ApiError::BadRequest(format!("body: {}", rejection.body_text()))
                }
            })?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|error| ApiError::BadRequest(format!("body: malformed JSON: {error}")))?
        };
        decode("", value).map(ApiJson)
    }
}

/// A query string; errors name the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                ApiError::bad_field(&format!("query {path}"), error.into_inner())
            })
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::BadRequest(format!("path: {}", rejection.body_text())))
    }
}

/// `?async=true`: answer with the task id at once.
#[derive(serde::Deserialize, Default)]
pub struct AsyncFlag {
    #[serde(default, rename = "async")]
    pub detach: bool,
}
