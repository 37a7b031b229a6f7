// Headless-Chromium end-to-end tests of the share page, the embed and the player (issue 13), against a running
// `sharegate dev`. One browser launch for every case; prints one PASS/FAIL line per case and exits 1 on any failure.
// Run by sharegate/tests/browser_player.rs; see README.md beside this file for running it by hand.

import { writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  need, launch, api, ok, hostPage, watch, context, recorded, playerState, view, config, play, playUntil,
  longestStall, until, sleep, buffered, wholeBuffered,
} from './lib.mjs';

const API = need('SG_API');
const EDGE = need('SG_EDGE');
const ADMIN = need('SG_ADMIN_KEY');
const MINTER = need('SG_MINTER_KEY');
const RESPONDER = need('SG_RESPONDER_KEY');
const SHOTS = need('SG_SCREENSHOTS');
const ASSET = process.env.SG_ASSET || 'demo';
const ONLY = process.env.SG_CASES ? new Set(process.env.SG_CASES.split(',')) : null;
const here = path.dirname(fileURLToPath(import.meta.url));
const call = api(API);
mkdirSync(SHOTS, { recursive: true });

// The reason codes a viewer can meet (docs/player.md, control-plane/src/service/player/reasons.rs): the edge's, then
// the share-level ones. Case `reason_pages` adds any other code the pages' own message table names.
const EDGE_CODES = [
  'missing_token', 'malformed', 'unsupported_version', 'unsupported_claim', 'unknown_key', 'bad_signature', 'expired',
  'not_yet_valid', 'ttl_too_long', 'out_of_scope', 'permission_denied', 'ip_mismatch', 'geo_denied', 'origin_denied',
  'bad_path', 'revoked', 'method_not_allowed', 'state_stale', 'origin_unavailable', 'geo_unavailable',
];
const SHARE_CODES = ['not_found', 'expired', 'sign_in_required', 'not_invited', 'embed_not_allowed', 'asset_not_ready', 'unavailable'];
// Codes a viewer must be able to tell apart (the issue names them): each must read differently.
const MUST_DIFFER = [
  'expired', 'revoked', 'geo_denied', 'not_yet_valid', 'out_of_scope', 'state_stale', 'not_found', 'sign_in_required',
  'not_invited', 'embed_not_allowed', 'origin_unavailable',
];

// Watchdog: the suite must stay well under the Rust test's budget.
const WATCHDOG_MS = Number(process.env.SG_WATCHDOG_MS || 150000);
setTimeout(() => {
  console.log(`FAIL watchdog: the browser suite ran longer than ${WATCHDOG_MS} ms`);
  process.exit(1);
}, WATCHDOG_MS).unref();

const results = [];
const t0 = Date.now();
const secs = (ms) => (ms / 1000).toFixed(1);

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** Decode what the edge and the tests care about from a token (docs/token-format.md §3). */
function tokenFacts(token) {
  const b = Buffer.from(token, 'base64url');
  return { keyId: b.readUInt16BE(1), id: b.subarray(3, 15).toString('hex'), iat: b.readUInt32BE(15), exp: b.readUInt32BE(23) };
}

