// Debian's Chromium, headless, for every browser script of the tests. Never
// a browser of Playwright's own; this machine's network is closed, so
// everything that calls home is switched off.

import { chromium } from 'playwright-core';

export function launch() {
    return chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-quic',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
            '--no-first-run',
        ],
        timeout: 60_000,
    });
}

// Open a console URL (from vncons) in a new page of `browser`: its console
// messages go to `report.log`, every request and websocket to
// `report.requests`; waits until the page says connected, failed or
// disconnected (`data-console`), which `report.state` then holds.
export async function openConsole(browser, url, viewport, report) {
    const page = await browser.newPage({ viewport });
    page.on('console', (message) => report.log.push(`${message.type()}: ${message.text()}`));
    page.on('pageerror', (error) => report.log.push(`pageerror: ${error}`));
    page.on('request', (request) => report.requests.push(request.url()));
    page.on('websocket', (socket) => report.requests.push(socket.url()));
    await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    await page.waitForFunction(
        () => ['connected', 'failed', 'disconnected'].includes(document.documentElement.dataset.console),
        null,
        { timeout: 30_000, polling: 100 },
    );
    report.state = await page.evaluate(() => document.documentElement.dataset.console);
    return page;
}
