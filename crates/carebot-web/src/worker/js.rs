//! Small bridges to JavaScript shared by the worker's modules.

use wasm_bindgen::{JsCast, JsValue};

pub async fn await_promise(p: js_sys::Promise) -> Result<JsValue, JsValue> {
    wasm_bindgen_futures::JsFuture::from(p).await
}

/// The `name` of a DOMException (`QuotaExceededError`, `NotFoundError`, …).
pub fn dom_error_name(e: &JsValue) -> Option<String> {
    e.dyn_ref::<web_sys::DomException>().map(|d| d.name())
}

/// A JavaScript error as one line of text.
pub fn js_error(e: &JsValue) -> String {
    if let Some(d) = e.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", d.name(), d.message());
    }
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// Milliseconds on a monotonic-enough clock.
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Bytes of this worker's wasm memory (it only grows, so this is also the peak).
pub fn wasm_heap_bytes() -> u64 {
    wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as u64
}
