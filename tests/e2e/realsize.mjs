// End-to-end test at CareBot's real size: a Llama-3-8B Q4_K_M GGUF past 4 GiB (random weights, but
// the header, 128k-token vocabulary, chat template and type mix `carebot convert` writes for a real
// Llama-3-8B; the `converted_gguf` example) is served with Range support from 127.0.0.1 and opened
// in a headless browser as a user would: Chromium (WebGPU on SwiftShader: 1 GiB bindings, no
// shader-f16) or Firefox (WebGPU on lavapipe: 128 MiB bindings, shader-f16; browser.mjs):
//   1. through ?model=: downloaded into the Origin Private File System and loaded onto the GPU;
//      the greedy answer equals `carebot generate` on lavapipe; the worker's wasm memory stays
//      small; where the time to ready went is measured against a plain read of the file;
//   2. reloaded: loaded from the Origin Private File System with no request at all;
//   3. picked from disk (Blob.slice past 4 GiB): the same answer.
//
//   node tests/e2e/realsize.mjs   (scripts/test-web.sh writes the model, and deletes it after)
//
// CAREBOT_E2E_BIG: the model; CAREBOT_BIN: the `carebot` binary (the reference answer);
// CAREBOT_E2E_BIG_TOKENS: tokens to generate (default 8; 0 skips the answers and the reference:
// an 8B answer takes ≈ 6 min on lavapipe, natively or in Firefox, and far longer on SwiftShader,
// see BENCHMARKS.md); CAREBOT_E2E_BIG_ANSWERS: after which loads to answer, "download,file" (the
// default) or one of them; CAREBOT_E2E_BIG_JSON: where to write the figures (default
// target/e2e/realsize-ENGINE.json).

import { createServer } from "node:http";
import { statSync, openSync, readSync, closeSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { strict as assert } from "node:assert";
import { OUT, ENGINE, launch, failed, shot, nativeSummary, waitState, ask, answer, generateNative, logger, serveApp, listen } from "./browser.mjs";

const BIG = process.env.CAREBOT_E2E_BIG || join(OUT, "realsize.gguf");
const SIZE = statSync(BIG).size;
const TOKENS = Number(process.env.CAREBOT_E2E_BIG_TOKENS ?? 8);
const ANSWERS = (process.env.CAREBOT_E2E_BIG_ANSWERS || "download,file").split(",");
assert.ok(ANSWERS.every((a) => ["download", "file"].includes(a)), `CAREBOT_E2E_BIG_ANSWERS=${ANSWERS}`);
const REPORT = process.env.CAREBOT_E2E_BIG_JSON || join(OUT, `realsize-${ENGINE}.json`);
// SwiftShader reads ≈0.1 GB/s: an 8B forward pass takes minutes.
const SLOW = Number(process.env.CAREBOT_E2E_BIG_TIMEOUT_MS || 1_800_000);
const PIECE = 8 << 20;
assert.ok(SIZE > 2 ** 32, `${BIG} is ${SIZE} bytes: the test needs a model past 4 GiB`);

function readAt(fd, start, length) {
    const out = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
        const n = readSync(fd, out, got, length - got, start + got);
        if (n === 0) break;
        got += n;
    }
    return out.subarray(0, got);
}

const requests = [];
const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    if (path === "/models/big.gguf") {
        const range = req.headers.range && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range);
        requests.push([path, range ? Number(range[1]) : null]);
        if (!range) {
            res.writeHead(200, { "Content-Length": SIZE });
            return res.end(); // never asked for whole: the app reads by Range
        }
        const start = Number(range[1]);
        const end = Math.min(range[2] ? Number(range[2]) : SIZE - 1, SIZE - 1);
        if (start >= SIZE || end - start >= 64 << 20) {
            res.writeHead(416, { "Content-Range": `bytes */${SIZE}` });
            return res.end();
        }
        const fd = openSync(BIG, "r");
        let body;
        try { body = readAt(fd, start, end - start + 1); } finally { closeSync(fd); }
        res.writeHead(206, { "Content-Range": `bytes ${start}-${end}/${SIZE}`, "Content-Length": body.length, "Accept-Ranges": "bytes" });
        return res.end(body);
    }
    if (path.startsWith("/models/")) {
        requests.push([path, null]);
        res.writeHead(404);
        return res.end("not found");
    }
    serveApp(path, res);
});
const BASE = await listen(server);
const log = logger();
const report = { engine: ENGINE, file_bytes: SIZE, tokens: TOKENS };