async function runCase(name, fn) {
  if (ONLY && !ONLY.has(name)) return;
  const start = Date.now();
  let done = null; // what the case found, when it got to its end (printed even if a page problem fails it)
  const ctxs = [];
  const open = async (extra) => {
    const c = await context(browser, extra);
    ctxs.push(c);
    return c;
  };
  const recs = [];
  const watchPage = (page, label) => {
    const r = watch(page, EDGE, label);
    recs.push(r);
    return r;
  };
  try {
    const detail = await fn({ open, watchPage });
    done = detail;
    const problems = [];
    for (const r of recs) problems.push(...r.problems());
    for (const c of ctxs) {
      for (const p of c.pages()) {
        for (const f of p.frames()) {
          const got = await recorded(f).catch(() => null);
          for (const v of got?.csp || []) {
            problems.push(`securitypolicyviolation in ${f.url()}: ${JSON.stringify(v)}`);
          }
        }
      }
      const cookies = await c.cookies();
      if (cookies.length) problems.push(`cookies were set: ${JSON.stringify(cookies)}`);
    }
    check(problems.length === 0, problems.join('\n'));
    results.push({ name, ok: true, ms: Date.now() - start, detail });
    console.log(`PASS ${name} (${secs(Date.now() - start)} s): ${JSON.stringify(detail)}`);
  } catch (e) {
    results.push({ name, ok: false, ms: Date.now() - start, error: String(e && e.stack ? e.stack : e), detail: done });
    console.log(`FAIL ${name} (${secs(Date.now() - start)} s): ${e && e.stack ? e.stack : e}`);
    if (done) console.log(`  (the case itself got through: ${JSON.stringify(done)})`);
    for (const r of recs) {
      const tail = r.console.slice(-15);
      if (tail.length) console.log(`  console of ${r.label}:\n    ${tail.join('\n    ')}`);
      const edge = r.edge.slice(-8).map((x) => `${x.status} ${x.reason || ''} ${x.url.replace(/\/t\/[^/]+\//, '/t/…/')}`);
      if (edge.length) console.log(`  last edge answers of ${r.label}:\n    ${edge.join('\n    ')}`);
      if (r.otherErrors.length) console.log(`  other failed requests of ${r.label}:\n    ${r.otherErrors.join('\n    ')}`);
    }
  } finally {
    for (const c of ctxs) await c.close().catch(() => {});
  }
}

async function createShare(extra = {}) {
  return ok(call, 'POST', '/v1/shares', MINTER, { asset: ASSET, audience: 'public', ...extra });
}

let lowered = null;
/** Let shares have an 8 s TTL: lower the link TTL bounds (admin), once. */
async function lowerTtlBounds() {
  if (!lowered) {
    lowered = (async () => {
      const cur = await ok(call, 'GET', '/v1/settings', ADMIN);
      return ok(call, 'PUT', '/v1/settings', ADMIN, { min_ttl: Math.min(cur.min_ttl, 5), max_ttl: cur.max_ttl, default_ttl: cur.default_ttl });
    })();
  }
  return lowered;
}

/** Minimal accessibility checks on a player or refusal page; returns the problems found. */
async function a11y(frame, { video }) {
  return frame.evaluate((wantVideo) => {
    const p = [];
    if (!(document.documentElement.getAttribute('lang') || '').trim()) p.push('<html> has no lang');
    if (!document.title.trim()) p.push('no <title>');
    const r = document.getElementById('sg-refusal');
    if (!r) p.push('no #sg-refusal');
    else if (r.getAttribute('role') !== 'alert') p.push('#sg-refusal has no role=alert');
    const s = document.getElementById('sg-status');
    if (s && s.getAttribute('role') !== 'status') p.push('#sg-status has no role=status');
    const v = document.getElementById('sg-video');
    if (wantVideo) {
      if (!v) p.push('no #sg-video');
      else if (!(v.getAttribute('aria-label') || '').trim()) p.push('the video has no aria-label');
    }
    for (const img of document.querySelectorAll('img')) if (!img.hasAttribute('alt')) p.push(`img without alt: ${img.src}`);
    for (const el of document.querySelectorAll('button, a[href], [role=button]')) {
      const name = (el.getAttribute('aria-label') || el.getAttribute('title') || el.textContent || '').trim();
      if (!name) p.push(`${el.tagName.toLowerCase()} without an accessible name`);
    }
    const ids = new Map();
    for (const el of document.querySelectorAll('[id]')) ids.set(el.id, (ids.get(el.id) || 0) + 1);
    for (const [id, n] of ids) if (n > 1) p.push(`duplicate id ${id}`);
    if (!document.querySelector('meta[name=viewport]')) p.push('no <meta name=viewport>');
    return p;
  }, video);
}

/** Edge answers that refused (401/403/410), as strings. */
const refusedAnswers = (rec) => rec.edge.filter((x) => x.status >= 400).map((x) => `${x.status} ${x.reason} ${x.url}`);

