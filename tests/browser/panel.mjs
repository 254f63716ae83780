// Drives the web panel in Debian's headless Chromium for tests/tests/panel.rs
// and prints one JSON report line: {steps, failures, console, screenshots}.
// The Rust test starts the server and reads the report; this script checks
// what only a browser can see and reports each step's result.
//
// Environment: PANEL_BASE (https URL), PANEL_TOKEN (admin token),
// PANEL_VIEWER_TOKEN (read-only, scoped to PANEL_HOST; the server has another host), PANEL_HOST
// (a host of the server), PANEL_TEMPLOGIN (a templogin URL for VM
// PANEL_CUSTOMER_VM), PANEL_OTHER_VM (another VM of the host), PANEL_NAT
// (1: NAT works on this server), PANEL_PROXY (1: the server manages an
// nginx), PANEL_SHOTS (screenshot directory).

import { readFileSync } from 'node:fs';
import { launch } from './chromium.mjs';

const env = (name) => {
  const value = process.env[name];
  if (value === undefined) { console.error(`${name} is not set`); process.exit(2); }
  return value;
};
const base = env('PANEL_BASE');
const token = env('PANEL_TOKEN');
const viewerToken = env('PANEL_VIEWER_TOKEN');
const host = env('PANEL_HOST');
const templogin = env('PANEL_TEMPLOGIN');
const customerVm = env('PANEL_CUSTOMER_VM');
const otherVm = env('PANEL_OTHER_VM');
const natWorks = env('PANEL_NAT') === '1';
const proxyWorks = env('PANEL_PROXY') === '1';
const uploadKey = env('PANEL_UPLOAD_KEY');
const customerMac = env('PANEL_CUSTOMER_MAC');
const shots = env('PANEL_SHOTS');

const report = { steps: [], failures: [], console: [], screenshots: [] };
function check(step, ok, detail = '') {
  report.steps.push(`${ok ? 'ok' : 'FAILED'}: ${step}${detail ? ` (${detail})` : ''}`);
  if (!ok) report.failures.push(`${step}${detail ? `: ${detail}` : ''}`);
}

// Every key the panel uses is in both languages, and both have the same keys.
const { STRINGS } = await import(new URL('../../host/panel/i18n.js', import.meta.url));
// The panel's script and the console page's (inside the server's source).
const appSource = ['../../host/panel/app.js', '../../host/src/api/console.rs']
  .map((path) => readFileSync(new URL(path, import.meta.url), 'utf8')).join('\n');
