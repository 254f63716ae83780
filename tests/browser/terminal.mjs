// Opens a container's console URL (from vncons) in Debian's headless
// Chromium: waits for xterm.js to connect, types a command, waits for its
// answer on the screen, saves a screenshot, and prints one JSON line for
// tests/tests/oci.rs:
//   {state, protocol, screen, requests, log}
// Usage: node terminal.mjs <console-url> <command> <expected> <screenshot.png>
// Exit code 0 when it could report, 1 when the browser could not be driven.

import { launch, openConsole } from './chromium.mjs';

const [url, command, expected, screenshot] = process.argv.slice(2);
if (!url || !command || !expected || !screenshot) {
    console.error('usage: node terminal.mjs <console-url> <command> <expected> <screenshot.png>');
    process.exit(2);
}

const browser = await launch();

const report = { state: 'unknown', protocol: '', screen: '', requests: [], log: [] };
try {
    const page = await openConsole(browser, url, { width: 1024, height: 640 }, report);
    report.protocol = await page.evaluate(() => document.documentElement.dataset.protocol || '');
    if (report.state === 'connected') {
        // Keystrokes as a user types them, into the focused terminal.
        await page.keyboard.type(command, { delay: 20 });
        await page.keyboard.press('Enter');
        const screen = () => page.evaluate(
            () => document.querySelector('.xterm-rows')?.textContent || '',
        );
        const deadline = Date.now() + 20_000;
        report.screen = await screen();
        while (!report.screen.includes(expected) && Date.now() < deadline) {
            await page.waitForTimeout(200);
            report.screen = await screen();
        }
    }
    await page.screenshot({ path: screenshot });
} catch (error) {
    report.error = String(error);
} finally {
    await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.error ? 1 : 0);
