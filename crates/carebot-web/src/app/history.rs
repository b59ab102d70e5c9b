//! Conversations kept in this browser's IndexedDB (database `carebot`), each stored as its JSON
//! text under its id. Nothing is ever sent anywhere.
//!
//! Schema, version 2: store `conversations` (`{id, json, rev}`, key path `id`) and store
//! `unreadable` (records that did not parse, kept aside as they were). Version 1 had only
//! `conversations`, without `rev`; upgrading adds `unreadable` and keeps every record.
//!
//! Every write resolves when its transaction completes, not when its request succeeds: only then
//! is the record on disk, and a quota failure shows up as the transaction's abort. One connection
//! is kept per page and closed when another tab upgrades the schema.
//!
//! Not `gloo` here: gloo has no IndexedDB module, and `indexed_db_futures` resolves on requests,
//! which is what this module must not do.

use crate::conversation::Conversation;
use js_sys::Promise;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    IdbDatabase, IdbObjectStoreParameters, IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbTransactionMode,
};

const DB: &str = "carebot";
const VERSION: u32 = 2;
const STORE: &str = "conversations";
const UNREADABLE: &str = "unreadable";

/// Why a save or read failed.
#[derive(Debug)]
pub enum StoreError {
    /// The stored record changed since this copy was read (another tab saved it): nothing was
    /// written. Holds what is stored now (`None`: it was deleted).
    Conflict(Option<Box<Conversation>>),
    /// The browser's storage for this site is full (`QuotaExceededError`): nothing was written.
    Quota(String),
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(_) => write!(f, "the conversation was changed in another tab"),
            StoreError::Quota(m) | StoreError::Other(m) => f.write_str(m),
        }
    }
}

fn js_error(e: JsValue) -> StoreError {
    if let Some(d) = e.dyn_ref::<web_sys::DomException>() {
        let text = format!("{}: {}", d.name(), d.message());
        return if d.name() == "QuotaExceededError" { StoreError::Quota(text) } else { StoreError::Other(text) };
    }
    StoreError::Other(e.as_string().unwrap_or_else(|| format!("{e:?}")))
}

thread_local! {
    static CONNECTION: RefCell<Option<IdbDatabase>> = const { RefCell::new(None) };
}

/// A future settled by the events that `set_ok` / `set_fail` hook (of a request or a transaction),
/// with the values the two closures read then.
fn settle(
    set_ok: impl FnOnce(&js_sys::Function),
    set_fail: impl FnOnce(&js_sys::Function),
    ok_value: impl FnOnce() -> JsValue + 'static,
    fail_value: impl FnOnce() -> JsValue + 'static,
) -> JsFuture {
    let (mut ok_value, mut fail_value) = (Some(ok_value), Some(fail_value));
    let (mut set_ok, mut set_fail) = (Some(set_ok), Some(set_fail));
    let promise = Promise::new(&mut |resolve, reject| {
        let value = ok_value.take().expect("a promise runs its executor once");
        let ok = Closure::once_into_js(move || {
            let _ = resolve.call1(&JsValue::NULL, &value());
        });
        let value = fail_value.take().expect("a promise runs its executor once");
        let fail = Closure::once_into_js(move || {
            let _ = reject.call1(&JsValue::NULL, &value());
        });
        (set_ok.take().expect("once"))(ok.unchecked_ref());
        (set_fail.take().expect("once"))(fail.unchecked_ref());
    });
    JsFuture::from(promise)
}

/// A request's result once it succeeds.
async fn request_done(request: &IdbRequest) -> Result<JsValue, StoreError> {
    let (r1, r2) = (request.clone(), request.clone());
    settle(
        |f| request.set_onsuccess(Some(f)),
        |f| request.set_onerror(Some(f)),
        move || r1.result().unwrap_or(JsValue::UNDEFINED),
        move || r2.error().ok().flatten().map(JsValue::from).unwrap_or_else(|| "IndexedDB request failed".into()),
    )
    .await
    .map_err(js_error)
}

/// Resolves when `tx` has committed; fails when it aborts (quota, a conflict we abort on) or errs.
async fn committed(tx: &IdbTransaction) -> Result<(), StoreError> {
    let t = tx.clone();
    let fail = move || t.error().map(JsValue::from).unwrap_or_else(|| "the IndexedDB transaction was aborted".into());
    let t = tx.clone();
    // A failed request's `error` bubbles to the transaction, which then aborts: `abort` settles it.
    settle(|f| tx.set_oncomplete(Some(f)), |f| t.set_onabort(Some(f)), || JsValue::UNDEFINED, fail)
        .await
        .map(|_| ())
        .map_err(js_error)
}