const used = [...appSource.matchAll(/\bt\('([A-Za-z.]+)'/g)].map((match) => match[1]);
const english = Object.keys(STRINGS.en).sort();
const chinese = Object.keys(STRINGS['zh-CN']).sort();
check('en and zh-CN have the same keys', JSON.stringify(english) === JSON.stringify(chinese),
  [...english.filter((key) => !chinese.includes(key)), ...chinese.filter((key) => !english.includes(key))].join(', '));
const missing = used.filter((key) => !(key in STRINGS.en));
check('every t() key of the panel and the console is translated', missing.length === 0, missing.join(', '));
// The product's name stays as it is.
const untranslated = english.filter((key) => key !== 'brand' && STRINGS.en[key] === STRINGS['zh-CN'][key] && /[a-z]{4,}/.test(STRINGS.en[key]));
check('no English text left in zh-CN', untranslated.length === 0, untranslated.join(', '));

const browser = await launch();

/** A new browser context (its own cookies) with console and error capture. */
async function open(viewport, locale = 'en-US') {
  const context = await browser.newContext({ viewport, locale, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') report.console.push(`${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => report.console.push(`pageerror: ${error}`));
  page.on('requestfailed', (request) => {
    // An event stream cut by navigation or sign-out is no failure.
    if (!request.url().includes('/api/system/events')) report.console.push(`requestfailed: ${request.url()} ${request.failure()?.errorText}`);
  });
  return { context, page };
}

async function shot(page, name) {
  const path = `${shots}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  report.screenshots.push(path);
}

/** A check that holds once `predicate` holds in the page (within 15 s). */
const eventually = (page, step, predicate) => page.waitForFunction(predicate, null, { timeout: 15_000 })
  .then(() => check(step, true), () => check(step, false));
const ready = (page) => page.waitForFunction(() => document.documentElement.dataset.ready === 'yes', null, { timeout: 30_000 });
/** Ready, showing `hash` (the panel notes which address it rendered). */
const shown = (page, hash) => page.waitForFunction((target) => document.documentElement.dataset.ready === 'yes'
  && document.documentElement.dataset.route === target, hash, { timeout: 30_000 });
async function go(page, hash) {
  await page.evaluate((target) => { location.hash = target; }, hash);
  await shown(page, hash);
}
const text = (page, selector) => page.textContent(selector, { timeout: 10_000 });
const fits = (page) => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);

/** Tab through the page: every visible control must receive the focus. */
async function keyboardReach(page) {
  const controls = await page.evaluate(() => {
    const all = [...document.querySelectorAll('a[href], button, input, select, textarea, iframe')];
    all.forEach((element, index) => { element.dataset.kbd = String(index); });
    return all.filter((element) => element.offsetParent !== null && !element.disabled).map((element) => element.dataset.kbd);
  });
  await page.evaluate(() => document.activeElement?.blur());
  const reached = new Set();
  for (let press = 0; press < controls.length * 2 + 10; press += 1) {
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => document.activeElement?.dataset.kbd);
    if (focused !== undefined) reached.add(focused);
    if (reached.size >= controls.length) break;
  }
  return controls.filter((id) => !reached.has(id)).length === 0 ? [] : controls.filter((id) => !reached.has(id));
}

/** Every control of the screen shown is reachable by keyboard. */
async function keyboardCheck(page, screen) {
  const unreached = await keyboardReach(page);
  check(`every control of the ${screen} is reachable by keyboard`, unreached.length === 0, unreached.join(','));
}

try {
  // ---------------------------------------------------------------- operator, 1280×800
  const { context, page } = await open({ width: 1280, height: 800 });
  await page.goto(`${base}/`, { waitUntil: 'load' });
  await ready(page);
  check('signed out: the sign-in form', await page.isVisible('#field-token'));
  await shot(page, 'sign-in');
  await page.fill('#field-token', 'not-the-token-at-all');
  await page.press('#field-token', 'Enter');
  await page.waitForFunction(() => document.querySelector('.login .form-error')?.textContent !== '', null, { timeout: 10_000 });
  check('a wrong token is refused on the form', (await text(page, '.login .form-error')).includes('token'), await text(page, '.login .form-error'));
  await page.fill('#field-token', token);
  await page.press('#field-token', 'Enter');
  await page.waitForSelector('.cards article', { timeout: 30_000 });
  await ready(page);
  const cookies = await context.cookies();
  const cookie = cookies.find((item) => item.name === 'openidcs_session');
  check('the session is an HttpOnly, Secure, SameSite=Strict cookie', Boolean(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === 'Strict'), JSON.stringify(cookie));
  check('no token kept in web storage', await page.evaluate((secret) => !JSON.stringify({ ...localStorage }).includes(secret) && !JSON.stringify({ ...sessionStorage }).includes(secret), token));
  await page.waitForFunction(() => !document.querySelector('.cards')?.textContent.includes('…'), null, { timeout: 30_000 });
  check('the host card shows usage', (await text(page, `article[data-host="${host}"]`)).includes('%'));
  await shot(page, 'hosts');
  await keyboardCheck(page, 'hosts page');

  // The create form: a wrong field first, then a VM.
  await page.click(`a[href="#/host/${host}"]`);
  await shown(page, `#/host/${host}`);
  await keyboardCheck(page, 'host\'s VM list');
  await page.click(`a[href="#/host/${host}/new"]`);
  await shown(page, `#/host/${host}/new`);
  const pools = await page.$$eval('#field-nic_type option', (options) => options.map((option) => `${option.value}=${option.textContent}`));
  check('the network picker names the host\'s pool', pools.some((option) => option.startsWith('nat=') && option.includes('lan')), pools.join(' | '));
  await keyboardCheck(page, 'create form');
  await page.fill('#field-vm_uuid', 'panel1');
  await page.fill('#field-cpu_num', '0');
  await page.fill('#field-mem_num', '64');
  await page.fill('#field-hdd_num', '0');
  await page.click('form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#error-cpu_num')?.textContent !== '', null, { timeout: 10_000 });
  const fieldError = await text(page, '#error-cpu_num');
  check('a wrong field shows the API\'s message beside it', fieldError.startsWith('cpu_num:'), fieldError);
  check('the wrong field is marked invalid', (await page.getAttribute('#field-cpu_num', 'aria-invalid')) === 'true');
  await shot(page, 'create-error');
  await page.fill('#field-cpu_num', '1');
  await page.fill('#field-ip4_addr', '10.231.0.300');
  await page.click('form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#error-ip4_addr')?.textContent !== '', null, { timeout: 10_000 });
  const addressError = await text(page, '#error-ip4_addr');
  check('a wrong address shows the API\'s message beside it', addressError.includes('ip4_addr'), addressError);
  check('the earlier error is cleared', (await text(page, '#error-cpu_num')) === '');
  await page.fill('#field-ip4_addr', '');
  const offered = await page.$$eval('#field-os_name option', (options) => options.map((option) => option.value));
  check('the image picker lists the host\'s images', offered.includes('debian12') && offered.includes('alpine3'), offered.join(','));
  await page.selectOption('#field-os_name', 'debian12');
  await page.fill('#field-os_pass', 'panel-pass-1');
  await page.click('form button[type=submit]');
  await page.waitForSelector('#power', { timeout: 60_000 });
  await ready(page);
  check('created: the VM page', (await text(page, 'h1')).includes('panel1'));
  await shot(page, 'vm');

  // The list shows the VM start without a reload: the start comes from
  // another client (the API), the list hears it on the event stream.
  await go(page, `#/host/${host}`);
  const rowPower = () => text(page, 'tr[data-vm="panel1"] .power');
  check('the list shows panel1 stopped', (await rowPower()).includes('stopped'), await rowPower());
  await page.evaluate(() => { window.notReloaded = true; });
  const started = await page.evaluate(async ([hs]) => {
    const answer = await fetch(`/api/client/powers/${hs}/panel1`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action: 'start' }) });
    return answer.status;
  }, [host]);
  check('started through the API', started === 200, String(started));
  await eventually(page, 'the list shows it running without a reload', () => document.querySelector('tr[data-vm="panel1"] .power')?.textContent.includes('running'));
  check('the page was not reloaded', await page.evaluate(() => window.notReloaded === true));
  await shot(page, 'host-vms');

  // The VM page: power buttons, NAT add and delete.
  await go(page, `#/vm/${host}/panel1`);
  check('the VM page shows it running', await page.evaluate(() => document.documentElement.dataset.power === 'running'));
  const enabled = () => page.$$eval('button[data-action]', (buttons) => buttons.filter((button) => !button.disabled).map((button) => button.dataset.action).join(','));
  check('running: start and resume are disabled', (await enabled()) === 'stop,hard_stop,reset,pause', await enabled());
  await page.click('button[data-action="pause"]');
  await eventually(page, 'pause from the page', () => document.documentElement.dataset.power === 'paused');
  check('paused: resume and power off are offered', (await enabled()) === 'hard_stop,resume', await enabled());
  await page.click('button[data-action="resume"]');
  await eventually(page, 'resume from the page', () => document.documentElement.dataset.power === 'running');
  if (natWorks) {
    await page.fill('#nat-add [name=wan_port]', '20080');
    await page.fill('#nat-add [name=lan_port]', '80');
    await page.fill('#nat-add [name=nat_tips]', 'web');
    await page.click('#nat-add button[type=submit]');
    await page.waitForSelector('#nat tr[data-index]', { timeout: 15_000 });
    const listed = await text(page, '#nat .list');
    check('a NAT rule added from the page is listed', listed.includes('20080') && listed.includes(':80'), listed);
    await shot(page, 'vm-nat');
    await page.click('#nat tr[data-index] button.danger');
    await eventually(page, 'the NAT rule deleted from the page is gone', () => !document.querySelector('#nat tr[data-index]'));
  } else {
    report.steps.push('skipped: NAT add/delete (PANEL_NAT is not 1: no nft here)');
  }
  // A second NIC from the pool, then gone again (the first one stays).
  const nicNames = () => page.$$eval('#ips tbody tr', (rows) => rows.map((row) => row.cells[0].textContent));
  const firstNics = await nicNames();
  check('the VM page lists its NIC', firstNics.length === 1, firstNics.join(','));
  await page.selectOption('#ip-add [name=nic_type]', 'nat');
  await page.click('#ip-add button[type=submit]');
  await eventually(page, 'a NIC added from the page is listed', () => document.querySelectorAll('#ips tbody tr').length === 2);
  const added = (await nicNames()).find((name) => !firstNics.includes(name));
  const addedRow = page.locator('#ips tbody tr', { has: page.locator('td:first-child', { hasText: new RegExp(`^${added}$`) }) });
  const addedText = await addedRow.textContent();
  check('the added NIC has an address of the pool', addedText.includes('10.231.0.'), addedText);
  await addedRow.locator('button.danger').click();
  await eventually(page, 'the NIC deleted from the page is gone', () => document.querySelectorAll('#ips tbody tr').length === 1);
  check('the first NIC stays', JSON.stringify(await nicNames()) === JSON.stringify(firstNics), (await nicNames()).join(','));
  if (proxyWorks) {
    await page.fill('#proxy-add [name=domain]', 'www.panel-test.example');
    await page.fill('#proxy-add [name=backend_port]', '8080');
    await page.click('#proxy-add button[type=submit]');
    await page.waitForSelector('#proxies tbody tr', { timeout: 15_000 });
    const proxied = await text(page, '#proxies .list');
    check('a proxy added from the page is listed', proxied.includes('www.panel-test.example') && proxied.includes(':8080'), proxied);
    await shot(page, 'vm-proxy');
    await page.click('#proxies tbody tr button.danger');
    await eventually(page, 'the proxy deleted from the page is gone', () => !document.querySelector('#proxies tbody tr'));
  } else {
    report.steps.push('skipped: proxy add/delete (PANEL_PROXY is not 1: no nginx here)');
  }
  await page.fill('#password-set [name=password]', 'panel-pass-2');
  await page.click('#password-set button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#toast')?.textContent.toLowerCase().includes('password'), null, { timeout: 15_000 })
    .then(() => check('a password reset from the page is confirmed', true), async () => check('a password reset from the page is confirmed', false, await text(page, '#password-set')));
  // Reinstall with the other image, confirmed in the browser's dialog.
  check('the reinstall picker starts at the VM\'s image', (await page.inputValue('#reinstall [name=os_name]')) === 'debian12');
  await page.selectOption('#reinstall [name=os_name]', 'alpine3');
  await page.fill('#reinstall [name=os_pass]', 'panel-pass-3');
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#reinstall button[type=submit]');
  // The task's steps and its end show on the page (the event stream).
  await page.waitForFunction(() => ['done', 'failed'].includes(document.querySelector('#task-line')?.dataset.state)
    && document.querySelector('#task-line').textContent.startsWith('Update'), null, { timeout: 60_000 })
    .catch(() => {});
  const taskLine = await text(page, '#task-line');
  check('the reinstall\'s task ends done on the page', (await page.getAttribute('#task-line', 'data-state')) === 'done', taskLine);
  const reinstalled = await page.evaluate(async ([hs]) => (await (await fetch(`/api/client/detail/${hs}/panel1`)).json()).data, [host]);
  check('reinstalled with the other image, running again', reinstalled?.config?.os_name === 'alpine3' && reinstalled?.power_status === 'running',
    JSON.stringify({ os_name: reinstalled?.config?.os_name, power: reinstalled?.power_status }));
  await keyboardCheck(page, 'VM page');

  // zh-CN and back.
  await page.selectOption('#language', 'zh-CN');
  await ready(page);
  check('zh-CN: the page is in Chinese', (await page.getAttribute('html', 'lang')) === 'zh-CN' && (await text(page, 'h1')).includes('虚拟机'), await text(page, 'h1'));
  await shot(page, 'vm-zh-CN');
  await go(page, '#/hosts');
  check('zh-CN: the navigation is in Chinese', (await text(page, 'header nav')).includes('主机'));
  await shot(page, 'hosts-zh-CN');
  await page.selectOption('#language', 'en');
  await ready(page);
  check('back to English', (await text(page, 'header nav')).includes('Hosts'));

  // Tasks and logs, filtered.
  await go(page, '#/tasks');
  check('tasks list the create', (await text(page, 'main table')).includes('create'));
  await keyboardCheck(page, 'tasks page');
  const actionNames = await page.$$eval('main tbody tr td:nth-child(2)', (cells) => cells.map((cell) => cell.textContent.split(':')[0]));
  const unlabelled = [...new Set(actionNames)].filter((name) => !(`task.${name}` in STRINGS.en));
  check('every task action of the run has a label in both languages', actionNames.length > 0 && unlabelled.length === 0, unlabelled.join(','));
  await page.selectOption('#filters [name=state]', 'done');
  await page.click('#filters button[type=submit]');
  await ready(page);
  const states = await page.$$eval('main tbody .state', (cells) => cells.map((cell) => cell.textContent));
  check('the tasks filter keeps done tasks only', states.length > 0 && states.every((state) => state === 'done'), states.join(','));
  await shot(page, 'tasks');
  await go(page, '#/logs');
  check('the logs page lists records', await page.isVisible('main table'));
  await keyboardCheck(page, 'logs page');
  await shot(page, 'logs');

  // Sign out: the session ends, the sign-in form shows.
  await page.click('#sign-out');
  await page.waitForSelector('#field-token', { timeout: 10_000 });
  const afterSignOut = await page.evaluate(async () => (await (await fetch('/api/system/session')).json()).data);
  check('signed out: no session', afterSignOut === null, JSON.stringify(afterSignOut));
  await context.close();

  // ---------------------------------------------------------------- phone, 390×844
  const phone = await open({ width: 390, height: 844 }, 'zh-CN');
  await phone.page.goto(`${base}/`, { waitUntil: 'load' });
  await ready(phone.page);
  check('a Chinese browser gets zh-CN', (await phone.page.getAttribute('html', 'lang')) === 'zh-CN');
  await phone.page.fill('#field-token', token);
  await phone.page.press('#field-token', 'Enter');
  await phone.page.waitForSelector('.cards article', { timeout: 30_000 });
  await ready(phone.page);
  check('390×844: the hosts page fits', await fits(phone.page));
  await shot(phone.page, 'phone-hosts');
  await go(phone.page, `#/vm/${host}/panel1`);
  check('390×844: the VM page fits', await fits(phone.page));
  await shot(phone.page, 'phone-vm');
  await go(phone.page, `#/host/${host}/new`);
  check('390×844: the create form fits', await fits(phone.page));
  await shot(phone.page, 'phone-create');
  for (const [screen, hash] of [['host-vms', `#/host/${host}`], ['tasks', '#/tasks'], ['logs', '#/logs']]) {
    await go(phone.page, hash);
    check(`390×844: the ${screen} page fits`, await fits(phone.page));
    await shot(phone.page, `phone-${screen}`);
  }
  await phone.context.close();

  // ---------------------------------------------------------------- a read-only token of one host
  const viewer = await open({ width: 1280, height: 800 });
  await viewer.page.goto(`${base}/`, { waitUntil: 'load' });
  await ready(viewer.page);
  await viewer.page.fill('#field-token', viewerToken);
  await viewer.page.press('#field-token', 'Enter');
  await viewer.page.waitForSelector('.cards article', { timeout: 30_000 });
  await ready(viewer.page);
  const cardHosts = await viewer.page.$$eval('.cards article', (cards) => cards.map((card) => card.dataset.host));
  check('a token scoped to one host sees that host only', JSON.stringify(cardHosts) === JSON.stringify([host]), cardHosts.join(','));
  check('a read-only session has no tasks or logs in its navigation', !(await text(viewer.page, 'header nav')).includes('Tasks'));
  await go(viewer.page, `#/host/${host}`);
  check('a read-only session gets no create button', !(await viewer.page.isVisible(`a[href="#/host/${host}/new"]`)));
  await go(viewer.page, `#/vm/${host}/panel1`);
  const controls = await viewer.page.$$eval('main button, main form', (elements) => elements.length);
  check('a read-only session\'s VM page has no buttons or forms', controls === 0, String(controls));
  await shot(viewer.page, 'read-only-vm');
  await viewer.page.click('#sign-out');
  await viewer.page.waitForSelector('#field-token', { timeout: 10_000 });
  await viewer.context.close();

  // ---------------------------------------------------------------- the customer, by templogin
  const customer = await open({ width: 1280, height: 800 });
  await customer.page.goto(templogin, { waitUntil: 'load' });
  await ready(customer.page);
  await customer.page.waitForSelector('#power', { timeout: 30_000 });
  check('templogin lands on the VM page', customer.page.url().endsWith(`/#/vm/${host}/${customerVm}`), customer.page.url());
  check('the customer page shows its VM', (await text(customer.page, 'h1')).includes(customerVm));
  check('the customer page has no operator navigation', !(await customer.page.isVisible('header nav')));
  check('the customer page has no reinstall or delete', !(await customer.page.isVisible('#reinstall')) && !(await customer.page.isVisible('button:has-text("Delete this VM")')));
  const foreign = await customer.page.evaluate(async ([hs, other]) => {
    const statuses = [];
    for (const path of [`/api/client/detail/${hs}/${other}`, `/api/client/powers/${hs}/${other}`, '/api/server/listup']) {
      const answer = await fetch(path, { method: path.includes('powers') ? 'POST' : 'GET', headers: { 'content-type': 'application/json' }, body: path.includes('powers') ? '{"action":"stop"}' : undefined });
      statuses.push(answer.status);
    }
    return statuses;
  }, [host, otherVm]);
  check('the customer session gets 403 on another VM and on hosts', foreign.every((status) => status === 403), foreign.join(','));
  // The charts: drawn from the history (two samples), and a new sample
  // (the VM's upload) arrives live.
  const charts = await customer.page.evaluate(() => {
    const canvases = [...document.querySelectorAll('.chart canvas')];
    const drawn = canvases.filter((canvas) => {
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (let index = 3; index < data.length; index += 4) if (data[index] !== 0) return true;
      return false;
    });
    return { canvases: canvases.length, drawn: drawn.length, points: document.querySelector('.charts')?.dataset.points };
  });
  check('four charts drawn from the history', charts.canvases === 4 && charts.drawn === 4 && charts.points === '2', JSON.stringify(charts));
  const uploaded = await customer.page.evaluate(async ([key, mac]) => (await fetch(`/api/client/upload?nic=${mac}`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-upload-key': key },
    body: JSON.stringify({ ac_status: 'running', cpu_total: 1, cpu_usage: 77, mem_total: 64, mem_usage: 48, hdd_total: 0, hdd_usage: 0, flu_usage: 3, network_u: 1, network_d: 4 }),
  })).status, [uploadKey, customerMac]);
  check('the VM uploads a sample', uploaded === 200, String(uploaded));
  await eventually(customer.page, 'the new sample reaches the charts live', () => document.querySelector('.charts')?.dataset.points === '3');
  // Any address shows its own VM only.
  await go(customer.page, `#/vm/${host}/${otherVm}`);
  check('another VM\'s address still shows its own VM', (await text(customer.page, 'h1')).includes(customerVm));
  await keyboardCheck(customer.page, 'customer page');
  await shot(customer.page, 'customer');
  await customer.page.setViewportSize({ width: 390, height: 844 });
  await go(customer.page, `#/vm/${host}/${customerVm}`);
  check('390×844: the customer page fits', await fits(customer.page));
  await shot(customer.page, 'phone-customer');
  await customer.context.close();
} catch (error) {
  report.failures.push(`the drive stopped: ${error.stack || error}`);
} finally {
  await browser.close();
}

// The browser logs each refused request it made on purpose: one 401 (the
// wrong token), two 400 (the wrong fields), three 403 (the customer's
// foreign calls). Anything else in the console is an error of the panel.
const expected = [401, 400, 400, 403, 403, 403];
const unexpected = report.console.filter((line) => {
  const match = /status of (\d{3})/.exec(line);
  const index = match ? expected.indexOf(Number(match[1])) : -1;
  if (index >= 0) { expected.splice(index, 1); return false; }
  return true;
});
check('no errors in the browser console', unexpected.length === 0, unexpected.join(' | '));
console.log(JSON.stringify(report));
