import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, type SshLimits } from '../../src/config/config.js';
import { loadOrCreateHostKey } from '../../src/ssh/host-key.js';
import {
  addressMatcher,
  adoptProxySource,
  MAX_V1_BYTES,
  parseAddressRange,
  parseProxyHeader,
  readProxyHeader,
  type ProxyParse,
} from '../../src/ssh/proxy-protocol.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { withSshServer } from '../support/ssh-server.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { openssh, privateKeyOf, ssh2Exec, type RunResult } from '../support/ssh.js';
import { findHaproxy, freePort, waitForListener } from '../support/haproxy.js';

// PROXY protocol on the SSH port: the header's client address is the address, everywhere.

// ---------------------------------------------------------------------------------------------
// Headers, made by hand from the spec (HAProxy's proxy-protocol.txt).

const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

function v2(block: Buffer, options: { versionCommand?: number; familyProtocol?: number } = {}): Buffer {
  const fixed = Buffer.alloc(16);
  SIGNATURE.copy(fixed);
  fixed[12] = options.versionCommand ?? 0x21;
  fixed[13] = options.familyProtocol ?? 0x11;
  fixed.writeUInt16BE(block.length, 14);
  return Buffer.concat([fixed, block]);
}

function ports(source: number, destination: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(source, 0);
  b.writeUInt16BE(destination, 2);
  return b;
}

const ipv4 = (text: string) => Buffer.from(text.split('.').map(Number));

/** An AF_INET block: addresses, ports, then TLVs. */
const inet4 = (src: string, sport: number, tlvs: Buffer = Buffer.alloc(0)) =>
  Buffer.concat([ipv4(src), ipv4('10.0.0.1'), ports(sport, 2222), tlvs]);

/** An AF_INET6 block; addresses as 32 hex digits. */
const inet6 = (srcHex: string, sport: number, tlvs: Buffer = Buffer.alloc(0)) =>
  Buffer.concat([Buffer.from(srcHex, 'hex'), Buffer.from('20010db8000000000000000000000001', 'hex'), ports(sport, 22), tlvs]);

