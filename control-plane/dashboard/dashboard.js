/*
 * sharegate analytics dashboard: reads GET /v1/analytics with an auditor key and draws it with uPlot.
 * Plain ES2020, no build step; CSP: no inline styles or scripts, text only through textContent.
 */
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const KEY = 'sharegate-analytics-key';
  const charts = {};
  let lastHourly = null;

  /* ---------- formatting ---------- */

  const int = (n) => (n == null ? '–' : Math.round(n).toLocaleString('en-US'));
  const ms = (n) => (n == null ? '–' : n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Math.round(n)} ms`);
  const duration = (sec) =>
    sec >= 3600 ? `${(sec / 3600).toFixed(1)} h` : sec >= 60 ? `${(sec / 60).toFixed(1)} min` : `${sec.toFixed(1)} s`;
  const pct = (r, digits = 1) => (r == null ? '–' : `${(r * 100).toFixed(digits)} %`);

  function status(text) {
    $('status').textContent = text || '';
  }

  /* ---------- API ---------- */

  function filters() {
    const q = new URLSearchParams();
    const now = Math.floor(Date.now() / 1000);
    q.set('from', String(now - Number($('f-range').value || 86400)));
    q.set('to', String(now));
    for (const f of ['asset', 'share', 'channel', 'campaign']) {
      const v = $(`f-${f}`).value.trim();
      if (v) q.set(f, v);
    }
    return q;
  }

  async function api(params) {
    const res = await fetch(`/v1/analytics?${params}`, {
      headers: { authorization: `Bearer ${sessionStorage.getItem(KEY) || ''}`, accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
    });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      const err = new Error((body && body.message) || `HTTP ${res.status}`);
      err.status = res.status;
      err.code = (body && body.error) || 'unavailable';
      throw err;
    }
    return body;
  }

  /* ---------- tiles and table ---------- */

  function tile(label, value, id) {
    const li = document.createElement('li');
    const l = document.createElement('span');
    l.className = 'tile-label';
    l.textContent = label;
    const v = document.createElement('span');
    v.className = 'tile-value';
    v.textContent = value;
    if (id) v.id = id;
    li.append(l, v);
    return li;
  }

  function renderTiles(t) {
    const ul = $('tiles');
    ul.replaceChildren(
      tile('Views', int(t.views), 't-views'),
      tile('Startup p50', ms(t.startup_p50_ms), 't-p50'),
      tile('Startup p95', ms(t.startup_p95_ms), 't-p95'),
      tile('Rebuffer ratio', pct(t.rebuffer_ratio, 2), 't-rebuffer'),
      tile('Completion', pct(t.completion_rate), 't-completion'),
      tile('Conversions', int(t.conversions), 't-conversions'),
      tile('Failures, business', int(t.failures_business), 't-fail-business'),
      tile('Failures, technical', int(t.failures_technical), 't-fail-technical'),
      tile('Watch time', duration(t.watch_seconds), 't-watch')
    );
  }

  function renderTable(rows) {
    const tbody = $('by').querySelector('tbody');
    const trs = rows.map((r) => {
      const tr = document.createElement('tr');
      const cells = [
        r.channel || '(none)',
        r.campaign || '(none)',
        int(r.minted),
        int(r.views),
        ms(r.startup_p50_ms),
        ms(r.startup_p95_ms),
        pct(r.rebuffer_ratio, 2),
        pct(r.completion_rate),
        pct(r.conversion_rate),
        `${int(r.failures_business)} / ${int(r.failures_technical)}`,
      ];
      cells.forEach((c, i) => {
        const td = document.createElement(i === 0 ? 'th' : 'td');
        if (i === 0) td.scope = 'row';
        td.textContent = c;
        tr.append(td);
      });
      return tr;
    });
    if (!trs.length) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 10;
      td.className = 'empty';
      td.textContent = 'No views in this range.';
      tr.append(td);
      trs.push(tr);
    }
    tbody.replaceChildren(...trs);
  }

  function fillLists(rows) {
    for (const f of ['asset', 'share', 'channel', 'campaign']) {
      const values = [...new Set(rows.map((r) => r[f]).filter(Boolean))].sort();
      $(`l-${f}`).replaceChildren(
        ...values.map((v) => {
          const o = document.createElement('option');
          o.value = v;
          return o;
        })
      );
    }
  }

  /* ---------- charts ---------- */

  function width(el) {
    return Math.max(280, Math.floor(el.getBoundingClientRect().width || el.clientWidth || 600));
  }

  function draw(id, opts, data, summary) {
    const el = $(id);
    if (charts[id]) charts[id].destroy();
    el.replaceChildren();
    $(`${id}-d`).textContent = summary;
    const hasData = data.length > 1 && data[0].length > 0;
    if (!hasData) {
      const p = document.createElement('p');
      p.className = 'empty';
      p.textContent = 'No data in this range.';
      el.append(p);
      charts[id] = null;
      return;
    }
    charts[id] = new uPlot({ width: width(el), height: 240, ...opts }, data, el);
  }

  // Counts and ratios start at zero (uPlot would otherwise fit the axis to the data).
  const fromZero = (_u, _min, max) => [0, max > 0 ? max * 1.15 : 1];
  const bars = () => (window.uPlot && uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 64] }) : undefined);

  function categoryAxis(labels) {
    return {
      values: (_u, splits) => splits.map((i) => (Number.isInteger(i) && labels[i] != null ? labels[i] : '')),
      splits: () => labels.map((_, i) => i),
      gap: 6,
    };
  }

  function renderCharts(answer) {
    const { totals, funnel } = answer;
    // Every hour of the range, so the time axis is the range asked for; an hour without views has 0 views and no
    // startup or rebuffer value (a gap, not a zero).
    const byHour = new Map(answer.rows.map((r) => [r.hour, r]));
    const xs = [];
    for (let t = answer.from; t < answer.to; t += 3600) xs.push(t);
    const rows = xs.map((t) => byHour.get(t) || { hour: t, views: 0, startup_p50_ms: null, startup_p95_ms: null, rebuffer_ratio: null });
    draw(
      'c-views',
      {
        scales: { x: { time: true }, ms: { auto: true } },
        series: [
          {},
          { label: 'Views', stroke: '#1f5fbf', fill: 'rgba(31,95,191,0.12)', width: 2, scale: 'y' },
          { label: 'Startup p50 (ms)', stroke: '#1b7f3b', width: 2, scale: 'ms', spanGaps: true },
          { label: 'Startup p95 (ms)', stroke: '#a15c00', width: 2, dash: [6, 4], scale: 'ms', spanGaps: true },
        ],
        axes: [{}, { scale: 'y', label: 'views' }, { scale: 'ms', side: 1, label: 'ms', grid: { show: false } }],
      },
      [xs, rows.map((r) => r.views), rows.map((r) => r.startup_p50_ms), rows.map((r) => r.startup_p95_ms)],
      `${int(totals.views)} views; startup p50 ${ms(totals.startup_p50_ms)}, p95 ${ms(totals.startup_p95_ms)}.`
    );
    draw(
      'c-rebuf',
      {
        scales: { x: { time: true }, y: { range: fromZero } },
        series: [{}, { label: 'Rebuffer ratio (%)', stroke: '#b3261e', width: 2, spanGaps: true }],
        axes: [{}, { label: '%' }],
      },
      [xs, rows.map((r) => (r.rebuffer_ratio == null ? null : r.rebuffer_ratio * 100))],
      `Rebuffer ratio over the range: ${pct(totals.rebuffer_ratio, 2)}.`
    );
    const f = totals.failures || { business: {}, technical: {} };
    const reasons = [...new Set([...Object.keys(f.business || {}), ...Object.keys(f.technical || {})])].sort();
    draw(
      'c-fail',
      {
        scales: { x: { time: false, range: [-0.5, Math.max(0.5, reasons.length - 0.5)] }, y: { range: fromZero } },
        series: [
          {},
          { label: 'Business', fill: '#a15c00', stroke: '#a15c00', paths: bars(), points: { show: false } },
          { label: 'Technical', fill: '#b3261e', stroke: '#b3261e', paths: bars(), points: { show: false } },
        ],
        axes: [categoryAxis(reasons), { label: 'views' }],
      },
      reasons.length
        ? [reasons.map((_, i) => i), reasons.map((r) => (f.business || {})[r] || null), reasons.map((r) => (f.technical || {})[r] || null)]
        : [[]],
      reasons.length
        ? `Failures: ${reasons.map((r) => `${r} ${(f.business || {})[r] || (f.technical || {})[r]}`).join(', ')}.`
        : 'No playback failures in this range.'
    );
    const stages = funnel.map((s) => s.stage.replace('_', ' '));
    draw(
      'c-funnel',
      {
        scales: { x: { time: false, range: [-0.5, stages.length - 0.5] }, y: { range: fromZero } },
        series: [{}, { label: 'Count', fill: '#1f5fbf', stroke: '#1f5fbf', paths: bars(), points: { show: false } }],
        axes: [categoryAxis(stages), { label: 'count' }],
      },
      funnel.some((s) => s.count > 0) ? [funnel.map((_, i) => i), funnel.map((s) => s.count)] : [[]],
      `Funnel: ${funnel.map((s) => `${s.stage.replace('_', ' ')} ${s.count}`).join(', ')}.`
    );
  }

  /* ---------- flow ---------- */

  async function load() {
    status('Loading…');
    const q = filters();
    const hourly = new URLSearchParams(q);
    hourly.set('group_by', 'hour');
    const byChannel = new URLSearchParams(q);
    byChannel.set('group_by', 'channel,campaign');
    const all = new URLSearchParams(q);
    all.set('group_by', 'asset,share,channel,campaign');
    try {
      const [h, c, everything] = await Promise.all([api(hourly), api(byChannel), api(all)]);
      lastHourly = h;
      $('signin').hidden = true;
      $('dash').hidden = false;
      renderTiles(h.totals);
      renderCharts(h);
      renderTable(c.rows);
      fillLists(everything.rows);
      const from = new Date(h.from * 1000).toISOString().slice(0, 16).replace('T', ' ');
      const to = new Date(h.to * 1000).toISOString().slice(0, 16).replace('T', ' ');
      status(`${from} – ${to} UTC`);
      document.body.dataset.loaded = String(Date.now());
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        sessionStorage.removeItem(KEY);
        $('dash').hidden = true;
        $('signin').hidden = false;
        $('signin-error').textContent =
          e.status === 403
            ? `This key can't read analytics (${e.code}): use an auditor or admin key.`
            : `This key was not accepted (${e.code}).`;
        status('');
        $('key').focus();
      } else {
        status(`Could not load analytics (${e.code || 'network'}): ${e.message}`);
      }
    }
  }

  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const k = $('key').value.trim();
    if (!k) return;
    sessionStorage.setItem(KEY, k);
    $('key').value = '';
    $('signin-error').textContent = '';
    load();
  });
  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    load();
  });
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    $('dash').hidden = true;
    $('signin').hidden = false;
    status('Key forgotten.');
    $('key').focus();
  });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const id of Object.keys(charts)) {
        const c = charts[id];
        if (c) c.setSize({ width: width($(id)), height: 240 });
      }
    }, 150);
  });
  window.sharegateDashboard = Object.freeze({ data: () => lastHourly });

  if (sessionStorage.getItem(KEY)) load();
  else $('key').focus();
})();
