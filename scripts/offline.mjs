// trunk's post_build hook, after csp.mjs (scripts/post-build.mjs): makes the built app installable
// and able to open offline.
//  - names the build: a hash of every file the page serves, as `<meta name="carebot-build">` in
//    index.html (the page shows it) and as the service worker's VERSION;
//  - lists those files in sw.js (web/sw.js), which keeps each version whole in its own cache.
// Run it again on a dist folder (`node scripts/offline.mjs DIST`) after changing a file there:
// the tests do, to stand for a new deploy.
import { readFileSync, writeFileSync, readdirSync, statSync } from "node:fs";
import { createHash } from "node:crypto";
import { join, relative, sep } from "node:path";

const dir = process.argv[2] || process.env.TRUNK_STAGING_DIR;
if (!dir) throw new Error("usage: node scripts/offline.mjs DIST (or run by trunk as a post_build hook)");
// Written for static hosts' configuration, not served to the page.
const NOT_SERVED = new Set(["sw.js", "_headers", "nginx-headers.conf", "csp.txt", "sw.template.js"]);
const META = /<meta name="carebot-build" content="[0-9a-f]*" \/>\n?/;

function walk(d) {
    return readdirSync(d).flatMap((name) => {
        const path = join(d, name);
        return statSync(path).isDirectory() ? walk(path) : [relative(dir, path).split(sep).join("/")];
    });
}
const files = walk(dir).filter((f) => !NOT_SERVED.has(f)).sort();
const page = join(dir, "index.html");
const html = readFileSync(page, "utf8").replace(META, "");
const hash = createHash("sha256");
for (const f of files) {
    hash.update(f + "\0");
    hash.update(f === "index.html" ? html : readFileSync(join(dir, f)));
}
const version = hash.digest("hex").slice(0, 16);
writeFileSync(page, html.replace("</head>", `<meta name="carebot-build" content="${version}" />\n</head>`));
// The template: kept beside the built worker so that running this again can start from it.
const templatePath = join(dir, "sw.template.js");
let template;
try { template = readFileSync(templatePath, "utf8"); } catch {
    template = readFileSync(join(dir, "sw.js"), "utf8");
    writeFileSync(templatePath, template);
}
if (!template.includes("__CAREBOT_FILES__")) throw new Error("sw.js is not the template (web/sw.js)");
writeFileSync(join(dir, "sw.js"), template.replace("__CAREBOT_VERSION__", version)
    .replace("__CAREBOT_FILES__", JSON.stringify(files)));
console.log(`offline: build ${version}, ${files.length} files kept by the service worker`);
