//! What the page keeps in localStorage between visits: settings, accepted links and rescue
//! copies as JSON through gloo-storage, the language tag and the disclaimer flag as the plain
//! text earlier versions wrote (gloo-storage reads and writes JSON, which those are not).
//!
//! Every access goes through here because gloo-storage panics where the page has no
//! localStorage (the user blocked storage for the site); that must only mean that nothing is
//! remembered.

use gloo_storage::errors::StorageError;
use gloo_storage::{LocalStorage, Storage};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// localStorage, where the browser gives this page one.
fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// The value kept at `key`: `Ok(None)` when there is none, or no localStorage; an error when
/// what is there cannot be read as a `T`.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, StorageError> {
    if storage().is_none() {
        return Ok(None);
    }
    match LocalStorage::get(key) {
        Ok(value) => Ok(Some(value)),
        Err(StorageError::KeyNotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Keeps `value` at `key`. Without localStorage nothing is kept, and that is not an error: the
/// page works the same and forgets. A full quota is one.
pub fn set<T: Serialize>(key: &str, value: T) -> Result<(), StorageError> {
    match storage() {
        Some(_) => LocalStorage::set(key, value),
        None => Ok(()),
    }
}

pub fn delete(key: &str) {
    if storage().is_some() {
        LocalStorage::delete(key);
    }
}

/// Every key that starts with `prefix`.
pub fn keys_starting_with(prefix: &str) -> Vec<String> {
    let Some(storage) = storage() else { return Vec::new() };
    let count = storage.length().unwrap_or(0);
    (0..count).filter_map(|i| storage.key(i).ok().flatten()).filter(|k| k.starts_with(prefix)).collect()
}

/// The plain text kept at `key`.
pub fn text(key: &str) -> Option<String> {
    storage()?.get_item(key).ok().flatten()
}

/// Keeps `value` at `key` as plain text; not kept (no storage, or full) it is asked or guessed
/// again next time, nothing worse.
pub fn set_text(key: &str, value: &str) {
    if let Some(storage) = storage() {
        let _ = storage.set_item(key, value);
    }
}
