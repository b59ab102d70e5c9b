// CareBot's service worker: after one visit the page opens with the network off (the model itself
// is in the Origin Private File System already), and a new deploy replaces the old one whole.
//
// scripts/offline.mjs (a trunk post_build hook) fills in the two constants below: the build's
// version (a hash of every file it serves) and the files to keep. Each version's files live in
// their own cache, written completely before that version may start; every request for an app
// file is answered from the cache of the version running, so a page and its worker never mix two
// builds. A new version waits until the page says the user chose to update (or until every tab
// of the old one is closed), then removes the old cache.
const VERSION = "__CAREBOT_VERSION__";
const FILES = __CAREBOT_FILES__;
const CACHE = `carebot-app-${VERSION}`;

self.addEventListener("install", (event) => {
    // `cache: "reload"`: straight from the server, never from an HTTP cache holding an older file.
    event.waitUntil(caches.open(CACHE).then((cache) =>
        cache.addAll(FILES.map((f) => new Request(f, { cache: "reload" })))));
});

self.addEventListener("activate", (event) => {
    event.waitUntil(caches.keys()
        .then((keys) => Promise.all(keys.filter((k) => k.startsWith("carebot-app-") && k !== CACHE)
            .map((k) => caches.delete(k))))
        .then(() => self.clients.claim()));
});

self.addEventListener("message", (event) => {
    if (event.data === "carebot-update") self.skipWaiting();
    if (event.data === "carebot-version") event.source?.postMessage({ carebotVersion: VERSION });
});

self.addEventListener("fetch", (event) => {
    const request = event.request;
    if (request.method !== "GET") return;
    const url = new URL(request.url);
    const scope = new URL(self.registration.scope);
    if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
    // The app's address, with any query (a link's ?model=…), is its index.html.
    const file = url.pathname.slice(scope.pathname.length) || "index.html";
    // Everything else (a model file or another page on this origin) goes to the network untouched.
    if (!FILES.includes(file)) return;
    event.respondWith(caches.open(CACHE)
        .then((cache) => cache.match(file))
        .then((cached) => cached || fetch(request)));
});
