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

// Wait until the console's canvas (noVNC draws the VM's screen there) shows
// more than one colour, or `ms` pass: the firmware draws within seconds.
// `target` is the console's page or frame. Returns {width, height, distinct}
// (colours counted up to 64; 0 × 0 before the canvas exists).
export async function waitForScreen(target, ms) {
    const count = () => target.evaluate(() => {
        const canvas = document.querySelector('#screen canvas');
        if (!canvas || canvas.width === 0 || canvas.height === 0) {
            return { width: 0, height: 0, distinct: 0 };
        }
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const colours = new Set();
        for (let index = 0; index < data.length && colours.size <= 64; index += 4) {
            colours.add((data[index] << 16) | (data[index + 1] << 8) | data[index + 2]);
        }
        return { width: canvas.width, height: canvas.height, distinct: colours.size };
    });
    const deadline = Date.now() + ms;
    let counted = await count();
    while (counted.distinct <= 1 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        counted = await count();
    }
    return counted;
}
