//! Reading byte ranges of the model: HTTP Range requests for a URL, `Blob.slice` for a local file.

use super::failure;
use super::js::{await_promise, js_error};
use crate::numbers::js_u64;
use crate::protocol::{ErrorKind, Failure};
use carebot_model::offsets::piece_len;
use std::cell::RefCell;
use wasm_bindgen::JsCast;
use web_sys::{File, Headers, RequestCache, RequestInit, Response, WorkerGlobalScope};

pub enum Remote {
    /// `version`: the validator (ETag or Last-Modified) of the first answer; every later one
    /// must name the same, or the file changed on the server mid-download.
    Url {
        url: String,
        version: RefCell<Option<String>>,
    },
    File(File),
}

/// `bytes a-b/TOTAL` → TOTAL
fn content_range_total(header: &str) -> Option<u64> {
    header.rsplit_once('/')?.1.trim().parse().ok()
}

impl Remote {
    pub fn url(url: impl Into<String>) -> Self {
        Remote::Url { url: url.into(), version: RefCell::new(None) }
    }

    /// Which version of the file the reads so far came from (`None`: the server names none).
    pub fn version(&self) -> Option<String> {
        match self {
            Remote::Url { version, .. } => version.borrow().clone(),
            Remote::File(_) => None,
        }
    }

    /// Reads `out.len()` bytes at `at`; returns the whole file's size as the source reports it.
    pub async fn read(&self, at: u64, out: &mut [u8]) -> Result<u64, Failure> {
        match self {
            Remote::Url { url, version } => {
                let (total, now) = fetch_range(url, at, out).await?;
                let mut known = version.borrow_mut();
                match (&*known, now) {
                    (None, now) => *known = now,
                    (Some(before), now) if now.as_deref() != Some(before.as_str()) => {
                        return Err(failure(
                            ErrorKind::SourceChanged,
                            format!(
                                "{url} changed on the server while it was being read (version {before:?}, now {})",
                                now.map_or("not named".into(), |v| format!("{v:?}"))
                            ),
                        ));
                    }
                    _ => {}
                }
                Ok(total)
            }
            Remote::File(file) => {
                let end = at + out.len() as u64;
                // Offsets as doubles (exact below 2^53): `Blob.slice` takes any size of file.
                let blob = file
                    .slice_with_f64_and_f64(at as f64, end as f64)
                    .map_err(|e| failure(ErrorKind::Internal, js_error(&e)))?;
                let buf = await_promise(blob.array_buffer()).await.map_err(|e| {
                    failure(
                        ErrorKind::Network,
                        format!("reading {}: {} (was the file moved?)", file.name(), js_error(&e)),
                    )
                })?;
                let bytes = js_sys::Uint8Array::new(&buf);
                if bytes.length() as usize != out.len() {
                    return Err(failure(
                        ErrorKind::Network,
                        format!("{} changed while it was being read", file.name()),
                    ));
                }
                bytes.copy_to(out);
                js_u64(file.size()).ok_or_else(|| {
                    failure(
                        ErrorKind::Internal,
                        format!("{}: the browser gave its size as {}", file.name(), file.size()),
                    )
                })
            }
        }
    }
}

/// Sends the request; only a network failure (no answer at all) is an error here.
/// (Not gloo-net: its `Request` is built for the window or a worker alike, but every status,
/// header (`Content-Range`, `X-Repo-Commit`, `X-Error-Code`) and body check here maps to our own
/// typed failures, and `RequestInit` with `no-store` and an `AbortSignal` is what it would wrap.)
async fn fetch(url: &str, init: &RequestInit) -> Result<Response, Failure> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let response = await_promise(scope.fetch_with_str_and_init(url, init)).await.map_err(|e| {
        failure(
            ErrorKind::Network,
            format!(
                "could not reach {url}: {} (offline, or the server does not allow cross-origin requests)",
                js_error(&e)
            ),
        )
    })?;
    Ok(response.unchecked_into())
}

