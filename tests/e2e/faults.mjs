// Faults in a user's day, and what the page does about them: nothing typed is lost. Serves dist/
// and the tiny model on 127.0.0.1 and drives a headless browser (browser.mjs).
//
//   node tests/e2e/faults.mjs   (scripts/test-web.sh sets the environment below)
//
// CAREBOT_BIN: the `carebot` binary (the reference answer); CAREBOT_E2E_MODEL: the tiny model;
// CAREBOT_E2E_DEBUG=1 prints what is stored before each closed-tab check.
// CAREBOT_BROWSER: chromium or firefox. Steps that need the DevTools protocol (a storage quota
// override, a GPU process crash, reaching into the worker to crash or pause it) run in Chromium
// only, and say so.

import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { strict as assert } from "node:assert";
import { createHash } from "node:crypto";
import { OUT, ENGINE, launch, failed, waitState, ask, answer, reference, logger, serveApp, listen, cachedModel } from "./browser.mjs";

const MODEL_PATH = process.env.CAREBOT_E2E_MODEL || join(OUT, "tiny.gguf");
const model = readFileSync(MODEL_PATH);
// A model over the probe's first MiB (the f16 tiny model, 2.6 MB): its download writes to the
// model cache after the probe, so a full storage quota stops it.
const big = readFileSync(process.env.CAREBOT_E2E_MODEL_F16 || join(OUT, "tiny-f16.gguf"));
const MODELS = { "/models/tiny.gguf": model, "/models/big.gguf": big };
const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const model = MODELS[path];
    if (model) {
        const range = req.headers.range && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range);
        const start = range ? Number(range[1]) : 0;
        const end = Math.min(range && range[2] ? Number(range[2]) : model.length - 1, model.length - 1);
        res.writeHead(range ? 206 : 200, { "Content-Range": `bytes ${start}-${end}/${model.length}`, "Content-Length": end - start + 1, "Accept-Ranges": "bytes" });
        return res.end(model.subarray(start, end + 1));
    }
    // A page of this origin that is not the app: the old schema is written from here.
    if (path === "/blank.html") {
        res.writeHead(200, { "Content-Type": "text/html" });
        return res.end("<!doctype html><title>blank</title>");
    }
    serveApp(path, res);
});
const BASE = await listen(server);
const { browser, open, pages, offsite, consoleErrors } = await launch(BASE);
const log = logger();
const CDP = ENGINE === "chromium";
// The tiny model's byte vocabulary: a short question leaves room for a long answer in its 256
// tokens of context, so an answer is still being written when the fault comes.
const QUERY = "?model=/models/tiny.gguf&temperature=0&max_tokens=100&system=";

/// Every conversation stored in this profile's IndexedDB, parsed, and the version and stores.
const stored = (page) => page.evaluate(() => new Promise((ok, fail) => {
    const r = indexedDB.open("carebot");
    r.onerror = () => fail(r.error);
    r.onsuccess = () => {
        const db = r.result;
        const names = [...db.objectStoreNames];
        const tx = db.transaction(names, "readonly");
        const out = { version: db.version, stores: names, records: {} };
        for (const n of names) tx.objectStore(n).getAll().onsuccess = (e) => { out.records[n] = e.target.result; };
        tx.oncomplete = () => { db.close(); ok(out); };
        tx.onerror = () => fail(tx.error);
    };
}));
const conversations = async (page) => (await stored(page)).records.conversations.map((r) => JSON.parse(r.json));
/// Waits until `test(conversations)` holds for what this profile stores; returns them.
async function untilStored(page, test, what) {
    for (const end = Date.now() + 60_000; Date.now() < end; await new Promise((ok) => setTimeout(ok, 200))) {
        const all = await conversations(page);
        if (test(all)) return all;
    }
    throw new Error(`never stored: ${what}`);
}

async function ready(page) {
    const s = await waitState(page, ["probed", "loading", "ready", "failed"]);
    if (s === "probed") await page.click('[data-testid="load-model"]');
    assert.equal(await waitState(page, ["ready", "failed"]), "ready", await page.textContent('[data-testid="model-status"]'));
}