function tlv(type: number, value: Buffer): Buffer {
  const head = Buffer.from([type, 0, 0]);
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

const v1 = (src: string, sport: number) => Buffer.from(`PROXY TCP4 ${src} 127.0.0.1 ${sport} 2222\r\n`, 'latin1');

const parse = (data: string | Buffer): ProxyParse => parseProxyHeader(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);

function header(data: string | Buffer) {
  const parsed = parse(data);
  if (parsed.kind !== 'header') throw new Error(`expected a header, got ${JSON.stringify(parsed)}`);
  return parsed.header;
}

const reason = (data: string | Buffer) => {
  const parsed = parse(data);
  return parsed.kind === 'invalid' ? parsed.reason : `(${parsed.kind})`;
};

// ---------------------------------------------------------------------------------------------

describe('parsing PROXY protocol v1', () => {
  it('TCP4: the source address and port; the length stops at the CRLF', () => {
    const line = 'PROXY TCP4 203.0.113.7 10.0.0.1 51234 2222\r\n';
    expect(header(`${line}SSH-2.0-OpenSSH_9.2\r\n`)).toEqual({
      version: 1,
      source: { address: '203.0.113.7', port: 51234, family: 'IPv4' },
      length: line.length,
    });
    expect(header('PROXY TCP4 255.255.255.255 255.255.255.255 65535 0\r\n').source).toEqual({ address: '255.255.255.255', port: 65535, family: 'IPv4' });
  });

  it('TCP6: any spelling of an address comes out in one canonical form', () => {
    const expected = { address: '2001:db8::7', port: 40000, family: 'IPv6' };
    for (const src of ['2001:db8::7', '2001:DB8:0:0:0:0:0:7', '2001:0db8:0000::0007']) {
      expect(header(`PROXY TCP6 ${src} 2001:db8::1 40000 22\r\n`).source).toEqual(expected);
    }
    expect(header('PROXY TCP6 ::ffff:198.51.100.2 ::1 1 22\r\n').source).toEqual({ address: '::ffff:198.51.100.2', port: 1, family: 'IPv6' });
    expect(header('PROXY TCP6 1:0:0:2:0:0:0:3 ::1 1 22\r\n').source?.address).toBe('1:0:0:2::3'); // the longest zero run
    expect(header('PROXY TCP6 1:2:3:4:5:6:0:8 ::1 1 22\r\n').source?.address).toBe('1:2:3:4:5:6:0:8'); // one zero group stays
    const longest = `PROXY TCP6 ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
    expect(header(longest).length).toBe(104);
  });

  it('UNKNOWN: no address (use the socket\'s), whatever follows it on the line', () => {
    expect(header('PROXY UNKNOWN\r\n')).toEqual({ version: 1, source: null, length: 15 });
    const worst = `PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
    expect(worst.length).toBe(MAX_V1_BYTES);
    expect(header(worst)).toEqual({ version: 1, source: null, length: 107 });
  });

  it('waits for more on every strict prefix of a valid line', () => {
    const line = 'PROXY TCP6 2001:db8::7 2001:db8::1 40000 22\r\n';
    for (let n = 0; n < line.length; n++) expect(parse(line.slice(0, n)).kind, line.slice(0, n)).toBe('incomplete');
    expect(parse(line).kind).toBe('header');
  });

  it.each([
    ['PROXY TCP4 256.1.1.1 10.0.0.1 1 2\r\n', 'malformed IPv4 address'],
    ['PROXY TCP4 010.0.0.1 10.0.0.1 1 2\r\n', 'malformed IPv4 address'], // leading zero: octal confusion
    ['PROXY TCP4 1.2.3 10.0.0.1 1 2\r\n', 'malformed IPv4 address'],
    ['PROXY TCP4 1.2.3.4 10.0.0.x 1 2\r\n', 'malformed IPv4 address'],
    ['PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n', 'malformed IPv4 address'], // family mismatch
    ['PROXY TCP6 203.0.113.7 ::1 1 2\r\n', 'malformed IPv6 address'],
    ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', 'malformed IPv6 address'],
    ['PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n', 'malformed IPv6 address'],
    ['PROXY TCP6 1::2::3 ::1 1 2\r\n', 'malformed IPv6 address'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 65536 2\r\n', 'malformed port'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 080 2\r\n', 'malformed port'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 -1 2\r\n', 'malformed port'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 1 99999\r\n', 'malformed port'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 +1 2\r\n', 'malformed port'],
    ['PROXY TCP4 1.2.3.4  10.0.0.1 1 2\r\n', 'expected "PROXY TCP4|TCP6 SRC DST SPORT DPORT"'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 1\r\n', 'expected "PROXY TCP4|TCP6 SRC DST SPORT DPORT"'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 1 2 3\r\n', 'expected "PROXY TCP4|TCP6 SRC DST SPORT DPORT"'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 1 2 \r\n', 'expected "PROXY TCP4|TCP6 SRC DST SPORT DPORT"'],
    ['PROXY TCP5 1.2.3.4 10.0.0.1 1 2\r\n', 'protocol must be TCP4, TCP6 or UNKNOWN'],
    ['PROXY tcp4 1.2.3.4 10.0.0.1 1 2\r\n', 'protocol must be TCP4, TCP6 or UNKNOWN'],
    ['PROXY UNKNOWNX\r\n', 'protocol must be TCP4, TCP6 or UNKNOWN'],
    ['PROXY \r\n', 'protocol must be TCP4, TCP6 or UNKNOWN'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 1 2\n', 'line ends with a bare LF'],
    ['PROXY TCP4 1.2.3.4\r10.0.0.1 1 2\r\n', 'control character'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 1 2\r\r\n', 'control character'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1\t1 2\r\n', 'control character'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 1 2\0\r\n', 'control character'],
    ['PROXY TCP4 1.2.3.4 10.0.0.1 1 \u00e92\r\n', 'control character'],
    ['proxy TCP4 1.2.3.4 10.0.0.1 1 2\r\n', 'not a PROXY protocol header'],
    ['PROXYTCP4 1.2.3.4 10.0.0.1 1 2\r\n', 'not a PROXY protocol header'],
  ])('refuses %j (%s)', (line, why) => {
    expect(reason(line)).toContain(why);
  });

  it('refuses a line with no CRLF within 107 bytes, and says so as soon as it has 107', () => {
    const long = `PROXY UNKNOWN ${'x'.repeat(200)}`;
    expect(parse(long.slice(0, 106)).kind).toBe('incomplete');
    expect(reason(long.slice(0, 107))).toContain('no CRLF within 107 bytes');
    expect(reason(`${long.slice(0, 106)}\r\n`)).toContain('no CRLF within 107 bytes'); // 108 with the CRLF
  });
});

describe('parsing PROXY protocol v2', () => {
  it('IPv4 over TCP: the source address and port; the length covers the address block', () => {
    const bytes = v2(inet4('203.0.113.7', 51234));
    expect(header(Buffer.concat([bytes, Buffer.from('SSH-2.0-x\r\n')]))).toEqual({
      version: 2,
      source: { address: '203.0.113.7', port: 51234, family: 'IPv4' },
      length: 28,
    });
  });

  it('IPv6 over TCP, canonical text; IPv4-mapped as Node writes it', () => {
    expect(header(v2(inet6('20010db8000000000000000000000007', 40000), { familyProtocol: 0x21 }))).toEqual({
      version: 2,
      source: { address: '2001:db8::7', port: 40000, family: 'IPv6' },
      length: 52,
    });
    expect(header(v2(inet6('00000000000000000000ffffc6336402', 1), { familyProtocol: 0x21 })).source?.address).toBe('::ffff:198.51.100.2');
    expect(header(v2(inet6('00000000000000000000000000000000', 1), { familyProtocol: 0x21 })).source?.address).toBe('::');
  });

  it('LOCAL (a health check): no address, and its block is skipped whatever it holds', () => {
    expect(header(v2(Buffer.alloc(0), { versionCommand: 0x20, familyProtocol: 0x00 }))).toEqual({ version: 2, source: null, length: 16 });
    expect(header(v2(inet4('203.0.113.7', 1), { versionCommand: 0x20 }))).toEqual({ version: 2, source: null, length: 28 });
    expect(header(v2(Buffer.from('junk'), { versionCommand: 0x20, familyProtocol: 0x11 }))).toEqual({ version: 2, source: null, length: 20 });
  });

  it('PROXY with AF_UNSPEC or AF_UNIX: the socket\'s address (the spec\'s UNSPEC fallback)', () => {
    expect(header(v2(Buffer.alloc(0), { familyProtocol: 0x00 })).source).toBeNull();
    expect(header(v2(Buffer.alloc(216), { familyProtocol: 0x31 })).source).toBeNull();
  });

  it('skips TLVs, which must tile the rest of the block exactly', () => {
    const tlvs = Buffer.concat([tlv(0x04, Buffer.alloc(0)), tlv(0x05, randomBytes(128)), tlv(0x20, Buffer.from([1, 0, 0, 0, 0]))]);
    expect(header(v2(inet4('198.51.100.9', 2, tlvs)))).toEqual({
      version: 2,
      source: { address: '198.51.100.9', port: 2, family: 'IPv4' },
      length: 28 + tlvs.length,
    });
    expect(header(v2(inet6('20010db8000000000000000000000007', 3, tlvs), { familyProtocol: 0x21 })).length).toBe(52 + tlvs.length);
    expect(reason(v2(inet4('198.51.100.9', 2, Buffer.from([0x05, 0x00]))))).toContain('truncated TLV');
    expect(reason(v2(inet4('198.51.100.9', 2, Buffer.from([0x05, 0x00, 0x09, 1, 2]))))).toContain('TLV longer than the header');
  });

  it('waits for more on every strict prefix of a valid header', () => {
    const bytes = v2(inet6('20010db8000000000000000000000007', 40000, tlv(0x05, Buffer.from('id'))), { familyProtocol: 0x21 });
    for (let n = 0; n < bytes.length; n++) expect(parse(bytes.subarray(0, n)).kind, `${n} bytes`).toBe('incomplete');
    expect(parse(bytes).kind).toBe('header');
  });

  it('refuses malformed headers', () => {
    const good = v2(inet4('203.0.113.7', 51234));
    const flipped = Buffer.from(good);
    flipped[7] = 0x52; // 'R' for 'Q' in QUIT
    expect(reason(flipped)).toContain('bad signature');
    expect(reason(Buffer.concat([SIGNATURE.subarray(0, 5), Buffer.from('x')]))).toContain('bad signature');
    expect(reason(v2(inet4('203.0.113.7', 1), { versionCommand: 0x11 }))).toContain('version must be 2');
    expect(reason(v2(inet4('203.0.113.7', 1), { versionCommand: 0x31 }))).toContain('version must be 2');
    expect(reason(v2(inet4('203.0.113.7', 1), { versionCommand: 0x22 }))).toContain('command must be LOCAL or PROXY');
    for (const familyProtocol of [0x01, 0x10, 0x13, 0x23, 0x30, 0x41, 0xff]) {
      expect(reason(v2(inet4('203.0.113.7', 1), { familyProtocol })), familyProtocol.toString(16)).toContain('unknown address family or protocol');
    }
    expect(reason(v2(inet4('203.0.113.7', 1), { familyProtocol: 0x12 }))).toContain('datagram');
    expect(reason(v2(inet6('20010db8000000000000000000000007', 1), { familyProtocol: 0x22 }))).toContain('datagram');
    // Truncated: an address block shorter than its family needs.
    expect(reason(v2(inet4('203.0.113.7', 1).subarray(0, 10)))).toContain('address block too short');
    expect(reason(v2(inet4('203.0.113.7', 1), { familyProtocol: 0x21 }))).toContain('address block too short');
    // Oversize: refused from the fixed 16 bytes alone, before any of the block arrives.
    const oversize = v2(Buffer.alloc(0));
    oversize.writeUInt16BE(5000, 14);
    expect(reason(oversize)).toContain('header longer than');
    oversize.writeUInt16BE(0xffff, 14);
    expect(reason(oversize)).toContain('header longer than');
  });

  it('garbage and other protocols are refused, and no input throws', () => {
    for (const text of ['SSH-2.0-OpenSSH_9.2\r\n', 'GET / HTTP/1.1\r\n', '\x16\x03\x01\x02\x00', ' PROXY TCP4', '\r\n\r\nQUIT']) {
      expect(parse(text).kind, JSON.stringify(text)).toBe('invalid');
    }
    for (let i = 0; i < 2000; i++) {
      const noise = randomBytes(1 + (i % 300));
      if (i % 3 === 0) SIGNATURE.copy(noise, 0, 0, Math.min(12, noise.length)); // v2 signature, random rest
      if (i % 3 === 1) noise.write('PROXY ', 'latin1'); // v1 prefix, random rest
      expect(['incomplete', 'invalid', 'header']).toContain(parse(noise).kind);
    }
  });
});

describe('SSH_PROXY_PROTOCOL and SSH_PROXY_FROM', () => {
  it('off by default', () => {
    expect(loadConfig({}).ssh.proxyProtocol).toBeNull();
  });

  it('on: the balancers as normalised ranges, and a 5 s header timeout', () => {
    expect(loadConfig({ SSH_PROXY_PROTOCOL: 'true', SSH_PROXY_FROM: '127.0.0.1, 10.0.0.0/8,::1,2001:DB8:0::/32' }).ssh.proxyProtocol).toEqual({
      from: ['127.0.0.1/32', '10.0.0.0/8', '::1/128', '2001:db8::/32'],
      headerTimeoutMs: 5000,
    });
  });

  it('refuses, in one line: on without SSH_PROXY_FROM, a bad entry, an empty list, a bad flag', () => {
    const error = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('no error');
    };
    expect(error({ SSH_PROXY_PROTOCOL: 'true' })).toBe(
      "SSH_PROXY_FROM: required when SSH_PROXY_PROTOCOL=true: the load balancers' addresses or CIDRs (e.g. 127.0.0.1,10.0.0.0/8,::1)",
    );
    for (const bad of ['10.0.0.0/33', '::1/129', 'example.com', '10.0.0', '10.0.0.0/08', 'fe80::1%eth0', '1.2.3.4/', '/8']) {
      expect(error({ SSH_PROXY_PROTOCOL: 'true', SSH_PROXY_FROM: `127.0.0.1,${bad}` })).toBe(
        `SSH_PROXY_FROM="127.0.0.1,${bad}": "${bad}" is not an IP address or CIDR (e.g. 10.0.0.0/8, ::1)`,
      );
    }
    expect(error({ SSH_PROXY_PROTOCOL: 'true', SSH_PROXY_FROM: ' , ' })).toContain('SSH_PROXY_FROM=" , ": lists no address');
    expect(error({ SSH_PROXY_PROTOCOL: 'yes', SSH_PROXY_FROM: '127.0.0.1' })).toContain('SSH_PROXY_PROTOCOL="yes": ');
  });

  it('matches IPv4, IPv6 and IPv4-mapped peers against the ranges', () => {
    const matches = addressMatcher(['127.0.0.1/32', '10.0.0.0/8', '::1/128', '2001:db8::/32'].map((r) => parseAddressRange(r)!));
    for (const yes of ['127.0.0.1', '10.200.3.4', '::ffff:10.1.2.3', '::ffff:127.0.0.1', '::1', '2001:db8:ffff::1']) expect(matches(yes), yes).toBe(true);
    for (const no of ['127.0.0.2', '11.0.0.1', '::2', '2001:db9::1', 'fe80::1', '', undefined]) expect(matches(no), String(no)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// The SSH door with the PROXY protocol on.

let t: TestApp;
let haproxy: ChildProcess | null = null;
const stopHaproxy = () => {
  if (!haproxy?.pid) return;
  try {
    process.kill(-haproxy.pid, 'SIGKILL'); // its whole process group
  } catch {
    // already gone
  }
  haproxy = null;
};
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  stopHaproxy();
  await t?.close();
});

const PROXIED = { from: ['127.0.0.1/32'], headerTimeoutMs: 5_000 };

const withServer = (limits: Partial<SshLimits>, body: (port: number) => Promise<void>) => withSshServer(t.app.deps, limits, body);

/** A TCP connection to the door that has already written `header` (as a balancer would). */
function connectWithHeader(port: number, header: Buffer | string, localAddress = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      socket.write(header);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** What the door does with a connection: sends its SSH banner (let in) or closes it, and how soon. */
async function probe(port: number, header: Buffer | string | null, localAddress = '127.0.0.1') {
  const started = Date.now();
  const socket = await new Promise<net.Socket>((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(s));
  });
  socket.on('error', () => undefined);
  if (header !== null) socket.write(header);
  const outcome = await new Promise<'banner' | 'closed'>((resolve) => {
    socket.once('data', (d: Buffer) => resolve(d.toString('latin1').startsWith('SSH-2.0-') ? 'banner' : 'closed'));
    socket.once('close', () => resolve('closed'));
  });
  return { outcome, ms: Date.now() - started, socket };
}

/** One command over ssh2, on a connection that starts with `header`; rejects if the door hangs up first. */
async function sshWithHeader(port: number, header: Buffer | string, key: TestKey, command: string): Promise<RunResult> {
  const sock = await connectWithHeader(port, header);
  // ssh2's client reports a socket closed before the handshake by 'close' alone, which ssh2Exec does not watch.
  const hungUp = new Promise<never>((_, reject) => sock.once('close', () => reject(new Error('the door closed the connection'))));
  return Promise.race([ssh2Exec(port, { sock, privateKey: privateKeyOf(key.privateKeyPath) }, command), hungUp]);
}

/** The audit rows the user's SSH connections wrote: their actions, and the addresses they name. */
async function sshAuditOf(email: string): Promise<{ actions: string[]; ips: Array<string | null> }> {
  const user = await t.app.deps.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirstOrThrow();
  const rows = await t.app.deps.db
    .selectFrom('audit_events')
    .select(['action', 'ip'])
    .where('actor_user_id', '=', user.id)
    .where('channel', '=', 'ssh') // the confirmation itself is an HTTP request, from 127.0.0.1
    .execute();
  return { actions: rows.map((r) => r.action), ips: [...new Set(rows.map((r) => r.ip))] };
}

/**
 * `login EMAIL` run by `run` (a fresh key, so an email goes out): checks the email and the confirm
 * page name `ip` as where the request came from, confirms, and returns the command's result.
 */
async function loginRecording(email: string, ip: string, run: () => Promise<RunResult>): Promise<RunResult> {
  const login = run();
  const mail = await t.smtp.waitForMail(email);
  expect(mail.text).toMatch(new RegExp(`Requested from:?\\s+${ip.replace(/[.]/g, '\\.')} \\(SSH\\)`));
  const token = tokenOf(mail.link!);
  const page = await t.request(`/shell-auth/verify?token=${token}`);
  expect(page.text).toContain(`${ip} (SSH)`);
  const request = await t.app.deps.db.selectFrom('verification_requests').select('requested_ip').where('email', '=', email).executeTakeFirstOrThrow();
  expect(request.requested_ip).toBe(ip);
  expect((await t.request('/shell-auth/verify', confirmForm(token))).status).toBe(200);
  return login;
}

describe('the SSH door behind a PROXY protocol balancer', () => {
  it("ssh2 takes info.ip/port/family from the socket's properties, which adoptProxySource sets from the header", async () => {
    // Pins the ssh2 behaviour the door relies on (lib/server.js reads socket.remoteAddress/Port/Family).
    const hostKey = loadOrCreateHostKey(fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-proxy-')));
    const seen: Array<{ ip: string; port: number; family: string }> = [];
    const ssh = new ssh2.Server({ hostKeys: [hostKey.privateKey] }, (client, info) => {
      seen.push({ ip: info.ip, port: info.port, family: info.family });
      client.on('error', () => undefined);
      client.end();
    });
    const tcp = net.createServer((socket) => {
      socket.on('error', () => undefined);
      void readProxyHeader(socket, 2_000).then((outcome) => {
        if (!outcome.ok || !outcome.header.source) return socket.destroy();
        adoptProxySource(socket, outcome.header.source);
        expect(socket.remoteAddress).toBe(outcome.header.source.address);
        ssh.injectSocket(socket);
      });
    });
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    const { port } = tcp.address() as net.AddressInfo;
    try {
      const headers = [v1('203.0.113.7', 51234), v2(inet6('20010db8000000000000000000000007', 40000), { familyProtocol: 0x21 })];
      for (const h of headers) {
        // The header and the client's ident line may share one segment: the ident must survive.
        const sock = await connectWithHeader(port, h);
        await new Promise<void>((resolve) => {
          const client = new ssh2.Client();
          client.on('error', () => resolve()).on('close', () => resolve());
          client.connect({ sock, username: 'keys', readyTimeout: 5_000 });
        });
      }
    } finally {
      await new Promise((resolve) => tcp.close(resolve));
    }
    expect(seen).toEqual([
      { ip: '203.0.113.7', port: 51234, family: 'IPv4' },
      { ip: '2001:db8::7', port: 40000, family: 'IPv6' },
    ]);
  });

  it("v1 header: its address is the one in the verification email, the confirm page, the request row and the audit rows", async () => {
    await withServer({ proxyProtocol: PROXIED }, async (port) => {
      const key = makeKey();
      const email = uniqueEmail('proxyv1');
      const result = await loginRecording(email, '203.0.113.7', () => sshWithHeader(port, v1('203.0.113.7', 51234), key, `login ${email}`));
      expect(result.code).toBe(0);
      const audit = await sshAuditOf(email);
      expect(audit.actions).toEqual(expect.arrayContaining(['user.created', 'verification.requested']));
      expect(audit.ips).toEqual(['203.0.113.7']);
    });
  });

  it('v2 header (IPv6, with TLVs): its address is recorded on create', async () => {
    await withServer({ proxyProtocol: PROXIED }, async (port) => {
      const key = makeKey();
      const email = uniqueEmail('proxyv2');
      const tlvs = Buffer.concat([tlv(0x05, Buffer.from('conn-42')), tlv(0x04, Buffer.alloc(3))]);
      const h = v2(inet6('20010db8000000000000000000000007', 40000, tlvs), { familyProtocol: 0x21 });
      expect((await loginRecording(email, '2001:db8::7', () => sshWithHeader(port, h, key, `login ${email}`))).code).toBe(0);
      const created = await sshWithHeader(port, h, key, 'create --label via-proxy-v2 --json');
      expect(created.code).toBe(0);
      const keyId = JSON.parse(created.stdout).api_key_id as string;
      const audit = await t.app.deps.db.selectFrom('audit_events').select(['action', 'ip']).where('subject_id', '=', keyId).execute();
      expect(audit).toEqual([{ action: 'api_key.created', ip: '2001:db8::7' }]);
    });
  });

  it("per-address caps count the header's address, not the balancer's", async () => {
    await withServer({ proxyProtocol: PROXIED, maxUnauthenticatedPerIp: 1 }, async (port) => {
      const a = await probe(port, v1('198.51.100.1', 1000));
      const b = await probe(port, v2(inet4('198.51.100.2', 1001))); // same socket address, other client
      const c = await probe(port, v2(inet4('198.51.100.1', 1002))); // the first client again: over its cap
      const d = await probe(port, v1('198.51.100.1', 1003));
      // LOCAL: the balancer itself, a separate address with its own count.
      const e = await probe(port, v2(Buffer.alloc(0), { versionCommand: 0x20, familyProtocol: 0x00 }));
      expect([a.outcome, b.outcome, c.outcome, d.outcome, e.outcome]).toEqual(['banner', 'banner', 'closed', 'closed', 'banner']);
      for (const p of [a, b, c, d, e]) p.socket.destroy();
      // Once the first client's connection is gone (the server sees the close a moment later), it may connect again.
      let again = await probe(port, v1('198.51.100.1', 1004));
      for (let i = 0; i < 100 && again.outcome !== 'banner'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        again = await probe(port, v1('198.51.100.1', 1004));
      }
      expect(again.outcome).toBe('banner');
      again.socket.destroy();
    });
  });

  it('a connection without a valid header is closed: none at all, an SSH client speaking first, a malformed one, silence', async () => {
    await withServer({ proxyProtocol: { ...PROXIED, headerTimeoutMs: 1_500 } }, async (port) => {
      // Refused as soon as the bytes show it: well before the header timeout.
      for (const bad of [
        'SSH-2.0-OpenSSH_9.2p1\r\n',
        'PROXY TCP4 203.0.113.7 10.0.0.1 70000 22\r\n',
        'PROXY TCP4 203.0.113.777 10.0.0.1 1 22\r\n',
        v2(inet4('203.0.113.7', 1), { versionCommand: 0x22 }),
      ]) {
        const probed = await probe(port, bad);
        expect(probed.outcome).toBe('closed');
        expect(probed.ms).toBeLessThan(1_000);
      }
      // Nothing, or a header never finished: closed at the timeout.
      for (const slow of [null, 'PROXY TCP4 203.0.113.7 10.0', SIGNATURE]) {
        const probed = await probe(port, slow);
        expect(probed.outcome).toBe('closed');
        expect(probed.ms).toBeGreaterThanOrEqual(1_400);
      }
      // The real OpenSSH client straight at the port (no balancer) does not get in.
      expect((await openssh(port, makeKey().privateKeyPath, ['whoami'])).code).toBe(255);
      expect(t.logs.some((l) => l.includes('no valid PROXY protocol header') && l.includes('no complete PROXY protocol header within 1500 ms'))).toBe(true);
    });
  });

  it('a connection from outside SSH_PROXY_FROM is closed at once, even with a valid header', async () => {
    await withServer({ proxyProtocol: { from: ['10.0.0.0/8', '::1/128', '127.0.0.2/32'], headerTimeoutMs: 5_000 } }, async (port) => {
      const outsider = await probe(port, v1('203.0.113.7', 1), '127.0.0.1');
      expect(outsider.outcome).toBe('closed');
      expect(outsider.ms).toBeLessThan(2_500); // at once, not at the 5 s header timeout
      expect(t.logs.some((l) => l.includes('outside SSH_PROXY_FROM') && l.includes('"peer":"127.0.0.1"'))).toBe(true);
      const balancer = await probe(port, v1('203.0.113.7', 1), '127.0.0.2');
      expect(balancer.outcome).toBe('banner');
      balancer.socket.destroy();
    });
  });

  it("off (the default): no header expected, and one sent is not believed", async () => {
    const port = t.app.sshPort; // the app as started by default
    const key = makeKey();
    const email = uniqueEmail('noproxy');
    const result = await loginRecording(email, '127.0.0.1', () => openssh(port, key.privateKeyPath, ['login', email]));
    expect(result.code).toBe(0);
    // A header on a door that does not expect one is not an SSH ident line: ssh2 hangs up, and
    // the address in it is never used.
    await expect(sshWithHeader(port, v1('203.0.113.66', 1), key, 'whoami')).rejects.toThrow('the door closed the connection');
    expect(t.logs.some((l) => l.includes('203.0.113.66'))).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// End to end: the real OpenSSH client through a real HAProxy (`send-proxy-v2`).

const HAPROXY = findHaproxy();
if (!HAPROXY) console.warn('proxy-protocol.test.ts: SKIPPING the HAProxy end-to-end test: no haproxy binary (.ci/run installs Debian\'s package: apt-get install haproxy)');

describe('through a real HAProxy', () => {
  it.skipIf(!HAPROXY)(
    `OpenSSH from 127.0.0.2 -> haproxy (send-proxy-v2, connecting from 127.0.0.1) -> the door records 127.0.0.2${HAPROXY ? '' : ' [SKIPPED: haproxy not installed]'}`,
    async () => {
      await withServer({ proxyProtocol: PROXIED }, async (sshPort) => {
        const front = await freePort();
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-haproxy-'));
        const configPath = path.join(dir, 'haproxy.cfg');
        fs.writeFileSync(
          configPath,
          [
            'global',
            '  maxconn 64',
            'defaults',
            '  mode tcp',
            '  timeout connect 5s',
            '  timeout client 60s',
            '  timeout server 60s',
            'frontend ssh_in',
            `  bind 127.0.0.1:${front}`,
            '  default_backend ssh_door',
            'backend ssh_door',
            // The balancer's own side of the connection is 127.0.0.1: the only address SSH_PROXY_FROM allows.
            `  server s1 127.0.0.1:${sshPort} send-proxy-v2 source 127.0.0.1`,
            '',
          ].join('\n'),
        );
        execFileSync(HAPROXY!, ['-c', '-q', '-f', configPath]);
        let log = '';
        const child = spawn(HAPROXY!, ['-f', configPath, '-db'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
        haproxy = child;
        child.stdout!.on('data', (d) => (log += d));
        child.stderr!.on('data', (d) => (log += d));
        try {
          await waitForListener(front, () => log);
          const key = makeKey();
          const email = uniqueEmail('haproxy');
          const result = await loginRecording(email, '127.0.0.2', () =>
            openssh(front, key.privateKeyPath, ['login', email], { extra: ['-b', '127.0.0.2'] }),
          );
          expect(result.code, result.stderr + log).toBe(0);
          const created = await openssh(front, key.privateKeyPath, ['create', '--label', 'via-haproxy', '--json'], { extra: ['-b', '127.0.0.2'] });
          expect(created.code, created.stderr).toBe(0);
          const keyId = JSON.parse(created.stdout).api_key_id as string;
          const audit = await t.app.deps.db.selectFrom('audit_events').select(['action', 'ip']).where('subject_id', '=', keyId).execute();
          expect(audit).toEqual([{ action: 'api_key.created', ip: '127.0.0.2' }]);
          expect((await sshAuditOf(email)).ips).toEqual(['127.0.0.2']);
          // 127.0.0.2 itself may not connect to the door: only the header could have carried it.
          expect((await probe(sshPort, v1('203.0.113.7', 1), '127.0.0.2')).outcome).toBe('closed');
        } finally {
          stopHaproxy();
          await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once('exit', resolve)));
        }
      });
    },
    60_000,
  );
});
