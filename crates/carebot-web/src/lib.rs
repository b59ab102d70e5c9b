//! CareBot Web: the chat page (Leptos) and the inference worker (the `carebot-gpu` engine on
//! WebGPU), two wasm binaries built by trunk from `web/index.html`. What both share, and what can
//! be tested natively, lives here: the page↔worker protocol, safe Markdown, link parameters and
//! the UI's two languages, and the hub source's names and resume arithmetic.

pub mod conversation;
pub mod hub;
pub mod i18n;
pub mod markdown;
pub mod numbers;
pub mod params;
pub mod protocol;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod worker;