const browser = await launch();
console.log(`chromium ${browser.version()} launched in ${secs(Date.now() - t0)} s`);

// ---------------------------------------------------------------------------------------------------------------
// Baseline: the asset plays through the edge with hls.js and natively, on a plain page (no sharegate page or
// player.js involved). When a later case fails and this passes, the fault is in the page or the player.
async function baseline({ open, watchPage }) {
  const link = await ok(call, 'POST', '/v1/links', MINTER, { asset: ASSET, ttl: 600 });
  const hlsJs = readFileSync(path.join(here, '..', '..', 'node_modules', 'hls.js', 'dist', 'hls.min.js'), 'utf8');
  const host = await hostPage((req) => req.url === '/hls.js'
    ? { type: 'text/javascript', body: hlsJs }
    : { body: `<!doctype html><html lang="en"><title>baseline</title><video id="sg-video" muted></video>
<script src="/hls.js"></script><script>
const v = document.getElementById('sg-video');
const native = location.search.includes('native');
if (native) { v.src = ${JSON.stringify(link.url)}; }
else { const h = new Hls({ maxBufferLength: 10 }); h.loadSource(${JSON.stringify(link.url)}); h.attachMedia(v); window.hls = h; }
</script></html>` });
  try {
    const ctx = await open();
    const out = {};
    for (const mode of ['hlsjs', 'native']) {
      const page = await ctx.newPage();
      watchPage(page, `baseline ${mode}`);
      await page.goto(`${host.origin}/?${mode}`);
      const canNative = await page.evaluate(() => document.createElement('video').canPlayType('application/vnd.apple.mpegurl'));
      await page.evaluate(() => document.getElementById('sg-video').play().catch(() => {}));
      try {
        const v = await playUntil(page, 3, 15000);
        out[mode] = `plays (t=${v.t.toFixed(1)})`;
      } catch (e) {
        if (mode === 'hlsjs') throw new Error(`hls.js cannot play the asset through the edge directly: ${e.message}`);
        out[mode] = `does not play natively (canPlayType '${canNative}'): ${e.message.slice(0, 200)}`;
      }
      if (mode === 'native') out.canPlayType = canNative;
      if (mode === 'hlsjs') {
        out.levels = await page.evaluate(() => window.hls.levels.map((l) => `${l.width}x${l.height}@${Math.round(l.bitrate / 1000)}k`));
        out.subtitleTracks = await page.evaluate(() => window.hls.subtitleTracks.length);
      }
      await page.close();
    }
    return out;
  } finally {
    await host.close();
  }
}

// 1. The share page plays >= 5 s.
async function sharePage({ open, watchPage }) {
  const share = await createShare({ title: 'Demo' });
  const ctx = await open();
  const page = await ctx.newPage();
  const rec = watchPage(page, 'share page');
  const nav = Date.now();
  const resp = await page.goto(`${API}/s/${share.id}`, { waitUntil: 'domcontentloaded' });
  check(resp.status() === 200, `GET /s/<id> from a browser answered ${resp.status()}`);
  check((resp.headers()['content-type'] || '').startsWith('text/html'), `not HTML: ${resp.headers()['content-type']}`);
  const cfg = await config(page);
  check(cfg && cfg.mode === 'share' && cfg.share === share.id, `sg-config: ${JSON.stringify(cfg)}`);
  const problems = await a11y(page, { video: true });
  check(problems.length === 0, `accessibility: ${problems.join('; ')}`);
  const played = await play(page);
  check(played === 'ok', `video.play() failed: ${played}`);
  const start = (await view(page)).t;
  const firstPlay = Date.now();
  const v = await playUntil(page, start + 5, 25000);
  check(!v.refusalVisible, 'a refusal is shown');
  check(refusedAnswers(rec).length === 0, `the edge refused: ${refusedAnswers(rec).join(', ')}`);
  const state = await playerState(page);
  const tracks = await page.evaluate(() => {
    const v = document.getElementById('sg-video');
    return Array.from(v.textTracks || []).map((t) => `${t.kind}:${t.label}:${t.mode}`);
  });
  await page.hover('#sg-video'); // the controls show, as for a viewer's pointer
  await sleep(300);
  await page.screenshot({ path: path.join(SHOTS, 'share-page.png') });
  return {
    share: share.id, played: +(v.t - start).toFixed(1), wallToPlay5s: secs(Date.now() - firstPlay), sinceNav: secs(Date.now() - nav),
    engine: state?.engine, edgeAnswers: rec.edge.length, textTracks: tracks,
  };
}

