//! The inference worker: loads the model and answers in a dedicated Web Worker, so the page never
//! blocks. Built for the browser by trunk; natively there is nothing to run.

#[cfg(target_arch = "wasm32")]
fn main() {
    carebot_web::worker::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("carebot-worker runs in the browser, started by the carebot-web page");
}
