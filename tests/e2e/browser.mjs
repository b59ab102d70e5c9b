// What the browser end-to-end tests share: a headless browser with WebGPU driven through
// puppeteer-core (Chromium over CDP: WebGPU on SwiftShader; Firefox over WebDriver BiDi: WebGPU on
// Mesa lavapipe), a page opener that collects console errors and off-site requests, and the steps
// a user takes. The tests are written once; CAREBOT_BROWSER=chromium|firefox picks the engine.

import { createRequire } from "node:module";
import { spawnSync } from "node:child_process";
import { mkdirSync, existsSync, statSync, readFileSync } from "node:fs";
import { join, resolve, extname } from "node:path";

export const ROOT = resolve(new URL("../..", import.meta.url).pathname);
export const DIST = process.env.CAREBOT_DIST || join(ROOT, "dist");
export const BIN = process.env.CAREBOT_BIN || join(ROOT, "target/release/carebot");
export const OUT = process.env.CAREBOT_E2E_OUT || join(ROOT, "target/e2e");
export const TIMEOUT = Number(process.env.CAREBOT_E2E_TIMEOUT_MS || 240_000);
export const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css", ".svg": "image/svg+xml" };
/// The browser engine under test: "chromium" or "firefox".
export const ENGINE = process.env.CAREBOT_BROWSER || "chromium";
if (!["chromium", "firefox"].includes(ENGINE)) throw new Error(`CAREBOT_BROWSER=${ENGINE}: chromium or firefox`);
mkdirSync(OUT, { recursive: true });

const require = createRequire(import.meta.url);
const puppeteer = require(process.env.PUPPETEER_CORE || join(ROOT, "target/web-tools/node_modules/puppeteer-core"));

/// Answers a request for `path` with the built app's file, or its index.html for any other path
/// (as a host set up for a single-page app does).
/// The Content-Security-Policy the build writes for static hosts (scripts/csp.mjs): the app is
/// served under it, as a host configured with `_headers` would.
const CSP = readFileSync(join(DIST, "csp.txt"), "utf8").trim();

export function serveApp(path, res) {
    let file = join(DIST, path === "/" ? "index.html" : path);
    if (!file.startsWith(DIST) || !existsSync(file) || statSync(file).isDirectory()) file = join(DIST, "index.html");
    res.writeHead(200, {
        "Content-Type": TYPES[extname(file)] || "application/octet-stream",
        "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
    });
    res.end(readFileSync(file));
}

/// Starts `server` on a free port of 127.0.0.1; returns its address.
export async function listen(server) {
    await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
    return `http://127.0.0.1:${server.address().port}`;
}