// 2. The embed plays inside a page of an allowed origin (postMessage API works) and never inside another.
async function embed({ open, watchPage }) {
  let shareId = '';
  const host = () => ({ body: `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>host</title></head><body>
<iframe id="f" src="${API}/e/${shareId}" allow="autoplay; fullscreen" width="640" height="360" title="player"></iframe>
<script>
window.__msgs = [];
window.addEventListener('message', (e) => {
  let d = e.data;
  if (typeof d === 'string') { try { d = JSON.parse(d); } catch (err) {} }
  window.__msgs.push({ origin: e.origin, data: d });
});
let listenerId = 0;
window.send = (method, value) => {
  const m = { context: 'player.js', version: '0.0.11', method };
  if (value !== undefined) m.value = value;
  if (method === 'addEventListener') m.listener = 'host-' + (++listenerId);
  document.getElementById('f').contentWindow.postMessage(JSON.stringify(m), '*');
};
</script></body></html>` });
  const a = await hostPage(host);
  const b = await hostPage(host);
  try {
    const share = await createShare({ embed_origins: [a.origin] });
    shareId = share.id;
    const out = { share: share.id, allowed: a.origin, other: b.origin };

    // Allowed origin A.
    const ctxA = await open();
    const pa = await ctxA.newPage();
    const recA = watchPage(pa, 'embed host A');
    await pa.goto(a.origin + '/');
    const frameOf = (page) => page.frames().find((f) => f.url().startsWith(`${API}/e/`));
    const fa = await until('the embed frame in A', async () => frameOf(pa), 10000);
    const events = async (name) => (await pa.evaluate(() => window.__msgs)).filter((m) => m.data && m.data.event === name);
    await until('the player.js "ready" event in A', async () => (await events('ready')).length > 0, 15000);
    const ready = (await events('ready'))[0];
    check(ready.origin === API, `ready came from ${ready.origin}, not ${API}`);
    const cfg = await config(fa);
    check(cfg && cfg.mode === 'embed', `embed sg-config: ${JSON.stringify(cfg)}`);
    check(await fa.evaluate(() => document.body.classList.contains('sg-embed')), 'embed body has no class sg-embed');
    check(await fa.evaluate(() => !document.querySelector('.sg-header')), 'embed shows the page header');
    const problems = await a11y(fa, { video: true });
    check(problems.length === 0, `accessibility (embed): ${problems.join('; ')}`);
    for (const ev of ['play', 'pause', 'timeupdate', 'ended', 'error']) await pa.evaluate((e) => window.send('addEventListener', e), ev);
    await pa.evaluate(() => window.send('play'));
    const v = await playUntil(fa, 2, 20000, 'the embed in A to play 2 s after a postMessage play');
    await until('a timeupdate event in A', async () => (await events('timeupdate')).some((m) => m.data.value && m.data.value.seconds > 0), 5000);
    await pa.evaluate(() => window.send('pause'));
    await until('a pause event in A', async () => (await events('pause')).length > 0, 5000);
    const paused = await view(fa);
    check(paused.paused, 'the video did not pause on the pause command');
    await pa.evaluate(() => window.send('setCurrentTime', 20));
    const seeked = await until('the seek to 20 s', async () => {
      const w = await view(fa);
      return w.t >= 19.5 && w.t <= 21.5 ? w : null;
    }, 10000);
    check(refusedAnswers(recA).length === 0, `the edge refused in A: ${refusedAnswers(recA).join(', ')}`);
    const tu = (await events('timeupdate')).at(-1).data.value;
    out.A = { playedTo: +v.t.toFixed(1), pausedAt: +paused.t.toFixed(1), seekedTo: +seeked.t.toFixed(1), lastTimeupdate: tu, readyValue: ready.data.value };

    // Another origin B: refused page, or blocked by frame-ancestors; never plays.
    const ctxB = await open();
    const pb = await ctxB.newPage();
    const recB = watchPage(pb, 'embed host B');
    recB.allowCsp = (text) => /frame-ancestors/.test(text); // the expected refusal itself, when the frame is blocked
    await pb.goto(b.origin + '/');
    await sleep(2500);
    await pb.evaluate(() => window.send('play'));
    await sleep(2000);
    const fb = frameOf(pb);
    const blockedMsg = recB.console.filter((c) => /frame-ancestors/.test(c));
    const edgeOk = recB.edge.filter((x) => x.status < 400);
    const inner = fb ? await view(fb).catch((e) => ({ unreadable: String(e) })) : null;
    const cfgB = fb ? await config(fb).catch(() => null) : null;
    check(edgeOk.length === 0, `B fetched media from the edge: ${edgeOk.map((x) => x.url).join(', ')}`);
    if (inner && inner.refusalVisible) {
      const code = cfgB?.refusal?.code;
      check(code === 'embed_not_allowed' || (cfgB?.messages?.embed_not_allowed?.title === inner.title),
        `B shows a refusal, but not embed_not_allowed: code ${code}, title ${inner.title}`);
      check(!inner.video || inner.t === 0 || inner.paused, `B's video moved: ${JSON.stringify(inner)}`);
      out.B = { shown: 'refusal page', code, title: inner.title, ref: inner.ref, blockedConsole: blockedMsg.length };
      await pb.screenshot({ path: path.join(SHOTS, 'embed-refused.png') });
    } else {
      check(blockedMsg.length > 0 || !fb || !inner || inner.unreadable,
        `B's frame neither shows the refusal nor was blocked: ${JSON.stringify(inner)}`);
      check(!inner || !inner.video || inner.t === 0, `B's video played: ${JSON.stringify(inner)}`);
      out.B = { shown: 'blocked by frame-ancestors', frameUrl: fb ? fb.url() : null, console: blockedMsg[0] };
    }
    const readyB = (await pb.evaluate(() => window.__msgs)).filter((m) => m.data && m.data.event === 'ready').length;
    out.B.readyEvents = readyB;
    return out;
  } finally {
    await a.close();
    await b.close();
  }
}

