/*
 * sharegate player: plays a share's HLS video on the share page (/s/<id>) and in the embed (/e/<id>).
 *
 * The page never holds a long-lived credential: it asks the control plane for a short-lived token (POST
 * config.playback_url), refreshes it before it expires, and puts the current token into every request URL
 * (the token is the /t/<token>/ path segment). A refusal from the edge (401/403/410) stops playback at once
 * and shows a page for its reason code. In an iframe it speaks the player.js postMessage protocol.
 *
 * Plain ES2020, no build step. window.Hls (hls.js full build) is loaded before this file on player pages and
 * is absent on refusal pages. CSP: no inline styles, no innerHTML; only textContent and the CSSOM.
 */
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const cfgEl = $('sg-config');
  let cfg = {};
  try {
    cfg = JSON.parse(cfgEl ? cfgEl.textContent : '{}') || {};
  } catch (_) {
    cfg = {};
  }
  const prefs = cfg.player || {};
  const messages = cfg.messages || {};
  const video = $('sg-video');
  const stage = $('sg-stage');
  const statusEl = $('sg-status');
  const embedded = window.parent !== window;
  const REFUSED = [401, 403, 410];
  // Share-level refusals that end the session (the share is gone, expired or not for this viewer).
  const DEFINITIVE = [401, 403, 404, 410];

  /* ---------- state ---------- */

  const st = {
    engine: null, // 'hls.js' | 'native'
    token: null,
    tokenId: null,
    url: null, // the multivariant URL as last issued
    edgeOrigin: cfg.edge_origin || null,
    expiresAt: 0, // server unix seconds
    refreshAt: 0,
    skew: 0, // server clock minus local clock, seconds
    refreshes: 0,
    lastRefusal: null,
    stopped: false,
    stoppedAt: null, // playback position when a refusal stopped the player
  };
  let hls = null;
  let refreshTimer = 0;
  let refreshing = null; // the refresh in flight, shared by everyone who needs it

  const serverNow = () => Math.floor(Date.now() / 1000 + st.skew);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  /* ---------- look ---------- */

  // Colours come from the share's preset; CSS.supports keeps anything but a colour out of the stylesheet.
  function applyTheme() {
    const root = document.documentElement.style;
    const set = (name, value) => {
      if (typeof value === 'string' && window.CSS && CSS.supports('color', value)) root.setProperty(name, value);
    };
    set('--sg-accent', prefs.accent_color);
    set('--sg-bg', prefs.background_color);
    set('--sg-fg', prefs.text_color);
    const header = document.querySelector('.sg-header');
    const title = document.querySelector('.sg-title');
    if (header && prefs.show_title === false) header.hidden = true;
    if (title && !title.textContent.trim() && cfg.title) title.textContent = cfg.title;
  }

  // Polite status for screen readers; debounced so short stalls stay quiet.
  let statusTimer = 0;
  function status(text, delay) {
    clearTimeout(statusTimer);
    if (!statusEl) return;
    if (!text || !delay) {
      statusEl.textContent = text || '';
      return;
    }
    statusTimer = setTimeout(() => {
      statusEl.textContent = text;
    }, delay);
  }

  /* ---------- refusal page ---------- */

  const FALLBACK = {
    title: 'This video cannot be played',
    body: 'Something went wrong. If it keeps happening, contact whoever shared the link and quote the reference below.',
  };
  const message = (code) => messages[code] || messages.default || FALLBACK;

  // Stop everything and show the page for `code`. `reference` is what support and POST /v1/diagnose understand.
  function refuse(code, httpStatus, reference) {
    if (st.stopped) return;
    st.stopped = true;
    clearTimeout(refreshTimer);
    status('');
    const ref = reference || `sg-${st.tokenId || cfg.share || 'unknown'}-${serverNow()}`;
    st.lastRefusal = { code, status: httpStatus || null, reference: ref };
    if (video) st.stoppedAt = video.currentTime;
    // The video is about to be hidden; if it (or its controls) had focus, hand focus to the panel, not <body>.
    const stage = $('sg-stage');
    const hadFocus = stage && stage.contains(document.activeElement);
    if (hls) {
      // Stop requests now; destroy after the current hls.js event has run its course (we may be inside it).
      const h = hls;
      hls = null;
      h.stopLoad();
      setTimeout(() => h.destroy(), 0);
    } else if (video && st.engine === 'native') {
      video.removeAttribute('src');
      video.load();
    }
    if (video) {
      video.pause();
      video.hidden = true;
    }
    const m = message(code);
    const panel = $('sg-refusal');
    const put = (id, text) => {
      const el = $(id);
      if (el) el.textContent = text;
    };
    put('sg-refusal-title', m.title || FALLBACK.title);
    put('sg-refusal-body', m.body || '');
    put('sg-refusal-ref', ref);
    if (panel) {
      panel.hidden = false;
      panel.tabIndex = -1;
      if (hadFocus) panel.focus();
    }
    document.title = m.title || FALLBACK.title;
    document.body.classList.add('sg-refused');
    qoeFailed(code);
    emit('error', { code, status: httpStatus || null, reference: ref, message: m.title || FALLBACK.title });
  }

  /* ---------- the control plane ---------- */

  // The playback endpoint, with the page's UTM parameters (a share that takes them credits the view's tokens to
  // that channel and campaign, as its view id is) and `network=off` when asked for.
  function playbackUrl() {
    const q = new URLSearchParams();
    const page = new URLSearchParams(location.search);
    for (const k of ['utm_source', 'utm_campaign']) if (page.get(k)) q.set(k, page.get(k));
    if (st.networkOff) q.set('network', 'off');
    if (st.token) q.set('refresh', '1'); // the entitlement check's purpose: the next token, not a new view
    const qs = q.toString();
    return cfg.playback_url + (qs ? `?${qs}` : '');
  }

  // One POST to the playback endpoint. Resolves to {data} (200), {refusal} (a definitive 4xx answer) or
  // {transient} (network error, 5xx, 429, an unreadable answer): only the last is worth retrying.
  async function askPlayback() {
    let res;
    try {
      // `network=off` after the edge refused this viewer's network twice (see onRefusedRequest). Same-origin
      // credentials: a product's auth proxy in front of the page may know the viewer by a cookie.
      res = await fetch(playbackUrl(), {
        method: 'POST',
        cache: 'no-store',
        credentials: 'same-origin',
        headers: { accept: 'application/json' },
      });
    } catch (_) {
      return { transient: { code: 'unavailable' } };
    }
    const date = Date.parse(res.headers.get('date') || '');
    const at = Number.isFinite(date) ? Math.floor(date / 1000) : serverNow();
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (res.ok && body && body.token && body.url) return { data: body };
    const code = (body && typeof body.error === 'string' && body.error) || 'unavailable';
    const answer = { code, status: res.status, reference: `sg-${cfg.share}-${at}` };
    if (DEFINITIVE.includes(res.status) && body && body.error) return { refusal: answer };
    return { transient: answer };
  }

  function accept(data) {
    st.skew = (Number(data.server_time) || Date.now() / 1000) - Date.now() / 1000;
    st.token = data.token;
    st.tokenId = data.token_id || null;
    st.url = data.url;
    st.expiresAt = Number(data.expires_at) || 0;
    st.refreshAt = Number(data.refresh_at) || st.expiresAt - 60;
    try {
      st.edgeOrigin = st.edgeOrigin || new URL(data.url, location.href).origin;
    } catch (_) {
      /* keep what the config said */
    }
    schedule();
  }

  function schedule() {
    clearTimeout(refreshTimer);
    if (st.stopped || !st.refreshAt) return;
    const ms = Math.max(1000, (st.refreshAt - serverNow()) * 1000);
    refreshTimer = setTimeout(() => refresh(), Math.min(ms, 2 ** 31 - 1));
  }

  // Get a new token; retry transient failures with backoff until the current token expires. A definitive
  // refusal (the share was deleted, expired, or the viewer lost access) shows its page at once.
  // Resolves true when a new token is in place.
  function refresh() {
    if (!refreshing) {
      refreshing = (async () => {
        let wait = 1000;
        while (!st.stopped) {
          const r = await askPlayback();
          if (st.stopped) return false;
          if (r.data) {
            const oldExpiry = st.expiresAt;
            accept(r.data);
            st.refreshes++;
            if (st.engine === 'native') nativeSwapSoon(oldExpiry);
            return true;
          }
          if (r.refusal) {
            refuse(r.refusal.code, r.refusal.status, r.refusal.reference);
            return false;
          }
          const left = (st.expiresAt - serverNow()) * 1000;
          if (left <= 0) return false; // the edge will say "expired" on the next request; that path decides
          await sleep(Math.min(wait, left));
          wait = Math.min(wait * 2, 30000);
        }
        return false;
      })().finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  }

  // Timers in background tabs are throttled (and laptops sleep): catch up when the page is seen again.
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && st.token && !st.stopped && serverNow() >= st.refreshAt) refresh();
  });

  /* ---------- the token in URLs ---------- */

  // Replace the /t/<token>/ path segment of an edge URL with the current token; other URLs pass unchanged.
  function swapToken(url) {
    if (!st.token) return url;
    let u;
    try {
      u = new URL(url, location.href);
    } catch (_) {
      return url;
    }
    if (u.origin !== st.edgeOrigin) return url;
    const path = u.pathname.replace(/\/t\/[^/]+\//, `/t/${st.token}/`);
    if (path === u.pathname) return url;
    u.pathname = path;
    return u.href;
  }

  // The token a URL carries (to tell a refusal of an old token from one of the current token).
  function tokenOf(url) {
    const m = /\/t\/([^/]+)\//.exec(url || '');
    return m ? m[1] : null;
  }

  /* ---------- start ---------- */

  async function start() {
    // Decide the engine first: a browser that cannot play HLS gets its page without a token being minted.
    const Hls = window.Hls;
    const engine = Hls && Hls.isSupported() ? 'hls.js' : video.canPlayType('application/vnd.apple.mpegurl') ? 'native' : null;
    if (!engine) return refuse('unsupported_browser', null);
    status('Loading video…');
    let wait = 1000;
    let r;
    for (let attempt = 0; ; attempt++) {
      r = await askPlayback();
      if (!r.transient || attempt >= 3) break; // retries after 1, 2 and 4 s
      await sleep(wait);
      wait *= 2;
    }
    if (r.refusal) return refuse(r.refusal.code, r.refusal.status, r.refusal.reference);
    if (r.transient) {
      const t = r.transient;
      const code = messages[t.code] ? t.code : 'unavailable';
      return refuse(code, t.status || null, t.reference || `sg-${cfg.share}-${serverNow()}`);
    }
    accept(r.data);
    if (engine === 'hls.js') startHls(Hls);
    else startNative();
  }

  /* ---------- hls.js ---------- */

  // Never retry a request the edge refused: it will be refused again, and the viewer would stare at a frozen
  // picture meanwhile. (hls.js already skips most 4xx; this makes it explicit and covers custom policies.)
  function noRetryOnRefusal(retryConfig, count, isTimeout, response, retry) {
    return retry && !(response && REFUSED.includes(response.code));
  }

  function guarded(policy) {
    const d = policy && policy.default;
    if (!d || !d.errorRetry) return policy;
    return { default: { ...d, errorRetry: { ...d.errorRetry, shouldRetry: noRetryOnRefusal } } };
  }

  function startHls(Hls) {
    st.engine = 'hls.js';
    const base = Hls.DefaultConfig || {};
    const start = Number(prefs.start_time) > 0 ? Number(prefs.start_time) : -1;
    hls = new Hls({
      autoStartLoad: true, // buffering at once makes Chromium paint frame 0: the "first frame" poster
      startPosition: start,
      // 30 s ahead; at most 60 s even for a low bitrate (hls.js would otherwise fill maxBufferSize, up to
      // 10 minutes), so a revocation reaches a viewer within a minute of play.
      maxBufferLength: 30,
      maxMaxBufferLength: 60,
      backBufferLength: 30,
      enableWorker: true,
      capLevelToPlayerSize: true,
      // CTA-5004 CMCD (query mode: headers would need a CORS preflight): the view id joins the edge's events to
      // this page's beacons.
      cmcd: an ? { sessionId: an.view, contentId: an.asset || undefined } : undefined,
      manifestLoadPolicy: guarded(base.manifestLoadPolicy),
      playlistLoadPolicy: guarded(base.playlistLoadPolicy),
      fragLoadPolicy: guarded(base.fragLoadPolicy),
      keyLoadPolicy: guarded(base.keyLoadPolicy),
      steeringManifestLoadPolicy: guarded(base.steeringManifestLoadPolicy),
      // Every request goes out with the current token. If the token ran out while timers were throttled, wait
      // for the refresh first rather than send a request that is bound to be refused.
      xhrSetup(xhr, url) {
        const open = () => xhr.open('GET', swapToken(url), true);
        if (st.expiresAt && serverNow() >= st.expiresAt - 2 && !st.stopped) return refresh().then(open, open);
        open();
      },
    });
    hls.on(Hls.Events.ERROR, onHlsError);
    hls.on(Hls.Events.FRAG_BUFFERED, () => {
      recovery.fatal = 0;
      recovery.token = 0;
    });
    hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, () => {
      // Captions stay off until the viewer asks (key c or the controls' menu).
      if (!captionsWanted && hls) hls.subtitleDisplay = false;
    });
    hls.attachMedia(video);
    hls.loadSource(st.url);
  }

  const recovery = { token: 0, fatal: 0, reason: null };

  // The edge's reason code for a refused hls.js request: the x-sharegate-reason header, else the JSON body.
  function reasonOf(xhr) {
    if (!xhr || typeof xhr.getResponseHeader !== 'function') return null;
    let reason = null;
    try {
      reason = xhr.getResponseHeader('x-sharegate-reason');
    } catch (_) {
      /* not readable */
    }
    if (reason) return reason;
    try {
      const r = xhr.response;
      const text = typeof r === 'string' ? r : r instanceof ArrayBuffer ? new TextDecoder().decode(r) : '';
      const body = JSON.parse(text);
      if (body && typeof body.error === 'string') return body.error;
    } catch (_) {
      /* not JSON */
    }
    return null;
  }

  function onHlsError(_event, data) {
    if (st.stopped || !hls) return;
    const xhr = data.networkDetails;
    const code = (data.response && data.response.code) || (xhr && xhr.status) || 0;
    if (REFUSED.includes(code)) return onRefusedRequest(code, reasonOf(xhr) || 'denied', data);
    // 503 with a reason (state_stale, origin_unavailable) is retried by hls.js; remember it for a final page.
    const reason = code >= 500 ? reasonOf(xhr) : null;
    if (reason) recovery.reason = reason;
    if (!data.fatal) return;
    const H = window.Hls;
    qoe.errorType = data.type === H.ErrorTypes.MEDIA_ERROR ? (/decode/i.test(data.details || '') ? 'decode' : 'media')
      : /manifest|level/i.test(data.details || '') ? 'manifest' : 'network';
    if (recovery.fatal++ === 0) {
      // One attempt to recover, then give up with a page.
      if (data.type === H.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
      else hls.startLoad(video.currentTime || -1);
      return;
    }
    const last = recovery.reason && messages[recovery.reason] ? recovery.reason : 'default';
    refuse(last, code || null);
  }

  // Fail fast: act on the first refused request, not on hls.js's later fatal escalation.
  async function onRefusedRequest(code, reason, data) {
    // The URL as sent (after the token swap); hls.js's own context.url still holds the first token.
    const xhr = data.networkDetails;
    const sent = (xhr && xhr.responseURL) || '';
    const stale = tokenOf(sent) && tokenOf(sent) !== st.token; // sent before the last refresh
    const renewable = reason === 'expired' || reason === 'ip_mismatch';
    // The viewer's network as the control plane sees it is not the one the edge sees (a dual-stack viewer who
    // reaches them over different address families): after one fresh token failed, ask for one bound to the
    // page origin only (no weaker than the share's own redirect).
    if (reason === 'ip_mismatch' && recovery.token && !st.networkOff && !refreshing) {
      st.networkOff = true;
      recovery.token = 0;
    }
    if ((stale || renewable) && !recovery.token) {
      // An expired token (timers slept) or a new network (the viewer moved): one fresh token, then carry on.
      recovery.token = 1;
      hls.stopLoad();
      const ok = stale || (await refresh());
      if (st.stopped || !hls) return;
      if (!ok) return refuse(messages.unavailable ? 'unavailable' : reason, code);
      hls.startLoad(video.currentTime);
      return;
    }
    if (recovery.token && renewable && refreshing) return; // a second request refused while renewing
    refuse(reason, code);
  }

  /* ---------- native HLS (Safari, iOS) ---------- */

  // No request hooks here: the browser resolves every sub-request against the multivariant URL we set, so a
  // refresh means a new URL. We swap it at once (the old token stops working at expires_at), keeping the
  // position, paused state, volume and rate; the viewer may see a short rebuffer.
  function startNative() {
    st.engine = 'native';
    video.src = st.url;
    if (Number(prefs.start_time) > 0) {
      video.addEventListener('loadedmetadata', () => seek(Number(prefs.start_time)), { once: true });
    }
    video.addEventListener('error', () => diagnoseNative());
    // Safari may stall on a refused segment instead of failing: look after 2 s of waiting.
    let stallTimer = 0;
    video.addEventListener('waiting', () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        if (!video.paused && video.readyState < 3) diagnoseNative(true);
      }, 2000);
    });
    video.addEventListener('playing', () => clearTimeout(stallTimer));
    for (const boundary of ['pause', 'seeking', 'waiting']) {
      video.addEventListener(boundary, () => {
        if (swapPending && !swapping) nativeSwap();
      });
    }
  }

  // A new token means a new source here, which costs a short rebuffer: make the swap at the next natural boundary
  // (the viewer pauses or seeks, or playback stalls anyway), and at the latest halfway between now and the old
  // token's expiry.
  let swapPending = false;
  let swapTimer = 0;
  function nativeSwapSoon(oldExpiry) {
    if (!video || st.stopped) return;
    if (video.paused || video.ended) return nativeSwap();
    swapPending = true;
    clearTimeout(swapTimer);
    swapTimer = setTimeout(nativeSwap, Math.max(0, ((oldExpiry - serverNow()) * 1000) / 2));
  }

  function nativeSwap() {
    swapPending = false;
    clearTimeout(swapTimer);
    if (!video || st.stopped) return;
    const keep = {
      t: video.currentTime,
      paused: video.paused,
      volume: video.volume,
      muted: video.muted,
      rate: video.playbackRate,
    };
    swapping = true;
    video.src = st.url;
    video.addEventListener(
      'loadedmetadata',
      () => {
        video.volume = keep.volume;
        video.muted = keep.muted;
        video.playbackRate = keep.rate;
        if (keep.t) video.currentTime = keep.t;
        const p = keep.paused ? Promise.resolve() : video.play();
        p.catch(() => {}).then(() => {
          swapping = false;
        });
      },
      { once: true }
    );
  }
  let swapping = false;
  let nativeRetried = false;

  // The element's error says nothing about why; ask the edge ourselves with the current URL.
  async function diagnoseNative(fromStall) {
    if (st.stopped || !st.url) return;
    let res = null;
    try {
      res = await fetch(swapToken(st.url), { cache: 'no-store', credentials: 'omit' });
    } catch (_) {
      res = null;
    }
    if (st.stopped) return;
    if (res && REFUSED.includes(res.status)) {
      let reason = res.headers.get('x-sharegate-reason');
      if (!reason) {
        try {
          reason = (await res.json()).error;
        } catch (_) {
          reason = null;
        }
      }
      reason = reason || 'denied';
      if ((reason === 'expired' || reason === 'ip_mismatch') && !nativeRetried) {
        nativeRetried = true;
        if (await refresh()) return; // nativeSwap() reloads with the new token
      }
      return refuse(reason, res.status);
    }
    if (fromStall) return; // a slow network, not a refusal
    if (!nativeRetried && res && res.ok) {
      nativeRetried = true;
      return nativeSwap(); // one reload for a media error
    }
    refuse(res ? 'default' : 'unavailable', res ? res.status : null);
  }

  /* ---------- viewer controls ---------- */

  const reducedMotion = () => window.matchMedia && matchMedia('(prefers-reduced-motion: reduce)').matches;

  function seek(t) {
    const d = video.duration;
    video.currentTime = Math.max(0, Number.isFinite(d) ? Math.min(t, Math.max(0, d - 0.1)) : t);
  }

  function play() {
    qoePlayRequested();
    const p = video.play();
    if (p && p.catch) p.catch(() => {}); // blocked by the browser's autoplay policy: stay paused
  }

  let captionsWanted = false;
  function captionTracks() {
    return Array.from(video.textTracks || []).filter((t) => t.kind === 'subtitles' || t.kind === 'captions');
  }
  function toggleCaptions() {
    const tracks = captionTracks();
    if (!tracks.length) return status('No captions for this video');
    const on = tracks.some((t) => t.mode === 'showing');
    captionsWanted = !on;
    if (hls && hls.subtitleTracks && hls.subtitleTracks.length) {
      if (on) hls.subtitleTrack = -1;
      else {
        const i = hls.subtitleTracks.findIndex((t) => t.default);
        hls.subtitleTrack = i >= 0 ? i : 0;
      }
      hls.subtitleDisplay = !on;
    }
    if (on) tracks.forEach((t) => (t.mode = 'disabled'));
    else if (!tracks.some((t) => t.mode === 'showing')) {
      (tracks.find((t) => t.mode === 'hidden') || tracks[0]).mode = 'showing';
    }
    status(on ? 'Captions off' : 'Captions on');
  }

  function toggleFullscreen() {
    if (document.fullscreenElement) return document.exitFullscreen().catch(() => {});
    if (stage && stage.requestFullscreen) return stage.requestFullscreen().catch(() => {});
    if (video.webkitEnterFullscreen) video.webkitEnterFullscreen(); // iOS: only the video can go full screen
  }

  // Keys we handle: ours alone, wherever focus is (except text fields and buttons).
  function ours(e) {
    if (st.stopped || !video || e.ctrlKey || e.metaKey || e.altKey) return false;
    const t = e.target;
    // With native controls, focus on the video may be inside them (the volume slider, the captions menu): leave
    // those keys to the controls rather than seek or change volume under the viewer's hands.
    if (t === video && video.controls) return false;
    return !(t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(t.tagName)));
  }

  function onKey(e) {
    if (!ours(e)) return;
    const k = e.key;
    const volume = (dv) => {
      video.volume = Math.min(1, Math.max(0, Math.round((video.volume + dv) * 10) / 10));
      if (video.volume > 0) video.muted = false;
    };
    const actions = {
      ' ': () => (video.paused ? play() : video.pause()),
      k: () => (video.paused ? play() : video.pause()),
      ArrowLeft: () => seek(video.currentTime - 5),
      ArrowRight: () => seek(video.currentTime + 5),
      j: () => seek(video.currentTime - 10),
      l: () => seek(video.currentTime + 10),
      ArrowUp: () => volume(0.1),
      ArrowDown: () => volume(-0.1),
      m: () => (video.muted = !video.muted),
      f: toggleFullscreen,
      c: toggleCaptions,
    };
    let act = actions[k.length === 1 ? k.toLowerCase() : k];
    if (!act && /^[0-9]$/.test(k) && Number.isFinite(video.duration)) {
      act = () => seek((video.duration * Number(k)) / 10);
    }
    if (!act) return;
    // Captured at the window and stopped: Chromium's native controls listen on the video element itself and
    // would act on the same key a second time.
    e.preventDefault();
    e.stopPropagation();
    act();
  }

  function setupVideo() {
    video.controls = prefs.controls !== false;
    video.loop = !!prefs.loop;
    video.muted = !!prefs.muted;
    if (prefs.poster_url) video.poster = prefs.poster_url;
    // Without native controls the stage takes keyboard focus, so the shortcuts stay reachable.
    if (!video.controls && stage) stage.tabIndex = 0;
    window.addEventListener('keydown', onKey, true);
    // Chromium's controls toggle playback on Space's keyup: keep that from undoing what keydown did.
    const swallow = (e) => {
      if (ours(e) && /^( |Arrow(Left|Right|Up|Down)|k)$/.test(e.key)) {
        e.preventDefault();
        e.stopPropagation();
      }
    };
    window.addEventListener('keyup', swallow, true);
    window.addEventListener('keypress', swallow, true);
    video.addEventListener('waiting', () => status('Buffering…', 800));
    video.addEventListener('playing', () => status(''));
    video.addEventListener('canplay', () => status(''), { once: true });
    // Autoplay only muted (browsers block sound without a gesture), and never for viewers who asked for
    // reduced motion.
    if (prefs.autoplay && !reducedMotion()) {
      video.muted = true;
      play();
    }
  }

  /* ---------- postMessage API (player.js protocol) ---------- */

  const CONTEXT = 'player.js';
  const VERSION = '0.0.11';
  const EVENTS = ['ready', 'play', 'pause', 'timeupdate', 'ended', 'error'];
  const origins = Array.isArray(cfg.embed_origins) && cfg.embed_origins.length ? cfg.embed_origins : null;
  const listeners = {}; // event -> Set of listener ids
  let parentOrigin = null; // learned from the first accepted command

  // Events go to the allowed origins only (postMessage drops a message whose targetOrigin does not match the
  // parent, so posting to each allowed origin reaches exactly the right one); with no list, to any parent.
  // Events carry no secrets: never the token or a media URL.
  function post(msg) {
    if (!embedded) return;
    const text = JSON.stringify(msg);
    const targets = parentOrigin ? [parentOrigin] : origins || ['*'];
    for (const o of targets) {
      try {
        window.parent.postMessage(text, o);
      } catch (_) {
        /* an origin string the browser rejects */
      }
    }
  }

  function emit(event, value) {
    const ids = listeners[event];
    const base = { context: CONTEXT, version: VERSION, event };
    if (value !== undefined) base.value = value;
    if (ids && ids.size) ids.forEach((listener) => post({ ...base, listener }));
    else post(base);
  }

  const volume100 = () => Math.round((video ? video.volume : 1) * 100);
  const METHODS = {
    play: () => video && play(),
    pause: () => video && video.pause(),
    getPaused: () => (video ? video.paused : true),
    mute: (v) => video && (video.muted = v !== false),
    unmute: () => video && (video.muted = false),
    getMuted: () => (video ? video.muted : false),
    setVolume: (v) => video && Number.isFinite(+v) && (video.volume = Math.min(100, Math.max(0, +v)) / 100),
    getVolume: volume100,
    setCurrentTime: (v) => video && Number.isFinite(+v) && seek(+v),
    seek: (v) => video && Number.isFinite(+v) && seek(+v),
    getCurrentTime: () => (video ? video.currentTime : 0),
    getDuration: () => (video && Number.isFinite(video.duration) ? video.duration : 0),
    setLoop: (v) => video && (video.loop = !!v),
    getLoop: () => (video ? video.loop : false),
    addEventListener: (v, listener) => {
      if (EVENTS.includes(v) && listener != null) (listeners[v] = listeners[v] || new Set()).add(listener);
    },
    removeEventListener: (v, listener) => {
      if (!listeners[v]) return;
      if (listener == null) listeners[v].clear();
      else listeners[v].delete(listener);
    },
  };

  function onMessage(e) {
    if (e.source !== window.parent || e.source === window) return;
    if (origins && !origins.includes(e.origin)) return;
    let msg = e.data;
    if (typeof msg === 'string') {
      try {
        msg = JSON.parse(msg);
      } catch (_) {
        return;
      }
    }
    if (!msg || typeof msg !== 'object' || (msg.context && msg.context !== CONTEXT)) return;
    const fn = Object.prototype.hasOwnProperty.call(METHODS, msg.method) && METHODS[msg.method];
    if (!fn) return;
    if (origins) parentOrigin = e.origin;
    const result = fn(msg.value, msg.listener);
    // Getters answer with an event named after the method, addressed to the caller's listener id.
    if (/^get/.test(msg.method)) {
      const answer = { context: CONTEXT, version: VERSION, event: msg.method, value: result };
      if (msg.listener != null) answer.listener = msg.listener;
      post(answer);
    }
  }

  function setupEvents() {
    if (!video) return;
    video.addEventListener('play', () => {
      if (!swapping) emit('play');
    });
    video.addEventListener('pause', () => {
      if (!swapping && !st.stopped) emit('pause');
    });
    video.addEventListener('ended', () => emit('ended'));
    let last = 0;
    video.addEventListener('timeupdate', () => {
      const now = Date.now();
      if (now - last < 250) return; // at most four a second
      last = now;
      emit('timeupdate', {
        seconds: video.currentTime,
        duration: Number.isFinite(video.duration) ? video.duration : 0,
      });
    });
  }

  /* ---------- analytics (docs/analytics.md) ---------- */

  // Cumulative snapshots of this view, sent as beacons: a lost or repeated one costs nothing (the server keeps the
  // maximum of each total), so there is no retry logic here.
  const an = cfg.analytics && typeof cfg.analytics.view === 'string' ? cfg.analytics : null;
  const TECHNICAL = { default: null, unavailable: 'network', unsupported_browser: 'media' };
  const qoe = {
    seq: 0,
    requested: false,
    playAt: 0,
    startupMs: null,
    watchMs: 0,
    stallMs: 0,
    rebuffers: 0,
    ended: false,
    failure: null,
    errorType: null,
    phase: 'idle', // 'playing' | 'stalled' | 'idle' (paused, ended, not started)
    since: 0,
    seeking: false,
    dirty: false,
    lastSent: 0,
    done: false,
  };
  const perfNow = () => performance.now();

  // Close the current phase: its time is watch time after the first frame, and stall time when stalled.
  function qoeTick() {
    const now = perfNow();
    if (qoe.startupMs != null && qoe.phase !== 'idle') {
      const dt = now - qoe.since;
      qoe.watchMs += dt;
      if (qoe.phase === 'stalled') qoe.stallMs += dt;
      if (dt > 0) qoe.dirty = true;
    }
    qoe.since = now;
  }
  function qoePhase(p) {
    qoeTick();
    qoe.phase = p;
  }
  function qoePlayRequested() {
    if (qoe.requested || !an) return;
    qoe.requested = true;
    qoe.playAt = perfNow();
    qoe.dirty = true;
    const first = () => qoeFirstFrame();
    if (video && video.requestVideoFrameCallback) video.requestVideoFrameCallback(first);
  }
  function qoeFirstFrame() {
    if (qoe.startupMs != null || !qoe.requested || st.stopped) return;
    qoe.startupMs = Math.max(0, Math.round(perfNow() - qoe.playAt));
    qoe.phase = 'playing';
    qoe.since = perfNow();
    qoe.dirty = true;
    send(false, true);
  }
  function qoeFailed(code) {
    if (!an || qoe.failure) return;
    qoeTick();
    qoe.phase = 'idle';
    const mapped = Object.prototype.hasOwnProperty.call(TECHNICAL, code) ? TECHNICAL[code] || qoe.errorType || 'other' : code;
    qoe.failure = { code: mapped };
    qoe.dirty = true;
    send(false, true);
  }
  function playedMs() {
    let t = 0;
    const r = video && video.played;
    for (let i = 0; r && i < r.length; i++) t += r.end(i) - r.start(i);
    return Math.round(t * 1000);
  }
  function snapshot(final) {
    qoeTick();
    const d = video && Number.isFinite(video.duration) ? Math.round(video.duration * 1000) : 0;
    return {
      v: 1,
      view: an.view,
      share: an.share,
      asset: an.asset,
      channel: an.channel || null,
      campaign: an.campaign || null,
      seq: qoe.seq++,
      play_requested: qoe.requested,
      startup_ms: qoe.startupMs,
      watch_ms: Math.round(qoe.watchMs),
      stall_ms: Math.round(qoe.stallMs),
      rebuffers: qoe.rebuffers,
      played_ms: playedMs(),
      duration_ms: d,
      ended: qoe.ended,
      failure: qoe.failure,
      final,
    };
  }
  // At most one beacon per 2 s (`soon` lets a first frame, a failure or the page going hidden through), none
  // after the final one, none when nothing changed.
  function send(final, soon) {
    if (!an || qoe.done) return;
    qoeTick();
    const now = Date.now();
    if (!final && (!qoe.dirty || (!soon && now - qoe.lastSent < 2000))) return;
    qoe.dirty = false;
    qoe.lastSent = now;
    if (final) qoe.done = true;
    const body = JSON.stringify(snapshot(final));
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(an.beacon, body)) return;
    } catch (_) {
      /* fall through to fetch */
    }
    fetch(an.beacon, { method: 'POST', body, keepalive: true, credentials: 'omit', headers: { 'content-type': 'text/plain' } }).catch(() => {});
  }
  function setupAnalytics() {
    if (!an || !video) return;
    video.addEventListener('play', qoePlayRequested);
    video.addEventListener('playing', () => {
      qoe.seeking = false;
      if (qoe.startupMs == null) {
        // Without requestVideoFrameCallback: the first timeupdate that moves the position.
        const t0 = video.currentTime;
        const check = () => {
          if (video.currentTime > t0) {
            video.removeEventListener('timeupdate', check);
            qoeFirstFrame();
          }
        };
        if (!video.requestVideoFrameCallback) video.addEventListener('timeupdate', check);
        return;
      }
      qoePhase('playing');
    });
    video.addEventListener('waiting', () => {
      if (qoe.startupMs == null || st.stopped) return;
      // A seek's wait is not a rebuffer: the viewer asked for it.
      if (!qoe.seeking && !video.seeking) {
        qoe.rebuffers++;
        qoePhase('stalled');
      } else qoePhase('playing');
    });
    video.addEventListener('seeking', () => {
      qoe.seeking = true;
    });
    video.addEventListener('seeked', () => {
      qoe.seeking = false;
    });
    video.addEventListener('pause', () => {
      if (!swapping) qoePhase('idle');
    });
    video.addEventListener('ended', () => {
      qoePhase('idle');
      qoe.ended = true;
      qoe.dirty = true;
      send(false, true);
    });
    setInterval(() => {
      if (qoe.phase !== 'idle') qoe.dirty = true;
      send(false);
    }, Math.max(2000, Number(an.interval_ms) || 10000));
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) send(false, true);
    });
    window.addEventListener('pagehide', () => send(true));
  }

  /* ---------- support hook ---------- */

  // For tests and support: what the player is doing, without the token itself.
  window.sharegatePlayer = Object.freeze({
    state: () => ({
      mode: cfg.mode || (embedded ? 'embed' : 'share'),
      engine: st.engine,
      token_id: st.tokenId,
      refreshes: st.refreshes,
      lastRefusal: st.lastRefusal,
      expires_at: st.expiresAt, // the current token's expiry, server Unix seconds
      currentTime: st.stopped && st.stoppedAt != null ? st.stoppedAt : video ? video.currentTime : 0,
    }),
    // This view's analytics as the next beacon would carry them (null when analytics are off).
    analytics: () => {
      if (!an) return null;
      qoeTick();
      const snap = snapshot(qoe.done);
      qoe.seq--; // a look, not a beacon
      return snap;
    },
  });

  /* ---------- boot ---------- */

  applyTheme();
  if (embedded) window.addEventListener('message', onMessage);
  setupEvents();
  emit('ready', { src: location.href, events: EVENTS, methods: Object.keys(METHODS) });
  if (cfg.refusal) {
    const r = cfg.refusal;
    refuse(r.code || 'default', r.status, r.reference);
  } else if (!video || !cfg.playback_url) {
    refuse('default', null);
  } else {
    setupAnalytics();
    setupVideo();
    start();
  }
})();