/// Asks `question` in a new conversation and waits for the first words of the answer; returns
/// the answer's index and the text on screen a moment before the fault.
async function askAndWaitForWords(page, question) {
    await page.click('[data-testid="new-chat"]');
    const k = await ask(page, question);
    await page.waitForFunction((i) => (document.querySelectorAll('[data-testid="assistant-message"]')[i]?.dataset.text || "").length >= 3, k);
    return { k, shown: await page.attributeOf('[data-testid="assistant-message"]', k, "data-text") };
}

/// After a fault: the question is there, the answer holds at least what was on screen and
/// is a beginning of the full greedy answer, and it is marked as not finished.
async function checkKept(page, question, shown, full, what) {
    if (process.env.CAREBOT_E2E_DEBUG) {
        console.log(what, JSON.stringify(await conversations(page)).slice(0, 1500));
        console.log(what, await page.evaluate(() => JSON.stringify(Object.keys(localStorage))));
    }
    await page.clickText('[data-testid="history"] li button.open', question.slice(0, 20));
    await page.waitForFunction((q) => [...document.querySelectorAll('[data-testid="user-message"]')].some((m) => m.textContent.includes(q)), question);
    const text = await page.attributeOf('[data-testid="assistant-message"]', -1, "data-text");
    assert.ok(text.startsWith(shown), `${what}: kept ${JSON.stringify(text)}, shown before ${JSON.stringify(shown)}`);
    assert.ok(full.startsWith(text), `${what}: kept ${JSON.stringify(text)} is not a beginning of ${JSON.stringify(full)}`);
    return text;
}

/// Asks `question`, brings on `fault` once the first words are on screen, and checks what the
/// user sees: the answer ends with `reason` beside the words written (each on screen before is
/// kept, and they begin the full answer); after `recover` (the user's part, if any) the model is
/// ready again and Regenerate gives the CLI's answer. Returns the kept length and the seconds
/// from the fault to the answer's end.
async function faultMidAnswer(page, question, reason, fault, recover = async () => {}, within = 30_000) {
    const full = reference(question, 100, MODEL_PATH);
    const { k, shown } = await askAndWaitForWords(page, question);
    const t0 = Date.now();
    await fault();
    await page.waitForFunction((i) => document.querySelectorAll('[data-testid="assistant-message"]')[i]?.querySelector('[data-testid="answer-error"]'), k, { timeout: within });
    const seconds = (Date.now() - t0) / 1000;
    assert.match(await page.textOf('[data-testid="answer-error"]', -1), reason);
    const text = await page.attributeOf('[data-testid="assistant-message"]', k, "data-text");
    assert.ok(text.startsWith(shown) && full.startsWith(text), `${question} kept ${JSON.stringify(text)} of ${JSON.stringify(shown)}`);
    await recover();
    // A replaced worker shows "failed" until it has loaded again: wait for ready.
    assert.equal(await waitState(page, ["ready"]), "ready");
    await page.click('[data-testid="regenerate"]');
    assert.equal(await answer(page, k), full);
    return { kept: text.length, seconds };
}

