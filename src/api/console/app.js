// The console's pages. Everything shown comes from the gateway's own APIs, called with the
// browser's client certificate: the page sees what that identity may read, nothing more. The
// DOM is built with textContent (never innerHTML from data), times are shown in Beijing time,
// phones masked.
'use strict';

(() => {
  const lang = () => localStorage.getItem('liandong.lang') || 'zh';
  const t = (key, vars) => {
    let text = (I18N[lang()] && I18N[lang()][key]) || I18N.zh[key] || key;
    for (const [k, v] of Object.entries(vars || {})) text = text.replace('{' + k + '}', v);
    return text;
  };
  const category = (code) => {
    const names = I18N.categories[code];
    return names ? code + ' ' + names[lang() === 'zh' ? 0 : 1] : code;
  };
  const stateName = (s) => t('state.' + s);

  // An element: el('td', {class: 'num', dataset: {value: 3}}, 'text', child, …)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c == null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Children of a node, arrays flattened and absent ones (null) left out: `add` appends,
  // `put` replaces.
  const present = (children) => children.flat(Infinity).filter((c) => c != null && c !== false);
  const add = (node, ...children) => node.append(...present(children));
  const put = (node, ...children) => node.replaceChildren(...present(children));

  class ApiError extends Error {
    constructor(status, body) {
      // The canonical error body: {"error": {"message", "reason", "field", …}}.
      const error = (body && (body.error && typeof body.error === 'object' ? body.error : body)) || {};
      super(error.message || ('HTTP ' + status));
      this.status = status;
      this.reason = error.reason;
    }
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: 'same-origin' }, options));
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = { message: text }; }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // Beijing time (UTC+8, no daylight saving), whatever the browser's zone.
  const BEIJING = 8 * 3600 * 1000;
  function bj(ts) {
    if (!ts) return '';
    const d = new Date(new Date(ts).getTime() + BEIJING);
    return d.toISOString().slice(0, 19).replace('T', ' ');
  }
  // YYYY-MM-DD of a moment, in Beijing.
  const bjDate = (ms) => new Date(ms + BEIJING).toISOString().slice(0, 10);
  // The RFC 3339 time of a Beijing day's midnight, `days` after `date`.
  function bjMidnight(date, days) {
    const d = new Date(date + 'T00:00:00Z');
    d.setUTCDate(d.getUTCDate() + (days || 0));
    return d.toISOString().slice(0, 10) + 'T00:00:00+08:00';
  }
  function duration(seconds) {
    if (seconds == null) return '—';
    if (seconds < 60) return seconds + 's';
    if (seconds < 3600) return Math.round(seconds / 60) + 'min';
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + 'h';
    return (seconds / 86400).toFixed(1) + 'd';
  }
  const percent = (rate) => (rate == null ? '—' : (rate * 100).toFixed(1) + '%');
  // 13812345678 → 138****5678; an international or short number keeps its first 3 and last 2.
  function maskPhone(phone) {
    if (!phone) return '';
    const digits = String(phone);
    if (digits.length >= 11) return digits.slice(0, digits.length - 8) + '****' + digits.slice(-4);
    if (digits.length > 5) return digits.slice(0, 3) + '*'.repeat(digits.length - 5) + digits.slice(-2);
    return '*'.repeat(digits.length);
  }

  // A text with the caller's phone masked wherever it is written, spaced or not (a native
  // document writes it its own way).
  function maskIn(text, phone) {
    if (!phone) return text;
    const national = String(phone).replace(/^\+86/, '');
    if (national.length < 5) return text;
    const spaced = new RegExp('(\\+?86[ -]?)?' + national.split('').join('[ -]?'), 'g');
    return text.replace(spaced, maskPhone(national));
  }

  let who = null;
  let places = {};
  const place = (id) => (places[id] ? places[id].split(' ')[0] + ' ' + id.split('/')[1] : id);

  function table(id, headers, rows) {
    return el('table', { id },
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
      el('tbody', {}, rows));
  }

  function exports(name, tables) {
    const sheets = () => tables().map(([title, node]) => ({ name: title, rows: Xlsx.rowsOf(node) }));
    return el('div', { class: 'exports' },
      el('button', { type: 'button', class: 'export-xlsx', onclick: () => Xlsx.download(name + '.xlsx',
        Xlsx.workbook(sheets()), 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet') },
      t('export.xlsx')),
      el('button', { type: 'button', class: 'export-csv', onclick: () => Xlsx.download(name + '.csv',
        Xlsx.csv(sheets().flatMap((s, i) => (i ? [[], ...s.rows] : s.rows))), 'text/csv;charset=utf-8') },
      t('export.csv')));
  }

  function failure(main, error) {
    const forbidden = error.status === 403 || error.status === 404;
    add(main, el('p', { class: 'error', id: 'failure', dataset: { status: error.status || 0 } },
      (forbidden ? t('forbidden') : t('error')) + ': ' + error.message));
  }

  // ---- the wall -----------------------------------------------------------------------------

  const PROVINCES = {
    11: '北京', 12: '天津', 13: '河北', 14: '山西', 15: '内蒙古', 21: '辽宁', 22: '吉林', 23: '黑龙江',
    31: '上海', 32: '江苏', 33: '浙江', 34: '安徽', 35: '福建', 36: '江西', 37: '山东', 41: '河南',
    42: '湖北', 43: '湖南', 44: '广东', 45: '广西', 46: '海南', 50: '重庆', 51: '四川', 52: '贵州',
    53: '云南', 54: '西藏', 61: '陕西', 62: '甘肃', 63: '青海', 64: '宁夏', 65: '新疆',
  };

  async function wall(main) {
    document.body.classList.add('wall');
    const today = bjMidnight(bjDate(Date.now()));
    const counts = { total: 0, '110->12345': 0, '12345->110': 0, overdue: 0, undeliverable: 0 };
    const seen = new Set();
    const total = el('div', { class: 'big', id: 'today-total' }, '0');
    const pairs = ['110->12345', '12345->110'].map((d) =>
      el('div', { class: 'pair' }, el('span', {}, t('dir.' + d)), el('b', { id: 'today-' + d.replace('->', '-') }, '0')));
    const overdueCount = el('b', { class: 'alarm', id: 'overdue-count' }, '0');
    const undeliverableCount = el('b', { class: 'alarm', id: 'undeliverable-count' }, '0');
    const overdueList = el('ul', { class: 'overdue-list', id: 'overdue-list' });
    const feed = el('ul', { class: 'feed', id: 'feed' });
    const status = el('div', { class: 'status', id: 'stream-status' }, t('loading'));
    const health = el('ul', { class: 'health', id: 'health' });
    const regions = el('div', { class: 'regions', id: 'regions' });
    add(main, el('div', { class: 'wall-grid' },
      el('section', {}, el('h2', {}, t('wall.today')), total, pairs,
        el('div', { class: 'pair' }, el('span', {}, t('wall.overdue')), overdueCount),
        el('div', { class: 'pair' }, el('span', {}, t('wall.undeliverable')), undeliverableCount),
        overdueList),
      el('section', {}, el('h1', {}, t('wall.title')), status, el('h2', {}, t('wall.live')), feed),
      el('section', {}, el('h2', {}, t('wall.health')), health, el('h2', {}, t('wall.regions')), regions)));

    const show = () => {
      total.textContent = counts.total;
      for (const d of ['110->12345', '12345->110']) {
        document.getElementById('today-' + d.replace('->', '-')).textContent = counts[d];
      }
      overdueCount.textContent = counts.overdue;
      undeliverableCount.textContent = counts.undeliverable;
    };

    // The provinces in the registry, each with today's transfers from it.
    const regionCells = {};
    for (const id of Object.keys(places)) {
      const code = id.slice(0, 2);
      if (regionCells[code]) continue;
      const count = el('b', {}, '0');
      regionCells[code] = { node: el('div', { class: 'region', dataset: { province: code } }, PROVINCES[code] || code, count), count, n: 0 };
    }
    Object.keys(regionCells).sort().forEach((code) => add(regions, regionCells[code].node));

    async function refreshHealth() {
      try {
        const list = (await api('/v1/endpoints')).endpoints;
        // Failing destinations first; a destination that pulls is healthy unless it fails.
        const condition = (e) => (e.unreachable ? 'unreachable' : e.failing_since ? 'failing' : 'healthy');
        const rank = { unreachable: 0, failing: 1, healthy: 2 };
        list.sort((a, b) => rank[condition(a)] - rank[condition(b)] || a.id.localeCompare(b.id));
        put(health, ...list.map((e) => el('li', { dataset: { endpoint: e.id, health: condition(e) } },
          el('span', {}, el('span', { class: 'dot ' + condition(e) }), place(e.id)),
          el('span', {}, t('wall.' + condition(e)) + (e.delivery === 'pull' ? ' · ' + t('wall.pull') : '')))));
      } catch (e) { put(health, el('li', { class: 'error' }, e.message)); }
    }

    async function refreshOverdue() {
      try {
        const list = (await api('/v1/transfers?overdue=true&limit=100')).transfers;
        counts.overdue = list.filter((x) => !['resolved', 'closed', 'cancelled', 'rejected'].includes(x.state)).length;
        put(overdueList, ...list.slice(0, 12).map((x) =>
          el('li', { dataset: { id: x.transfer_id } }, bj(x.deadlines.receive_by).slice(11, 16) + ' ' + place(x.to) + ' · ' + category(x.case.category))));
        show();
      } catch (_) { /* an identity without the right sees no list */ }
    }

    try {
      const figures = (await api('/v1/stats?since=' + encodeURIComponent(today))).figures;
      counts.total = figures.transfers;
      for (const [d, n] of Object.entries(figures.by_direction)) counts[d] = n;
      show();
    } catch (e) { failure(main, e); }
    refreshHealth();
    refreshOverdue();

    // The feed: batches of events, drawn once per frame whatever their rate.
    let pending = [];
    let drawing = false;
    // What the wall has taken in, for whoever measures it (benches/console/wall.py).
    const taken = { events: 0, batches: 0, lastAt: null };
    window.liandong.wall = taken;
    const draw = () => {
      drawing = false;
      const batch = pending;
      pending = [];
      taken.events += batch.length;
      if (batch.length) taken.lastAt = batch[batch.length - 1].at;
      const rows = [];
      for (const e of batch) {
        if (e.kind === 'submitted' && !seen.has(e.transfer_id)) {
          seen.add(e.transfer_id);
          counts.total += 1;
          counts[e.direction] = (counts[e.direction] || 0) + 1;
          const cell = regionCells[e.from.slice(0, 2)];
          if (cell) {
            cell.n += 1;
            cell.count.textContent = cell.n;
            cell.node.classList.add('flash');
            setTimeout(() => cell.node.classList.remove('flash'), 400);
          }
        }
        if (e.kind === 'escalated') counts.overdue += 1;
        if (e.undeliverable && e.kind === 'rejected') counts.undeliverable += 1;
        const cls = ['fresh', e.overdue ? 'overdue' : '', e.undeliverable ? 'undeliverable' : ''].join(' ');
        rows.push(el('li', { class: cls, dataset: { id: e.transfer_id, kind: e.kind } },
          el('span', {}, bj(e.at).slice(11)),
          el('span', {}, place(e.from) + ' → ' + place(e.to)),
          el('span', {}, category(e.category)),
          el('span', {}, e.kind === 'escalated' ? t('state.escalated') : stateName(e.state))));
      }
      feed.prepend(...rows.reverse().slice(0, 40));
      while (feed.children.length > 40) feed.lastChild.remove();
      show();
    };
    const source = new EventSource('/v1/events');
    source.addEventListener('open', () => { status.textContent = '● ' + t('wall.connected'); status.dataset.live = 'true'; });
    source.addEventListener('error', () => { status.textContent = t('wall.reconnecting'); status.dataset.live = 'false'; });
    source.addEventListener('transfers', (message) => {
      taken.batches += 1;
      pending.push(...JSON.parse(message.data));
      if (!drawing) { drawing = true; requestAnimationFrame(draw); }
    });
    // Destination health and the overdue list change without a transfer event: read again
    // every 15 s (two small reads, not a scan of the transfers).
    const timer = setInterval(() => { refreshHealth(); refreshOverdue(); }, 15000);
    return { stop() { source.close(); clearInterval(timer); document.body.classList.remove('wall'); } };
  }

  // ---- the figures --------------------------------------------------------------------------

  const charts = [];
  function chart(node, option) {
    if (!window.echarts) return;
    const c = echarts.init(node);
    c.setOption(option);
    charts.push(c);
  }

  function figuresTables(f) {
    const row = (key, share) => el('tr', { dataset: { figure: key } },
      el('td', {}, t('figures.' + key)),
      el('td', { class: 'num', dataset: { value: share.count } }, share.count),
      el('td', { class: 'num', dataset: { value: share.rate == null ? '' : share.rate.toFixed(4) } }, percent(share.rate)));
    const main = table('figures-table', [t('figures.metric'), t('figures.count'), t('figures.rate')], [
      el('tr', { dataset: { figure: 'transfers' } }, el('td', {}, t('figures.transfers')),
        el('td', { class: 'num', dataset: { value: f.transfers } }, f.transfers), el('td', {}, '')),
      ...Object.entries(f.by_direction).map(([d, n]) => el('tr', { dataset: { figure: 'direction ' + d } },
        el('td', {}, t('dir.' + d)), el('td', { class: 'num', dataset: { value: n } }, n), el('td', {}, ''))),
      row('received_on_time', f.received_on_time),
      row('resolved', f.resolved),
      row('resolved_on_time', f.resolved_on_time),
      row('called_back', f.called_back),
      row('satisfied', f.satisfied),
      row('rejected', f.rejected),
    ]);
    const timeRow = (key, times) => el('tr', { dataset: { figure: key } }, el('td', {}, t('figures.' + key)),
      el('td', { class: 'num', dataset: { value: times.count } }, times.count),
      el('td', { class: 'num', dataset: { value: times.median_seconds == null ? '' : times.median_seconds } }, duration(times.median_seconds)),
      el('td', { class: 'num', dataset: { value: times.p90_seconds == null ? '' : times.p90_seconds } }, duration(times.p90_seconds)));
    const times = table('times-table', [t('figures.metric'), t('figures.count'), t('figures.median'), t('figures.p90')],
      [timeRow('time_to_receive', f.time_to_receive), timeRow('time_to_resolve', f.time_to_resolve)]);
    const top = table('top-table', [t('col.category'), t('figures.count')], f.top_categories.map(([c, n]) =>
      el('tr', {}, el('td', {}, category(c)), el('td', { class: 'num', dataset: { value: n } }, n))));
    const rising = table('rising-table', [t('col.category'), t('figures.this_week'), t('figures.last_week'), t('figures.added')],
      f.rising_categories.map((r) => el('tr', {}, el('td', {}, category(r.category)),
        el('td', { class: 'num' }, r.this_week), el('td', { class: 'num' }, r.last_week),
        el('td', { class: 'num' }, r.this_week - r.last_week))));
    const l = f.linkage;
    const countRow = (key, n, figure) => el('tr', { dataset: { figure: figure || key } }, el('td', {}, t(key)),
      el('td', { class: 'num', dataset: { value: n } }, n), el('td', {}, ''));
    const shareRow = (key, share, figure) => el('tr', { dataset: { figure } }, el('td', {}, t(key)),
      el('td', { class: 'num', dataset: { value: share.count } }, share.count),
      el('td', { class: 'num', dataset: { value: share.rate == null ? '' : share.rate.toFixed(4) } }, percent(share.rate)));
    const linkage = table('linkage-table', [t('figures.metric'), t('figures.count'), t('figures.rate')], [
      ...Object.entries(l.routing_basis).map(([b, n]) => countRow('basis.' + b, n, 'basis ' + b)),
      ...Object.entries(l.rejections_by_reason).filter(([, n]) => n > 0).map(([r, n]) => countRow('reason.' + r, n, 'reason ' + r)),
      ...['opened', 'open', 'upheld', 'overruled', 'first_receiver', 'decided_late'].map((k) =>
        countRow('figures.disputes.' + k, l.disputes[k], 'disputes ' + k)),
      countRow('figures.urges', l.urges.total, 'urges'),
      shareRow('figures.urged', l.urges.urged, 'urged'),
      ...['asked', 'granted', 'refused'].map((k) => countRow('figures.extensions.' + k, l.extensions[k], 'extensions ' + k)),
      countRow('figures.assists.asked', l.assists.asked, 'assists asked'),
      shareRow('figures.assists.committed', l.assists.committed, 'assists committed'),
      shareRow('figures.assists.on_scene_in_time', l.assists.on_scene_in_time, 'assists on_scene_in_time'),
    ]);
    return { main, times, top, rising, linkage };
  }

  async function figures(main) {
    const defaultRegion = who && who.regions && who.regions.length === 1 ? who.regions[0] : '';
    const todayDate = bjDate(Date.now());
    const monthAgo = bjDate(Date.now() - 30 * 86400000);
    const form = el('form', { class: 'query', id: 'figures-form' },
      el('label', {}, t('figures.region'), el('input', { name: 'region', value: defaultRegion, size: 9, pattern: '[0-9]{0,9}' })),
      el('label', {}, t('figures.category'), el('select', { name: 'category' }, el('option', { value: '' }, t('figures.all')),
        Object.keys(I18N.categories).map((c) => el('option', { value: c }, category(c))))),
      el('label', {}, t('figures.direction'), el('select', { name: 'direction' }, el('option', { value: '' }, t('figures.all')),
        ['110->12345', '12345->110'].map((d) => el('option', { value: d }, t('dir.' + d))))),
      el('label', {}, t('figures.since'), el('input', { name: 'since', type: 'date', value: monthAgo })),
      el('label', {}, t('figures.until'), el('input', { name: 'until', type: 'date', value: todayDate })),
      el('button', { type: 'submit', id: 'figures-query' }, t('figures.query')),
      el('label', {}, t('figures.month'), el('input', { name: 'month', type: 'month', value: todayDate.slice(0, 7) })),
      el('button', { type: 'button', id: 'figures-report' }, t('figures.report')));
    const out = el('div', { id: 'figures-out' });
    add(main, el('h1', {}, t('figures.title')), form, out);

    async function show(since, until, title) {
      charts.splice(0).forEach((c) => c.dispose());
      put(out, el('p', {}, t('loading')));
      const data = new FormData(form);
      const params = new URLSearchParams({ since, until });
      for (const k of ['region', 'category', 'direction']) if (data.get(k)) params.set(k, data.get(k));
      let answer;
      try { answer = await api('/v1/stats?' + params); } catch (e) { put(out); failure(out, e); return; }
      const f = answer.figures;
      const tables = figuresTables(f);
      const card = (key, share) => el('div', { class: 'card', dataset: { figure: key } },
        el('div', { class: 'label' }, t('figures.' + key)), el('div', { class: 'value' }, percent(share.rate)));
      const topChart = el('div', { class: 'chart', id: 'top-chart' });
      const risingChart = el('div', { class: 'chart', id: 'rising-chart' });
      const name = 'liandong-' + (data.get('region') || 'all') + '-' + since.slice(0, 10) + '-' + until.slice(0, 10);
      put(out, 
        title ? el('div', { class: 'report-title', id: 'report-title' }, title) : null,
        el('p', { class: 'muted', id: 'figures-period', dataset: { since: answer.period.since, until: answer.period.until } },
          bj(answer.period.since) + ' — ' + bj(answer.period.until)),
        el('div', { class: 'cards' },
          el('div', { class: 'card', dataset: { figure: 'transfers' } }, el('div', { class: 'label' }, t('figures.transfers')),
            el('div', { class: 'value' }, f.transfers)),
          card('received_on_time', f.received_on_time), card('resolved', f.resolved),
          card('resolved_on_time', f.resolved_on_time), card('called_back', f.called_back),
          card('satisfied', f.satisfied), card('rejected', f.rejected)),
        exports(name, () => [[t('figures.title'), tables.main], [t('figures.time_to_receive'), tables.times],
          [t('figures.top'), tables.top], [t('figures.rising'), tables.rising], [t('figures.linkage'), tables.linkage]]),
        tables.main, el('h2', {}, t('figures.time_to_receive') + ' / ' + t('figures.time_to_resolve')), tables.times,
        el('div', { class: 'grid2' },
          el('div', {}, el('h2', {}, t('figures.top')), topChart, tables.top),
          el('div', {}, el('h2', {}, t('figures.rising')), risingChart, tables.rising)),
        el('h2', {}, t('figures.linkage')), tables.linkage);
      chart(topChart, {
        tooltip: {}, grid: { left: 120, right: 20, top: 10, bottom: 20 },
        xAxis: { type: 'value', minInterval: 1 },
        yAxis: { type: 'category', inverse: true, data: f.top_categories.map(([c]) => category(c)) },
        series: [{ type: 'bar', data: f.top_categories.map(([, n]) => n), itemStyle: { color: '#1e6fd9' } }],
      });
      chart(risingChart, {
        tooltip: {}, legend: { data: [t('figures.last_week'), t('figures.this_week')] },
        grid: { left: 120, right: 20, top: 30, bottom: 20 },
        xAxis: { type: 'value', minInterval: 1 },
        yAxis: { type: 'category', inverse: true, data: f.rising_categories.map((r) => category(r.category)) },
        series: [
          { name: t('figures.last_week'), type: 'bar', data: f.rising_categories.map((r) => r.last_week), itemStyle: { color: '#9db4cf' } },
          { name: t('figures.this_week'), type: 'bar', data: f.rising_categories.map((r) => r.this_week), itemStyle: { color: '#d92d20' } },
        ],
      });
    }

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const data = new FormData(form);
      show(bjMidnight(data.get('since')), bjMidnight(data.get('until'), 1));
    });
    document.getElementById('figures-report').addEventListener('click', () => {
      const month = new FormData(form).get('month');
      const first = month + '-01';
      const next = new Date(first + 'T00:00:00Z');
      next.setUTCMonth(next.getUTCMonth() + 1);
      const region = new FormData(form).get('region') || t('figures.report.all');
      show(bjMidnight(first), bjMidnight(next.toISOString().slice(0, 10)),
        t('figures.report.title', { region, month }));
    });
    show(bjMidnight(monthAgo), bjMidnight(todayDate, 1));
    return { stop() { charts.splice(0).forEach((c) => c.dispose()); } };
  }

  // ---- search and the case ------------------------------------------------------------------

  function transferRows(list) {
    return list.map((x) => el('tr', { dataset: { id: x.transfer_id } },
      el('td', {}, el('a', { href: '#/case/' + x.transfer_id }, x.transfer_id)),
      el('td', {}, place(x.from)), el('td', {}, place(x.to)),
      el('td', {}, category(x.case.category)), el('td', {}, stateName(x.state)),
      el('td', {}, bj(x.requested_at)),
      el('td', { class: 'caller' }, maskPhone(x.case.caller && x.case.caller.phone))));
  }

  async function search(main, arg) {
    const [kind0, q0] = (arg || '').split(':');
    const form = el('form', { class: 'query', id: 'search-form' },
      el('label', {}, t('col.kind'), el('select', { name: 'kind' },
        ['phone', 'reference', 'id'].map((k) => el('option', { value: k, selected: k === kind0 }, t('search.' + k))))),
      el('label', {}, '\u00a0', el('input', { name: 'q', value: q0 ? decodeURIComponent(q0) : '', size: 32, required: true })),
      el('button', { type: 'submit', id: 'search-go' }, t('search.go')));
    const out = el('div', { id: 'search-out' });
    add(main, el('h1', {}, t('search.title')), form, out);
    async function run(kind, q) {
      if (kind === 'id') { location.hash = '#/case/' + encodeURIComponent(q); return; }
      put(out, el('p', {}, t('loading')));
      try {
        const answer = await api('/v1/transfers?' + new URLSearchParams({ [kind]: q, limit: 100 }));
        const tableNode = table('search-results', [t('col.id'), t('col.from'), t('col.to'), t('col.category'),
          t('col.state'), t('col.requested_at'), t('col.caller')], transferRows(answer.transfers));
        put(out, answer.transfers.length ? tableNode : el('p', { id: 'search-none' }, t('search.none')),
          answer.transfers.length ? exports('liandong-search', () => [[t('search.title'), tableNode]]) : null);
      } catch (e) { put(out); failure(out, e); }
    }
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const data = new FormData(form);
      run(data.get('kind'), data.get('q').trim());
    });
    if (q0) run(kind0, decodeURIComponent(q0));
  }

  async function caseView(main, id) {
    add(main, el('h1', {}, t('case.title') + ' ' + id));
    let transfer, evidence;
    try {
      [transfer, evidence] = await Promise.all([
        api('/v1/transfers/' + encodeURIComponent(id)),
        api('/v1/transfers/' + encodeURIComponent(id) + '/evidence'),
      ]);
    } catch (e) { failure(main, e); return; }
    const c = transfer.case;
    const reached = (state) => (transfer.history.find((h) => h.state === state) || {}).at;
    const deadline = (by, at) => {
      if (!by) return el('span', { class: 'muted' }, '—');
      const done = at ? (new Date(at) <= new Date(by) ? 'met' : 'missed') : (new Date() > new Date(by) ? 'missed' : 'pending');
      return el('span', { class: done === 'missed' ? 'bad' : done === 'met' ? 'good' : 'muted', dataset: { deadline: done } },
        bj(by) + ' · ' + t('case.' + done));
    };
    const summary = table('case-summary', [t('col.id'), transfer.transfer_id], [
      el('tr', {}, el('th', {}, t('col.state')), el('td', { id: 'case-state' }, stateName(transfer.state),
        transfer.overdue ? el('span', { class: 'bad' }, ' · ' + t('case.overdue')) : null)),
      el('tr', {}, el('th', {}, t('col.from') + ' → ' + t('col.to')), el('td', {}, place(transfer.from) + ' → ' + place(transfer.to))),
      el('tr', {}, el('th', {}, t('col.category')), el('td', {}, category(c.category))),
      el('tr', {}, el('th', {}, t('col.summary')), el('td', {}, c.summary)),
      el('tr', {}, el('th', {}, t('col.place')), el('td', {}, (c.location && (c.location.address || c.location.region)) || '')),
      el('tr', {}, el('th', {}, t('col.caller')), el('td', { class: 'caller' }, maskPhone(c.caller && c.caller.phone))),
      el('tr', {}, el('th', {}, t('col.requested_at')), el('td', {}, bj(transfer.requested_at))),
      el('tr', {}, el('th', {}, t('case.receive_by')), el('td', { id: 'deadline-receive' }, deadline(transfer.deadlines.receive_by, reached('received')))),
      el('tr', {}, el('th', {}, t('case.resolve_by')), el('td', { id: 'deadline-resolve' }, deadline(transfer.deadlines.resolve_by, reached('resolved')))),
    ]);
    // The timeline: the history, and the transfers linked to this one (an assist asked for it,
    // a re-route after it) at the time they were made.
    const linkedEntries = (evidence.linked_from || []).map((l) => ({ state: 'linked', at: l.requested_at, by: l.from, linked: l }));
    const entries = [...transfer.history, ...linkedEntries].sort((a, b) => new Date(a.at) - new Date(b.at));
    const timeline = el('ol', { class: 'timeline', id: 'timeline' }, entries.map((h) => h.linked
      ? el('li', { class: 'linked', dataset: { state: 'linked', rel: h.linked.rel } }, el('b', {}, bj(h.at)), ' ',
        t('rel.' + h.linked.rel) + ' · ' + category(h.linked.category) + ' · ', el('a', { href: '#/case/' + h.linked.transfer_id }, h.linked.transfer_id),
        ' · ' + stateName(h.linked.state))
      :
      el('li', { class: [h.implied ? 'implied' : '', h.state].join(' '), dataset: { state: h.state } },
        el('b', {}, bj(h.at)), ' ', stateName(h.state), h.implied ? t('case.implied') : '', ' · ', h.by,
        h.unit ? ' · ' + (h.unit.name || h.unit.id || '') : '',
        h.reason_code ? ' · ' + t('reason.' + h.reason_code) : '', h.outcome ? ' · ' + t('outcome.' + h.outcome) : '',
        h.until ? ' · ' + t('linkage.until') + ' ' + bj(h.until) : '', h.note ? ' · ' + h.note : '')));
    const links = (transfer.links || []).map((l) =>
      el('li', {}, l.rel + ': ', el('a', { href: '#/case/' + l.transfer_id }, l.transfer_id)));
    // The case's other transfers (a re-routing after a rejection, a later transfer of the same
    // call): found by the origin's case number, as far as this identity may read them.
    let others = [];
    try {
      const same = await api('/v1/transfers?' + new URLSearchParams({ reference: c.origin.local_id, limit: 50 }));
      others = same.transfers.filter((x) => x.transfer_id !== transfer.transfer_id && x.case.case_id === c.case_id);
    } catch (_) { /* the chain is extra; the case is shown without it */ }
    const chain = others.length ? table('case-chain', [t('col.id'), t('col.to'), t('col.state'), t('col.requested_at')],
      others.map((x) => el('tr', { dataset: { id: x.transfer_id } }, el('td', {}, el('a', { href: '#/case/' + x.transfer_id }, x.transfer_id)),
        el('td', {}, place(x.to)), el('td', {}, stateName(x.state)), el('td', {}, bj(x.requested_at))))) : null;
    const received = evidence.received != null ? el('div', { class: 'delivery', id: 'case-received' },
      el('p', {}, t('case.received') + ' ' + place(transfer.from)),
      el('pre', { class: 'native' }, maskIn(evidence.received, c.caller && c.caller.phone))) : null;
    const deliveries = evidence.deliveries.map((d) => el('div', { class: 'delivery', dataset: { delivery: d.id } },
      el('p', {}, '#' + d.id + ' · ' + d.kind + ' → ' + place(d.destination) + ' · ' + d.status + ' · ' +
        t('col.attempts') + ' ' + d.attempts + (d.last_error ? ' · ' + d.last_error : '')),
      d.document != null ? el('pre', { class: 'native' }, maskIn(d.document, c.caller && c.caller.phone))
        : el('p', { class: 'error' }, d.document_error)));
    const audit = table('case-audit', [t('col.time'), t('col.by'), t('col.action'), t('col.note'), t('col.hash')],
      evidence.audit.map((a) => el('tr', {}, el('td', {}, bj(new Date(a.at * 1000).toISOString())), el('td', {}, a.actor),
        el('td', {}, a.action), el('td', {}, JSON.stringify(a.detail)), el('td', { class: 'muted' }, a.hash.slice(0, 12)))));
    const panel = linkagePanel(transfer, evidence);
    add(main, summary, panel, el('h2', {}, t('case.timeline')), timeline,
      links.length || chain ? el('h2', {}, t('case.links')) : null, links.length ? el('ul', { id: 'case-links' }, links) : null, chain,
      el('h2', {}, t('case.deliveries')), received,
      deliveries.length ? deliveries : el('p', { class: 'muted' }, t('ops.none')),
      el('h2', {}, t('case.audit')), audit);
  }

  // ---- linkage (linkage.md) ------------------------------------------------------------------

  // Who the viewer is to a transfer: its origin, its destination, a linkage office, or none.
  function roleIn(transfer) {
    if (!who) return null;
    if (who.kind === 'endpoint') return who.name === transfer.from ? 'origin' : who.name === transfer.to ? 'destination' : null;
    if (who.kind === 'office' && (who.rights || []).includes('DecideDisputes')) return 'office';
    return null;
  }

  // The case's linkage: why it went there, what was done first, help on site, the dispute,
  // and the actions this viewer may take (each a canonical route; the page reloads after).
  function linkagePanel(transfer, evidence) {
    const open = !['resolved', 'closed', 'cancelled', 'rejected'].includes(transfer.state);
    const d = transfer.dispute;
    const pending = (() => {
      for (const h of [...transfer.history].reverse()) {
        if (h.state === 'extension_granted' || h.state === 'extension_refused') return null;
        if (h.state === 'extension_requested') return h;
      }
      return null;
    })();
    const lastRejection = [...transfer.history].reverse().find((h) => h.state === 'rejected');
    const rows = [
      el('tr', {}, el('th', {}, t('linkage.basis')), el('td', { id: 'linkage-basis' }, t('basis.' + (transfer.routing_basis || 'none')))),
      transfer.prior_handling ? el('tr', {}, el('th', {}, t('linkage.prior')), el('td', { id: 'linkage-prior' }, transfer.prior_handling.actions)) : null,
      transfer.needed_by ? el('tr', {}, el('th', {}, t('linkage.needed_by')), el('td', {}, bj(transfer.needed_by))) : null,
      transfer.urges ? el('tr', {}, el('th', {}, t('linkage.urges')), el('td', { id: 'linkage-urges' }, transfer.urges)) : null,
      pending ? el('tr', {}, el('th', {}, t('state.extension_requested')), el('td', { id: 'linkage-pending' },
        t('linkage.until') + ' ' + bj(pending.until) + ' · ' + (pending.note || ''))) : null,
    ];
    const dispute = d ? el('div', { id: 'linkage-dispute', dataset: { state: d.state } },
      el('h3', {}, t('linkage.dispute') + ' · ' + t('dispute.' + d.state)),
      el('p', {}, bj(d.opened_at) + ' · ' + d.by + ' · ' + d.note),
      el('ul', {}, (d.notes || []).map((n) => el('li', {}, bj(n.at) + ' · ' + n.by + ' · ' + n.note + (n.call_ref ? ' · ' + t('linkage.call_ref') + ' ' + n.call_ref : '')))),
      d.decision ? el('p', { id: 'linkage-decision', dataset: { outcome: d.decision.outcome } }, t('linkage.decision') + ': ' +
        t('outcome.' + d.decision.outcome) + ' · ' + d.decision.by + ' · ' + bj(d.decision.at) + (d.decision.note ? ' · ' + d.decision.note : '')) : null) : null;
    const linked = (evidence.linked_from || []).length ? el('div', {}, el('h3', {}, t('linkage.linked_from')),
      el('ul', { id: 'linkage-linked-from' }, evidence.linked_from.map((l) =>
        el('li', { dataset: { rel: l.rel, id: l.transfer_id } }, l.rel + ': ', el('a', { href: '#/case/' + l.transfer_id }, l.transfer_id),
          ' · ' + category(l.category) + ' · ' + place(l.from) + ' → ' + place(l.to) + ' · ' + stateName(l.state))))) : null;
    const role = roleIn(transfer);
    const note = el('input', { name: 'note', size: 40, placeholder: t('linkage.note'), id: 'linkage-note' });
    const callRef = el('input', { name: 'call_ref', size: 16, placeholder: t('linkage.call_ref'), id: 'linkage-call-ref' });
    const until = el('input', { name: 'until', type: 'datetime-local', id: 'linkage-until' });
    const status = el('span', { id: 'linkage-status' });
    const act = (id, label, path, body) => el('button', { type: 'button', id: 'linkage-do-' + id, onclick: async () => {
      try {
        await api('/v1/transfers/' + encodeURIComponent(transfer.transfer_id) + path, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body()) });
        status.textContent = t('linkage.done');
        route();
      } catch (e) { status.textContent = t('error') + ': ' + e.message; status.className = 'error'; }
    } }, t(label));
    const text = () => note.value.trim();
    const decide = (o) => act(o, 'linkage.do.' + o, '/dispute/decision', () => ({ outcome: o, note: text() || undefined }));
    const actions = [];
    const disputeOpen = d && d.state === 'open';
    if (role === 'origin' || role === 'office') {
      if (open) actions.push(act('urge', 'linkage.do.urge', '/urge', () => ({ note: text() })));
      if (pending) actions.push(act('grant', 'linkage.do.grant', '/extension/decision', () => ({ grant: true, note: text() || undefined })),
        act('refuse', 'linkage.do.refuse', '/extension/decision', () => ({ grant: false, note: text() || undefined })));
    }
    if (role === 'origin' && !d && transfer.state === 'rejected' && lastRejection && lastRejection.reason_code === 'out_of_scope') {
      actions.push(act('dispute', 'linkage.do.dispute', '/dispute', () => ({ note: text() })));
    }
    if (role && disputeOpen) actions.push(act('note', 'linkage.do.note', '/dispute/notes', () => ({ note: text(), call_ref: callRef.value.trim() || undefined })));
    if (role === 'office' && disputeOpen) actions.push(decide('upheld'), decide('overruled'), decide('first_receiver'));
    if (role === 'destination' && disputeOpen) actions.push(act('withdraw', 'linkage.do.withdraw', '/dispute/decision', () => ({ outcome: 'overruled', note: text() || undefined })));
    if (role === 'destination' && open && transfer.deadlines.resolve_by && !pending) {
      actions.push(until, act('extension', 'linkage.do.extension', '/extension', () => ({
        until: until.value ? until.value + ':00+08:00' : '', reason: text() })));
    }
    return el('section', { class: 'linkage', id: 'linkage' }, el('h2', {}, t('linkage.panel')),
      table('linkage-summary', [t('linkage.panel'), ''], present(rows)), dispute, linked,
      actions.length ? el('div', { class: 'query', id: 'linkage-actions' }, note, disputeOpen ? callRef : null, actions, status) : null);
  }

  // The linkage work list: open disputes and unanswered extension requests this identity sees.
  async function linkage(main) {
    add(main, el('h1', {}, t('linkage.title')));
    const rows = (list, extra) => list.map((x) => el('tr', { dataset: { id: x.transfer_id } },
      el('td', {}, el('a', { href: '#/case/' + x.transfer_id }, x.transfer_id)),
      el('td', {}, place(x.from)), el('td', {}, place(x.to)), el('td', {}, category(x.case.category)),
      el('td', {}, stateName(x.state)), el('td', {}, extra(x))));
    try {
      const [disputes, extensions] = await Promise.all([
        api('/v1/transfers?' + new URLSearchParams({ pending: 'dispute', limit: 200 })),
        api('/v1/transfers?' + new URLSearchParams({ pending: 'extension', limit: 200 })),
      ]);
      const head = [t('col.id'), t('col.from'), t('col.to'), t('col.category'), t('col.state'), t('col.note')];
      const disputeTable = table('linkage-disputes', head, rows(disputes.transfers, (x) =>
        bj(x.dispute.opened_at) + ' · ' + x.dispute.note));
      const extensionTable = table('linkage-extensions', head, rows(extensions.transfers, (x) => {
        const asked = [...x.history].reverse().find((h) => h.state === 'extension_requested') || {};
        return t('linkage.until') + ' ' + bj(asked.until) + ' · ' + (asked.note || '');
      }));
      add(main, el('h2', {}, t('linkage.disputes')),
        disputes.transfers.length ? disputeTable : el('p', { class: 'muted', id: 'linkage-no-disputes' }, t('ops.none')),
        el('h2', {}, t('linkage.extensions')),
        extensions.transfers.length ? extensionTable : el('p', { class: 'muted', id: 'linkage-no-extensions' }, t('ops.none')),
        exports('liandong-linkage', () => [[t('linkage.disputes'), disputeTable], [t('linkage.extensions'), extensionTable]]));
    } catch (e) { failure(main, e); }
  }

  // ---- operations ---------------------------------------------------------------------------

  async function ops(main) {
    add(main, el('h1', {}, t('ops.title')));
    if (!who || !who.operator) { add(main, el('p', { class: 'error', id: 'ops-only' }, t('ops.only'))); return; }
    const notice = el('p', { class: 'notice', id: 'ops-notice' });
    const dead = el('div', { id: 'dead-letters' });
    async function loadDead() {
      try {
        const list = (await api('/v1/deliveries/dead')).dead_letters;
        put(dead, list.length ? table('dead-table', [t('col.id'), t('col.destination'), t('col.kind'),
          t('col.attempts'), t('col.error'), ''], list.map((d) => el('tr', { dataset: { delivery: d.id } },
          el('td', {}, el('a', { href: '#/case/' + d.transfer_id }, d.transfer_id)), el('td', {}, place(d.destination)),
          el('td', {}, d.kind), el('td', { class: 'num' }, d.attempts), el('td', {}, d.last_error || ''),
          el('td', {}, el('button', { type: 'button', class: 'replay', onclick: () => replay(d) }, t('ops.replay'))))))
          : el('p', { class: 'muted' }, t('ops.none')));
      } catch (e) { failure(dead, e); }
    }
    async function replay(d) {
      if (!window.confirm(t('ops.confirm', { id: d.transfer_id, to: d.destination }))) return;
      try {
        await api('/v1/deliveries/' + d.id + '/replay', { method: 'POST' });
        notice.textContent = t('ops.replayed') + ' (#' + d.id + ')';
        notice.dataset.replayed = d.id;
      } catch (e) { notice.textContent = e.message; }
      loadDead();
    }
    const endpoints = el('div', { id: 'endpoints' });
    try {
      const list = (await api('/v1/endpoints')).endpoints;
      add(endpoints, table('endpoints-table', [t('col.id'), t('col.place'), 'format', 'delivery', t('col.status')],
        list.map((e) => el('tr', { dataset: { endpoint: e.id } }, el('td', {}, e.id), el('td', {}, e.place), el('td', {}, e.format),
          el('td', {}, e.delivery), el('td', { class: e.unreachable ? 'bad' : e.failing_since ? 'bad' : 'good' },
            e.unreachable ? t('wall.unreachable') : e.failing_since ? t('wall.failing') + ' ' + bj(e.failing_since)
              : e.last_success ? bj(e.last_success) : '—')))));
    } catch (e) { failure(endpoints, e); }
    const certificates = el('div', { id: 'certificates' });
    try {
      const loaded = await api('/v1/certificates');
      add(certificates, table('certificates-table', [t('col.kind'), 'subject', t('certs.expires'), t('certs.days_left')],
        loaded.certificates.map((c) => el('tr', { dataset: { which: c.which, daysLeft: c.days_left } },
          el('td', {}, c.which), el('td', {}, c.subject), el('td', {}, bj(c.not_after)),
          el('td', { class: 'num ' + (c.days_left < 30 ? 'bad' : 'good'), dataset: { value: c.days_left } }, c.days_left)))),
        loaded.crl_next_update ? el('p', {}, t('certs.crl') + ' ' + bj(loaded.crl_next_update)) : null,
        loaded.reload_error ? el('p', { class: 'error' }, loaded.reload_error) : null);
    } catch (e) { failure(certificates, e); }
    const knowledgeOut = el('div', { id: 'knowledge-out' });
    const knowledge = el('form', { class: 'query', id: 'knowledge-form' },
      el('input', { name: 'q', size: 32 }), el('button', { type: 'submit' }, t('ops.search')));
    knowledge.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        const answer = await api('/v1/knowledge?' + new URLSearchParams({ q: new FormData(knowledge).get('q') }));
        put(knowledgeOut, table('knowledge-table', ['key', t('col.category'), t('col.summary')],
          answer.records.map((r) => el('tr', {}, el('td', {}, r.key), el('td', {}, (r.body && r.body.category) || ''),
            el('td', {}, (r.body && (r.body.title || r.body.question)) || JSON.stringify(r.body))))));
      } catch (e) { put(knowledgeOut); failure(knowledgeOut, e); }
    });
    const coverageOut = el('div', { id: 'coverage-out' });
    const coverage = el('form', { class: 'query', id: 'coverage-form' },
      el('label', {}, t('figures.region'), el('input', { name: 'region', size: 9, required: true, pattern: '[0-9]{6}([0-9]{3})?' })),
      el('button', { type: 'submit', id: 'coverage-go' }, t('ops.search')));
    coverage.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        const answer = await api('/v1/directory/coverage?' + new URLSearchParams({ region: new FormData(coverage).get('region') }));
        const gaps = table('coverage-table', [t('wall.regions'), t('col.category'), t('coverage.answered_by')],
          answer.gaps.map((g) => el('tr', { class: g.answered_by ? '' : 'bad', dataset: { cell: g.region + '/' + g.category } },
            el('td', {}, g.region), el('td', {}, category(g.category)),
            el('td', {}, g.answered_by ? g.answered_by + ' (' + g.tier + ')' : t('coverage.no_unit')))));
        put(coverageOut, el('p', { id: 'coverage-summary', dataset: { noUnit: answer.no_unit, fallBack: answer.fall_back } },
          t('coverage.summary', { cells: answer.cells, covered: answer.covered, fall_back: answer.fall_back, no_unit: answer.no_unit })),
          answer.gaps.length ? gaps : null, answer.gaps.length ? exports('liandong-coverage-' + answer.region, () => [[t('ops.coverage'), gaps]]) : null);
      } catch (e) { put(coverageOut); failure(coverageOut, e); }
    });
    const directory = el('div', { id: 'directory' });
    try {
      const page = await api('/v1/datasets/directory/snapshot?page_size=50');
      add(directory, table('directory-table', ['key', t('col.by'), 'version', ''], page.records.map((r) =>
        el('tr', {}, el('td', {}, r.key), el('td', {}, r.owner), el('td', { class: 'num' }, r.version),
          el('td', {}, JSON.stringify(r.body))))));
    } catch (e) { failure(directory, e); }
    add(main, notice, el('h2', {}, t('ops.dead')), dead, el('h2', {}, t('ops.endpoints')), endpoints,
      el('h2', {}, t('ops.certs')), certificates,
      el('h2', {}, t('ops.knowledge')), knowledge, knowledgeOut,
      el('h2', {}, t('ops.coverage')), coverage, coverageOut,
      el('h2', {}, t('ops.directory')), directory);
    loadDead();
  }

  // ---- the frame ----------------------------------------------------------------------------

  const PAGES = { wall, figures, search, case: caseView, linkage, ops };
  let current = null;

  async function route() {
    if (current && current.stop) current.stop();
    current = null;
    const [, name, ...rest] = (location.hash || '#/wall').split('/');
    const page = PAGES[name] ? name : 'wall';
    document.querySelectorAll('#bar nav a').forEach((a) => a.classList.toggle('here', a.getAttribute('href') === '#/' + page));
    const main = document.getElementById('page');
    put(main);
    main.dataset.page = page;
    current = await PAGES[page](main, rest.join('/'));
    main.dataset.ready = 'true';
  }

  function translateFrame() {
    document.documentElement.lang = lang() === 'zh' ? 'zh-CN' : 'en';
    document.querySelectorAll('[data-i18n]').forEach((n) => { n.textContent = t(n.dataset.i18n); });
    if (who) document.getElementById('who').textContent = t('who.' + who.kind) + ' · ' + who.identity;
  }

  function tick() {
    document.getElementById('clock').textContent = bj(new Date().toISOString()) + ' 北京时间';
  }

  async function start() {
    document.getElementById('lang').addEventListener('click', () => {
      localStorage.setItem('liandong.lang', lang() === 'zh' ? 'en' : 'zh');
      translateFrame();
      route();
    });
    try {
      who = await api('/v1/whoami');
      places = Object.fromEntries((await api('/v1/endpoints')).endpoints.map((e) => [e.id, e.place]));
    } catch (e) { failure(document.getElementById('page'), e); }
    if (!who || !who.operator) document.getElementById('nav-ops').hidden = true;
    translateFrame();
    tick();
    setInterval(tick, 1000);
    window.addEventListener('hashchange', route);
    route();
  }

  // For the browser tests and the curious: the helpers the pages use.
  window.liandong = { maskPhone, bj, bjMidnight, t };
  start();
})();
