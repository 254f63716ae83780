// The console embedded in the web panel's VM page, for tests/tests/panel.rs:
// sign in, open the VM page, press "Open the console", wait for noVNC in the
// frame to connect and the VM's screen to show more than one colour. Prints
// one JSON line: {state, distinct, width, height, failures, console}.
// Environment: PANEL_BASE, PANEL_TOKEN, PANEL_HOST, PANEL_VM, PANEL_SHOT.

import { launch, waitForScreen } from './chromium.mjs';

const { PANEL_BASE: base, PANEL_TOKEN: token, PANEL_HOST: host, PANEL_VM: vm, PANEL_SHOT: shot } = process.env;
const report = { state: 'unknown', distinct: 0, width: 0, height: 0, failures: [], console: [] };
const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('console', (message) => { if (message.type() === 'error') report.console.push(message.text()); });
  page.on('pageerror', (error) => report.console.push(`pageerror: ${error}`));
  await page.goto(`${base}/`, { waitUntil: 'load' });
  await page.fill('#field-token', token);
  await page.press('#field-token', 'Enter');
  await page.waitForSelector('.cards article', { timeout: 30_000 });
  await page.evaluate((target) => { location.hash = target; }, `#/vm/${host}/${vm}`);
  await page.waitForSelector('#open-console', { timeout: 30_000 });
  await page.click('#open-console');
  const frame = await (await page.waitForSelector('iframe.console', { timeout: 30_000 })).contentFrame();
  await frame.waitForFunction(() => ['connected', 'failed', 'disconnected'].includes(document.documentElement.dataset.console),
    null, { timeout: 60_000, polling: 200 });
  report.state = await frame.evaluate(() => document.documentElement.dataset.console);
  if (report.state === 'connected') Object.assign(report, await waitForScreen(frame, 60_000));
  await page.screenshot({ path: shot, fullPage: true });
} catch (error) {
  report.failures.push(`the drive stopped: ${error.stack || error}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
