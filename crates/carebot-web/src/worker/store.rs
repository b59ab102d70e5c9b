//! The model cache in the Origin Private File System: one `<key>.gguf` per model URL, written in
//! order through a synchronous access handle (workers only), plus `<key>.json` saying which URL,
//! which version of it (the hub's commit, the server's ETag or Last-Modified), how many bytes the
//! whole file has, and whether all of them were written. A file not marked complete is a download
//! to resume, from the same version only: another version starts the file over, so no file ever
//! mixes two.

use super::js::{await_promise, dom_error_name, js_error};
use crate::numbers::js_u64;
use crate::protocol::{CachedModel, ErrorKind, Failure};
use carebot_model::offsets::piece_len;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use web_sys::{
    FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions,
    FileSystemReadWriteOptions, FileSystemSyncAccessHandle, WorkerGlobalScope,
};

const DIR: &str = "carebot-models";

/// The record beside a cached file. Records of earlier versions of the app (without a version)
/// do not parse, so their files start over: nothing says which version their bytes came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Meta {
    url: String,
    size: u64,
    /// The source's version; empty when it names none (such a file is never resumed).
    version: String,
    /// Every byte was written, all from `version`: the file is a model, not a download to resume.
    complete: bool,
    /// `general.name` (or the file name), once a probe has read the header. (Records written
    /// before the model manager have none; they stay valid.)
    #[serde(default)]
    name: String,
    /// When the model was last loaded, in milliseconds since 1970 (0: never).
    #[serde(default)]
    last_used: f64,
}

/// What the cache holds for a URL.
#[derive(Clone, Debug)]
pub struct Peek {
    pub size: u64,
    pub version: String,
    pub complete: bool,
}

/// One URL's cached file, open for reading and appending.
pub struct CachedFile {
    handle: FileSystemSyncAccessHandle,
    pub size: u64,
    key: String,
    meta: std::cell::RefCell<Meta>,
}

use crate::protocol::cache_file_key as key;

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

/// Most bytes of the record beside a model that are read: a few hundred are written, so a
/// bigger one is not ours and is not read whole.
const MAX_RECORD_BYTES: u32 = 1 << 20;

/// The first [`MAX_RECORD_BYTES`] at most of a small file (the `.json` beside a model).
fn read_all(handle: &FileSystemSyncAccessHandle) -> Result<Vec<u8>, Failure> {
    let mut bytes = vec![0; piece_len(size_of(handle)?, MAX_RECORD_BYTES as usize)];
    let options = FileSystemReadWriteOptions::new();
    options.set_at(0.0);
    let n = storage_u64(handle.read_with_u8_array_and_options(&mut bytes, &options).map_err(storage_failure)?)?;
    bytes.truncate(piece_len(n, bytes.len()));
    Ok(bytes)
}