// 3. A link whose tokens live 8 s plays >= 20 s without a stall (tokens refresh underneath).
async function shortTtl({ open, watchPage }) {
  await lowerTtlBounds();
  const share = await createShare({ ttl: 8 });
  const ctx = await open();
  const page = await ctx.newPage();
  const rec = watchPage(page, 'ttl 8 s');
  await page.goto(`${API}/s/${share.id}`, { waitUntil: 'domcontentloaded' });
  check((await play(page)) === 'ok', 'play() failed');
  const start = (await view(page)).t;
  await playUntil(page, start + 3, 15000);
  const early = wholeBuffered(await buffered(page));
  check(!early, `cannot test refreshes: ${early}`);
  const v = await playUntil(page, start + 20, 45000, 'currentTime to advance 20 s with 8 s tokens');
  const now = await page.evaluate(() => performance.now());
  const stall = longestStall((await recorded(page)).events, now);
  const state = await playerState(page);
  check(!v.refusalVisible, 'a refusal is shown');
  check(refusedAnswers(rec).length === 0, `the edge refused: ${refusedAnswers(rec).join(', ')}`);
  check(stall <= 1200, `a waiting stall of ${Math.round(stall)} ms after playback started`);
  check(state && state.refreshes >= 1, `player state shows no refresh: ${JSON.stringify(state)}`);
  const withToken = rec.edge.filter((x) => x.token);
  const first = tokenFacts(withToken[0].token);
  const tokens = [...new Set(withToken.map((x) => x.token))];
  const afterExpiry = withToken.filter((x) => x.t / 1000 > first.exp + 1 && x.status < 400);
  check(afterExpiry.length > 0, `no edge answer after the first token expired (exp ${first.exp})`);
  check(afterExpiry.every((x) => tokenFacts(x.token).exp > first.exp), 'an expired token was used after its expiry');
  return {
    share: share.id, played: +(v.t - start).toFixed(1), refreshes: state.refreshes, tokensUsed: tokens.length,
    firstTokenLife: first.exp - first.iat, answersAfterFirstExpiry: afterExpiry.length, longestStallMs: Math.round(stall),
  };
}

