// What the browser tests and the player benchmark share: the Chromium launch, the control-plane API calls,
// loopback host pages, and a recorder of what a page did (edge answers, media events, CSP reports, errors).
// Everything comes from environment variables (see README.md); nothing here reads the repository.

import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** playwright-core from the repository's node_modules (or SG_PLAYWRIGHT). */
export function playwright() {
  const where = process.env.SG_PLAYWRIGHT || path.join(here, '..', '..', 'node_modules', 'playwright-core');
  return require(where);
}

/** The environment variable `name`, or stop with a message naming it. */
export function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`missing environment variable ${name} (see tests/browser/README.md)`);
    process.exit(2);
  }
  return v.replace(/\/+$/, '');
}

/** Debian's chromium (SG_CHROMIUM, else what `command -v chromium` prints). */
export function chromiumPath() {
  if (process.env.SG_CHROMIUM) return process.env.SG_CHROMIUM;
  return execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim();
}

/** One headless Chromium for everything. */
export async function launch() {
  return playwright().chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--headless',
      '--autoplay-policy=no-user-gesture-required',
      '--disable-background-networking',
      '--disable-renderer-backgrounding',
      '--disable-background-timer-throttling',
      '--disable-backgrounding-occluded-windows',
    ],
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` (async) until it returns something truthy; throw `what` with the last value after `ms`. */
export async function until(what, fn, ms, every = 100) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await sleep(every);
  }
}

/** A control-plane client: `call(method, path, key, body)` → {status, headers, json, text}. */
export function api(base) {
  return async function call(method, p, key, body) {
    const headers = { accept: 'application/json' };
    if (key) headers.authorization = `Bearer ${key}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: r.status, headers: r.headers, json, text };
  };
}

/** `call` that must answer 2xx; returns the JSON. */
export async function ok(call, method, p, key, body) {
  const r = await call(method, p, key, body);
  if (r.status < 200 || r.status > 299) {
    throw new Error(`${method} ${p} answered ${r.status}: ${r.text.slice(0, 500)}`);
  }
  return r.json;
}

/**
 * A loopback HTTP server; `page(req)` gives {type?, body} for each GET (a string stands for an HTML body).
 * Resolves to {origin, close}.
 */