/// Replaces the record beside a cached file.
fn write_meta(handle: &FileSystemSyncAccessHandle, meta: &Meta) -> Result<(), Failure> {
    handle.truncate_with_f64(0.0).map_err(storage_failure)?;
    write_all(handle, 0, &serde_json::to_vec(meta).expect("meta serializes"))
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
    /// Opens the cache of `url` for a file of `size` bytes from `version` of the source. A cached
    /// file of another size or version (the model there changed), or a partial one of no known
    /// version, is started over.
    pub async fn open(url: &str, size: u64, version: &str) -> Result<Self, Failure> {
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
        // A complete file is opened with the version it recorded; a partial one is resumed only
        // from a version the source names.
        let same =
            |m: &Meta| m.url == url && m.size == size && m.version == version && (m.complete || !version.is_empty());
        let meta = match meta.clone().filter(same) {
            Some(meta) => meta,
            None => {
                let fresh = Meta {
                    url: url.into(),
                    size,
                    version: version.into(),
                    complete: false,
                    name: meta.map(|m| m.name).unwrap_or_default(),
                    last_used: 0.0,
                };
                let result = handle
                    .truncate_with_f64(0.0)
                    .map_err(storage_failure)
                    .and_then(|_| write_meta(&meta_handle, &fresh));
                if let Err(e) = result {
                    meta_handle.close();
                    handle.close();
                    return Err(e);
                }
                fresh
            }
        };
        meta_handle.close();
        Ok(CachedFile { handle, size, key: k, meta: meta.into() })
    }

    /// What is cached for `url`, None when nothing is (so a visit can decide without the network).
    pub async fn peek(url: &str) -> Option<Peek> {
        let dir = dir().await.ok()?;
        let k = key(url);
        let meta_handle = open_handle(&dir, &format!("{k}.json")).await.ok()?;
        let meta: Option<Meta> = read_all(&meta_handle).ok().and_then(|b| serde_json::from_slice(&b).ok());
        meta_handle.close();
        let meta = meta.filter(|m| m.url == url)?;
        let handle = open_handle(&dir, &format!("{k}.gguf")).await.ok()?;
        let len = size_of(&handle).ok();
        handle.close();
        let cached = len?.min(meta.size);
        Some(Peek { size: meta.size, complete: meta.complete && cached == meta.size, version: meta.version })
    }

    /// The whole model is here: records it as complete (once), so the next visit loads it from
    /// the cache alone. Before that record a file is a download to resume, never a model.
    pub async fn finish(&self) -> Result<(), Failure> {
        if self.meta.borrow().complete || self.cached()? != self.size {
            return Ok(());
        }
        let complete = Meta { complete: true, ..self.meta.borrow().clone() };
        self.replace_meta(complete).await
    }

    /// Records the model's name (known once a probe read its header), for the model manager.
    pub async fn remember_name(&self, name: &str) -> Result<(), Failure> {
        if self.meta.borrow().name == name {
            return Ok(());
        }
        let meta = Meta { name: name.to_string(), ..self.meta.borrow().clone() };
        self.replace_meta(meta).await
    }

    /// Records that the model was loaded now, for the model manager.
    pub async fn remember_use(&self) -> Result<(), Failure> {
        let meta = Meta { last_used: js_sys::Date::now(), ..self.meta.borrow().clone() };
        self.replace_meta(meta).await
    }

    /// The source changed mid-download: drops every byte, and the version, so that the next
    /// visit downloads the new version from the start.
    pub async fn restart(&self) -> Result<(), Failure> {
        self.truncate(0)?;
        let fresh = Meta { version: String::new(), complete: false, ..self.meta.borrow().clone() };
        self.replace_meta(fresh).await
    }

    /// Writes `meta` as this file's record, then keeps it as the one in memory.
    async fn replace_meta(&self, meta: Meta) -> Result<(), Failure> {
        let meta_handle = open_handle(&dir().await?, &format!("{}.json", self.key)).await?;
        let result = write_meta(&meta_handle, &meta);
        meta_handle.close();
        result?;
        *self.meta.borrow_mut() = meta;
        Ok(())
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

/// Deletes the cached file named `key` ([`crate::protocol::cache_file_key`]), whole or partial,
/// with its record; returns the bytes freed.
pub async fn delete(key: &str) -> Result<u64, Failure> {
    let dir = dir().await?;
    let mut freed = 0;
    for name in [format!("{key}.gguf"), format!("{key}.json")] {
        let size = file_of(&dir, &name).await.map_or(0, |f| js_u64(f.size()).unwrap_or(0));
        match await_promise(dir.remove_entry(&name)).await {
            Ok(_) => freed += size,
            Err(e) => match dom_error_name(&e).as_deref() {
                Some("NotFoundError") => {}
                // Chromium refuses to remove a file a sync access handle holds; Firefox removes it
                // under the handle.
                Some("NoModificationAllowedError" | "InvalidModificationError") => {
                    return Err(Failure {
                        kind: ErrorKind::Busy,
                        detail: "this model is being read or downloaded (here or in another tab of this app): \
                                 wait for that to end, then delete it"
                            .into(),
                    });
                }
                _ => return Err(storage_failure(e)),
            },
        }
    }
    Ok(freed)
}

/// Files in the cache folder listed at most: far more than any browser's quota holds models.
const MAX_LISTED_FILES: usize = 4096;

/// A cache file as a `File` (a snapshot for reading, which needs no lock: a model being written
/// or read elsewhere still lists), None when there is no such file.
async fn file_of(dir: &FileSystemDirectoryHandle, name: &str) -> Option<web_sys::File> {
    let handle = await_promise(dir.get_file_handle(name)).await.ok()?;
    let handle: FileSystemFileHandle = handle.unchecked_into();
    Some(await_promise(handle.get_file()).await.ok()?.unchecked_into())
}

/// Every model in the cache, newest use first: complete ones, downloads to resume, and files no
/// record explains (a crash between writing a file and its record), each with what it takes on
/// disk, so that all of them can be seen and deleted.
pub async fn list() -> Result<Vec<CachedModel>, Failure> {
    let dir = dir().await?;
    let names = dir.keys();
    let mut keys = std::collections::BTreeSet::new();
    for _ in 0..MAX_LISTED_FILES {
        let step = await_promise(names.next().map_err(storage_failure)?).await.map_err(storage_failure)?;
        let step: js_sys::IteratorNext = step.unchecked_into();
        if step.done() {
            break;
        }
        if let Some(name) = step.value().as_string() {
            keys.insert(name.split_once('.').map_or(name.as_str(), |(k, _)| k).to_string());
        }
    }
    let mut models = Vec::with_capacity(keys.len());
    for key in keys {
        let model = file_of(&dir, &format!("{key}.gguf")).await;
        let record = file_of(&dir, &format!("{key}.json")).await;
        let on_disk = |f: &Option<web_sys::File>| f.as_ref().and_then(|f| js_u64(f.size())).unwrap_or(0);
        let stored = on_disk(&model) + on_disk(&record);
        let mut meta = None;
        if let Some(record) = record.filter(|r| r.size() <= f64::from(MAX_RECORD_BYTES))
            && let Ok(text) = await_promise(record.text()).await
        {
            meta = text.as_string().and_then(|t| serde_json::from_str::<Meta>(&t).ok());
        }
        let cached = on_disk(&model);
        models.push(match meta {
            Some(m) => CachedModel {
                complete: m.complete && cached == m.size,
                key,
                name: Some(m.name).filter(|n| !n.is_empty()),
                source: Some(m.url),
                size: Some(m.size),
                cached,
                stored,
                last_used: Some(m.last_used).filter(|t| *t > 0.0),
            },
            None => CachedModel {
                key,
                name: None,
                source: None,
                size: None,
                cached,
                stored,
                complete: false,
                last_used: None,
            },
        });
    }
    models.sort_by(|a, b| b.last_used.unwrap_or(0.0).total_cmp(&a.last_used.unwrap_or(0.0)));
    Ok(models)
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