// 4. A signing-key rotation mid-play: playback goes on >= 8 s, no error, later tokens carry the new key.
async function keyRotation({ open, watchPage }) {
  await lowerTtlBounds();
  const share = await createShare({ ttl: 8 });
  const ctx = await open();
  const page = await ctx.newPage();
  const rec = watchPage(page, 'key rotation');
  await page.goto(`${API}/s/${share.id}`, { waitUntil: 'domcontentloaded' });
  check((await play(page)) === 'ok', 'play() failed');
  await playUntil(page, 2, 15000);
  const early = wholeBuffered(await buffered(page));
  check(!early, `cannot test a rotation mid-play: ${early}`);
  const oldKey = tokenFacts(rec.edge.find((x) => x.token).token).keyId;
  const steps = [];
  let receipt;
  for (let i = 0; i < 4; i++) {
    receipt = await ok(call, 'POST', '/v1/keys/rotate', RESPONDER);
    steps.push(receipt.action);
    if (receipt.action === 'promoted') break;
    await sleep(200);
  }
  check(receipt.action === 'promoted', `rotation never promoted a key: ${steps.join(', ')}`);
  check(receipt.active !== oldKey, `active key unchanged (${receipt.active})`);
  const rotatedAt = Date.now();
  const from = (await view(page)).t;
  const v = await playUntil(page, from + 8, 25000, 'currentTime to advance 8 s after the rotation');
  const state = await playerState(page);
  check(!v.refusalVisible, `a refusal is shown: ${v.title}`);
  check(refusedAnswers(rec).length === 0, `the edge refused: ${refusedAnswers(rec).join(', ')}`);
  const later = rec.edge.filter((x) => x.token && x.t > rotatedAt + 500).map((x) => tokenFacts(x.token).keyId);
  check(later.includes(receipt.active), `no request after the rotation carried a token of the new key ${receipt.active} (saw ${[...new Set(later)]})`);
  return { share: share.id, steps, oldKey, newKey: receipt.active, playedAfter: +(v.t - from).toFixed(1), refreshes: state?.refreshes };
}

