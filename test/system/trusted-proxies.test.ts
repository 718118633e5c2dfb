import type { IncomingMessage } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { clientIp } from '../../src/http/io.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { killSpawnedServices, spawnService } from '../support/service.js';

// TRUST_PROXY believes X-Forwarded-For only from the balancers listed in HTTP_PROXY_FROM (as the
// SSH door believes PROXY headers only from SSH_PROXY_FROM): from anyone else the header is
// ignored and the socket's address counts. TRUST_PROXY=true without the list is refused.

const apps: TestApp[] = [];
afterAll(async () => {
  killSpawnedServices();
  for (const t of apps) await t.close();
});

const request = (peer: string | undefined, forwarded?: string) =>
  ({ socket: { remoteAddress: peer }, headers: forwarded === undefined ? {} : { 'x-forwarded-for': forwarded } }) as unknown as IncomingMessage;

describe('clientIp', () => {
  it('takes the right-most X-Forwarded-For entry only from a peer in the list; anyone else is its own address', () => {
    const balancers = loadConfig({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '10.0.0.0/8,::1' }).httpProxyFrom;
    expect(balancers).toEqual(['10.0.0.0/8', '::1/128']);
    expect(clientIp(request('10.1.2.3', '198.51.100.9, 203.0.113.5'), balancers)).toBe('203.0.113.5');
    expect(clientIp(request('::ffff:10.1.2.3', '203.0.113.5'), balancers)).toBe('203.0.113.5'); // IPv4-mapped peer
    expect(clientIp(request('::1', '2001:db8::7'), balancers)).toBe('2001:db8::7');
    // Not a balancer: the header is the client's own claim.
    expect(clientIp(request('127.0.0.1', '203.0.113.5'), balancers)).toBe('127.0.0.1');
    expect(clientIp(request('192.0.2.1', '203.0.113.5'), balancers)).toBe('192.0.2.1');
    // A balancer without the header, or with no address in it: the balancer's own address.
    expect(clientIp(request('10.1.2.3'), balancers)).toBe('10.1.2.3');
    expect(clientIp(request('10.1.2.3', 'unknown'), balancers)).toBe('10.1.2.3');
    // TRUST_PROXY off: never.
    expect(loadConfig({}).httpProxyFrom).toBeNull();
    expect(clientIp(request('10.1.2.3', '203.0.113.5'), null)).toBe('10.1.2.3');
    // HTTP_PROXY_FROM alone does not turn TRUST_PROXY on.
    expect(loadConfig({ HTTP_PROXY_FROM: '10.0.0.0/8' }).httpProxyFrom).toBeNull();
  });

  it("reads an entry with a port or brackets as its address (not as garbage, which would be the balancer's own)", () => {
    const balancers = loadConfig({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '10.0.0.0/8' }).httpProxyFrom;
    expect(clientIp(request('10.1.2.3', '1.2.3.4:5678'), balancers)).toBe('1.2.3.4');
    expect(clientIp(request('10.1.2.3', '[2001:db8::1]'), balancers)).toBe('2001:db8::1');
    expect(clientIp(request('10.1.2.3', '[2001:db8::1]:443'), balancers)).toBe('2001:db8::1');
    expect(clientIp(request('10.1.2.3', '198.51.100.9:1, [2001:db8::2]:65535'), balancers)).toBe('2001:db8::2'); // still the right-most
    expect(clientIp(request('10.1.2.3', '[::ffff:192.0.2.7]:80'), balancers)).toBe('::ffff:192.0.2.7');
    // Stripped, then it must still be an address; otherwise the balancer's own, as before.
    for (const garbage of ['1.2.3.4:', '1.2.3.4:port', '1.2.3.4:123456', '[2001:db8::1', '[2001:db8::1]:', '[1.2.3.4]', '[unknown]:80', '[]', '1.2.3.999:80', 'host.example:80']) {
      expect(clientIp(request('10.1.2.3', garbage), balancers), garbage).toBe('10.1.2.3');
    }
  });
});

describe('TRUST_PROXY end to end', () => {
  /** The address a verification request was recorded from, sent from 127.0.0.1 with an X-Forwarded-For. */
  async function recordedAddress(t: TestApp, forwarded: string): Promise<string | null> {
    const email = uniqueEmail('proxied');
    const res = await t.request('/api/shell-auth', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': forwarded },
      body: JSON.stringify({ email, ssh_public_key: makeKey().publicKey }),
    });
    expect(res.status).toBe(200);
    const row = await t.app.deps.db.selectFrom('verification_requests').select('requested_ip').where('email', '=', email).executeTakeFirstOrThrow();
    return row.requested_ip;
  }

  it('X-Forwarded-For from a peer outside HTTP_PROXY_FROM is ignored; from one inside it, honoured', async () => {
    const outside = await startTestApp({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '10.0.0.0/8' });
    apps.push(outside);
    expect(await recordedAddress(outside, '203.0.113.77')).toBe('127.0.0.1');

    const inside = await startTestApp({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '10.0.0.0/8,127.0.0.1' }, { smtp: outside.smtp });
    apps.push(inside);
    expect(await recordedAddress(inside, '198.51.100.1, 203.0.113.78')).toBe('203.0.113.78');
  });

  it('TRUST_PROXY=true without HTTP_PROXY_FROM is a configuration error, in one line', async () => {
    expect(() => loadConfig({ TRUST_PROXY: 'true' })).toThrow(ConfigError);
    expect(() => loadConfig({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '10.0.0.300' })).toThrow(
      'HTTP_PROXY_FROM="10.0.0.300": "10.0.0.300" is not an IP address or CIDR (e.g. 10.0.0.0/8, ::1)',
    );
    const service = spawnService({ TRUST_PROXY: 'true' });
    expect(await service.exited).toBe(1);
    expect(service.output()).toBe(
      "shell-auth: HTTP_PROXY_FROM: required when TRUST_PROXY=true: the load balancers' addresses or CIDRs whose X-Forwarded-For is believed (e.g. 127.0.0.1,10.0.0.0/8,::1)\n",
    );
  });
});
