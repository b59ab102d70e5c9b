//! Conversations kept in this browser's IndexedDB (database `carebot`, store `conversations`),
//! each stored as its JSON text under its id. Nothing is ever sent anywhere.

use crate::conversation::Conversation;
use js_sys::Promise;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbObjectStoreParameters, IdbOpenDbRequest, IdbRequest, IdbTransactionMode};

const DB: &str = "carebot";
const STORE: &str = "conversations";

/// A request's result once it succeeds.
async fn done(request: &IdbRequest) -> Result<JsValue, String> {
    let r1 = request.clone();
    let r2 = request.clone();
    let promise = Promise::new(&mut |resolve, reject| {
        let r = r1.clone();
        let ok = Closure::once_into_js(move || {
            let _ = resolve.call1(&JsValue::NULL, &r.result().unwrap_or(JsValue::UNDEFINED));
        });
        let r = r2.clone();
        let err = Closure::once_into_js(move || {
            let msg =
                r.error().ok().flatten().map(|e| e.message()).unwrap_or_else(|| "IndexedDB request failed".into());
            let _ = reject.call1(&JsValue::NULL, &JsValue::from_str(&msg));
        });
        request.set_onsuccess(Some(ok.unchecked_ref()));
        request.set_onerror(Some(err.unchecked_ref()));
    });
    JsFuture::from(promise).await.map_err(|e| e.as_string().unwrap_or_else(|| format!("{e:?}")))
}

async fn open() -> Result<IdbDatabase, String> {
    let factory = web_sys::window()
        .and_then(|w| w.indexed_db().ok().flatten())
        .ok_or("this browser has no IndexedDB (private mode?): conversations cannot be saved")?;
    let request: IdbOpenDbRequest = factory.open_with_u32(DB, 1).map_err(|e| format!("{e:?}"))?;
    let upgrade =
        Closure::<dyn FnMut(web_sys::IdbVersionChangeEvent)>::new(move |e: web_sys::IdbVersionChangeEvent| {
            let request: IdbOpenDbRequest = e.target().expect("upgrade has a target").unchecked_into();
            let db: IdbDatabase = request.result().expect("upgrade has a database").unchecked_into();
            if !db.object_store_names().contains(STORE) {
                let params = IdbObjectStoreParameters::new();
                params.set_key_path(&JsValue::from_str("id"));
                let _ = db.create_object_store_with_optional_parameters(STORE, &params);
            }
        });
    request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let db = done(&request).await?;
    drop(upgrade);
    Ok(db.unchecked_into())
}

fn store(db: &IdbDatabase, mode: IdbTransactionMode) -> Result<web_sys::IdbObjectStore, String> {
    db.transaction_with_str_and_mode(STORE, mode).and_then(|t| t.object_store(STORE)).map_err(|e| format!("{e:?}"))
}

/// Saves (or replaces) a conversation.
pub async fn put(c: &Conversation) -> Result<(), String> {
    let db = open().await?;
    let record = js_sys::Object::new();
    js_sys::Reflect::set(&record, &"id".into(), &c.id.as_str().into()).map_err(|e| format!("{e:?}"))?;
    let json = serde_json::to_string(c).map_err(|e| e.to_string())?;
    js_sys::Reflect::set(&record, &"json".into(), &json.into()).map_err(|e| format!("{e:?}"))?;
    let request = store(&db, IdbTransactionMode::Readwrite)?.put(&record).map_err(|e| format!("{e:?}"))?;
    done(&request).await.map(|_| ())
}

/// Every saved conversation, most recently changed first.
pub async fn list() -> Result<Vec<Conversation>, String> {
    let db = open().await?;
    let request = store(&db, IdbTransactionMode::Readonly)?.get_all().map_err(|e| format!("{e:?}"))?;
    let all: js_sys::Array = done(&request).await?.unchecked_into();
    let mut out: Vec<Conversation> = all
        .iter()
        .filter_map(|r| js_sys::Reflect::get(&r, &"json".into()).ok()?.as_string())
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect();
    out.sort_by(|a, b| b.updated.total_cmp(&a.updated));
    Ok(out)
}

pub async fn delete(id: &str) -> Result<(), String> {
    let db = open().await?;
    let request = store(&db, IdbTransactionMode::Readwrite)?.delete(&id.into()).map_err(|e| format!("{e:?}"))?;
    done(&request).await.map(|_| ())
}

pub async fn clear() -> Result<(), String> {
    let db = open().await?;
    let request = store(&db, IdbTransactionMode::Readwrite)?.clear().map_err(|e| format!("{e:?}"))?;
    done(&request).await.map(|_| ())
}