// 5. A revocation mid-play shows the revoked page within 3 s of the first refused request.
async function revocation({ open, watchPage }) {
  const share = await createShare({ title: 'Demo' });
  const ctx = await open();
  const page = await ctx.newPage();
  const rec = watchPage(page, 'revocation');
  await page.goto(`${API}/s/${share.id}`, { waitUntil: 'domcontentloaded' });
  const cfg = await config(page);
  check((await play(page)) === 'ok', 'play() failed');
  await playUntil(page, 3, 15000);
  const early = wholeBuffered(await buffered(page));
  check(!early, `cannot test a revocation mid-play: ${early}`);
  const revokedAt = Date.now();
  const del = await call('DELETE', `/v1/shares/${share.id}`, RESPONDER);
  check(del.status === 200, `DELETE /v1/shares answered ${del.status}: ${del.text}`);
  const refused = await until('the first refused edge answer after the revocation', async () =>
    rec.edge.find((x) => x.t >= revokedAt && [401, 403, 410].includes(x.status)), 25000, 20);
  let shownAt;
  try {
    await page.waitForFunction(() => {
      const r = document.getElementById('sg-refusal');
      return r && !r.hidden && r.getBoundingClientRect().height > 0 && getComputedStyle(r).visibility !== 'hidden';
    }, null, { polling: 50, timeout: 10000 });
    shownAt = Date.now();
  } catch (e) {
    throw new Error(`no refusal shown within 10 s of the refused answer (${refused.status} ${refused.reason}); page: ${JSON.stringify(await view(page))}`);
  }
  const v = await view(page);
  const lag = shownAt - refused.t;
  check(refused.reason === 'revoked', `the edge refused with ${refused.reason}, not revoked`);
  check(lag <= 3000, `the refusal showed ${lag} ms after the first refused answer (limit 3000)`);
  const want = cfg.messages?.revoked;
  check(want ? v.title === want.title : /revok/i.test(v.title + v.body), `not the revoked message: ${v.title} / ${v.body}`);
  check(/^sg-/.test(v.ref), `support reference ${JSON.stringify(v.ref)}`);
  const t1 = (await view(page)).t;
  await sleep(1000);
  const t2 = (await view(page)).t;
  check(t2 - t1 < 0.2, `the video goes on playing after the refusal (${t1} -> ${t2})`);
  const refusedCount = rec.edge.filter((x) => x.status >= 400).length;
  await page.screenshot({ path: path.join(SHOTS, 'refused-revoked.png') });
  return {
    share: share.id, firstRefusedAfterRevokeMs: refused.t - revokedAt, shownAfterRefusedMs: lag, refusedRequests: refusedCount,
    title: v.title, ref: v.ref, stoppedAt: +t2.toFixed(1),
  };
}

// 6. Every reason code renders its page (plain words, a support reference, minimal accessibility).
async function reasonPages({ open, watchPage }) {
  const ctx = await open();
  const page = await ctx.newPage();
  watchPage(page, 'reason pages');
  const codes = [...new Set([...EDGE_CODES, ...SHARE_CODES])];
  const seen = {};
  const problems = [];
  let extra = [];
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    const resp = await page.goto(`${API}/player/refused/${code}`, { waitUntil: 'domcontentloaded' });
    const v = await view(page);
    const cfg = await config(page);
    if (i === 0 && cfg?.messages) {
      extra = Object.keys(cfg.messages).filter((k) => k !== 'default' && !codes.includes(k));
      codes.push(...extra);
    }
    const where = `${code} (HTTP ${resp.status()})`;
    if (!v.refusalVisible) { problems.push(`${where}: refusal panel not visible`); continue; }
    if (!v.title || !v.body) problems.push(`${where}: empty title or body`);
    if (!/^sg-\S+/.test(v.ref)) problems.push(`${where}: support reference ${JSON.stringify(v.ref)}`);
    if (cfg?.refusal?.code !== code) problems.push(`${where}: sg-config refusal code ${cfg?.refusal?.code}`);
    const want = cfg?.messages?.[code];
    if (want && (want.title !== v.title || want.body !== v.body)) problems.push(`${where}: shows ${v.title} / ${v.body}, its message is ${want.title} / ${want.body}`);
    if (!want) problems.push(`${where}: no message of its own in the page's table (falls back to default)`);
    for (const p of await a11y(page, { video: false })) problems.push(`${where}: ${p}`);
    if (await page.evaluate(() => typeof window.Hls !== 'undefined')) problems.push(`${where}: hls.js loaded on a refusal page`);
    seen[code] = `${v.title} | ${v.body}`;
  }
  for (let i = 0; i < MUST_DIFFER.length; i++) {
    for (let j = i + 1; j < MUST_DIFFER.length; j++) {
      const [x, y] = [MUST_DIFFER[i], MUST_DIFFER[j]];
      if (seen[x] && seen[x] === seen[y]) problems.push(`${x} and ${y} read the same: ${seen[x]}`);
    }
  }
  const groups = {};
  for (const [code, text] of Object.entries(seen)) (groups[text] ||= []).push(code);
  const shared = Object.values(groups).filter((g) => g.length > 1);
  const unknown = await page.goto(`${API}/player/refused/no_such_code`, { waitUntil: 'domcontentloaded' });
  check(problems.length === 0, problems.join('\n'));
  return { codes: Object.keys(seen).length, distinctTexts: Object.keys(groups).length, sameText: shared, extraCodes: extra, unknownCodeStatus: unknown.status() };
}