// The yardstick: reading the whole file in 8 MiB pieces, as the app does, here and now.
{
    const t0 = performance.now();
    const fd = openSync(BIG, "r");
    const piece = Buffer.alloc(PIECE);
    try { for (let at = 0; at < SIZE; at += PIECE) readSync(fd, piece, 0, Math.min(PIECE, SIZE - at), at); } finally { closeSync(fd); }
    report.plain_read_seconds = (performance.now() - t0) / 1000;
    log(`plain read of ${(SIZE / 2 ** 30).toFixed(2)} GiB: ${report.plain_read_seconds.toFixed(1)} s`);
}

// The answer the page must give: `carebot generate --chat`, greedy, natively on lavapipe.
const QUESTION = "What should I do about a headache?";
let want;
if (TOKENS > 0) {
    const t0 = performance.now();
    const native = generateNative(QUESTION, TOKENS, BIG);
    want = native.text;
    report.native_seconds = (performance.now() - t0) / 1000;
    report.native_tokens_per_second = native.tokensPerSecond;
    log(`carebot generate (lavapipe, load + ${TOKENS} tokens): ${report.native_seconds.toFixed(1)} s, ` +
        `writing ${native.tokensPerSecond} tok/s: ${JSON.stringify(want)}`);
} else {
    log("no answers asked for (CAREBOT_E2E_BIG_TOKENS=0): loading only");
}

const profile = mkdtempSync(join(tmpdir(), "carebot-realsize-"));
const { browser, open, pages, offsite, consoleErrors } = await launch(BASE, { userDataDir: profile });
const query = `temperature=0&max_tokens=${TOKENS}&system=`;

/// Loads what `page` has probed and returns the worker's figures.
async function loadAndMeasure(page, what) {
    const s = await waitState(page, ["probed", "loading", "ready", "failed"], SLOW);
    assert.notEqual(s, "failed", await page.textContent('[data-testid="model-status"]'));
    if (s === "probed") await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["ready", "failed"], SLOW), "ready", await page.textContent('[data-testid="model-status"]'));
    const ready = (name) => page.getAttribute('[data-testid="model-ready"]', name);
    const figures = {
        load_seconds: Number(await ready("data-load-seconds")),
        wasm_heap_bytes: Number(await ready("data-wasm-heap")),
        times: JSON.parse(await ready("data-times")),
    };
    log(`${what}: ready in ${figures.load_seconds.toFixed(1)} s ${JSON.stringify(figures.times)}; ` +
        `worker wasm memory ${(figures.wasm_heap_bytes / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(figures.wasm_heap_bytes <= 256 * 2 ** 20, `worker wasm memory ${figures.wasm_heap_bytes} bytes`);
    return figures;
}

/// Asks the question and checks the answer against the CLI's.
async function checkAnswer(page, what) {
    const t = performance.now();
    const i = await ask(page, QUESTION);
    const got = await answer(page, i, SLOW);
    const stats = JSON.parse(await page.attributeOf('[data-testid="answer-stats"]', -1, "data-stats"));
    const seconds = (performance.now() - t) / 1000;
    log(`${what}: ${JSON.stringify(got)} (${stats.generated} tokens after a ${stats.prompt_tokens}-token prompt, ` +
        `${seconds.toFixed(1)} s, writing ${stats.tokens_per_second.toFixed(3)} tok/s)`);
    assert.equal(got, want, `${what}: the answer differs from carebot generate's`);
    assert.equal(stats.generated, TOKENS, `${what}: ${stats.generated} tokens generated`);
    return { answer_seconds: seconds, tokens_per_second: stats.tokens_per_second };
}

