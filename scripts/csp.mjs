// trunk's post_build hook (web/Trunk.toml): makes the built page work under a strict
// Content-Security-Policy sent as a header, and writes that header for common static hosts.
//  - trunk's loader (and, under `trunk serve`, its autoreload script) is inline; each moves to its
//    own file (named by its hash, with a Subresource Integrity hash), so the policy needs no
//    'unsafe-inline' for scripts;
//  - `_headers` (Netlify, Cloudflare Pages), `nginx-headers.conf` (an nginx `include`) and
//    `csp.txt` (the bare policy; the end-to-end tests' server sends it) go next to index.html.
// The page still narrows connect-src to the model's origins at run time, with a <meta> policy:
// a request must pass both.
import { readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";

const dir = process.env.TRUNK_STAGING_DIR;
if (!dir) throw new Error("run by trunk as a post_build hook (TRUNK_STAGING_DIR is not set)");
const page = join(dir, "index.html");
let html = readFileSync(page, "utf8");
// Every inline script: trunk's loader, and under `trunk serve` its autoreload script too.
const inline = /<script([^>]*)>([\s\S]*?)<\/script>/g;
html = html.replace(inline, (whole, attributes, body) => {
    if (/\bsrc=/.test(attributes)) return whole;
    const name = `boot-${createHash("sha256").update(body).digest("hex").slice(0, 16)}.js`;
    writeFileSync(join(dir, name), body);
    const sri = `sha384-${createHash("sha384").update(body).digest("base64")}`;
    return `<script${attributes} src="/${name}" integrity="${sri}"></script>`;
});
if (/<script(?![^>]*\bsrc=)[^>]*>/.test(html)) throw new Error("index.html still has an inline script");
writeFileSync(page, html);

export const POLICY = [
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    // The inference worker is a blob: URL importing this origin's script.
    "worker-src 'self' blob:",
    // Models come from this origin, the hub or any https host a link names; the page narrows this
    // to the one model's origin before anything is fetched.
    "connect-src 'self' https:",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'none'",
    "frame-src 'none'",
    "frame-ancestors 'none'",
].join("; ");
const other = { "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer" };
writeFileSync(join(dir, "csp.txt"), POLICY + "\n");
writeFileSync(join(dir, "_headers"),
    ["/*", `  Content-Security-Policy: ${POLICY}`, ...Object.entries(other).map(([k, v]) => `  ${k}: ${v}`)].join("\n") + "\n");
writeFileSync(join(dir, "nginx-headers.conf"),
    [`add_header Content-Security-Policy "${POLICY}" always;`,
        ...Object.entries(other).map(([k, v]) => `add_header ${k} "${v}" always;`)].join("\n") + "\n");