/// How each engine is started headless with WebGPU on. Chromium needs --enable-unsafe-webgpu;
/// Firefox ESR needs its WebGPU preference and, on a software adapter, the blocklist waived.
function engineOptions() {
    const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || "/tmp" };
    if (ENGINE === "firefox") {
        return {
            browser: "firefox", executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr", env,
            extraPrefsFirefox: {
                "dom.webgpu.enabled": true, "gfx.webgpu.ignore-blocklist": true,
                // navigator.storage.persist() asks the user in Firefox; headless, nobody answers.
                // These answer "Allow", as a user would.
                "dom.storageManager.prompt.testing": true, "dom.storageManager.prompt.testing.allow": true,
            },
        };
    }
    return {
        browser: "chrome", executablePath: process.env.CHROMIUM || "/usr/bin/chromium", env,
        args: ["--no-sandbox", "--disable-gpu-sandbox", "--enable-unsafe-webgpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    };
}

/// Starts the browser; `base` is the test server. Returns the browser, helpers, and the lists of
/// console errors and requests that left 127.0.0.1 (the worker's included: both engines report
/// them on the page). With `userDataDir` the profile lives on disk there, as a user's does (a
/// temporary profile's storage quota is too small for a model of several GB in Chromium).
export async function launch(base, { userDataDir } = {}) {
    const browser = await puppeteer.launch({
        ...engineOptions(), headless: true, userDataDir,
        defaultViewport: { width: 1200, height: 860 }, protocolTimeout: 3_600_000,
    });
    const offsite = [];
    const consoleErrors = [];
    const routes = []; // [url prefix, response] answered in the browser, for every page opened after
    const tabs = [];

    /// Opens the app at `query`. A link that sets anything asks the user first (once per profile
    /// for the same link); `acceptLink` (the default) accepts, as a user following their own link
    /// would; `false` leaves the dialog open for the test to answer.
    async function open(query, { collectErrors = true, acceptLink = true } = {}) {
        const page = await browser.newPage();
        page.setDefaultTimeout(TIMEOUT);
        page.on("request", (r) => {
            const u = new URL(r.url());
            if (!["blob:", "data:"].includes(u.protocol) && u.hostname !== "127.0.0.1") offsite.push(r.url());
        });
        if (routes.length) {
            await page.setRequestInterception(true);
            page.on("request", (r) => {
                if (r.isInterceptResolutionHandled()) return;
                const route = routes.find(([prefix]) => r.url().startsWith(prefix));
                if (!route) return r.continue();
                route[1].seen.push(r.url());
                return r.respond(route[1].response);
            });
        }
        if (collectErrors) {
            page.on("console", (m) => m.type() === "error" && consoleErrors.push(`${query}: ${m.text()}`));
            page.on("pageerror", (e) => consoleErrors.push(`${query}: ${e.message}`));
        }
        await page.goto(`${base}/${query}`);
        const tab = new Tab(page);
        if (acceptLink && query.startsWith("?")) {
            // The dialog is mounted with the page, so once the page is there it is too, or not.
            await page.waitForSelector(".app");
            if (await page.$('[data-testid="link-consent"]')) await page.click('[data-testid="link-accept"]');
        }
        tabs.push(tab);
        return tab;
    }
    /// Answers requests to URLs starting with `prefix` with `response` ({ status, body }) in the
    /// browser, for pages opened from now on; returns the list of URLs so answered.
    function route(prefix, response) {
        const seen = [];
        routes.push([prefix, { seen, response: { contentType: "text/plain", headers: { "Access-Control-Allow-Origin": "*" }, ...response } }]);
        return seen;
    }
    const pages = () => tabs.filter((t) => !t.page.isClosed());
    return { browser, open, route, pages, offsite, consoleErrors };
}

/// A page, with the few Playwright-style steps the tests take. Every step waits for its element.
/// Clicks and typing first bring the tab to the front, as a user's hand would: a background tab
/// gets no animation frames, which the locators wait for.
export class Tab {
    constructor(page) { this.page = page; }
    async element(sel) { return this.page.waitForSelector(sel); }
    async click(sel) { await this.page.bringToFront(); await this.page.locator(sel).click(); }
    async fill(sel, text) { await this.page.bringToFront(); await this.page.locator(sel).fill(text); }
    async textContent(sel) { return (await this.element(sel)).evaluate((e) => e.textContent); }
    async getAttribute(sel, name) { return (await this.element(sel)).evaluate((e, n) => e.getAttribute(n), name); }
    async inputValue(sel) { return (await this.element(sel)).evaluate((e) => e.value); }
    /// Whether the `index`th element matching `sel` (from the end when negative) is shown.
    async isVisible(sel, index = 0) {
        return this.page.$$eval(sel, (all, i) => all.at(i)?.checkVisibility() ?? false, index);
    }
    async count(sel) { return this.page.$$eval(sel, (all) => all.length); }
    async texts(sel) { return this.page.$$eval(sel, (all) => all.map((e) => e.textContent)); }
    /// Attribute `name` of the `index`th element matching `sel` (from the end when negative).
    async attributeOf(sel, index, name) {
        return this.page.$$eval(sel, (all, i, n) => all.at(i)?.getAttribute(n) ?? null, index, name);
    }
    async textOf(sel, index) { return this.page.$$eval(sel, (all, i) => all.at(i)?.textContent ?? null, index); }
    /// Clicks the `index`th element matching `sel` (negative: from the end); one drawn again
    /// between finding and clicking it is found again.
    async clickOf(sel, index) {
        await this.page.bringToFront();
        for (let tries = 1; ; tries++) {
            const all = await this.page.$$(sel);
            try {
                return await all.at(index).click();
            } catch (e) {
                if (tries === 5 || !/detached/i.test(String(e))) throw e;
            }
        }
    }
    /// Clicks the first element matching `sel` whose text contains `text`. A locator, so a list
    /// drawn again between finding the element and clicking it is found again, not clicked detached.
    async clickText(sel, text) {
        await this.page.bringToFront();
        await this.page.locator(`${sel}::-p-text(${JSON.stringify(text)})`).click();
    }
    async waitForSelector(sel, timeout) { await this.page.waitForSelector(sel, timeout ? { timeout } : {}); }
    /// Waits until `fn(arg)` is true in the page (checked every 100 ms: headless pages may not paint).
    async waitForFunction(fn, arg, { timeout } = {}) {
        await this.page.waitForFunction(fn, { polling: 100, ...(timeout ? { timeout } : {}) }, arg);
    }
    async evaluate(fn, arg) { return this.page.evaluate(fn, arg); }
    async reload() { await this.page.reload(); }
    async close() { await this.page.close(); }
    async screenshot(options) { await this.page.screenshot(options); }
    /// Picks `path` in the file input `sel`, as a user's file dialog does.
    async setInputFiles(sel, path) { await (await this.element(sel)).uploadFile(path); }
}

/// The model the page's worker cached for `url` (the app's Origin Private File System): its
/// record, size and SHA-256; with `uploadAs`, the file is also POSTed to the test server's
/// `/upload/NAME`. `null` when nothing is cached for `url`.
export function cachedModel(page, url, uploadAs = null) {
    return page.evaluate(async ([url, uploadAs]) => {
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("carebot-models");
        for await (const [entry, handle] of dir.entries()) {
            if (!entry.endsWith(".json")) continue;
            // A record being written by the worker, or of a file just created, may be empty.
            let meta = null;
            try { meta = JSON.parse(await (await handle.getFile()).text()); } catch { continue; }
            if (meta.url !== url) continue;
            const gguf = await (await dir.getFileHandle(entry.replace(/\.json$/, ".gguf"))).getFile();
            if (uploadAs) await fetch(`/upload/${uploadAs}`, { method: "POST", body: gguf });
            const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await gguf.arrayBuffer()));
            return { meta, size: gguf.size, sha: [...digest].map((b) => b.toString(16).padStart(2, "0")).join("") };
        }
        return null;
    }, [url, uploadAs]);
}

