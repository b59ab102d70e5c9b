// Benchmark (not a test): the page's main-thread work per streamed token, with 5 and with 50
// turns of conversation on screen. Chromium only (its DevTools metrics count the page's main
// thread, not the worker that runs the model).
//
//   CAREBOT_BROWSER=chromium node tests/e2e/render-bench.mjs   (after `trunk build --release`)
//
// Each size: a conversation of N turns (answers of ≈ 1.2 KB of Markdown: a heading, a list, a
// table, emphasis) is put in the page's history, reopened, and one more answer of up to 100
// tokens is streamed into it by the tiny model. Reported: the main thread's task, script and
// layout time over that answer, per token the worker sent.

import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { strict as assert } from "node:assert";
import { OUT, ENGINE, launch, waitState, ask, answer, serveApp, listen } from "./browser.mjs";

assert.equal(ENGINE, "chromium", "the metrics are Chromium's");
const model = readFileSync(process.env.CAREBOT_E2E_MODEL || join(OUT, "tiny.gguf"));
const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path !== "/models/tiny.gguf") return serveApp(path, res);
    const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range || "");
    const start = range ? Number(range[1]) : 0;
    const end = Math.min(range && range[2] ? Number(range[2]) : model.length - 1, model.length - 1);
    res.writeHead(range ? 206 : 200, {
        "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", "ETag": '"tiny"',
        "Content-Length": end - start + 1, ...(range ? { "Content-Range": `bytes ${start}-${end}/${model.length}` } : {}),
    });
    res.end(model.subarray(start, end + 1));
});
const BASE = await listen(server);
const { browser, open } = await launch(BASE);

const markdown = (i) => `### Advice ${i}\n\nFor a **headache** that lasts *three days*:\n\n` +
    "- drink water and rest in a quiet, dark room;\n- paracetamol as the leaflet says;\n- note when it starts and what helps.\n\n" +
    "| sign | what to do |\n| --- | --- |\n| fever and a stiff neck | emergency care now |\n| worse every day | see a doctor this week |\n\n" +
    "See a doctor if it keeps coming back, wakes you at night, or comes with vision changes. ".repeat(6);

async function measure(turns) {
    let page = await open("?model=/models/tiny.gguf&temperature=0&max_tokens=100&system=");
    if (await page.page.$('[data-testid="accept-disclaimer"]')) await page.click('[data-testid="accept-disclaimer"]');
    const state = await waitState(page, ["ready", "failed"]);
    assert.equal(state, "ready", await page.textContent('[data-testid="model-status"]'));
    await page.evaluate((c) => new Promise((ok, fail) => {
        const r = indexedDB.open("carebot");
        r.onerror = () => fail(r.error);
        r.onsuccess = () => {
            const tx = r.result.transaction("conversations", "readwrite");
            tx.objectStore("conversations").clear();
            tx.objectStore("conversations").put({ id: c.id, json: JSON.stringify(c) });
            tx.oncomplete = ok;
            tx.onerror = () => fail(tx.error);
        };
    }), {
        id: `bench-${turns}`, title: `bench ${turns}`, created: 1, updated: Date.now() + 1e6, rev: 1,
        turns: Array.from({ length: turns }, (_, i) => i % 2 === 0
            ? { role: "user", content: `Question ${i}: I have had a headache for three days. What should I do?` }
            : { role: "assistant", content: markdown(i) }),
    });
    await page.reload();
    await waitState(page, ["ready"]);
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="assistant-message"]').length >= n, Math.floor(turns / 2));
    const client = await page.page.createCDPSession();
    await client.send("Performance.enable");
    const metrics = async () => Object.fromEntries((await client.send("Performance.getMetrics")).metrics.map((m) => [m.name, m.value]));
    const before = await metrics();
    const i = await ask(page, "And if it comes back next week?");
    await answer(page, i, 600_000);
    const after = await metrics();
    const stats = JSON.parse(await page.attributeOf('[data-testid="answer-stats"]', -1, "data-stats"));
    const tokens = stats.generated;
    const per = (k) => (after[k] - before[k]) * 1000 / tokens;
    const row = { turns, tokens, task_ms: per("TaskDuration"), script_ms: per("ScriptDuration"), layout_ms: per("LayoutDuration"),
        style_ms: per("RecalcStyleDuration") };
    await page.close();
    return row;
}

try {
    const rows = [];
    for (const turns of [5, 50, 5, 50]) {
        const row = await measure(turns);
        rows.push(row);
        console.log(`${turns} turns: ${row.tokens} tokens; per token: main-thread tasks ${row.task_ms.toFixed(2)} ms ` +
            `(script ${row.script_ms.toFixed(2)}, layout ${row.layout_ms.toFixed(2)}, style ${row.style_ms.toFixed(2)})`);
    }
} finally {
    await browser.close();
    server.close();
}
