import fs from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// The confirm page in a real browser (Debian's Chromium, headless), at a phone's width and a
// laptop's: nothing wider than the screen, the command to check the fingerprint in one piece,
// and the Confirm button doing its job, from a link with and without a trailing slash.

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
if (!CHROMIUM) console.warn('confirm-page-browser.test.ts: SKIPPING: no Chromium (.ci/run installs Debian\'s package: apt-get install chromium)');

let t: TestApp;
let browser: Browser;
beforeAll(async () => {
  if (!CHROMIUM) return;
  t = await startTestApp();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await t?.close();
});

async function pendingLink(): Promise<{ link: string; email: string }> {
  const email = uniqueEmail('browser');
  const key = makeKey();
  expect((await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey })).status).toBe(200);
  const mail = await t.smtp.waitForMail(email);
  return { link: mail.link!, email };
}

describe.runIf(CHROMIUM)(`the confirm page in Chromium${CHROMIUM ? '' : ' [SKIPPED: chromium not installed]'}`, () => {
  for (const [device, width] of [
    ['a phone', 390],
    ['a laptop', 1000],
  ] as const) {
    it(`on ${device} (${width} px): fits the screen, keeps the command whole, and Confirm works from a trailing-slash link`, async () => {
      const { link, email } = await pendingLink();
      const page = await browser.newPage({ viewport: { width, height: 800 } });
      try {
        const url = new URL(link);
        // Some mail clients add a slash before the query; the form must still post to the route.
        await page.goto(`${t.url}/shell-auth/verify/?token=${tokenOf(link)}`);
        expect(url.pathname).toBe('/shell-auth/verify');
        expect(await page.title()).toBe('Confirm your SSH key · shell-auth');
        const layout = await page.evaluate(() => ({
          scrollWidth: document.documentElement.scrollWidth,
          // An inline element broken across lines has one box per line.
          commandBoxes: document.querySelector('code.command')?.getClientRects().length ?? 0,
        }));
        expect(layout.scrollWidth).toBeLessThanOrEqual(width);
        expect(layout.commandBoxes).toBe(1);
        expect(await page.textContent('body')).toMatch(/Requested at\s*\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} UTC/);
        await page.click('button[type=submit]');
        await page.waitForLoadState();
        expect(await page.textContent('h1')).toBe('SSH key confirmed');
        expect(await page.textContent('body')).toContain(email);
      } finally {
        await page.close();
      }
    });
  }
});
