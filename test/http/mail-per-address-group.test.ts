import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type HttpResult, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// Issue 16: "IPv6 addresses grouped by /64 for every per-address limit". MAIL_PER_IP_HOURLY
// counted `requested_ip = ip`, so a host with a /64 (routine) had unlimited verification mails.
// It counts the address group now (requested_net), while the request keeps the address itself
// for the confirm page and the email. Real HTTP; addresses vary through X-Forwarded-For from a
// trusted proxy (127.0.0.1).

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '127.0.0.1', MAIL_PER_IP_HOURLY: '30' });
});
afterAll(async () => {
  await t?.close();
});

const key = makeKey();

function askFrom(ip: string, email = uniqueEmail('net')): Promise<HttpResult> {
  return t.request('/api/shell-auth', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
    body: JSON.stringify({ email, ssh_public_key: key.publicKey }),
  });
}

describe('MAIL_PER_IP_HOURLY counts an IPv6 address as its /64', () => {
  it('31 requests from 31 addresses of one /64 with MAIL_PER_IP_HOURLY=30: the 31st is 429; another /64 is not limited', async () => {
    const statuses: number[] = [];
    const addresses = Array.from({ length: 31 }, (_, i) => `2001:db8:7:1:${(0x100 + 37 * i).toString(16)}:${i}:beef:${i + 1}`);
    let last: HttpResult | undefined;
    for (const ip of addresses) {
      last = await askFrom(ip);
      statuses.push(last.status);
    }
    expect(statuses).toEqual([...Array(30).fill(200), 429]);
    expect(Number(last!.headers.get('retry-after'))).toBeGreaterThan(3500);

    const email = uniqueEmail('neighbour');
    expect((await askFrom('2001:db8:7:2::1', email)).status).toBe(200);

    // The request keeps the address it came from (the confirm page shows it); the group is what is counted.
    const row = await t.app.deps.db.selectFrom('verification_requests').select(['requested_ip', 'requested_net']).where('email', '=', email).executeTakeFirstOrThrow();
    expect(row).toEqual({ requested_ip: '2001:db8:7:2::1', requested_net: '2001:db8:7:2::/64' });
  });

  it('IPv4 addresses count one by one, as before', async () => {
    for (let i = 1; i <= 31; i++) expect((await askFrom(`198.51.100.${i}`)).status).toBe(200);
    const row = await t.app.deps.db.selectFrom('verification_requests').select(['requested_ip', 'requested_net']).where('requested_ip', '=', '198.51.100.31').executeTakeFirstOrThrow();
    expect(row).toEqual({ requested_ip: '198.51.100.31', requested_net: '198.51.100.31' });
  });
});
