// The web panel: operators' screens (hosts, VMs, create, tasks, logs) and
// the customer's page of one VM (where `templogin` lands). Plain ES modules,
// no build step. The session is an HttpOnly cookie set by the server
// (`POST /api/system/session`); no script ever holds a token after sign-in.
// Live state comes from the event stream `GET /api/system/events`.

import uPlot from './uPlot.esm.js';
import { t, language, setLanguage, LANGUAGES } from './i18n.js';

const top = document.getElementById('top');
const main = document.getElementById('main');
const toastBox = document.getElementById('toast');

// ------------------------------------------------------------ helpers

/** An element: h('a', {href: '#/'}, 'text', child, …); `on*` attributes are listeners. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
  /** The field the API's message names (`field: rule`), if any. */
  get field() {
    const match = /^([A-Za-z0-9_.\[\]]+): /.exec(this.message);
    return match ? match[1] : null;
  }
}

/** Call the API; its answer's `data`, or an ApiError with `{code, msg}`. */
async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, t('error.network') + ' ' + error.message);
  }
  let envelope;
  try {
    envelope = await response.json();
  } catch {
    envelope = { code: response.status, msg: response.statusText, data: null };
  }
  if (envelope.code !== 200) {
    if (envelope.code === 401 && session && path !== '/api/system/session') {
      session = null;
      closeEvents();
      location.hash = '#/login';
    }
    throw new ApiError(envelope.code, envelope.msg);
  }
  return envelope.data;
}

function toast(message, bad = false) {
  const item = h('div', { class: bad ? 'bad' : '' }, message);
  toastBox.append(item);
  setTimeout(() => item.remove(), bad ? 8000 : 4000);
}

const enc = encodeURIComponent;
const vmPath = (hs, vm) => `${enc(hs)}/${enc(vm)}`;
const badge = (word) => h('span', { class: `badge ${word}` }, t(`power.${word}`, word));
const percent = (value) => `${Number(value || 0).toFixed(1)}%`;

function table(headings, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, headings.map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, rows)));
}

/** A labelled form field; its error line is filled by showFieldError. */
function field(label, name, control) {
  control.name = name;
  control.id = `field-${name}`;
  const error = h('span', { class: 'field-error', id: `error-${name}`, 'aria-live': 'polite' });
  control.setAttribute('aria-describedby', error.id);
  return h('label', { for: control.id }, label, control, error);
}

function clearErrors(form) {
  for (const line of form.querySelectorAll('.field-error, .form-error')) line.textContent = '';
  for (const control of form.querySelectorAll('[aria-invalid]')) control.removeAttribute('aria-invalid');
}

/** Show an API error beside the field it names, else under the form. */
function showError(form, error) {
  const named = error.field;
  const candidates = named ? [named, named.split('.').pop(), named.split('.')[0]] : [];
  for (const name of candidates) {
    const control = form.elements.namedItem(name);
    if (control instanceof Element) {
      control.setAttribute('aria-invalid', 'true');
      form.querySelector(`#error-${CSS.escape(name)}`).textContent = error.message;
      control.focus();
      return;
    }
  }
  form.querySelector('.form-error').textContent = error.message;
}

