// What the browser end-to-end tests share: headless Chromium with WebGPU (SwiftShader) through
// playwright-core, a page opener that collects console errors, and the steps a user takes.

import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import { mkdirSync, existsSync, statSync, readFileSync } from "node:fs";
import { join, resolve, extname } from "node:path";

export const ROOT = resolve(new URL("../..", import.meta.url).pathname);
export const DIST = process.env.CAREBOT_DIST || join(ROOT, "dist");
export const BIN = process.env.CAREBOT_BIN || join(ROOT, "target/release/carebot");
export const OUT = process.env.CAREBOT_E2E_OUT || join(ROOT, "target/e2e");
export const TIMEOUT = Number(process.env.CAREBOT_E2E_TIMEOUT_MS || 240_000);
export const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css", ".svg": "image/svg+xml" };
mkdirSync(OUT, { recursive: true });

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || join(ROOT, "target/web-tools/node_modules/playwright-core"));

/// Answers a request for `path` with the built app's file, or its index.html for any other path
/// (as a host set up for a single-page app does).
export function serveApp(path, res) {
    let file = join(DIST, path === "/" ? "index.html" : path);
    if (!file.startsWith(DIST) || !existsSync(file) || statSync(file).isDirectory()) file = join(DIST, "index.html");
    res.writeHead(200, { "Content-Type": TYPES[extname(file)] || "application/octet-stream" });
    res.end(readFileSync(file));
}

/// Starts `server` on a free port of 127.0.0.1; returns its address.
export async function listen(server) {
    await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
    return `http://127.0.0.1:${server.address().port}`;
}

/// Starts Chromium; `base` is the test server. Returns the context, helpers, and the lists of
/// console errors and requests that left 127.0.0.1. With `userDataDir` the profile lives on disk
/// there, as a user's does: an off-the-record context (the default) keeps its storage in memory,
/// under a quota too small for a model of several GB.
export async function launch(base, { userDataDir } = {}) {
    const options = {
        executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
        headless: true,
        args: ["--no-sandbox", "--disable-gpu-sandbox", "--enable-unsafe-webgpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    };
    const viewport = { width: 1200, height: 860 };
    let browser, context;
    if (userDataDir) {
        context = await chromium.launchPersistentContext(userDataDir, { ...options, viewport });
        browser = { close: () => context.close() };
    } else {
        browser = await chromium.launch(options);
        context = await browser.newContext({ viewport });
    }
    const offsite = [];
    const consoleErrors = [];
    context.on("request", (r) => {
        const u = new URL(r.url());
        if (!["blob:", "data:"].includes(u.protocol) && u.hostname !== "127.0.0.1") offsite.push(r.url());
    });

    async function open(query, { collectErrors = true } = {}) {
        const page = await context.newPage();
        page.setDefaultTimeout(TIMEOUT);
        if (collectErrors) {
            page.on("console", (m) => m.type() === "error" && consoleErrors.push(`${query}: ${m.text()}`));
            page.on("pageerror", (e) => consoleErrors.push(`${query}: ${e.message}`));
        }
        await page.goto(`${base}/${query}`);
        return page;
    }
    return { browser, context, open, offsite, consoleErrors };
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
    const before = await page.locator('[data-testid="assistant-message"]').count();
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
    return page.locator(sel).nth(index).getAttribute("data-text");
}

/// `carebot generate --chat` greedy: the answer the page must give.
export function reference(prompt, maxTokens, path) {
    const out = execFileSync(BIN, ["generate", "--model", path, "--chat", "--prompt", prompt,
        "--temperature", "0", "--max-tokens", String(maxTokens)], { env: { ...process.env, XDG_RUNTIME_DIR: "/tmp" } });
    return out.toString("utf8").replace(/\n$/, "");
}

export function logger() {
    const t0 = Date.now();
    return (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
}

/// After a failed step: says which, keeps a screenshot of every open page, fails the run.
export async function failed(e, step, { context, consoleErrors }, shot) {
    console.error(`e2e failed during "${step}": ${e.stack || e}`);
    for (const p of context.pages()) await p.screenshot({ path: join(OUT, shot), fullPage: true }).catch(() => {});
    console.error(`console errors: ${JSON.stringify(consoleErrors, null, 1)}`);
    process.exitCode = 1;
}
