//! Files served from disk (noVNC's `core/` and `vendor/`, Swagger UI) with
//! tower-http's `ServeDir`, behind the rules `ServeDir` does not keep.
//!
//! `ServeDir` refuses `..` and absolute paths, answers ranges and
//! conditional requests, and streams the file. It does follow symbolic
//! links, serves hidden files and any extension, and its misses are empty
//! 404s. So the callers allow-list the relative path first (plain segments,
//! known extensions: [`novnc_file`], Swagger UI's list), [`serve`] refuses a
//! file whose real path leaves the directory and answers misses with the
//! API's 404 envelope, and [`file_headers`] sets the answer headers as
//! `SetResponseHeaderLayer`s on the routes.
//!
//! The directory is read from the config on every request (a reload may
//! change it), so `ServeDir` is built per request: it is a path and a few
//! flags, nothing to cache.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use tower_http::services::ServeDir;
use tower_http::set_header::{MakeHeaderValue, SetResponseHeaderLayer};

use crate::error::ApiError;

/// Content types of the scripts and style sheets served (with charsets).
pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";

/// The noVNC subtrees the console page needs; nothing else of the package
/// is served.
const NOVNC_DIRS: [&str; 2] = ["core", "vendor"];

/// The relative path under the noVNC directory that a request path names,
/// with its content type; `None` for anything outside [`NOVNC_DIRS`], any
/// segment that is empty, `.`, `..`, hidden or has other than
/// `[A-Za-z0-9._-]`, and unknown extensions.
pub fn novnc_file(path: &str) -> Option<(&str, &'static str)> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 || !NOVNC_DIRS.contains(&segments[0]) {
        return None;
    }
    let valid = |segment: &&str| {
        !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    };
    if !segments.iter().all(valid) {
        return None;
    }
    let extension = Path::new(segments[segments.len() - 1])
        .extension()?
        .to_str()?;
    let content_type = match extension {
        "js" | "mjs" => JAVASCRIPT,
        "json" => "application/json",
        "css" => CSS,
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "wasm" => "application/wasm",
        _ => return None,
    };
    Some((path, content_type))
}

/// Serve `relative` (already allow-listed by the caller) from `root` as
/// `content_type`. A file that does not exist, cannot be read, or whose
/// real path leads out of `root` is `missing`.
pub async fn serve(
    root: &Path,
    relative: &str,
    content_type: &'static str,
    mut request: Request,
    missing: ApiError,
) -> axum::response::Response {
    // ServeDir follows symbolic links: one inside the directory must not
    // lead out of it.
    let (Ok(canonical_root), Ok(canonical_file)) = (
        tokio::fs::canonicalize(root).await,
        tokio::fs::canonicalize(root.join(relative)).await,
    ) else {
        return missing.into_response();
    };
    if !canonical_file.starts_with(&canonical_root) {
        return missing.into_response();
    }
    // ServeDir serves the request's path below its directory; the caller's
    // route prefix is not part of it.
    let Ok(uri) = Uri::try_from(format!("/{relative}")) else {
        return missing.into_response();
    };
    *request.uri_mut() = uri;
    let served = ServeDir::new(canonical_root)
        .append_index_html_on_directories(false)
        .try_call(request)
        .await;
    let mut response = match served {
        Ok(response) if !missed(response.status()) => response.map(Body::new),
        // An I/O error reading a file that exists reads as a miss, as it
        // always did: the file is as good as absent.
        Ok(_) | Err(_) => return missing.into_response(),
    };
    if response.status().is_success() {
        // Our allow-list's types, not a guess by file name (and with charsets).
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

/// A directory of the repository's files (Swagger UI, the web panel):
/// `$variable` when set, else `in_repo` below the repository next to the
/// binary (`target/<profile>/`), else where the binary was built; the first
/// that holds `probe`.
pub fn repo_dir(variable: &str, in_repo: &str, probe: &str) -> Option<PathBuf> {
    if let Some(directory) = std::env::var_os(variable) {
        return Some(PathBuf::from(directory));
    }
    let next_to_binary = std::env::current_exe().ok().and_then(|binary| {
        binary
            .parent()?
            .parent()?
            .parent()
            .map(|root| root.join(in_repo))
    });
    let built_from = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join(in_repo));
    [next_to_binary, built_from]
        .into_iter()
        .flatten()
        .find(|directory| directory.join(probe).is_file())
}

/// What ServeDir answers for a file it cannot serve.
fn missed(status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND || status.is_server_error()
}

/// The headers of a file answer, as one layer for a route (one, not two:
/// between two `layer` calls the error type cannot be inferred).
pub type FileHeaders = (
    SetResponseHeaderLayer<FilesOnly>,
    SetResponseHeaderLayer<HeaderValue>,
);

/// `Cache-Control: <cache_control>` on files, and `X-Content-Type-Options:
/// nosniff` on every answer.
pub fn file_headers(cache_control: &'static str) -> FileHeaders {
    let cache = SetResponseHeaderLayer::overriding(
        CACHE_CONTROL,
        FilesOnly(HeaderValue::from_static(cache_control)),
    );
    let nosniff = SetResponseHeaderLayer::overriding(
        X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    (cache, nosniff)
}

/// A header value set on files (200, 206, 304), never on error envelopes:
/// a miss must not be cached as if it were the file.
#[derive(Clone)]
pub struct FilesOnly(HeaderValue);

impl MakeHeaderValue<Response<Body>> for FilesOnly {
    fn make_header_value(&mut self, response: &Response<Body>) -> Option<HeaderValue> {
        let status = response.status();
        (status.is_success() || status == StatusCode::NOT_MODIFIED).then(|| self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::novnc_file;

    #[test]
    fn only_plain_paths_under_core_and_vendor_are_served() {
        let (path, kind) = novnc_file("core/rfb.js").expect("rfb.js");
        assert_eq!(path, "core/rfb.js");
        assert!(kind.starts_with("text/javascript"));
        assert!(novnc_file("vendor/pako/lib/zlib/inflate.js").is_some());
        for refused in [
            "core/../../etc/passwd.js",
            "core/./rfb.js",
            "core//rfb.js",
            "core/.hidden.js",
            "app/ui.js",
            "vnc.html",
            "core",
            "core/rfb",
            "core/rfb.sh",
            "core/%2e%2e/x.js",
            "core\\..\\x.js",
            "/etc/passwd",
            "core/rfb.js/",
        ] {
            assert!(novnc_file(refused).is_none(), "{refused}");
        }
    }
}