/** Run a form's submit: disable its button, clear and show errors. */
function submitter(form, action) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await action(new FormData(form));
    } catch (error) {
      if (error instanceof ApiError) showError(form, error);
      else throw error;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

// ------------------------------------------------------------ session and events

/** Whom the browser is signed in as (`GET /api/system/session`), or null. */
let session = null;
let events = null;
/** The current view's listener for stream events (kind, data). */
let onEvent = null;

function openEvents() {
  if (!session || (events && events.readyState !== EventSource.CLOSED)) return;
  events = new EventSource('/api/system/events');
  for (const kind of ['task', 'power', 'sample']) {
    events.addEventListener(kind, (message) => {
      const data = JSON.parse(message.data);
      document.documentElement.dataset.lastEvent = kind;
      if (onEvent) onEvent(kind, data);
    });
  }
  events.addEventListener('open', () => { document.documentElement.dataset.events = 'open'; });
}

function closeEvents() {
  if (events) events.close();
  events = null;
}

const isCustomer = () => Boolean(session && session.vm_uuid);
const isAdmin = () => Boolean(session && session.role === 'admin' && !session.vm_uuid);
const canOperate = () => Boolean(session && session.role !== 'read-only');

// ------------------------------------------------------------ frame

function renderTop(current) {
  top.replaceChildren();
  document.documentElement.lang = language();
  document.querySelector('.skip').textContent = t('skip');
  top.append(h('a', { class: 'brand', href: '#/' }, t('brand')));
  if (session && !isCustomer()) {
    const links = [['hosts', '#/hosts']];
    if (isAdmin()) links.push(['tasks', '#/tasks'], ['logs', '#/logs']);
    top.append(h('nav', { 'aria-label': t('nav.label') },
      links.map(([name, href]) => h('a', { href, 'aria-current': current === name ? 'page' : false }, t(`nav.${name}`)))));
  }
  const picker = h('select', { 'aria-label': t('language'), id: 'language',
    onchange: (event) => { setLanguage(event.target.value); route(); } },
    LANGUAGES.map(([code, name]) => h('option', { value: code, selected: code === language() }, name)));
  top.append(picker);
  if (session) {
    top.append(h('span', { class: 'who' }, t('signedInAs', session.name)));
    top.append(h('button', { type: 'button', id: 'sign-out', onclick: signOut }, t('signOut')));
  }
}

async function signOut() {
  closeEvents();
  try { await api('DELETE', '/api/system/session'); } catch { /* signed out either way */ }
  session = null;
  location.hash = '#/login';
}

function page(title, current, ...content) {
  renderTop(current);
  document.title = `${title} · openidcs`;
  main.replaceChildren(h('h1', {}, title), ...content);
}

// ------------------------------------------------------------ screens

function loginScreen() {
  onEvent = null;
  renderTop('login');
  document.title = `${t('login.title')} · openidcs`;
  const input = h('input', { type: 'password', autocomplete: 'current-password', required: true });
  const form = submitter(h('form', {},
    field(t('login.token'), 'token', input),
    h('p', { class: 'form-error', role: 'alert' }),
    h('button', { type: 'submit', class: 'primary' }, t('login.submit'))),
  async (data) => {
    session = await api('POST', '/api/system/session', { token: data.get('token') });
    openEvents();
    location.hash = isCustomer() ? `#/vm/${vmPath(session.hosts[0], session.vm_uuid)}` : '#/hosts';
  });
  main.replaceChildren(h('div', { class: 'login card' }, h('h1', {}, t('login.title')),
    h('p', { class: 'muted' }, t('login.hint')), form));
  input.focus();
}

async function hostsScreen() {
  const hosts = await api('GET', '/api/server/listup');
  const cards = h('div', { class: 'cards' });
  page(t('hosts.title'), 'hosts', cards);
  onEvent = null;
  for (const host of Object.values(hosts)) {
    const usage = h('div', {}, h('p', { class: 'muted' }, t('loading')));
    cards.append(h('article', { class: 'card', dataset: { host: host.name } },
      h('h2', {}, h('a', { href: `#/host/${enc(host.name)}` }, host.name)),
      h('p', {}, `${t('hosts.engine')}: ${host.type} · `,
        h('span', { class: `badge ${host.enabled ? 'done' : 'failed'}` }, t(host.enabled ? 'hosts.enabled' : 'hosts.disabled'))),
      usage));
    api('GET', `/api/server/status/${enc(host.name)}`).then(({ status }) => {
      const level = (value) => (value >= 90 ? 'high' : value >= 75 ? 'raised' : '');
      const meter = (label, value) => h('div', { class: `meter ${level(Number(value || 0))}` }, h('span', {}, label),
        h('div', { class: 'bar', role: 'meter', 'aria-label': label, 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Number(value || 0).toFixed(0) },
          h('span', { style: `width:${Math.min(100, Number(value || 0))}%` })),
        h('span', {}, percent(value)));
      usage.replaceChildren(
        meter(t('usage.cpu'), status.cpu_usage),
        meter(t('usage.memory'), status.mem_usage),
        meter(t('usage.disk'), status.hdd_usage),
        h('p', { class: 'muted' }, t('hosts.vms', host.vm_count), h('br'), t('hosts.domains', status.vm_count, status.vm_running)));
    }).catch((error) => usage.replaceChildren(h('p', { class: 'error-box' }, error.message)));
  }
}

function addresses(config) {
  return Object.values(config.nic_all || {}).flatMap((nic) => [nic.ip4_addr, nic.ip6_addr]).filter(Boolean).join(', ');
}

async function hostScreen(hs) {
  const vms = await api('GET', `/api/client/listup/${enc(hs)}`);
  const rows = Object.values(vms).map((vm) => h('tr', { dataset: { vm: vm.uuid } },
    h('td', {}, h('a', { href: `#/vm/${vmPath(hs, vm.uuid)}` }, vm.uuid)),
    h('td', { class: 'power' }, badge(vm.power_status)),
    h('td', {}, addresses(vm.config)),
    h('td', {}, vm.config.cpu_num), h('td', {}, `${vm.config.mem_num} MB`), h('td', {}, vm.config.os_name || '—')));
  page(t('host.title', hs), 'hosts',
    h('div', { class: 'row' }, h('a', { href: '#/hosts' }, t('back.hosts')), h('span', { class: 'spacer' }),
      canOperate() ? h('a', { class: 'button primary', href: `#/host/${enc(hs)}/new` }, t('host.create')) : null),
    h('p'),
    table([t('vm.name'), t('vm.power'), t('vm.addresses'), t('vm.cpu'), t('vm.memory'), t('vm.image')], rows, t('host.empty')));
  onEvent = (kind, data) => {
    if (data.hs_name !== hs) return;
    const row = main.querySelector(`tr[data-vm="${CSS.escape(data.vm_uuid)}"]`);
    if (kind === 'power' && row) row.querySelector('.power').replaceChildren(badge(data.power_status));
    // A VM made or removed elsewhere: read the list again.
    if (kind === 'task' && ['done'].includes(data.state) && ['create', 'delete', 'scaner'].includes(data.actions)) route();
  };
}

async function createScreen(hs) {
  const [images, plans, host] = await Promise.all([
    api('GET', `/api/client/os-images/${enc(hs)}`).catch(() => []),
    api('GET', `/api/server/plans/${enc(hs)}`).catch(() => ({})),
    api('GET', `/api/server/detail/${enc(hs)}`).catch(() => ({ config: {} })),
  ]);
  const number = (value, min) => h('input', { type: 'number', min, value, inputmode: 'numeric' });
  const imagePicker = h('select', {}, h('option', { value: '' }, t('create.blank')),
    images.map((image) => h('option', { value: image.name }, `${image.name} (${image.size_mb} MB)`)));
  const planPicker = h('select', {}, h('option', { value: '' }, t('create.noPlan')),
    Object.keys(plans).map((name) => h('option', { value: name }, name)));
  const form = submitter(h('form', { class: 'grid', novalidate: true },
    field(t('vm.name'), 'vm_uuid', h('input', { required: true, autocomplete: 'off' })),
    field(t('vm.image'), 'os_name', imagePicker),
    field(t('create.plan'), 'plan', planPicker),
    field(t('vm.cpu'), 'cpu_num', number(1, 1)),
    field(t('create.memory'), 'mem_num', number(512, 64)),
    field(t('create.disk'), 'hdd_num', number(10240, 1)),
    field(t('create.nic'), 'nic_type', poolPicker(host.config.ipaddr_maps || {})),
    field(t('create.address'), 'ip4_addr', h('input', { placeholder: t('ip.auto'), autocomplete: 'off', inputmode: 'decimal' })),
    field(t('create.password'), 'os_pass', h('input', { type: 'password', autocomplete: 'new-password' })),
    h('div', { class: 'wide' }, field(t('create.sshKeys'), 'ssh_keys', h('textarea', { placeholder: 'ssh-ed25519 AAAA… user@host' }))),
    h('p', { class: 'form-error wide', role: 'alert' }),
    h('div', { class: 'wide row' }, h('button', { type: 'submit', class: 'primary' }, t('create.submit')),
      h('a', { href: `#/host/${enc(hs)}` }, t('cancel')))),
  async (data) => {
    const nic = { nic_type: data.get('nic_type') };
    if (data.get('ip4_addr').trim()) nic.ip4_addr = data.get('ip4_addr').trim();
    const body = { vm_uuid: data.get('vm_uuid').trim(), nic_all: { eth0: nic } };
    for (const name of ['os_name', 'plan', 'os_pass']) if (data.get(name)) body[name] = data.get(name);
    for (const name of ['cpu_num', 'mem_num', 'hdd_num']) {
      const text = data.get(name).trim();
      // A plan fills what is left out; a number the browser could not read goes as written, for the API to name.
      if (text !== '') body[name] = Number.isFinite(Number(text)) ? Number(text) : text;
    }
    const keys = data.get('ssh_keys').split('\n').map((line) => line.trim()).filter(Boolean);
    if (keys.length) body.ssh_keys = keys;
    const created = await api('POST', `/api/client/create/${enc(hs)}`, body);
    toast(t('create.done', created.uuid || body.vm_uuid));
    location.hash = `#/vm/${vmPath(hs, body.vm_uuid)}`;
  });
  page(t('create.title', hs), 'hosts', form);
  onEvent = null;
  form.elements.namedItem('vm_uuid').focus();
}

/**
 * The NIC's network: one choice per kind (NAT, public), each naming the
 * host's pools of that kind, from which the server gives the NIC its next
 * free address (the original's allocation: pools of the NIC's kind in order).
 */
function poolPicker(pools) {
  const ranges = (kind) => Object.entries(pools).filter(([, pool]) => (pool.type || 'nat') === kind)
    .map(([name, pool]) => t('create.poolRange', name, pool.from, pool.nums));
  return h('select', {}, ['nat', 'pub'].map((kind) => {
    const named = ranges(kind);
    return h('option', { value: kind }, named.length ? `${t(`nic.${kind}`)} — ${named.join(', ')}` : `${t(`nic.${kind}`)} — ${t('create.noPool')}`);
  }));
}

/** uPlot options of a line chart: one or two series over time. */
function chartOptions(title, series, box) {
  const width = Math.max(240, (box.clientWidth || 320) - 8);
  const options = {
    title, width, height: 180,
    scales: { x: { time: true } },
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2 }))],
    axes: [{}, { size: 50 }],
  };
  return options;
}

