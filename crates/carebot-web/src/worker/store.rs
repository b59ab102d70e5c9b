//! The model cache in the Origin Private File System: one `<key>.gguf` per model URL, written in
//! order through a synchronous access handle (workers only), plus `<key>.json` saying which URL
//! and how many bytes the whole file has. A partial file is a download to resume.

use super::js::{await_promise, dom_error_name, js_error};
use crate::numbers::js_u64;
use crate::protocol::{ErrorKind, Failure};
use carebot_model::offsets::piece_len;
use carebot_model::rng::fnv1a64;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use web_sys::{
    FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions,
    FileSystemReadWriteOptions, FileSystemSyncAccessHandle, WorkerGlobalScope,
};

const DIR: &str = "carebot-models";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Meta {
    url: String,
    size: u64,
}

/// One URL's cached file, open for reading and appending.
pub struct CachedFile {
    handle: FileSystemSyncAccessHandle,
    pub size: u64,
}

fn key(url: &str) -> String {
    format!("{:016x}", fnv1a64(url.as_bytes()))
}

async fn dir() -> Result<FileSystemDirectoryHandle, Failure> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let root = await_promise(scope.navigator().storage().get_directory()).await.map_err(storage_failure)?;
    let root: FileSystemDirectoryHandle = root.unchecked_into();
    let options = FileSystemGetDirectoryOptions::new();
    options.set_create(true);
    let dir = await_promise(root.get_directory_handle_with_options(DIR, &options)).await.map_err(storage_failure)?;
    Ok(dir.unchecked_into())
}

async fn open_handle(dir: &FileSystemDirectoryHandle, name: &str) -> Result<FileSystemSyncAccessHandle, Failure> {
    let options = FileSystemGetFileOptions::new();
    options.set_create(true);
    let file = await_promise(dir.get_file_handle_with_options(name, &options)).await.map_err(storage_failure)?;
    let file: FileSystemFileHandle = file.unchecked_into();
    let handle = await_promise(file.create_sync_access_handle()).await.map_err(|e| {
        if dom_error_name(&e).as_deref() == Some("NoModificationAllowedError") {
            Failure {
                kind: ErrorKind::Busy,
                detail: "the cached model is open in another tab of this app: close it and try again".into(),
            }
        } else {
            storage_failure(e)
        }
    })?;
    Ok(handle.unchecked_into())
}

/// A size or count the storage API gave, as bytes.
fn storage_u64(x: f64) -> Result<u64, Failure> {
    js_u64(x).ok_or_else(|| Failure {
        kind: ErrorKind::Internal,
        detail: format!("browser storage: {x} is not a size in bytes"),
    })
}

fn size_of(handle: &FileSystemSyncAccessHandle) -> Result<u64, Failure> {
    storage_u64(handle.get_size().map_err(storage_failure)?)
}

/// The first MiB at most of a small file (the `.json` beside a model).
fn read_all(handle: &FileSystemSyncAccessHandle) -> Result<Vec<u8>, Failure> {
    let mut bytes = vec![0; piece_len(size_of(handle)?, 1 << 20)];
    let options = FileSystemReadWriteOptions::new();
    options.set_at(0.0);
    let n = storage_u64(handle.read_with_u8_array_and_options(&mut bytes, &options).map_err(storage_failure)?)?;
    bytes.truncate(piece_len(n, bytes.len()));
    Ok(bytes)
}

fn write_all(handle: &FileSystemSyncAccessHandle, at: u64, bytes: &[u8]) -> Result<(), Failure> {
    let options = FileSystemReadWriteOptions::new();
    // Offsets as doubles, exact below 2^53: a model file passes 4 GiB.
    options.set_at(at as f64);
    let n = storage_u64(handle.write_with_u8_array_and_options(bytes, &options).map_err(storage_failure)?)?;
    if n != bytes.len() as u64 {
        return Err(Failure {
            kind: ErrorKind::StorageFull,
            detail: format!("the browser stored {n} of {} bytes: its storage for this site is full", bytes.len()),
        });
    }
    handle.flush().map_err(storage_failure)
}

