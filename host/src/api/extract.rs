//! The API's own extractors: JSON bodies, queries and paths whose rejections
//! are the envelope with 400 (413 for a body over the limit) naming the
//! field, instead of axum's plain-text 422.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::model::rules::decode;

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
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|error| ApiError::BadRequest(format!("body: malformed JSON: {error}")))?
        };
        Ok(ApiJson(decode("", value)?))
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
                ApiError::BadRequest(format!("query {path}: {}", error.into_inner()))
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
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsyncFlag {
    /// Answer at once with `{task_id, state}`; the task goes on.
    #[serde(default, rename = "async")]
    #[param(required = false)]
    pub detach: bool,
}

/// `{hs_name}`: a host.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HostPath {
    /// The host's name.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "local")]
    pub hs_name: String,
}

/// `{hs_name}/{vm_uuid}`: a VM of a host.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VmPath {
    /// The host's name.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "local")]
    pub hs_name: String,
    /// The VM's key (chosen at create; also its libvirt domain name), or its libvirt UUID.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "vm1")]
    pub vm_uuid: String,
}

impl VmPath {
    /// The VM it names on an enabled host.
    pub fn resolve(
        &self,
        state: &crate::state::AppState,
    ) -> Result<crate::service::vms::VmRef, ApiError> {
        Ok(crate::service::vms::vm_ref(
            state,
            &self.hs_name,
            &self.vm_uuid,
        )?)
    }
}