/** Seconds since the epoch of a sample's `on_update` (unix s or ms, or a date text), else the fallback. */
function sampleTime(at, fallback) {
  const number = typeof at === 'string' && !/^\d+(\.\d+)?$/.test(at) ? Date.parse(at) / 1000 : Number(at);
  if (!Number.isFinite(number) || number <= 0) return fallback;
  return number > 1e12 ? number / 1000 : number;
}

function samplePoint(sample, fallbackTime) {
  const time = sampleTime(sample.on_update, fallbackTime);
  const memory = sample.mem_total ? (100 * sample.mem_usage) / sample.mem_total : sample.mem_usage;
  return { time, cpu: sample.cpu_usage, memory, up: sample.network_u, down: sample.network_d, traffic: sample.flu_usage };
}

async function vmScreen(hs, vm) {
  const base = vmPath(hs, vm);
  const [detail, status] = await Promise.all([
    api('GET', `/api/client/detail/${base}`),
    api('GET', `/api/client/status/${base}`),
  ]);
  const customer = isCustomer();
  const operate = canOperate();
  let power = status.power_status;
  const powerBadge = h('span', { id: 'power' }, badge(power));
  const actions = [['start', 'start'], ['stop', 'stop'], ['hard_stop', 'hardStop'], ['reset', 'reboot'], ['pause', 'pause'], ['resume', 'resume']];
  const powerButtons = h('div', { class: 'row', role: 'group', 'aria-label': t('vm.powerActions') },
    actions.map(([action, key]) => h('button', { type: 'button', dataset: { action },
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          const answer = await api('POST', `/api/client/powers/${base}`, { action });
          setPower(answer.power_status);
          toast(t('vm.powerDone', t(`action.${key}`)));
        } catch (error) { toast(error.message, true); setPower(power); }
      } }, t(`action.${key}`))));
  // Which actions make sense in which state; the rest are disabled (a
  // state this table does not know, such as missing, leaves all enabled).
  const offered = {
    running: ['stop', 'hard_stop', 'reset', 'pause'],
    stopped: ['start'], stopping: ['hard_stop'], crashed: ['start', 'hard_stop'],
    paused: ['resume', 'hard_stop'], suspended: ['start', 'resume', 'hard_stop'],
  };
  function setPower(word) {
    power = word;
    powerBadge.replaceChildren(badge(word));
    document.documentElement.dataset.power = word;
    for (const button of powerButtons.querySelectorAll('button')) {
      button.disabled = Boolean(offered[word]) && !offered[word].includes(button.dataset.action);
    }
  }

  // Console: a one-time ticket per opening, in a frame of this origin.
  const consoleBox = h('div', {});
  const consoleButton = h('button', { type: 'button', id: 'open-console', onclick: async () => {
    try {
      const { url } = await api('GET', `/api/client/vncons/${base}`);
      consoleBox.replaceChildren(h('iframe', { class: 'console', src: url, title: t('vm.console') }));
    } catch (error) { consoleBox.replaceChildren(h('p', { class: 'error-box' }, error.message)); }
  } }, t('vm.openConsole'));

  // Charts from the status history, extended by live samples.
  const chartsBox = h('div', { class: 'charts' });
  const points = status.history.map((sample, index) => samplePoint(sample, Date.now() / 1000 - (status.history.length - index) * 30));
  // Traffic counts up through the period: the VM's total now, less what the
  // samples shown added, is where the first one started.
  let used = status.flu_usage - points.reduce((sum, point) => sum + point.traffic, 0);
  for (const point of points) { used += point.traffic; point.used = used; }
  const plots = [];
  const quota = detail.config.flu_num;
  const trafficLabel = quota ? t('chart.trafficOf', quota) : t('chart.traffic');
  const definitions = [
    [t('chart.cpu'), [[t('chart.cpuSeries'), '#1f5fbf']], (p) => [p.cpu]],
    [t('chart.memory'), [[t('chart.memorySeries'), '#1e7d3a']], (p) => [p.memory]],
    [t('chart.network'), [[t('chart.up'), '#a35f00'], [t('chart.down'), '#6a3fb5']], (p) => [p.up, p.down]],
    [trafficLabel, quota ? [[t('chart.usedMb'), '#b3261e'], [t('chart.quota'), '#5b6b7d']] : [[t('chart.usedMb'), '#b3261e']],
      (p) => (quota ? [p.used, quota] : [p.used])],
  ];
  function chartData(pick) {
    const columns = [points.map((p) => p.time)];
    const picked = points.map(pick);
    const width = picked.length ? picked[0].length : 1;
    for (let index = 0; index < width; index += 1) columns.push(picked.map((values) => values[index]));
    return columns;
  }

  // The VM's latest task as it runs (a reinstall's steps), or how it ended.
  const taskLine = h('p', { id: 'task-line', class: 'muted', 'aria-live': 'polite' });
  function showTask(task) {
    const label = t(`task.${task.actions.split(':')[0]}`, task.actions);
    taskLine.className = task.state === 'failed' ? 'error-box' : 'muted';
    taskLine.dataset.state = task.state;
    taskLine.textContent = task.state === 'running'
      ? t('task.running', label, task.message, task.progress)
      : t(`task.${task.state}`, label, task.message);
    if (task.state === 'failed') toast(taskLine.textContent, true);
  }
  const sections = [
    h('div', { class: 'row' },
      customer ? null : h('a', { href: `#/host/${enc(hs)}` }, t('back.host', hs)),
      h('span', { class: 'spacer' }), h('span', {}, t('vm.power'), ': '), powerBadge),
    taskLine,
    h('section', { class: 'card' }, h('h2', {}, t('vm.powerActions')), operate ? powerButtons : h('p', { class: 'muted' }, t('readOnly'))),
    h('section', { class: 'card' }, h('h2', {}, t('vm.console')), operate ? consoleButton : null, consoleBox),
    h('section', { class: 'card' }, h('h2', {}, t('vm.charts')),
      points.length ? null : h('p', { class: 'muted', id: 'no-samples' }, t('chart.none')), chartsBox),
    h('section', { class: 'card', id: 'nat' }, h('h2', {}, t('nat.title')), h('div', { class: 'list' }), operate ? natForm() : null),
    h('section', { class: 'card', id: 'ips' }, h('h2', {}, t('ip.title')), h('div', { class: 'list' }), operate && !customer ? ipForm() : null),
    h('section', { class: 'card', id: 'proxies' }, h('h2', {}, t('proxy.title')), h('div', { class: 'list' }), operate ? proxyForm() : null),
    operate ? h('section', { class: 'card' }, h('h2', {}, t('password.title')), passwordForm()) : null,
  ];
  if (operate && !customer) {
    sections.push(h('section', { class: 'card' }, h('h2', {}, t('reinstall.title')), await reinstallForm()));
    sections.push(h('section', { class: 'card' }, h('h2', {}, t('delete.title')),
      h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!window.confirm(t('delete.confirm', vm))) return;
        try {
          await api('DELETE', `/api/client/delete/${base}`);
          toast(t('delete.done', vm));
          location.hash = `#/host/${enc(hs)}`;
        } catch (error) { toast(error.message, true); }
      } }, t('delete.submit'))));
  }
  page(t('vm.title', vm), customer ? 'customer' : 'hosts', ...sections);
  setPower(power);
  // The charts appear with the first sample (history or live).
  function drawCharts() {
    chartsBox.dataset.points = String(points.length);
    if (plots.length) {
      for (const [plot, pick] of plots) plot.setData(chartData(pick));
      return;
    }
    main.querySelector('#no-samples')?.remove();
    for (const [title, series, pick] of definitions) {
      const box = h('div', { class: 'chart', role: 'img', 'aria-label': title });
      chartsBox.append(box);
      plots.push([new uPlot(chartOptions(title, series, box), chartData(pick), box), pick]);
    }
  }
  if (points.length) drawCharts();
  await Promise.all([loadNat(), loadIps(), loadProxies()]);

  onEvent = (kind, data) => {
    if (data.hs_name !== hs || data.vm_uuid !== vm) return;
    if (kind === 'power') setPower(data.power_status);
    if (kind === 'sample') {
      const point = samplePoint(data.sample, Date.now() / 1000);
      point.used = (points.length ? points[points.length - 1].used : status.flu_usage) + point.traffic;
      points.push(point);
      drawCharts();
    }
    if (kind === 'task') showTask(data);
    if (kind === 'task' && (data.state === 'done' || data.state === 'failed')) {
      if (data.actions.startsWith('nat')) loadNat();
      if (data.actions.startsWith('ip')) loadIps();
      if (data.actions.startsWith('pxy')) loadProxies();
    }
  };

  function listInto(section, headings, rows, empty) {
    main.querySelector(`#${section} .list`).replaceChildren(table(headings, rows, empty));
  }
  function removeButton(label, path, reload) {
    return operate ? h('button', { type: 'button', class: 'danger', 'aria-label': label, onclick: async (event) => {
      event.target.disabled = true;
      try { await api('DELETE', path); toast(t('deleted')); await reload(); } catch (error) { toast(error.message, true); event.target.disabled = false; }
    } }, t('delete.short')) : null;
  }
  async function loadNat() {
    const rules = await api('GET', `/api/client/natget/${base}`);
    listInto('nat', [t('nat.protocol'), t('nat.public'), t('nat.internal'), t('nat.tips'), ''], rules.map((rule) => h('tr', { dataset: { index: rule.index } },
      h('td', {}, rule.protocol), h('td', {}, rule.wan_port), h('td', {}, `${rule.lan_addr}:${rule.lan_port}`), h('td', {}, rule.nat_tips),
      h('td', {}, removeButton(t('nat.remove', rule.wan_port), `/api/client/natdel/${base}/${rule.index}`, loadNat)))), t('nat.empty'));
  }
  async function loadIps() {
    const nics = await api('GET', `/api/client/iplist/${base}`);
    listInto('ips', [t('ip.nic'), t('ip.type'), t('ip.ipv4'), t('ip.ipv6'), t('ip.mac'), ''], nics.map((nic) => h('tr', {},
      h('td', {}, nic.nic_name), h('td', {}, t(`nic.${nic.nic_type}`, nic.nic_type)), h('td', {}, nic.ip4_addr), h('td', {}, nic.ip6_addr), h('td', {}, nic.mac_addr),
      h('td', {}, customer ? null : removeButton(t('ip.remove', nic.nic_name), `/api/client/ipdel_/${base}/${nic.index}`, loadIps)))), t('ip.empty'));
  }
  async function loadProxies() {
    const proxies = await api('GET', `/api/client/pxyget/${base}`);
    listInto('proxies', [t('proxy.domain'), t('proxy.backend'), t('proxy.https'), ''], proxies.map((proxy) => h('tr', {},
      h('td', {}, proxy.domain), h('td', {}, `${proxy.backend_ip}:${proxy.backend_port}`), h('td', {}, proxy.ssl_enabled ? t('yes') : t('no')),
      h('td', {}, removeButton(t('proxy.remove', proxy.domain), `/api/client/pxydel/${base}/${proxy.index}`, loadProxies)))), t('proxy.empty'));
  }
  function natForm() {
    return submitter(h('form', { class: 'inline', id: 'nat-add', novalidate: true },
      field(t('nat.protocol'), 'protocol', h('select', {}, h('option', { value: 'tcp' }, 'TCP'), h('option', { value: 'udp' }, 'UDP'))),
      field(t('nat.public'), 'wan_port', h('input', { type: 'number', min: 1, max: 65535, placeholder: t('nat.auto') })),
      field(t('nat.internalPort'), 'lan_port', h('input', { type: 'number', min: 1, max: 65535, required: true })),
      field(t('nat.tips'), 'nat_tips', h('input', {})),
      h('button', { type: 'submit', class: 'primary' }, t('add')), h('p', { class: 'form-error', role: 'alert' })),
    async (data) => {
      const body = { protocol: data.get('protocol'), lan_port: numberOrText(data.get('lan_port')), nat_tips: data.get('nat_tips') };
      if (data.get('wan_port')) body.wan_port = numberOrText(data.get('wan_port'));
      await api('POST', `/api/client/natadd/${base}`, body);
      toast(t('added'));
      main.querySelector('#nat-add').reset();
      await loadNat();
    });
  }
  function ipForm() {
    return submitter(h('form', { class: 'inline', id: 'ip-add', novalidate: true },
      field(t('ip.type'), 'nic_type', h('select', {}, h('option', { value: 'nat' }, t('nic.nat')), h('option', { value: 'pub' }, t('nic.pub')))),
      field(t('ip.ipv4'), 'ip4_addr', h('input', { placeholder: t('ip.auto') })),
      h('button', { type: 'submit', class: 'primary' }, t('add')), h('p', { class: 'form-error', role: 'alert' })),
    async (data) => {
      const body = { nic_type: data.get('nic_type') };
      if (data.get('ip4_addr')) body.ip4_addr = data.get('ip4_addr').trim();
      await api('POST', `/api/client/ipadd_/${base}`, body);
      toast(t('added'));
      await loadIps();
    });
  }
  function proxyForm() {
    return submitter(h('form', { class: 'inline', id: 'proxy-add', novalidate: true },
      field(t('proxy.domain'), 'domain', h('input', { placeholder: 'www.example.com' })),
      field(t('proxy.port'), 'backend_port', h('input', { type: 'number', min: 1, max: 65535 })),
      h('button', { type: 'submit', class: 'primary' }, t('add')), h('p', { class: 'form-error', role: 'alert' })),
    async (data) => {
      await api('POST', `/api/client/pxyadd/${base}`, { domain: data.get('domain').trim(), backend_port: numberOrText(data.get('backend_port')) });
      toast(t('added'));
      main.querySelector('#proxy-add').reset();
      await loadProxies();
    });
  }
  function passwordForm() {
    return submitter(h('form', { class: 'inline', id: 'password-set', novalidate: true },
      field(t('password.new'), 'password', h('input', { type: 'password', autocomplete: 'new-password' })),
      h('button', { type: 'submit', class: 'primary' }, t('password.submit')), h('p', { class: 'form-error', role: 'alert' })),
    async (data) => {
      const answer = await api('POST', `/api/client/password/${base}`, { password: data.get('password') });
      toast(t(`password.applied.${answer.applied}`, answer.applied));
      main.querySelector('#password-set').reset();
    });
  }
  async function reinstallForm() {
    const images = await api('GET', `/api/client/os-images/${enc(hs)}`).catch(() => []);
    if (!images.length) return h('p', { class: 'muted', id: 'reinstall' }, t('reinstall.noImages'));
    return submitter(h('form', { class: 'inline', id: 'reinstall', novalidate: true },
      field(t('vm.image'), 'os_name', h('select', {}, images.map((image) =>
        h('option', { value: image.name, selected: image.name === detail.config.os_name }, image.name)))),
      field(t('password.new'), 'os_pass', h('input', { type: 'password', autocomplete: 'new-password' })),
      h('button', { type: 'submit', class: 'primary' }, t('reinstall.submit')),
      h('p', { class: 'form-error', role: 'alert' })),
    async (data) => {
      if (!window.confirm(t('reinstall.confirm', vm))) return;
      const body = { os_name: data.get('os_name') };
      if (data.get('os_pass')) body.os_pass = data.get('os_pass');
      await api('PUT', `/api/client/update/${base}?reinstall=true&async=true`, body);
      toast(t('reinstall.started'));
    });
  }
}

