// Opens a console URL (from vncons) in Debian's headless Chromium, waits for
// noVNC to connect and the VM's screen to show something, saves a
// screenshot, and prints one JSON line for tests/tests/console.rs:
//   {state, width, height, distinct, url_after_load, requests, log}
// Usage: node drive.mjs <console-url> <screenshot.png>
// Exit code 0 when it could report, 1 when the browser could not be driven.

import { launch, openConsole, waitForScreen } from './chromium.mjs';

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
    console.error('usage: node drive.mjs <console-url> <screenshot.png>');
    process.exit(2);
}

const browser = await launch();

const report = { state: 'unknown', width: 0, height: 0, distinct: 0, requests: [], log: [] };
try {
    const page = await openConsole(browser, url, { width: 1024, height: 768 }, report);
    report.status = await page.evaluate(() => document.getElementById('status').textContent);
    report.url_after_load = page.url();

    if (report.state === 'connected') {
        await page.waitForTimeout(2_000);
        Object.assign(report, await waitForScreen(page, 30_000));
    }
    await page.screenshot({ path: screenshot });
} catch (error) {
    report.error = String(error);
} finally {
    await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.error ? 1 : 0);
