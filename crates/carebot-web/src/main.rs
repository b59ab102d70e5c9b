//! The chat page. Built for the browser by trunk; natively there is nothing to run.

#[cfg(target_arch = "wasm32")]
fn main() {
    carebot_web::app::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("carebot-web runs in the browser: cd web && trunk serve");
}
