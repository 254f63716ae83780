// Opens a console URL (from vncons) in Debian's headless Chromium, waits for
// noVNC to connect and the VM's screen to show something, saves a
// screenshot, and prints one JSON line for tests/tests/console.rs:
//   {state, width, height, distinct, url_after_load, requests, log}
// Usage: node drive.mjs <console-url> <screenshot.png>
// Exit code 0 when it could report, 1 when the browser could not be driven.

import { launch, openConsole } from './chromium.mjs';

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
        // The firmware draws within a few seconds; count the canvas's
        // distinct colours until there is more than one (or give up).
        const countColours = () => page.evaluate(() => {
            const canvas = document.querySelector('#screen canvas');
            if (!canvas || canvas.width === 0 || canvas.height === 0) {
                return { width: 0, height: 0, distinct: 0 };
            }
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            const colours = new Set();
            for (let index = 0; index < data.length; index += 4) {
                colours.add((data[index] << 16) | (data[index + 1] << 8) | data[index + 2]);
                if (colours.size > 64) {
                    break;
                }
            }
            return { width: canvas.width, height: canvas.height, distinct: colours.size };
        });
        await page.waitForTimeout(2_000);
        const deadline = Date.now() + 30_000;
        let counted = await countColours();
        while (counted.distinct <= 1 && Date.now() < deadline) {
            await page.waitForTimeout(500);
            counted = await countColours();
        }
        Object.assign(report, counted);
    }
    await page.screenshot({ path: screenshot });
} catch (error) {
    report.error = String(error);
} finally {
    await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.error ? 1 : 0);