impl CachedFile {
    /// Opens the cache of `url` for a file of `size` bytes. A cached file of another size (the
    /// model at that URL changed) is started over.
    pub async fn open(url: &str, size: u64) -> Result<Self, Failure> {
        let dir = dir().await?;
        let k = key(url);
        let meta_handle = open_handle(&dir, &format!("{k}.json")).await?;
        let meta: Option<Meta> = serde_json::from_slice(&read_all(&meta_handle)?).ok();
        let handle = match open_handle(&dir, &format!("{k}.gguf")).await {
            Ok(h) => h,
            Err(e) => {
                meta_handle.close();
                return Err(e);
            }
        };
        let fresh = Meta { url: url.into(), size };
        if meta.as_ref() != Some(&fresh) {
            let result = handle
                .truncate_with_f64(0.0)
                .map_err(storage_failure)
                .and_then(|_| meta_handle.truncate_with_f64(0.0).map_err(storage_failure))
                .and_then(|_| write_all(&meta_handle, 0, &serde_json::to_vec(&fresh).expect("meta serializes")));
            if let Err(e) = result {
                meta_handle.close();
                handle.close();
                return Err(e);
            }
        }
        meta_handle.close();
        Ok(CachedFile { handle, size })
    }

    /// The size recorded for `url`'s cached file, and how many bytes of it are cached; None when
    /// nothing is (so a visit can decide without the network).
    pub async fn peek(url: &str) -> Option<(u64, u64)> {
        let dir = dir().await.ok()?;
        let k = key(url);
        let meta_handle = open_handle(&dir, &format!("{k}.json")).await.ok()?;
        let meta: Option<Meta> = read_all(&meta_handle).ok().and_then(|b| serde_json::from_slice(&b).ok());
        meta_handle.close();
        let meta = meta.filter(|m| m.url == url)?;
        let handle = open_handle(&dir, &format!("{k}.gguf")).await.ok()?;
        let len = size_of(&handle).ok();
        handle.close();
        Some((meta.size, len?.min(meta.size)))
    }

    /// Bytes cached so far (from the start of the file).
    pub fn cached(&self) -> Result<u64, Failure> {
        Ok(size_of(&self.handle)?.min(self.size))
    }

    pub fn read(&self, at: u64, out: &mut [u8]) -> Result<(), Failure> {
        let options = FileSystemReadWriteOptions::new();
        options.set_at(at as f64);
        let n = storage_u64(self.handle.read_with_u8_array_and_options(out, &options).map_err(storage_failure)?)?;
        if n != out.len() as u64 {
            return Err(Failure {
                kind: ErrorKind::Internal,
                detail: format!("the cached model ended early ({n} of {} bytes at {at})", out.len()),
            });
        }
        Ok(())
    }

    /// Cuts the cached file back to its first `len` bytes (a preparation resuming after a torn write).
    pub fn truncate(&self, len: u64) -> Result<(), Failure> {
        self.handle.truncate_with_f64(len as f64).map_err(storage_failure)?;
        self.handle.flush().map_err(storage_failure)
    }

    /// Appends the file's bytes at `at` (which must be where the cache ends).
    pub fn append(&self, at: u64, bytes: &[u8]) -> Result<(), Failure> {
        write_all(&self.handle, at, bytes)
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        self.handle.close();
    }
}

/// Deletes `url`'s cached file (whole or partial); returns the bytes freed.
pub async fn delete(url: &str) -> Result<u64, Failure> {
    let freed = CachedFile::peek(url).await.map(|(_, cached)| cached).unwrap_or(0);
    let dir = dir().await?;
    let k = key(url);
    for name in [format!("{k}.gguf"), format!("{k}.json")] {
        if let Err(e) = await_promise(dir.remove_entry(&name)).await
            && dom_error_name(&e).as_deref() != Some("NotFoundError")
        {
            return Err(storage_failure(e));
        }
    }
    Ok(freed)
}

/// (usage, quota) of this origin's storage, when the browser says.
pub async fn estimate() -> Option<(u64, u64)> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let estimate = await_promise(scope.navigator().storage().estimate().ok()?).await.ok()?;
    let estimate: web_sys::StorageEstimate = estimate.unchecked_into();
    Some((js_u64(estimate.get_usage()?)?, js_u64(estimate.get_quota()?)?))
}

fn storage_failure(e: wasm_bindgen::JsValue) -> Failure {
    match dom_error_name(&e).as_deref() {
        Some("QuotaExceededError") => Failure {
            kind: ErrorKind::StorageFull,
            detail: "the browser's storage for this site is full (what was downloaded is kept)".into(),
        },
        _ => Failure { kind: ErrorKind::Internal, detail: format!("browser storage: {}", js_error(&e)) },
    }
}
