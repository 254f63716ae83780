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