/// A whole small file (a repository's JSON), and the commit the hub says it came from. `None`
/// when there is no such file (HTTP 404).
/// Refuses a file bigger than `limit` bytes, by its Content-Length before reading it and by what
/// arrived after (a server may send none).
pub async fn fetch_file(url: &str, limit: u64) -> Result<Option<(Vec<u8>, Option<String>)>, Failure> {
    let init = RequestInit::new();
    init.set_cache(RequestCache::NoStore);
    let response = fetch(url, &init).await?;
    match response.status() {
        200 => {}
        404 | 410 => return Ok(None),
        // The hub answers 401 for a repository that does not exist (or is private).
        401 if response.headers().get("X-Error-Code").ok().flatten().as_deref() == Some("RepoNotFound") => {
            return Err(failure(
                ErrorKind::NotFound,
                format!("{url}: no such repository on the hub (or it is private and needs a login)"),
            ));
        }
        401 | 403 => {
            return Err(failure(
                ErrorKind::Http,
                format!("{url}: HTTP {}: the repository is private or gated (it needs a login)", response.status()),
            ));
        }
        s => return Err(failure(ErrorKind::Http, format!("{url}: HTTP {s} {}", response.status_text()))),
    }
    let commit = response.headers().get("X-Repo-Commit").ok().flatten();
    let too_big =
        |n: u64| failure(ErrorKind::Model, format!("{url}: {n} bytes, more than the {limit} such a file can need"));
    let announced = response.headers().get("Content-Length").ok().flatten().and_then(|n| n.parse::<u64>().ok());
    if let Some(n) = announced.filter(|&n| n > limit) {
        return Err(too_big(n));
    }
    let body = await_promise(response.array_buffer().map_err(|e| failure(ErrorKind::Network, js_error(&e)))?)
        .await
        .map_err(|e| failure(ErrorKind::Network, format!("download of {url} interrupted: {}", js_error(&e))))?;
    let body = js_sys::Uint8Array::new(&body);
    if u64::from(body.length()) > limit {
        return Err(too_big(u64::from(body.length())));
    }
    Ok(Some((body.to_vec(), commit)))
}

/// The version a response names: its strong ETag, else its Last-Modified date. A weak ETag
/// (`W/…`) promises equivalent content, not equal bytes, so it names no version of the bytes.
/// The validator is compared with every later answer's rather than sent as `If-Range`: that header
/// would make every cross-origin Range request a preflighted one, which servers of model files
/// need not answer, and the comparison checks every piece, not only a resume's first.
fn version_of(response: &Response) -> Option<String> {
    let header = |name: &str| response.headers().get(name).ok().flatten().filter(|v| !v.trim().is_empty());
    header("ETag")
        .filter(|e| !e.starts_with("W/"))
        .map(|e| format!("etag {e}"))
        .or_else(|| header("Last-Modified").map(|d| format!("last-modified {d}")))
}

/// `out.len()` bytes at `at`: the file's total size, and the version the answer names.
async fn fetch_range(url: &str, at: u64, out: &mut [u8]) -> Result<(u64, Option<String>), Failure> {
    let end = at + out.len() as u64 - 1;
    let headers = Headers::new().map_err(|e| failure(ErrorKind::Internal, js_error(&e)))?;
    headers.set("Range", &format!("bytes={at}-{end}")).map_err(|e| failure(ErrorKind::Internal, js_error(&e)))?;
    let init = RequestInit::new();
    init.set_headers(&headers);
    // The Origin Private File System is the cache; the HTTP cache would hold a second copy.
    init.set_cache(RequestCache::NoStore);
    let response = fetch(url, &init).await?;
    match response.status() {
        206 => {}
        404 | 410 => {
            return Err(failure(ErrorKind::NotFound, format!("{url}: HTTP {} (no file there)", response.status())));
        }
        200 => {
            return Err(failure(
                ErrorKind::NoRange,
                format!(
                    "{url} answered a Range request with the whole file (HTTP 200): the server does not support Range requests"
                ),
            ));
        }
        s => return Err(failure(ErrorKind::Http, format!("{url}: HTTP {s} {}", response.status_text()))),
    }
    let total =
        response.headers().get("Content-Range").ok().flatten().as_deref().and_then(content_range_total).ok_or_else(
            || {
                failure(
                    ErrorKind::NoRange,
                    format!("{url} sent no usable Content-Range header (a cross-origin server must expose it)"),
                )
            },
        )?;
    let body = await_promise(response.array_buffer().map_err(|e| failure(ErrorKind::Network, js_error(&e)))?)
        .await
        .map_err(|e| failure(ErrorKind::Network, format!("download of {url} interrupted: {}", js_error(&e))))?;
    let bytes = js_sys::Uint8Array::new(&body);
    let expected = piece_len(total.saturating_sub(at), out.len());
    if bytes.length() as usize != expected {
        return Err(failure(
            ErrorKind::Network,
            format!("{url}: asked for {expected} bytes at {at}, got {}", bytes.length()),
        ));
    }
    bytes.copy_to(&mut out[..expected]);
    Ok((total, version_of(&response)))
}