function numberOrText(text) {
  const trimmed = String(text ?? '').trim();
  return trimmed !== '' && Number.isFinite(Number(trimmed)) ? Number(trimmed) : trimmed;
}

async function hostOptions() {
  const hosts = await api('GET', '/api/server/listup').catch(() => ({}));
  return Object.keys(hosts);
}

/** Tasks or logs: a filterable table (host, state or level), newest first. */
async function recordsScreen(kind) {
  const query = new URLSearchParams(location.hash.split('?')[1] || '');
  const hostFilter = query.get('hs_name') || '';
  const wordFilter = query.get(kind === 'tasks' ? 'state' : 'level') || '';
  const words = kind === 'tasks' ? ['queued', 'running', 'done', 'failed'] : ['debug', 'info', 'warn', 'error'];
  const path = kind === 'tasks' ? '/api/system/tasget' : '/api/system/logget';
  const parameters = new URLSearchParams({ limit: '100' });
  if (hostFilter) parameters.set('hs_name', hostFilter);
  if (wordFilter) parameters.set(kind === 'tasks' ? 'state' : 'level', wordFilter);
  const [records, hosts] = await Promise.all([api('GET', `${path}?${parameters}`), hostOptions()]);
  const filters = h('form', { class: 'inline', id: 'filters', onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    const next = new URLSearchParams();
    for (const [name, value] of data) if (value) next.set(name, value);
    location.hash = `#/${kind}?${next}`;
  } },
    h('label', {}, t('filter.host'), h('select', { name: 'hs_name' }, h('option', { value: '' }, t('filter.all')),
      hosts.map((name) => h('option', { value: name, selected: name === hostFilter }, name)))),
    h('label', {}, t(kind === 'tasks' ? 'filter.state' : 'filter.level'),
      h('select', { name: kind === 'tasks' ? 'state' : 'level' }, h('option', { value: '' }, t('filter.all')),
        words.map((word) => h('option', { value: word, selected: word === wordFilter }, t(`state.${word}`))))),
    h('button', { type: 'submit' }, t('filter.apply')));
  const rows = records.map((record) => kind === 'tasks'
    ? h('tr', { dataset: { task: record.id } }, h('td', {}, record.id), h('td', {}, record.actions), h('td', {}, record.host), h('td', {}, record.vm_uuid),
      h('td', { class: 'state' }, h('span', { class: `badge ${record.state}` }, t(`state.${record.state}`))), h('td', {}, `${record.progress}%`),
      h('td', {}, record.message), h('td', {}, record.created_at))
    : h('tr', {}, h('td', {}, record.created_at), h('td', {}, h('span', { class: `badge ${record.level}` }, t(`state.${record.level}`))),
      h('td', {}, record.host), h('td', {}, record.vm_uuid), h('td', {}, record.actions), h('td', {}, record.message)));
  const headings = kind === 'tasks'
    ? [t('tasks.id'), t('tasks.action'), t('filter.host'), t('vm.name'), t('filter.state'), t('tasks.progress'), t('tasks.message'), t('tasks.created')]
    : [t('tasks.created'), t('filter.level'), t('filter.host'), t('vm.name'), t('tasks.action'), t('tasks.message')];
  page(t(`${kind}.title`), kind, filters, h('p'), table(headings, rows, t(`${kind}.empty`)));
  onEvent = kind === 'tasks' ? (eventKind, data) => {
    if (eventKind !== 'task') return;
    if (hostFilter && data.hs_name !== hostFilter) return;
    const row = main.querySelector(`tr[data-task="${data.task_id}"]`);
    if (row) row.querySelector('.state').replaceChildren(h('span', { class: `badge ${data.state}` }, t(`state.${data.state}`)));
    else if (data.state === 'queued' && !wordFilter) route();
  } : null;
}