// 7. Without MSE the player takes the native path (the token in the path of every request), and its 8 s tokens are
// replaced by a fresh multivariant URL (the video element's source swapped in place) as playback goes on.
async function nativeHls({ open, watchPage }) {
  await lowerTtlBounds();
  const share = await createShare({ ttl: 8 });
  const noMse = 'delete window.MediaSource; delete window.ManagedMediaSource; delete window.WebKitMediaSource;';
  const ctx = await open([noMse]);
  const page = await ctx.newPage();
  const rec = watchPage(page, 'native HLS');
  await page.goto(`${API}/s/${share.id}`, { waitUntil: 'domcontentloaded' });
  check(await page.evaluate(() => typeof window.MediaSource === 'undefined'), 'MediaSource is still there');
  const state = await until('window.sharegatePlayer.state().engine', async () => {
    const s = await playerState(page);
    return s && s.engine ? s : null;
  }, 10000);
  check(state.engine === 'native', `engine is ${state.engine}, not native`);
  const canPlay = await page.evaluate(() => document.getElementById('sg-video').canPlayType('application/vnd.apple.mpegurl'));
  const out = { share: share.id, engine: state.engine, canPlayType: canPlay };
  if (canPlay) {
    check((await play(page)) === 'ok', 'play() failed');
    const start = (await view(page)).t;
    const v = await playUntil(page, start + 12, 30000, 'native playback to advance 12 s with 8 s tokens');
    check(!v.refusalVisible, 'a refusal is shown');
    check(refusedAnswers(rec).length === 0, `the edge refused: ${refusedAnswers(rec).join(', ')}`);
    const src = v.src;
    check(src.startsWith(`${EDGE}/t/`), `native source is not a token-in-path edge URL: ${src}`);
    const after = await playerState(page);
    check(after && after.refreshes >= 1, `no token refresh on the native path: ${JSON.stringify(after)}`);
    const withToken = rec.edge.filter((x) => x.token);
    const first = tokenFacts(withToken[0].token);
    const late = withToken.filter((x) => x.t / 1000 > first.exp + 1);
    check(late.every((x) => tokenFacts(x.token).exp > first.exp), 'an expired token was used after its expiry');
    // The swapped source is really in use: the edge served requests carrying a later token.
    const renewed = withToken.filter((x) => tokenFacts(x.token).exp > first.exp && x.status < 400);
    check(renewed.length > 0, 'no request carried a refreshed token: the source was never swapped');
    out.requestsOnRefreshedTokens = renewed.length;
    out.played = +(v.t - start).toFixed(1);
    out.refreshes = after.refreshes;
    out.edgeRequests = rec.edge.length;
    out.requestsAfterFirstExpiry = late.length;
  } else {
    await sleep(3000);
    out.shows = await view(page);
  }
  return out;
}

// Case 3 takes the longest and needs no other case: it runs beside 1, 2, 6 and 7. Then 4, then 5 (which
// rotate keys and revoke, and so must not overlap the others).
const long = runCase('short_ttl', shortTtl);
await runCase('baseline', baseline);
await runCase('share_page', sharePage);
await runCase('embed', embed);
await runCase('reason_pages', reasonPages);
await runCase('native_hls', nativeHls);
await long;
await runCase('key_rotation', keyRotation);
await runCase('revocation', revocation);
await browser.close();

const failed = results.filter((r) => !r.ok);
console.log(`${results.length - failed.length}/${results.length} cases passed in ${secs(Date.now() - t0)} s; screenshots in ${SHOTS}`);
writeFileSync(path.join(SHOTS, 'results.json'), JSON.stringify(results, null, 2));
process.exit(failed.length ? 1 : 0);
