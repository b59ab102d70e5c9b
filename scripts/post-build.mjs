// trunk's post_build hook (web/Trunk.toml), in order: the Content-Security-Policy step, then the
// offline one (service worker and build version), which must see the final files.
await import("./csp.mjs");
await import("./offline.mjs");
