// A trial ending mid-play (run by sharegate/tests/browser_entitlement.rs, which starts `sharegate dev` with an
// entitlement backend that gives viewer `trial-viewer` a trial ending SG_TRIAL_SECS after its first check). The demo
// asset is made `entitled`; the page is the share page of a public share, opened by a signed-in viewer (the header an
// auth proxy would set, added to requests to the control plane only). The player must stop at the trial's end and
// say so, and the control plane must count the view's failure as a business one.
import { api, ok, launch, until, sleep, need } from './lib.mjs';

const API = need('SG_API');
const SHOTS = need('SG_SCREENSHOTS');
const TRIAL_SECS = Number(need('SG_TRIAL_SECS'));
const keys = { admin: need('SG_ADMIN_KEY'), minter: need('SG_MINTER_KEY'), auditor: need('SG_AUDITOR_KEY') };
const call = api(API);
const failures = [];
const check = (cond, what) => {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
  if (!cond) failures.push(what);
};

const browser = await launch();
const ctx = await browser.newContext({ viewport: { width: 960, height: 640 } });
const csp = [];
try {
  await ok(call, 'PUT', '/v1/assets/demo/access', keys.admin, { access: 'entitled' });
  await sleep(1100); // every replica's hot cache
  const share = await ok(call, 'POST', '/v1/shares', keys.minter, { asset: 'demo', audience: 'public', channel: 'trial-test' });

  // Without a viewer: the page says sign in.
  let page = await ctx.newPage();
  await page.goto(`${API}/s/${share.id}`);
  await until('the sign-in refusal', () => page.evaluate(() => (window.sharegatePlayer?.state().lastRefusal || {}).code === 'viewer_required'), 15000);
  check(true, 'no viewer: viewer_required');
  await page.close();

  // The signed-in trial viewer, looping the 6 s demo so playback outlasts the trial.
  page = await ctx.newPage();
  page.on('console', (m) => m.type() === 'error' && /Content Security Policy|CSP/.test(m.text()) && csp.push(m.text()));
  const apiOrigin = new URL(API).origin;
  await page.route((url) => url.origin === apiOrigin, (route) =>
    route.continue({ headers: { ...route.request().headers(), 'x-sharegate-viewer': 'trial-viewer' } }));
  await page.goto(`${API}/s/${share.id}?loop=1&muted=1`);
  await until('the player to load', () => page.evaluate(() => {
    const v = document.getElementById('sg-video');
    return v && v.readyState >= 1 && window.sharegatePlayer;
  }), 20000);
  const granted = await page.evaluate(() => window.sharegatePlayer.state());
  await page.evaluate(() => {
    const v = document.getElementById('sg-video');
    window.__t = { times: [] };
    setInterval(() => window.__t.times.push([Date.now() / 1000, v.currentTime, v.paused]), 250);
    v.play().catch(() => {});
  });
  await until('playback', () => page.evaluate(() => document.getElementById('sg-video').currentTime > 1), 15000);
  const refusal = await until('the trial end', () => page.evaluate(() => {
    const r = window.sharegatePlayer.state().lastRefusal;
    return r && { code: r.code, at: Date.now() / 1000 };
  }), (TRIAL_SECS + 20) * 1000, 100);
  const st = await page.evaluate(() => ({
    state: window.sharegatePlayer.state(),
    title: document.title,
    text: document.body.innerText,
    video: { t: document.getElementById('sg-video').currentTime, paused: document.getElementById('sg-video').paused },
    played: window.__t.times,
    view: window.sharegatePlayer.analytics().view,
  }));
  console.log(`token expires ${granted.expires_at}; refused (${refusal.code}) at ${refusal.at.toFixed(1)}`);
  check(refusal.code === 'trial_ended', `the page was stopped with trial_ended (${refusal.code})`);
  check(refusal.at >= granted.expires_at - 1, 'not before the trial ended');
  check(refusal.at <= granted.expires_at + 6, 'within seconds of the trial end');
  check(/trial has ended/i.test(st.text) && /trial has ended/i.test(st.title), `the page says the trial ended ("${st.title}")`);
  // Playing right up to the end: the video moved on in the last seconds before it.
  const before = st.played.filter(([at]) => at < granted.expires_at - 0.5 && at > granted.expires_at - 3);
  check(before.length > 2 && before[before.length - 1][1] !== before[0][1], 'playing until the trial end');
  await sleep(1500);
  const after = await page.evaluate(() => {
    const v = document.getElementById('sg-video');
    return { t: v.currentTime, paused: v.paused };
  });
  check(after.paused || after.t === st.video.t, 'stopped after it');
  await page.screenshot({ path: `${SHOTS}/trial-ended.png` });
  await page.close({ runBeforeUnload: true });

  // The view's failure is a business one, with the trial's code.
  const rec = await until('the view record', async () => {
    const r = await call('GET', `/v1/analytics/views/${st.view}`, keys.auditor);
    return r.status === 200 && r.json.failure ? r.json : null;
  }, 20000, 250);
  check(rec.failure.class === 'business' && rec.failure.code === 'trial_ended', `business failure (${JSON.stringify(rec.failure)})`);
  check(csp.length === 0, `no CSP violation (${csp.join('; ')})`);
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`${failures.length} check(s) failed: ${failures.join('; ')}`);
  process.exit(1);
}