let step = "start";
try {
    // 1. Download through ?model=, load, answer.
    step = "download";
    let page = await open(`?model=/models/big.gguf&${query}`);
    await page.click('[data-testid="accept-disclaimer"]');
    assert.equal(await waitState(page, ["probed", "failed"], SLOW), "probed", await page.textContent('[data-testid="model-status"]'));
    report.download = await loadAndMeasure(page, "downloaded");
    // The 8B shapes, 128k vocabulary, RoPE base 500000 and the untied output, read as natively.
    assert.equal((await page.textContent('[data-testid="model-summary"]')).replace(/^[^:]*: /, ""), nativeSummary(BIG), "model details");
    const fetched = requests.filter(([p]) => p === "/models/big.gguf");
    assert.ok(fetched.some(([, start]) => start >= 2 ** 32), "no Range request past 4 GiB");
    // The cached copy holds the file's bytes, also past 4 GiB: 64 KiB at 40 places, the last ones
    // straddling 2^32 and at the very end.
    const places = [...Array(36).keys()].map((k) => Math.floor((SIZE - 65536) * k / 35))
        .concat([2 ** 32 - 32768, 2 ** 32, SIZE - 65536, 2 ** 32 + 12345]);
    const cached = await page.evaluate(async (places) => {
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("carebot-models");
        for await (const [name, handle] of dir.entries()) {
            if (!name.endsWith(".gguf")) continue;
            const file = await handle.getFile();
            const out = [];
            for (const at of places) out.push([...new Uint8Array(await file.slice(at, at + 65536).arrayBuffer())].join(","));
            return { size: file.size, pieces: out };
        }
        return null;
    }, places);
    assert.equal(cached?.size, SIZE, "the cached file's size");
    {
        const fd = openSync(BIG, "r");
        try {
            places.forEach((at, k) => assert.equal(cached.pieces[k], [...readAt(fd, at, 65536)].join(","), `cached bytes at ${at}`));
        } finally { closeSync(fd); }
    }
    if (TOKENS > 0 && ANSWERS.includes("download")) Object.assign(report.download, await checkAnswer(page, "downloaded"));
    await page.screenshot({ path: shot("realsize.png"), fullPage: true });
    await page.close();

    // 2. Reload: from the Origin Private File System, no request at all.
    step = "reload";
    const mark = requests.length;
    page = await open(`?model=/models/big.gguf&${query}`);
    report.cache = await loadAndMeasure(page, "from the browser's storage");
    assert.deepEqual(requests.slice(mark), [], "the cached model was fetched again");
    await page.close();

    // 3. The same file picked from disk: read in place by Blob.slice, past 4 GiB.
    step = "local file";
    page = await open(`?model=/models/none.gguf&${query}`, { collectErrors: false });
    assert.equal(await waitState(page, ["failed"], SLOW), "failed");
    await page.setInputFiles('[data-testid="model-file"]', BIG);
    report.file = await loadAndMeasure(page, "picked from disk");
    if (TOKENS > 0 && ANSWERS.includes("file")) Object.assign(report.file, await checkAnswer(page, "picked from disk"));
    await page.close();

    assert.deepEqual(consoleErrors, [], "console errors");
    assert.deepEqual(offsite, [], "requests left 127.0.0.1");
    const ratio = report.download.load_seconds / report.plain_read_seconds;
    log(`time to ready after a download: ${ratio.toFixed(1)}× a plain read; from the cache: ` +
        `${(report.cache.load_seconds / report.plain_read_seconds).toFixed(1)}×; from a picked file: ` +
        `${(report.file.load_seconds / report.plain_read_seconds).toFixed(1)}×`);
    const browserSpeed = report.download.tokens_per_second ?? report.file?.tokens_per_second;
    if (browserSpeed && report.native_tokens_per_second) {
        report.writing_speed_ratio = browserSpeed / report.native_tokens_per_second;
        log(`writing speed in ${ENGINE} / native on this machine: ${report.writing_speed_ratio.toFixed(2)}`);
    }
    writeFileSync(REPORT, JSON.stringify(report, null, 1));
    log("all real-size checks passed");
} catch (e) {
    await failed(e, step, { pages, consoleErrors }, "realsize-failure.png");
} finally {
    await browser.close();
    server.close();
    rmSync(profile, { recursive: true, force: true });
}