export async function hostPage(page) {
  const server = createServer((req, res) => {
    let a = typeof page === 'function' ? page(req) : page;
    if (typeof a === 'string') a = { body: a };
    res.writeHead(200, { 'content-type': a.type || 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(a.body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
  };
}

/** Injected into every frame before its scripts: records media events of the player's video and CSP reports. */
const INSTRUMENT = `(() => {
  const rec = (window.__sgTest = { events: [], csp: [], firstFrame: null });
  for (const ev of ['loadedmetadata', 'loadeddata', 'play', 'playing', 'waiting', 'stalled', 'pause', 'seeking',
                    'seeked', 'ended', 'error', 'emptied']) {
    window.addEventListener(ev, (e) => {
      const v = e.target;
      if (!(v instanceof HTMLMediaElement)) return;
      rec.events.push({ ev, t: performance.now(), ct: v.currentTime, rs: v.readyState });
      if (ev === 'loadedmetadata' && typeof v.requestVideoFrameCallback === 'function' && rec.firstFrame === null) {
        v.requestVideoFrameCallback(() => { if (rec.firstFrame === null) rec.firstFrame = performance.now(); });
      }
    }, true);
  }
  window.addEventListener('securitypolicyviolation', (e) => {
    rec.csp.push({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample, source: e.sourceFile });
  }, true);
})();`;

/**
 * Watch a page: every answer from the edge (time, status, reason header, token), console CSP messages, page errors.
 * `edge` is the edge origin. Returns the record; `rec.problems()` lists what must not happen on any page.
 */
export function watch(page, edge, label) {
  const rec = {
    label,
    edge: [], // {t, status, reason, url, token}
    console: [],
    csp: [],
    errors: [],
    otherErrors: [], // answers >= 400 from anything but the edge (the API, favicon…)
    allowCsp: (_text) => false,
  };
  page.on('response', (r) => {
    const url = r.url();
    if (!url.startsWith(edge + '/')) {
      if (r.status() >= 400) rec.otherErrors.push(`${r.status()} ${url}`);
      return;
    }
    const m = url.match(/\/t\/([^/]+)\//);
    rec.edge.push({
      t: Date.now(),
      status: r.status(),
      reason: r.headers()['x-sharegate-reason'] || null,
      url,
      token: m ? m[1] : null,
    });
  });
  page.on('console', (m) => {
    const text = m.text();
    rec.console.push(`${m.type()}: ${text}`);
    if (/Content Security Policy|Content-Security-Policy|Refused to (load|execute|apply|connect|frame|create)/i.test(text)) {
      if (!rec.allowCsp(text)) rec.csp.push(text);
    }
  });
  page.on('pageerror', (e) => rec.errors.push(String(e && e.stack ? e.stack : e)));
  rec.problems = () => {
    const p = [];
    for (const c of rec.csp) p.push(`[${label}] CSP violation in the console: ${c}`);
    for (const e of rec.errors) p.push(`[${label}] uncaught page error: ${e}`);
    return p;
  };
  return rec;
}

/** A fresh context with the instrumentation; `extra` init scripts run after it. */
export async function context(browser, extra = []) {
  const ctx = await browser.newContext({ viewport: { width: 960, height: 600 } });
  await ctx.addInitScript({ content: INSTRUMENT });
  for (const s of extra) await ctx.addInitScript({ content: s });
  return ctx;
}

/** CSP reports and media events the instrumentation collected in `frame` (a Page or a Frame). */
export async function recorded(frame) {
  return frame.evaluate(() => window.__sgTest || { events: [], csp: [], firstFrame: null });
}

/** The player's state (window.sharegatePlayer.state()), or null when there is none. */
export async function playerState(frame) {
  return frame.evaluate(() => {
    const p = window.sharegatePlayer;
    if (!p || typeof p.state !== 'function') return null;
    try {
      return JSON.parse(JSON.stringify(p.state()));
    } catch (e) {
      return { stateError: String(e) };
    }
  });
}

/** What the video and the refusal panel show in `frame`. */
export async function view(frame) {
  return frame.evaluate(() => {
    const v = document.getElementById('sg-video');
    const r = document.getElementById('sg-refusal');
    const txt = (id) => (document.getElementById(id)?.textContent || '').trim();
    let refusalVisible = false;
    if (r && !r.hidden) {
      const cs = getComputedStyle(r);
      const box = r.getBoundingClientRect();
      refusalVisible = cs.display !== 'none' && cs.visibility !== 'hidden' && box.width > 0 && box.height > 0;
    }
    return {
      video: !!v,
      t: v ? v.currentTime : null,
      paused: v ? v.paused : null,
      readyState: v ? v.readyState : null,
      error: v && v.error ? v.error.code : null,
      src: v ? v.currentSrc : null,
      refusalVisible,
      title: txt('sg-refusal-title'),
      body: txt('sg-refusal-body'),
      ref: txt('sg-refusal-ref'),
      status: txt('sg-status'),
    };
  });
}

/** How far the video is buffered: {t, end (of the range holding t), duration, whole (buffered to the end)}. */
export async function buffered(frame) {
  return frame.evaluate(() => {
    const v = document.getElementById('sg-video');
    if (!v) return null;
    let end = v.currentTime;
    for (let i = 0; i < v.buffered.length; i++) {
      if (v.buffered.start(i) <= v.currentTime + 0.5 && v.buffered.end(i) > end) end = v.buffered.end(i);
    }
    const duration = Number.isFinite(v.duration) ? v.duration : null;
    return { t: +v.currentTime.toFixed(1), end: +end.toFixed(1), duration, whole: duration !== null && end >= duration - 0.5 };
  });
}

/** Why a case that needs requests mid-play cannot get them, when the player buffered the whole asset; else ''. */
export function wholeBuffered(b) {
  if (!b || !b.whole) return '';
  return `the player buffered the whole asset (to ${b.end} of ${b.duration} s at t=${b.t} s), so no request reaches ` +
    'the edge later: hls.js sizes its forward buffer by bytes as well (maxBufferSize 60 MB is ~200 s at 2.3 Mbit/s), ' +
    'so the player must cap maxMaxBufferLength (or maxBufferSize), not only maxBufferLength';
}

/** The page's sg-config JSON. */
export async function config(frame) {
  return frame.evaluate(() => {
    const el = document.getElementById('sg-config');
    return el ? JSON.parse(el.textContent) : null;
  });
}

/** Start playback as a viewer's click would (the element's play(); autoplay policy allows it in the test browser). */
export async function play(frame) {
  await until('the player to attach a source', async () => (await view(frame)).src || (await view(frame)).refusalVisible, 15000);
  return frame.evaluate(() => document.getElementById('sg-video').play().then(() => 'ok', (e) => String(e)));
}

/** Wait until the video's time reaches `target` s; throws with what the page shows when it does not. */
export async function playUntil(frame, target, ms, what) {
  try {
    return await until(what || `currentTime >= ${target}`, async () => {
      const v = await view(frame);
      if (v.refusalVisible) throw new Error(`refusal shown instead: ${v.title} / ${v.body} (${v.ref})`);
      return v.t >= target ? v : null;
    }, ms, 200);
  } catch (e) {
    const v = await view(frame).catch(() => null);
    const s = await playerState(frame).catch(() => null);
    throw new Error(`${e.message}; page shows ${JSON.stringify(v)}; player state ${JSON.stringify(s)}`);
  }
}

/** Longest gap, ms, between a `waiting` and the next `playing` after playback first started (open gap: to `now`). */
export function longestStall(events, now) {
  let started = false;
  let since = null;
  let worst = 0;
  for (const e of events) {
    if (e.ev === 'playing') {
      if (since !== null) worst = Math.max(worst, e.t - since);
      since = null;
      started = true;
    } else if (e.ev === 'waiting' && started && since === null) {
      since = e.t;
    }
  }
  if (since !== null && now !== undefined) worst = Math.max(worst, now - since);
  return worst;
}
