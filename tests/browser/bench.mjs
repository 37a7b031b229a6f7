// Page weight and time to first frame of the share page, in headless Chromium against a running `sharegate dev`.
// Run by scripts/bench-player.sh (which starts the server); env: SG_API, SG_EDGE, SG_MINTER_KEY, SG_ASSET, RUNS.

import { gzipSync } from 'node:zlib';
import { need, launch, api, ok, context, until, sleep } from './lib.mjs';

const API = need('SG_API');
need('SG_EDGE');
const MINTER = need('SG_MINTER_KEY');
const ASSET = process.env.SG_ASSET || 'demo';
const RUNS = Number(process.env.RUNS || 9);
const OWN_SCRIPT_LIMIT = 20 * 1024; // issue 13: our own script stays under 20 KB gzip
const call = api(API);

const share = await ok(call, 'POST', '/v1/shares', MINTER, { asset: ASSET, audience: 'public' });
const pageUrl = `${API}/s/${share.id}`;

// ---- Page weight: the HTML and every script and stylesheet it names, raw and gzip -9.
const htmlResp = await fetch(pageUrl, { headers: { accept: 'text/html' } });
if (htmlResp.status !== 200) throw new Error(`GET ${pageUrl} answered ${htmlResp.status}`);
const html = await htmlResp.text();
const parts = [{ kind: 'html', name: '/s/<id>', bytes: Buffer.from(html) }];
const refs = [
  ...[...html.matchAll(/<script\b[^>]*\bsrc="([^"]+)"/g)].map((m) => ['js', m[1]]),
  ...[...html.matchAll(/<link\b[^>]*\brel="stylesheet"[^>]*\bhref="([^"]+)"/g)].map((m) => ['css', m[1]]),
  ...[...html.matchAll(/<link\b[^>]*\bhref="([^"]+)"[^>]*\brel="stylesheet"/g)].map((m) => ['css', m[1]]),
];
const seen = new Set();
for (const [kind, ref] of refs) {
  const url = new URL(ref.replace(/&amp;/g, '&'), pageUrl).href;
  if (seen.has(url)) continue;
  seen.add(url);
  const r = await fetch(url);
  if (r.status !== 200) throw new Error(`GET ${url} answered ${r.status}`);
  parts.push({ kind, name: new URL(url).pathname, bytes: Buffer.from(await r.arrayBuffer()), cache: r.headers.get('cache-control') });
}
const gz = (b) => gzipSync(b, { level: 9 }).length;
const isHls = (p) => /hls/i.test(p.name);
const rows = parts.map((p) => ({ ...p, raw: p.bytes.length, gzip: gz(p.bytes), ours: !isHls(p) }));
const sum = (xs, k) => xs.reduce((a, x) => a + x[k], 0);
const ownScripts = rows.filter((r) => r.kind === 'js' && r.ours);

console.log(`page weight of ${pageUrl} (gzip -9; bytes):`);
console.log(`  ${'file'.padEnd(44)} ${'raw'.padStart(9)} ${'gzip'.padStart(9)}  cache-control`);
for (const r of rows) console.log(`  ${(r.kind + ' ' + r.name).padEnd(44)} ${String(r.raw).padStart(9)} ${String(r.gzip).padStart(9)}  ${r.cache || ''}`);
console.log(`  ${'total (HTML + JS + CSS)'.padEnd(44)} ${String(sum(rows, 'raw')).padStart(9)} ${String(sum(rows, 'gzip')).padStart(9)}`);
console.log(`  ${'ours (all but hls.js)'.padEnd(44)} ${String(sum(rows.filter((r) => r.ours), 'raw')).padStart(9)} ${String(sum(rows.filter((r) => r.ours), 'gzip')).padStart(9)}`);
const ownGz = sum(ownScripts, 'gzip');
console.log(`  our own script: ${ownGz} B gzip (limit ${OWN_SCRIPT_LIMIT}): ${ownGz < OWN_SCRIPT_LIMIT ? 'within' : 'OVER THE LIMIT'}`);

// ---- Time to first frame: fresh context (cold cache) per load; play() as soon as metadata is there, as a viewer's
// click or autoplay would. Times are from navigation start (performance.now() in the page).
const MARKS = `(() => {
  const m = (window.__sgBench = {});
  window.addEventListener('loadedmetadata', (e) => {
    const v = e.target;
    if (!(v instanceof HTMLMediaElement) || m.metadata) return;
    m.metadata = performance.now();
    if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(() => { m.firstFrame ??= performance.now(); });
    v.play().catch((err) => { m.playError = String(err); });
  }, true);
  window.addEventListener('loadeddata', (e) => { m.loadeddata ??= performance.now(); }, true);
  window.addEventListener('timeupdate', (e) => {
    if (e.target.currentTime > 0) m.playing ??= performance.now();
  }, true);
})();`;

const browser = await launch();
const samples = [];
try {
  for (let i = 0; i <= RUNS; i++) {
    const ctx = await context(browser, [MARKS]);
    const page = await ctx.newPage();
    await page.goto(pageUrl, { waitUntil: 'domcontentloaded' });
    const m = await until('the first frame and playback', async () => {
      const v = await page.evaluate(() => window.__sgBench);
      return v && v.playing && v.firstFrame ? v : v && v.playError ? v : null;
    }, 20000, 20);
    if (m.playError) throw new Error(`play() failed: ${m.playError}`);
    const nav = await page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0];
      const res = performance.getEntriesByType('resource');
      const at = (re) => res.find((r) => re.test(r.name));
      const end = (re) => (at(re) ? at(re).responseEnd : null);
      return {
        html: n.responseEnd, dcl: n.domContentLoadedEventEnd, playback: end(/\/playback/), master: end(/\.m3u8/),
        segment: end(/\.ts(\?|$)/),
      };
    });
    await ctx.close();
    if (i > 0) samples.push({ ...nav, metadata: m.metadata, firstFrame: m.firstFrame, playing: m.playing }); // run 0 warms the server
    await sleep(100);
  }
} finally {
  await browser.close();
}
const median = (xs) => {
  const s = xs.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};
const keys = ['html', 'dcl', 'playback', 'master', 'segment', 'metadata', 'firstFrame', 'playing'];
const labels = {
  html: 'HTML received', dcl: 'DOMContentLoaded (scripts run)', playback: 'playback JSON received',
  master: 'first playlist received', segment: 'first segment received', metadata: 'loadedmetadata',
  firstFrame: 'first frame (requestVideoFrameCallback)', playing: 'currentTime > 0',
};
console.log(`\ntime from navigation start, ms, median of ${samples.length} cold loads (min – max):`);
for (const k of keys) {
  const xs = samples.map((s) => s[k]).filter((x) => x != null);
  if (!xs.length) continue;
  console.log(`  ${labels[k].padEnd(42)} ${median(xs).toFixed(0).padStart(6)}   (${Math.min(...xs).toFixed(0)} – ${Math.max(...xs).toFixed(0)})`);
}
console.log(`RESULT ${JSON.stringify({
  weight: { total_gzip: sum(rows, 'gzip'), ours_gzip: sum(rows.filter((r) => r.ours), 'gzip'), own_script_gzip: ownGz, files: rows.map(({ bytes, ...r }) => r) },
  ttff_ms: median(samples.map((s) => s.firstFrame)), playing_ms: median(samples.map((s) => s.playing)), runs: samples.length,
})}`);
process.exit(ownGz < OWN_SCRIPT_LIMIT ? 0 : 1);
