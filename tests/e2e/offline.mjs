// End-to-end test of the installable app (Chromium): after one visit, the page opens and chats
// with the network off (its files from the service worker, the model from the Origin Private File
// System), and a new deploy replaces the old files whole, once the user agrees.
//
//   node tests/e2e/offline.mjs   (scripts/test-web.sh sets the environment: see chat.mjs)
//
// The app is served from a copy of dist/, which the test changes and names again with
// scripts/offline.mjs, as a new deploy would.

import { createServer } from "node:http";
import { readFileSync, writeFileSync, cpSync, rmSync, existsSync, statSync } from "node:fs";
import { join, extname } from "node:path";
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { OUT, DIST, ROOT, TYPES, launch, failed, waitState, ask, answer, reference, logger } from "./browser.mjs";

const MODEL_PATH = process.env.CAREBOT_E2E_MODEL || join(OUT, "tiny.gguf");
const model = readFileSync(MODEL_PATH);
const SITE = join(OUT, "offline-site");
rmSync(SITE, { recursive: true, force: true });
cpSync(DIST, SITE, { recursive: true });
const CSP = readFileSync(join(SITE, "csp.txt"), "utf8").trim();
const buildOf = (dir) => /<meta name="carebot-build" content="([0-9a-f]+)"/.exec(readFileSync(join(dir, "index.html"), "utf8"))?.[1];