// ------------------------------------------------------------ routing

async function route() {
  const hash = location.hash.replace(/^#/, '').split('?')[0] || '/';
  const parts = hash.split('/').filter(Boolean).map(decodeURIComponent);
  if (!session) {
    try { session = await api('GET', '/api/system/session'); } catch { session = null; }
    openEvents();
  }
  document.documentElement.dataset.ready = 'loading';
  try {
    if (!session || parts[0] === 'login') {
      if (session && parts[0] === 'login') { location.hash = '#/'; return; }
      loginScreen();
    } else if (isCustomer()) {
      // A customer's session reaches its VM only: every address is its page.
      await vmScreen(session.hosts[0], session.vm_uuid);
    } else if (parts[0] === 'host' && parts[2] === 'new') await createScreen(parts[1]);
    else if (parts[0] === 'host' && parts[1]) await hostScreen(parts[1]);
    else if (parts[0] === 'vm' && parts[2]) await vmScreen(parts[1], parts[2]);
    else if (parts[0] === 'tasks' || parts[0] === 'logs') await recordsScreen(parts[0]);
    else await hostsScreen();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (session) page(t('error.title'), '', h('p', { class: 'error-box', role: 'alert' }, error.message), h('a', { href: '#/' }, t('back.home')));
  } finally {
    // What is shown, for tests: ready, and for which address.
    document.documentElement.dataset.route = location.hash;
    document.documentElement.dataset.ready = 'yes';
  }
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
route();
