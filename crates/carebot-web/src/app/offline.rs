//! The page's side of the service worker (web/sw.js): registered at start so that the next visit
//! opens with the network off, and a new version, once fully cached, is offered as an update the
//! user applies with one click (the whole page and worker swap at once, on a reload).

use super::State;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{ServiceWorkerContainer, ServiceWorkerRegistration, ServiceWorkerState};

/// The build's name (`<meta name="carebot-build">`, written by scripts/offline.mjs).
pub fn build_version() -> Option<String> {
    let document = web_sys::window()?.document()?;
    document.query_selector("meta[name=carebot-build]").ok()??.get_attribute("content")
}

/// `navigator.serviceWorker`, where the page may have one (a secure context: https or localhost).
fn container() -> Option<ServiceWorkerContainer> {
    let navigator = web_sys::window()?.navigator();
    let value = js_sys::Reflect::get(&navigator, &"serviceWorker".into()).ok()?;
    value.dyn_into().ok()
}

/// Registers the service worker and watches for a new version. Without one (a plain-http host,
/// a browser without service workers) the app works as before, online only.
pub fn register(state: State) {
    // A page built without scripts/offline.mjs has no version, and its sw.js lists no files.
    if build_version().is_none() {
        return;
    }
    let Some(workers) = container() else { return };
    wasm_bindgen_futures::spawn_local(async move {
        let Ok(registration) = wasm_bindgen_futures::JsFuture::from(workers.register("sw.js")).await else {
            return;
        };
        let registration: ServiceWorkerRegistration = registration.unchecked_into();
        // A page with no controller is a first visit: its worker installs for the next one, and
        // there is nothing to update.
        let controlled = move || container().and_then(|c| c.controller()).is_some();
        if registration.waiting().is_some() && controlled() {
            state.update_ready.set(true);
        }
        let watched = registration.clone();
        let on_update = Closure::<dyn Fn()>::new(move || {
            let Some(installing) = watched.installing() else { return };
            let worker = installing.clone();
            let on_state = Closure::<dyn Fn()>::new(move || {
                if worker.state() == ServiceWorkerState::Installed && controlled() {
                    state.update_ready.set(true);
                }
            });
            installing.set_onstatechange(Some(on_state.as_ref().unchecked_ref()));
            on_state.forget();
        });
        registration.set_onupdatefound(Some(on_update.as_ref().unchecked_ref()));
        on_update.forget();
        // `register` does not look for a new version when this one is registered already: ask
        // (offline, this fails quietly and the cached version runs).
        if let Ok(promise) = registration.update() {
            let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
        }
    });
}

/// Switches to the waiting version: it takes over, and the page reloads from its files.
pub fn apply_update() {
    let Some(container) = container() else { return };
    let on_change = Closure::<dyn Fn()>::new(|| {
        if let Some(location) = web_sys::window().map(|w| w.location()) {
            let _ = location.reload();
        }
    });
    container.set_oncontrollerchange(Some(on_change.as_ref().unchecked_ref()));
    on_change.forget();
    wasm_bindgen_futures::spawn_local(async move {
        let Ok(registration) = wasm_bindgen_futures::JsFuture::from(container.get_registration()).await else { return };
        let Some(registration) = registration.dyn_ref::<ServiceWorkerRegistration>() else { return };
        if let Some(waiting) = registration.waiting() {
            let _ = waiting.post_message(&"carebot-update".into());
        }
    });
}
