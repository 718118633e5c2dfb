import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { inboxKeyOf } from '../../src/core/emails.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { makeKey } from '../support/keys.js';

// Issue 16, item 7: the 10-mails-per-inbox-an-hour limit saw `+tags` and case, but not the dots
// Gmail ignores: 12 dot variants of one address from 12 addresses were all mailed. Real HTTP, a
// real SMTP server. The test app has no per-address mail limit (MAIL_PER_IP_HOURLY=0), so one
// address stands for many: only the per-inbox limit is in play.

/** A local part long enough for a dot after each of its first 11 characters. */
function uniqueLocal(prefix: string): string {
  return `${prefix}${Date.now().toString(36)}${process.pid}${Math.floor(Math.random() * 1e6)}`;
}

/** `abc` -> `abc`, `a.bc`, `ab.c`, ...: the same Gmail inbox, as Gmail reads it. */
function dotVariants(local: string, domain: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${i === 0 ? local : `${local.slice(0, i)}.${local.slice(i)}`}@${domain}`);
}

/** The inbox a captured mail went to, dots ignored: how the mail provider delivers it. */
function deliveredTo(t: TestApp, local: string): number {
  return t.smtp.messages.filter((m) => {
    const address = /[^\s<>"]+@[^\s<>"]+/.exec(m.to)?.[0]?.toLowerCase() ?? '';
    return address.split('@')[0]!.replaceAll('.', '').split('+')[0] === local.toLowerCase();
  }).length;
}

async function ask(t: TestApp, email: string, publicKey: string) {
  return t.post('/api/shell-auth', { email, ssh_public_key: publicKey });
}

describe('the per-inbox mail limit at providers that ignore dots (default MAIL_DOTLESS_DOMAINS)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('12 dot variants of one Gmail address: 10 mailed, the rest 429; each stored and mailed as typed', async () => {
    const local = uniqueLocal('bomb');
    const variants = dotVariants(local, 'gmail.com', 12);
    const key = makeKey();
    const statuses: number[] = [];
    for (const email of variants) {
      const res = await ask(t, email, key.publicKey);
      statuses.push(res.status);
      if (res.status === 429) expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(3500);
    }
    expect(statuses).toEqual([...Array(10).fill(200), 429, 429]);
    await t.mailSettled();
    expect(deliveredTo(t, local)).toBe(10);

    // The limit's key is not the address: requests and mails keep the email as typed.
    const rows = await t.app.deps.db.selectFrom('verification_requests').select(['email', 'mailbox']).where('email', 'in', variants).execute();
    expect(rows.map((r) => r.email).sort()).toEqual(variants.slice(0, 10).sort());
    expect(new Set(rows.map((r) => r.mailbox))).toEqual(new Set([`${local}@gmail.com`]));
    for (const email of variants.slice(0, 10)) expect(t.smtp.mailsTo(email), email).toHaveLength(1);
  });

  it('googlemail.com is the same inbox as gmail.com, and +tags and case still count against it', async () => {
    const local = uniqueLocal('mix');
    // An alias (+tag) needs its base account verified: that is one mail to the inbox already.
    await t.verifyByEmail(`${local}@gmail.com`, makeKey().publicKey);
    const key = makeKey();
    const emails = [
      `${local.toUpperCase()}+x@GMAIL.com`,
      ...dotVariants(local, 'gmail.com', 5).slice(1), // l.ocal@, lo.cal@, loc.al@, loca.l@
      `${local}@googlemail.com`,
      ...dotVariants(local, 'googlemail.com', 8).slice(5), // dots after the 5th, 6th, 7th character
    ];
    expect(emails).toHaveLength(9);
    for (const email of emails) expect((await ask(t, email, key.publicKey)).status, email).toBe(200);
    const eleventh = await ask(t, `${local.slice(0, 8)}.${local.slice(8)}@googlemail.com`, key.publicKey);
    expect(eleventh.status).toBe(429);
    expect(eleventh.body).toEqual({ success: false, error: 'Too many requests' });
  });

  it('other domains keep their dots: 11 dot variants at example.com are 11 inboxes', async () => {
    const local = uniqueLocal('dots');
    const key = makeKey();
    for (const email of dotVariants(local, 'example.com', 11)) {
      expect((await ask(t, email, key.publicKey)).status, email).toBe(200);
    }
  });
});

describe('MAIL_DOTLESS_DOMAINS', () => {
  it('is read from the environment: a list of domains, lower-cased; "none" is empty; anything else is refused', () => {
    expect(loadConfig({}).mailDotlessDomains).toEqual(['gmail.com', 'googlemail.com']);
    expect(loadConfig({ MAIL_DOTLESS_DOMAINS: ' Example.ORG, gmail.com ' }).mailDotlessDomains).toEqual(['example.org', 'gmail.com']);
    expect(loadConfig({ MAIL_DOTLESS_DOMAINS: 'none' }).mailDotlessDomains).toEqual([]);
    expect(() => loadConfig({ MAIL_DOTLESS_DOMAINS: 'gmail.com,not a domain' })).toThrow(
      'MAIL_DOTLESS_DOMAINS="gmail.com,not a domain": "not a domain" is not a domain name (e.g. gmail.com,googlemail.com, or none)',
    );
  });

  it('inboxKeyOf: +tags off, and dots off (googlemail folded into gmail) only at the listed domains', () => {
    expect(inboxKeyOf('a.l.i.c.e+news@gmail.com')).toBe('alice@gmail.com');
    expect(inboxKeyOf('al.ice@googlemail.com')).toBe('alice@gmail.com');
    expect(inboxKeyOf('a.lice+x@example.com')).toBe('a.lice@example.com');
    expect(inboxKeyOf('a.lice@example.com', ['example.com'])).toBe('alice@example.com');
    expect(inboxKeyOf('a.lice@gmail.com', [])).toBe('a.lice@gmail.com');
  });

  describe('set to another domain, through the service', () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await startTestApp({ MAIL_DOTLESS_DOMAINS: 'example.org' });
    });
    afterAll(async () => {
      await t?.close();
    });

    it('dot variants at the listed domain share one inbox; gmail.com, no longer listed, keeps its dots', async () => {
      const key = makeKey();
      const local = uniqueLocal('org');
      const statuses: number[] = [];
      for (const email of dotVariants(local, 'example.org', 11)) statuses.push((await ask(t, email, key.publicKey)).status);
      expect(statuses).toEqual([...Array(10).fill(200), 429]);
      const gmail = uniqueLocal('g');
      for (const email of dotVariants(gmail, 'gmail.com', 11)) {
        expect((await ask(t, email, key.publicKey)).status, email).toBe(200);
      }
    });
  });
});