export const state = (page) => page.getAttribute('[data-testid="model-status"]', "data-state");

export async function waitState(page, wanted, timeout = TIMEOUT) {
    await page.waitForFunction(
        (w) => w.includes(document.querySelector('[data-testid="model-status"]')?.dataset.state),
        wanted, { timeout });
    return state(page);
}

/// Sends `text`; returns the index of the answer it starts.
export async function ask(page, text) {
    const before = await page.count('[data-testid="assistant-message"]');
    await page.fill('[data-testid="chat-input"]', text);
    await page.click('[data-testid="send"]');
    await page.waitForFunction(
        (n) => document.querySelectorAll('[data-testid="assistant-message"]').length > n,
        before);
    return before;
}

/// The text of answer `index` once it is complete.
export async function answer(page, index, timeout = TIMEOUT) {
    const sel = '[data-testid="assistant-message"]';
    await page.waitForFunction(([s, i]) => document.querySelectorAll(s)[i]?.dataset.done === "true", [sel, index], { timeout });
    return page.attributeOf(sel, index, "data-text");
}

/// `carebot generate --chat` greedy, natively (lavapipe here): the answer the page must give, and
/// its writing speed (tokens after the first per second, as the page measures it; null under 2).
export function generateNative(prompt, maxTokens, path) {
    const run = spawnSync(BIN, ["generate", "--model", path, "--chat", "--prompt", prompt,
        "--temperature", "0", "--max-tokens", String(maxTokens)], { env: { ...process.env, XDG_RUNTIME_DIR: "/tmp" }, maxBuffer: 1 << 26 });
    const stderr = run.stderr.toString("utf8");
    process.stderr.write(stderr);
    if (run.status !== 0) throw new Error(`carebot generate failed (${run.status ?? run.signal}): ${stderr}`);
    const writing = /writing ([0-9.]+) tok\/s/.exec(stderr);
    return { text: run.stdout.toString("utf8").replace(/\n$/, ""), tokensPerSecond: writing ? Number(writing[1]) : null };
}

/// What `carebot info` read from `path` that changes the math (its "model" line): the page's
/// model details must say the same.
export function nativeSummary(path) {
    const run = spawnSync(BIN, ["info", path, "--backend", "cpu"], { env: { ...process.env, XDG_RUNTIME_DIR: "/tmp" } });
    if (run.status !== 0) throw new Error(`carebot info failed: ${run.stderr}`);
    return /^model {9}(.*)$/m.exec(run.stdout.toString("utf8"))?.[1];
}

/// `carebot generate --chat` greedy: the answer the page must give.
export const reference = (prompt, maxTokens, path) => generateNative(prompt, maxTokens, path).text;

export function logger() {
    const t0 = Date.now();
    return (msg) => console.log(`[${ENGINE} ${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
}

/// A screenshot's file name for this engine: "chat.png" → "chat-firefox.png".
export const shot = (name) => join(OUT, name.replace(/\.png$/, `-${ENGINE}.png`));

/// After a failed step: says which, keeps a screenshot of every open page, fails the run.
export async function failed(e, step, { pages, consoleErrors }, name) {
    console.error(`e2e (${ENGINE}) failed during "${step}": ${e.stack || e}`);
    // One screenshot per open tab: name.png, name-2.png, ...
    for (const [i, p] of pages().entries()) {
        const each = i === 0 ? name : name.replace(/\.png$/, `-${i + 1}.png`);
        await p.screenshot({ path: shot(each), fullPage: true }).catch(() => {});
    }
    console.error(`console errors: ${JSON.stringify(consoleErrors, null, 1)}`);
    process.exitCode = 1;
}