// Every request that reached the server, while it was up.
const requests = [];
const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    requests.push(path);
    if (path === "/models/tiny.gguf") {
        const size = model.length;
        const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || "");
        if (!range) {
            res.writeHead(200, { "Content-Length": size });
            return res.end(model);
        }
        const [start, end] = [Number(range[1]), Math.min(range[2] ? Number(range[2]) : size - 1, size - 1)];
        res.writeHead(206, { "Content-Range": `bytes ${start}-${end}/${size}`, "Content-Length": end - start + 1, ETag: '"tiny-1"' });
        return res.end(model.subarray(start, end + 1));
    }
    let file = join(SITE, path === "/" ? "index.html" : path);
    if (!file.startsWith(SITE) || !existsSync(file) || statSync(file).isDirectory()) file = join(SITE, "index.html");
    const type = { ...TYPES, ".webmanifest": "application/manifest+json", ".png": "image/png" }[extname(file)];
    res.writeHead(200, { "Content-Type": type || "application/octet-stream", "Content-Security-Policy": CSP });
    res.end(readFileSync(file));
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const PORT = server.address().port;
const BASE = `http://127.0.0.1:${PORT}`;
const sockets = new Set();
server.on("connection", (s) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
/// The network off for this origin: the server is gone (and Chromium's offline mode is on, below).
async function serverDown() {
    const closed = new Promise((ok) => server.close(ok));
    for (const s of sockets) s.destroy();
    await closed;
}
const serverUp = () => new Promise((ok) => server.listen(PORT, "127.0.0.1", ok));

const { browser, open, pages, offsite, consoleErrors } = await launch(BASE);
const log = logger();
let step = "manifest";
try {
    // The manifest and its icons, as an install prompt reads them.
    const manifest = JSON.parse(readFileSync(join(SITE, "manifest.webmanifest"), "utf8"));
    assert.equal(manifest.display, "standalone");
    for (const icon of manifest.icons.filter((i) => i.type === "image/png")) {
        const png = readFileSync(join(SITE, icon.src));
        assert.equal(png.subarray(1, 4).toString(), "PNG", icon.src);
        const [w, h] = [png.readUInt32BE(16), png.readUInt32BE(20)];
        assert.equal(`${w}x${h}`, icon.sizes, icon.src);
    }
    assert.ok(manifest.icons.some((i) => i.purpose === "maskable" && i.sizes === "512x512"));

    // 1. One visit online: the model downloads, the service worker keeps the app's files.
    step = "first visit";
    const query = "?model=/models/tiny.gguf&temperature=0&max_tokens=12&system=";
    let page = await open(query);
    await page.click('[data-testid="accept-disclaimer"]');
    const first = await waitState(page, ["probed", "ready", "failed"]);
    if (first === "probed") await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    const v1 = buildOf(SITE);
    assert.equal(await page.getAttribute('[data-testid="app-build"]', "data-build"), v1);
    const cached = () => page.evaluate(async () => {
        const names = await caches.keys();
        const out = {};
        for (const n of names) out[n] = (await (await caches.open(n)).keys()).map((r) => new URL(r.url).pathname);
        return out;
    });
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.waitForFunction((v) => caches.has(`carebot-app-${v}`), v1);
    const files = JSON.parse(/const FILES = (\[.*\]);/.exec(readFileSync(join(SITE, "sw.js"), "utf8"))[1]);
    assert.ok(files.includes("index.html") && files.includes("carebot-worker_bg.wasm") && files.some((f) => f.startsWith("icons/")), files.join());
    assert.deepEqual((await cached())[`carebot-app-${v1}`].sort(), files.map((f) => `/${f}`).sort(), "precached files");
    log(`first visit: build ${v1}, ${files.length} files kept`);

    // 2. The network off: the page opens, loads the cached model and answers.
    step = "offline";
    await page.close();
    await serverDown();
    const question = "Is a fever of 38.5 dangerous?";
    const want = reference(question, 12, MODEL_PATH);
    page = await open(query, { collectErrors: false });
    await page.page.setOfflineMode(true);
    await page.reload();
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    assert.equal(await page.evaluate(() => navigator.onLine), false);
    assert.equal(await page.getAttribute('[data-testid="app-build"]', "data-build"), v1);
    const got = await answer(page, await ask(page, question));
    assert.equal(got, want, "the offline answer differs from `carebot generate --chat` (greedy)");
    log(`offline: opened, loaded from this device, answered ${JSON.stringify(got)}`);

    // 3. A new deploy (a changed file, named again as the build names it): the open page keeps
    //    its version until the user updates; then page and worker come from the new version only.
    step = "update";
    const manifestPath = join(SITE, "manifest.webmanifest");
    writeFileSync(manifestPath, readFileSync(manifestPath, "utf8").replace("A medical chat", "A private medical chat"));
    const renamed = spawnSync("node", [join(ROOT, "scripts/offline.mjs"), SITE], { encoding: "utf8" });
    assert.equal(renamed.status, 0, renamed.stderr);
    const v2 = buildOf(SITE);
    assert.ok(v2 && v2 !== v1, `${v1} → ${v2}`);
    await serverUp();
    await page.page.setOfflineMode(false);
    await page.reload();
    await page.waitForSelector('[data-testid="update-ready"]');
    // Until the user agrees, everything is the old version's.
    assert.equal(await page.getAttribute('[data-testid="app-build"]', "data-build"), v1);
    await page.click('[data-testid="apply-update"]');
    await page.waitForFunction((v) => document.querySelector('[data-testid="app-build"]')?.dataset.build === v, v2);
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    const after = await cached();
    assert.deepEqual(Object.keys(after).filter((k) => k.startsWith("carebot-app-")), [`carebot-app-${v2}`], "the old version's files are still kept");
    assert.equal(after[`carebot-app-${v2}`].length, files.length);
    const manifestNow = await page.evaluate(async () => (await (await fetch("manifest.webmanifest")).json()).description);
    assert.match(manifestNow, /A private medical chat/);
    assert.equal(requests.filter((p) => p === "/models/tiny.gguf").length > 0, true);
    log(`updated to build ${v2} after the user's click; only its files are kept`);
    await page.close();

    assert.deepEqual(offsite, [], "requests left 127.0.0.1");
    log("all offline checks passed");
} catch (e) {
    await failed(e, step, { pages, consoleErrors }, "offline-failure.png");
} finally {
    await browser.close();
    server.close();
    rmSync(SITE, { recursive: true, force: true });
}