/// The page's connection, opened (and upgraded) on first use.
async fn db() -> Result<IdbDatabase, StoreError> {
    if let Some(db) = CONNECTION.with(|c| c.borrow().clone()) {
        return Ok(db);
    }
    let factory = web_sys::window().and_then(|w| w.indexed_db().ok().flatten()).ok_or_else(|| {
        StoreError::Other("this browser has no IndexedDB (private mode?): conversations cannot be saved".into())
    })?;
    let request: IdbOpenDbRequest = factory.open_with_u32(DB, VERSION).map_err(js_error)?;
    let upgrade = Closure::<dyn FnMut(web_sys::IdbVersionChangeEvent)>::new(|e: web_sys::IdbVersionChangeEvent| {
        let Some(request) = e.target().and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok()) else { return };
        let Some(db) = request.result().ok().and_then(|r| r.dyn_into::<IdbDatabase>().ok()) else { return };
        // Version 0 → 2 makes both stores; 1 → 2 adds `unreadable` and leaves every record as it is.
        if !db.object_store_names().contains(STORE) {
            let params = IdbObjectStoreParameters::new();
            params.set_key_path(&JsValue::from_str("id"));
            let _ = db.create_object_store_with_optional_parameters(STORE, &params);
        }
        if !db.object_store_names().contains(UNREADABLE) {
            let params = IdbObjectStoreParameters::new();
            params.set_key_path(&JsValue::from_str("id"));
            let _ = db.create_object_store_with_optional_parameters(UNREADABLE, &params);
        }
    });
    request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    // Another tab still holds an older version open and does not close it: say so, don't hang.
    let blocked = Closure::<dyn FnMut()>::new({
        let request = request.clone();
        move || {
            if let Some(onerror) = request.onerror() {
                let _ = onerror.call0(&JsValue::NULL);
            }
            // If the other tab lets go later, the connection opens: close it, the next call opens again.
            let late = request.clone();
            let close = Closure::once_into_js(move || {
                if let Ok(db) = late.result().and_then(|r| r.dyn_into::<IdbDatabase>()) {
                    db.close();
                }
            });
            request.set_onsuccess(Some(close.unchecked_ref()));
        }
    });
    request.set_onblocked(Some(blocked.as_ref().unchecked_ref()));
    let opened = request_done(&request).await;
    drop((upgrade, blocked));
    let db: IdbDatabase = match opened {
        Ok(db) => db.unchecked_into(),
        Err(_) if request.ready_state() == web_sys::IdbRequestReadyState::Pending => {
            return Err(StoreError::Other(
                "another CareBot tab holds the saved conversations open in an older version: reload or close it".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    // A newer page in another tab wants to upgrade: step aside; the next call opens again.
    let on_version_change = Closure::<dyn FnMut()>::new({
        let db = db.clone();
        move || {
            db.close();
            CONNECTION.with(|c| *c.borrow_mut() = None);
        }
    });
    db.set_onversionchange(Some(on_version_change.as_ref().unchecked_ref()));
    on_version_change.forget();
    CONNECTION.with(|c| *c.borrow_mut() = Some(db.clone()));
    Ok(db)
}

fn transaction(db: &IdbDatabase, stores: &[&str], mode: IdbTransactionMode) -> Result<IdbTransaction, StoreError> {
    let names = stores.iter().map(|s| JsValue::from_str(s)).collect::<js_sys::Array>();
    db.transaction_with_str_sequence_and_mode(&names, mode).map_err(js_error)
}

fn record(c: &Conversation) -> Result<JsValue, StoreError> {
    let record = js_sys::Object::new();
    let json = serde_json::to_string(c).map_err(|e| StoreError::Other(e.to_string()))?;
    for (key, value) in [("id", JsValue::from_str(&c.id)), ("json", json.into()), ("rev", JsValue::from(c.rev as f64))]
    {
        js_sys::Reflect::set(&record, &key.into(), &value).map_err(js_error)?;
    }
    Ok(record.into())
}

fn parse(record: &JsValue) -> Option<Conversation> {
    let json = js_sys::Reflect::get(record, &"json".into()).ok()?.as_string()?;
    let mut c: Conversation = serde_json::from_str(&json).ok()?;
    c.rev = rev_of(record)?;
    Some(c)
}

/// The record's `rev`, the one compared; version 1 records have none (0).
fn rev_of(record: &JsValue) -> Option<u64> {
    let rev = js_sys::Reflect::get(record, &"rev".into()).ok()?;
    if rev.is_undefined() { Some(0) } else { rev.as_f64().and_then(crate::numbers::js_u64) }
}

/// Saves `c` if the stored record is still at `c.rev` (or absent and `c.rev` is 0), as `c.rev + 1`,
/// in one transaction. Returns the new `rev`.
pub async fn put(c: &Conversation) -> Result<u64, StoreError> {
    let db = db().await?;
    let tx = transaction(&db, &[STORE], IdbTransactionMode::Readwrite)?;
    let store = tx.object_store(STORE).map_err(js_error)?;
    let mut next = c.clone();
    next.rev = c.rev + 1;
    let new_record = record(&next)?;
    let get = store.get(&JsValue::from_str(&c.id)).map_err(js_error)?;
    let conflict: Rc<RefCell<Option<Option<Box<Conversation>>>>> = Rc::default();
    let on_read = Closure::once_into_js({
        let (get, tx, conflict, base) = (get.clone(), tx.clone(), conflict.clone(), c.rev);
        move || {
            let stored = get.result().ok().filter(|r| !r.is_undefined());
            let stored_rev = stored.as_ref().map(rev_of);
            // Absent is right for a new conversation (rev 0); deleted elsewhere after we saved it
            // is a conflict the caller settles.
            if stored_rev.map_or(base == 0, |r| r == Some(base)) {
                if store.put(&new_record).is_err() {
                    let _ = tx.abort();
                }
            } else {
                *conflict.borrow_mut() = Some(stored.as_ref().and_then(parse).map(Box::new));
                let _ = tx.abort();
            }
        }
    });
    get.set_onsuccess(Some(on_read.unchecked_ref()));
    let result = committed(&tx).await;
    if let Some(stored) = conflict.borrow_mut().take() {
        return Err(StoreError::Conflict(stored));
    }
    result.map(|()| next.rev)
}

/// Saved conversations, most recently changed first, and how many records could not be read
/// (moved now to the `unreadable` store, untouched, so nothing is dropped).
pub struct Listing {
    pub conversations: Vec<Conversation>,
    pub set_aside: usize,
}

pub async fn list() -> Result<Listing, StoreError> {
    let db = db().await?;
    let tx = transaction(&db, &[STORE], IdbTransactionMode::Readonly)?;
    let request = tx.object_store(STORE).and_then(|s| s.get_all()).map_err(js_error)?;
    let all: js_sys::Array = request_done(&request).await?.unchecked_into();
    let (mut conversations, mut bad) = (Vec::new(), Vec::new());
    for r in all.iter() {
        match parse(&r) {
            Some(c) => conversations.push(c),
            None => bad.push(r),
        }
    }
    if !bad.is_empty() {
        let tx = transaction(&db, &[STORE, UNREADABLE], IdbTransactionMode::Readwrite)?;
        let (from, to) = (tx.object_store(STORE).map_err(js_error)?, tx.object_store(UNREADABLE).map_err(js_error)?);
        for r in &bad {
            let Ok(id) = js_sys::Reflect::get(r, &"id".into()) else { continue };
            to.put(r).map_err(js_error)?;
            from.delete(&id).map_err(js_error)?;
        }
        committed(&tx).await?;
    }
    conversations.sort_by(|a, b| b.updated.total_cmp(&a.updated));
    Ok(Listing { conversations, set_aside: bad.len() })
}

/// One saved conversation as stored now.
pub async fn get(id: &str) -> Result<Option<Conversation>, StoreError> {
    let db = db().await?;
    let tx = transaction(&db, &[STORE], IdbTransactionMode::Readonly)?;
    let request = tx.object_store(STORE).and_then(|s| s.get(&JsValue::from_str(id))).map_err(js_error)?;
    Ok(Some(request_done(&request).await?).filter(|r| !r.is_undefined()).as_ref().and_then(parse))
}

async fn write(change: impl FnOnce(&web_sys::IdbObjectStore) -> Result<IdbRequest, JsValue>) -> Result<(), StoreError> {
    let db = db().await?;
    let tx = transaction(&db, &[STORE], IdbTransactionMode::Readwrite)?;
    change(&tx.object_store(STORE).map_err(js_error)?).map_err(js_error)?;
    committed(&tx).await
}

pub async fn delete(id: &str) -> Result<(), StoreError> {
    write(|s| s.delete(&JsValue::from_str(id))).await
}

pub async fn clear() -> Result<(), StoreError> {
    write(|s| s.clear()).await
}