let step = "start";
try {
    // 1. A profile from the first version of the app (schema 1, one record that no longer
    //    parses): the upgrade keeps every record, and the unreadable one is set aside, reported.
    step = "schema upgrade";
    let page = await open("blank.html");
    const v1 = [
        { id: "c1", json: JSON.stringify({ id: "c1", title: "Old question one", created: 1, updated: 2, turns: [{ role: "user", content: "Old question one" }, { role: "assistant", content: "Old answer", stats: null, error: null }] }) },
        { id: "c2", json: JSON.stringify({ id: "c2", title: "Old question two", created: 1, updated: 3, turns: [{ role: "user", content: "Old question two" }] }) },
        { id: "c3", json: "{\"id\":\"c3\",\"title\":" },
    ];
    await page.evaluate((records) => new Promise((ok, fail) => {
        const r = indexedDB.open("carebot", 1);
        r.onupgradeneeded = () => r.result.createObjectStore("conversations", { keyPath: "id" });
        r.onerror = () => fail(r.error);
        r.onsuccess = () => {
            const tx = r.result.transaction("conversations", "readwrite");
            for (const rec of records) tx.objectStore("conversations").put(rec);
            tx.oncomplete = () => { r.result.close(); ok(); };
            tx.onerror = () => fail(tx.error);
        };
    }), v1);
    await page.close();
    page = await open(QUERY);
    await page.click('[data-testid="accept-disclaimer"]');
    await ready(page);
    await page.waitForFunction(() => document.querySelector(".notice")?.textContent.includes("kept aside"));
    assert.match(await page.textContent(".notice"), /Number: 1/);
    const titles = await page.texts('[data-testid="history"] li button.open');
    assert.deepEqual(titles, ["Old question two", "Old question one"]);
    const db = await stored(page);
    assert.equal(db.version, 2);
    assert.deepEqual(db.records.unreadable, [v1[2]], "the unreadable record is kept as it was");
    assert.deepEqual(db.records.conversations.map((r) => r.json).sort(), [v1[0].json, v1[1].json].sort());
    // Downloads ask for persistent storage first, and the page says what the browser answered.
    const persisted = await page.getAttribute('[data-testid="storage-persisted"]', "data-persisted");
    log(`upgraded 1 → 2, 2 records kept, 1 set aside; persistent storage granted: ${persisted}`);

    // 2. A tab closed mid-answer, and a reload mid-answer: the question and every word shown are
    //    back, the answer is marked unfinished, and Regenerate finishes it.
    for (const fault of ["close", "reload"]) {
        step = `${fault} mid-answer`;
        const question = `Fever after a ${fault}?`;
        const full = reference(question, 100, MODEL_PATH);
        const { shown } = await askAndWaitForWords(page, question);
        if (fault === "close") {
            await page.close();
            page = await open(QUERY);
        } else {
            await page.reload();
        }
        await ready(page);
        const kept = await checkKept(page, question, shown, full, fault);
        assert.ok(await page.isVisible('[data-testid="interrupted"]', -1), `${fault}: not marked unfinished`);
        // An unfinished answer is not sent back to the model: Regenerate answers the question anew.
        await page.click('[data-testid="regenerate"]');
        const k = (await page.count('[data-testid="assistant-message"]')) - 1;
        assert.equal(await answer(page, k), full);
        assert.equal(await page.count('[data-testid="interrupted"]'), 0);
        log(`${fault} mid-answer: ${shown.length} chars on screen, ${kept.length} kept of ${full.length}; regenerated`);
    }

    // 3. Two tabs. An idle tab shows what the other saved; two tabs answering in one conversation
    //    at once keep both answers (the later save becomes its own conversation).
    step = "two tabs";
    const other = await open(QUERY);
    await ready(other);
    const question1 = "Two tabs, first question?";
    await page.click('[data-testid="new-chat"]');
    await answer(page, await ask(page, question1));
    step = "two tabs: the other tab lists the new conversation";
    await other.clickText('[data-testid="history"] li button.open', question1.slice(0, 20));
    const question2 = "Two tabs, second question?";
    await answer(page, await ask(page, question2));
    // The idle tab follows each save: the question, then the finished answer.
    step = "two tabs: the other tab follows";
    const answer2 = await page.attributeOf('[data-testid="assistant-message"]', -1, "data-text");
    await other.waitForFunction((a) => {
        const all = document.querySelectorAll('[data-testid="assistant-message"]');
        return all.length === 2 && all[1].dataset.text === a && !document.querySelector('[data-testid="interrupted"]');
    }, answer2);
    log("the idle tab shows the other tab's new turns");
    const [qa, qb] = ["Tab A asks this?", "Tab B asks that?"];
    await page.fill('[data-testid="chat-input"]', qa);
    await other.fill('[data-testid="chat-input"]', qb);
    step = "two tabs: both answer at once";
    // One hand: send in one tab, switch, send in the other while the first is still answering.
    const sendLast = async (tab) => {
        const n = await tab.count('[data-testid="assistant-message"]');
        await tab.click('[data-testid="send"]');
        await tab.waitForFunction((k) => document.querySelectorAll('[data-testid="assistant-message"]').length > k, n);
        return (await tab.count('[data-testid="assistant-message"]')) - 1;
    };
    const kb = await sendLast(other);
    const ka = await sendLast(page);
    const [wantA, wantB] = await Promise.all([answer(page, ka), answer(other, kb)]);
    assert.ok(wantA.length > 0 && wantB.length > 0);
    step = "two tabs: both saved";
    // Both saves settle (one after the conflict, as a new conversation).
    const kept = (q, want) => all.find((c) => c.turns[0].content === question1 &&
        c.turns.some((t, i) => t.content === q && c.turns[i + 1]?.content === want && !c.turns[i + 1].unfinished));
    const all = await untilStored(page, (all) => all.some((c) => c.turns.some((t) => t.content === wantA)) &&
        all.some((c) => c.turns.some((t) => t.content === wantB)), "both answers");
    const [withA, withB] = [kept(qa, wantA), kept(qb, wantB)];
    assert.ok(withA && withB, `stored: ${JSON.stringify(all.map((c) => c.turns.map((t) => [t.content.slice(0, 12), t.content.length, t.unfinished])))}; want ${wantA.length} ${wantB.length}`);
    const notices = [await page.evaluate(() => document.querySelector(".notice")?.textContent ?? ""),
        await other.evaluate(() => document.querySelector(".notice")?.textContent ?? "")];
    assert.ok(notices.some((n) => n.includes("changed in another tab")), `notices: ${notices}`);
    log(`both tabs' answers kept: ${withA.id} and ${withB.id}`);
    await other.close();

    // 4. Storage full while saving (Chromium: the DevTools protocol overrides the quota; it
    //    applies to connections opened after it, so the page is reloaded). The user is told and
    //    pointed to export; the conversation is kept aside and saved at the next start with room.
    if (CDP) {
        step = "quota";
        // Chromium reads a bucket's quota when it opens its IndexedDB backing store, which stays
        // open a few seconds after the last connection closes: close the tab and wait.
        const reopen = async () => {
            await page.close();
            await new Promise((ok) => setTimeout(ok, 5000));
            page = await open(QUERY);
            await ready(page);
        };
        // The override lives with the DevTools session of the tab that set it: a blank tab holds it.
        const holder = await browser.newPage();
        await holder.goto("about:blank");
        const cdp = await holder.createCDPSession();
        await cdp.send("Storage.overrideQuotaForOrigin", { origin: BASE, quotaSize: 1 });
        await reopen();
        const question = "Is storage full?";
        await page.click('[data-testid="new-chat"]');
        const k = await ask(page, question);
        const full = await answer(page, k);
        await page.waitForFunction(() => document.querySelector(".notice")?.textContent.includes("storage for this site is full"));
        assert.match(await page.textContent(".notice"), /Export/);
        assert.ok(!(await conversations(page)).some((c) => c.title === question), "saved despite a full quota?");
        // The model cache (the Origin Private File System) under the same full quota: a download
        // that cannot be stored stops and says so (a probe that got its first MiB stored is
        // refused by the room check before the rest), and the model already cached still loads.
        const bigQuery = "?model=/models/big.gguf&system=";
        let bigPage = await open(bigQuery, { collectErrors: false });
        if ((await waitState(bigPage, ["probed", "failed"])) === "probed") await bigPage.click('[data-testid="load-model"]');
        assert.equal(await waitState(bigPage, ["ready", "failed"]), "failed");
        assert.equal(await bigPage.getAttribute('[data-testid="model-error"]', "data-kind"), "StorageFull");
        log(`model download under a full quota: ${(await bigPage.textContent('[data-testid="model-error"]')).trim()}`);
        await bigPage.close();
        await cdp.send("Storage.overrideQuotaForOrigin", { origin: BASE });
        await reopen();
        // With room again the download completes, and the cache holds the file whole.
        bigPage = await open(bigQuery);
        if ((await waitState(bigPage, ["probed", "ready", "failed"])) === "probed") await bigPage.click('[data-testid="load-model"]');
        assert.equal(await waitState(bigPage, ["ready", "failed"]), "ready", await bigPage.textContent('[data-testid="model-status"]'));
        const cached = await cachedModel(bigPage, new URL("/models/big.gguf", BASE).href);
        assert.ok(cached.meta.complete && cached.sha === createHash("sha256").update(big).digest("hex"), JSON.stringify(cached));
        await bigPage.close();
        log("with room again the model downloads whole");
        // The start saves what was kept aside while the storage was full.
        const saved = (await untilStored(page, (all) => all.some((c) => c.title === question), question)).find((c) => c.title === question);
        assert.deepEqual(saved.turns.map((t) => t.content), [question, full]);
        log("a full quota is reported, and the conversation is saved at the next start with room");
        await holder.close();
    } else {
        log("quota: skipped (the storage quota override is a DevTools protocol command, Chromium only)");
    }

    // 5-7. Faults mid-answer, from outside through the DevTools protocol (Chromium only): the
    //    answer ends with the reason beside every word written, the model is ready again, and
    //    Regenerate gives the CLI's answer.
    if (CDP) {
        // An uncaught error in the worker, as a wasm trap would be: a new worker is started and
        // loads the model from the cache.
        step = "worker crash";
        let r = await faultMidAnswer(page, "Does the worker crash?", /inference worker failed/, async () => {
            const [worker] = page.page.workers();
            await worker.evaluate(() => { setTimeout(() => { throw new Error("injected crash"); }); });
        });
        log(`worker crash: ${r.kept} chars kept with the reason; a new worker answered`);
        // The worker hangs (its JavaScript paused by the debugger, as a readback that never
        // returns leaves it): Stop still works, replacing the worker after the grace period.
        step = "hung worker";
        r = await faultMidAnswer(page, "Does the worker hang?", /did not stop within/, async () => {
            const [worker] = page.page.workers();
            await worker.client.send("Debugger.enable");
            await worker.client.send("Debugger.pause");
            await page.click('[data-testid="stop"]');
        });
        log(`hung worker: Stop ended the answer after ${r.seconds.toFixed(1)} s, ${r.kept} chars kept; a new worker answered`);
        // The same hang with nobody pressing Stop: the page hears no heartbeat from the busy
        // worker for 30 s (SILENCE_LIMIT_MS) and replaces it by itself.
        step = "silent worker";
        r = await faultMidAnswer(page, "Does a silent worker get replaced?", /stopped responding/, async () => {
            const [worker] = page.page.workers();
            await worker.client.send("Debugger.enable");
            await worker.client.send("Debugger.pause");
        }, async () => {
            // A second crash within a minute of the first (above) holds the new worker until the
            // user asks (no crash loop): then it is the user's click that loads again.
            const s = await waitState(page, ["ready"], 20_000).catch(() => "held");
            if (s === "held") await page.click('[data-testid="retry"]');
        }, 60_000);
        assert.ok(r.seconds >= 29 && r.seconds <= 45, `replaced after ${r.seconds} s`);
        log(`silent worker: replaced after ${r.seconds.toFixed(1)} s without a heartbeat, ${r.kept} chars kept; a new worker answered`);
        // A real device loss (the GPU process crashes): the page says so and offers to load again.
        step = "device lost";
        r = await faultMidAnswer(page, "Is the GPU lost?", /lost/i, async () => {
            await (await browser.target().createCDPSession()).send("Browser.crashGpuProcess");
        }, async () => {
            assert.equal(await waitState(page, ["failed"]), "failed");
            assert.equal(await page.getAttribute('[data-testid="model-error"]', "data-kind"), "DeviceLost");
            await page.click('[data-testid="retry"]');
        });
        log(`device lost: ${r.kept} chars kept; loaded again and regenerated`);
    } else {
        log("crash, hang, device loss: skipped (they are injected through the DevTools protocol, Chromium only)");
    }

    const expected = (e) => /injected crash|inference worker failed|device|lost|GPU|QuotaExceeded|quota/i.test(e);
    assert.deepEqual(consoleErrors.filter((e) => !expected(e)), [], "console errors");
    assert.deepEqual(offsite, [], "requests left 127.0.0.1");
    log("all fault checks passed");
} catch (e) {
    await failed(e, step, { pages, consoleErrors }, "faults-failure.png");
} finally {
    await browser.close();
    server.close();
}
