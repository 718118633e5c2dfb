import http from 'node:http';
import net from 'node:net';
import ssh2, { type ClientChannel } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SshLimits } from '../../src/config/config.js';
import { addressGroupOf } from '../../src/net/addresses.js';
import { fitToOpenFiles, openFileLimit } from '../../src/process/open-files.js';
import { loadConfig } from '../../src/config/config.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { connectClient, execOn, openssh, privateKeyOf } from '../support/ssh.js';
import { withSshServer } from '../support/ssh-server.js';

// Per-address limits stop one address; these stop many addresses together (and one address
// with many sockets on the HTTP door): connections, unauthenticated connections and sessions
// have caps for the whole process, and the other door and the database keep working when one
// door is full. Attackers use their own loopback addresses (127.0.0.x), bounded in number.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({
    HTTP_MAX_CONNECTIONS: '12',
    HTTP_MAX_CONNECTIONS_PER_IP: '5',
    HTTP_HEADERS_TIMEOUT: '2s',
    METRICS_PORT: '0',
  });
});
afterAll(async () => {
  await t?.close();
});

const held: net.Socket[] = [];
function releaseHeld(): void {
  for (const socket of held.splice(0)) socket.destroy();
}

/** A TCP connection from `from`: `open` if still open after `settleMs`, else `closed` (the server hung up at once). */
async function tcpFrom(port: number, from: string, options: { send?: string; settleMs?: number } = {}): Promise<{ socket: net.Socket; state: 'open' | 'closed'; bytes: number }> {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
  socket.on('error', () => undefined);
  let bytes = 0;
  let closed = false;
  socket.on('data', (d: Buffer) => (bytes += d.length));
  socket.once('close', () => (closed = true));
  await new Promise<void>((resolve) => {
    socket.once('connect', () => resolve());
    socket.once('close', () => resolve());
  });
  if (options.send !== undefined && !closed) socket.write(options.send);
  await new Promise((resolve) => setTimeout(resolve, options.settleMs ?? 300));
  held.push(socket);
  return { socket, state: closed ? 'closed' : 'open', bytes };
}

/** GET /healthz on a connection of its own (no keep-alive pool: pooled sockets would count against the caps). */
function health(baseUrl: string, from = '127.0.0.1'): Promise<number | 'no answer'> {
  return new Promise((resolve) => {
    const req = http.get(`${baseUrl}/healthz`, { agent: false, localAddress: from, timeout: 3_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve('no answer'));
  });
}

async function rateLimited(limit: string): Promise<number> {
  const metric = await t.app.metricsRegistry!.getSingleMetric('shell_auth_rate_limited_total')!.get();
  return metric.values.find((v) => v.labels.limit === limit)?.value ?? 0;
}

const httpPort = () => Number(new URL(t.url).port);

/** Waits (up to 5 s) for something the server does a moment after the test's own step. */
async function eventually(check: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
}

describe('the HTTP door', () => {
  it('one address may hold HTTP_MAX_CONNECTIONS_PER_IP connections; more are closed at once, counted, and others are still served', async () => {
    try {
      const before = await rateLimited('http_connections_per_ip');
      for (let i = 0; i < 5; i++) expect((await tcpFrom(httpPort(), '127.0.0.9', { settleMs: 50 })).state).toBe('open');
      const extra = await tcpFrom(httpPort(), '127.0.0.9');
      expect(extra).toMatchObject({ state: 'closed', bytes: 0 });
      expect(await rateLimited('http_connections_per_ip')).toBe(before + 1);
      expect(await health(t.url)).toBe(200);
    } finally {
      releaseHeld();
    }
  });

  it('HTTP_MAX_CONNECTIONS holds for many addresses together, and the SSH door and the database still work when the HTTP door is full', async () => {
    const key = makeKey();
    try {
      const before = await rateLimited('http_connections_total');
      let opened = 0;
      let refused = false;
      // Four connections from each of several addresses, until the door is full.
      for (let i = 0; i < 20 && !refused; i++) {
        const { state } = await tcpFrom(httpPort(), `127.0.0.${20 + Math.floor(i / 4)}`, { settleMs: 50 });
        if (state === 'open') opened++;
        else refused = true;
      }
      expect(refused).toBe(true);
      expect(opened).toBeLessThanOrEqual(12);
      expect((await tcpFrom(httpPort(), '127.0.0.40')).state).toBe('closed');
      expect(await rateLimited('http_connections_total')).toBeGreaterThan(before);
      // The other door, and the database behind it, are untouched.
      const whoami = await openssh(t.app.sshPort, key.privateKeyPath, ['whoami']);
      expect(whoami.code).toBe(0);
      expect(whoami.stdout).toContain(key.fingerprint);
    } finally {
      releaseHeld();
    }
    // Room again once the flood lets go.
    const deadline = Date.now() + 5_000;
    let status = await health(t.url);
    while (status !== 200 && Date.now() < deadline) status = await health(t.url);
    expect(status).toBe(200);
  });

  it('a client that never closes its side still loses the connection at the timeout: the slot comes back', async () => {
    try {
      const halfOpen = [];
      for (let i = 0; i < 5; i++) {
        const socket = net.connect({ port: httpPort(), host: '127.0.0.1', localAddress: '127.0.0.11', allowHalfOpen: true });
        socket.on('error', () => undefined);
        socket.resume();
        await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
        halfOpen.push(socket);
        held.push(socket);
      }
      expect((await tcpFrom(httpPort(), '127.0.0.11')).state).toBe('closed');
      await new Promise((resolve) => setTimeout(resolve, 3_500)); // the 2 s header timeout, checked every second
      expect(halfOpen.every((socket) => !socket.destroyed)).toBe(true); // our side never closed
      expect((await tcpFrom(httpPort(), '127.0.0.11')).state).toBe('open');
    } finally {
      releaseHeld();
    }
  });

  it('a connection that sends nothing is closed at HTTP_HEADERS_TIMEOUT, not up to 30 s later', async () => {
    const started = Date.now();
    const socket = net.connect(httpPort(), '127.0.0.1');
    socket.on('error', () => undefined);
    socket.resume();
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const ms = Date.now() - started;
    expect(ms).toBeGreaterThanOrEqual(1_900);
    expect(ms).toBeLessThan(4_500);
  });
});

/** A raw TCP connection to the SSH door that sends only the start of an identification line. */
async function unauthenticatedFrom(port: number, from: string) {
  const connection = await tcpFrom(port, from, { send: 'SSH-2.0-', settleMs: 100 });
  return connection;
}

const withServer = (limits: Partial<SshLimits>, body: (port: number) => Promise<void>) => withSshServer(t.app.deps, limits, body);
const FAST = { connectionsPerSecond: 100_000, connectionBurst: 100_000 };

function whoamiOver(port: number, key: TestKey, from = '127.0.0.1'): Promise<string> {
  return connectFrom(port, key, from).then(async (client) => {
    try {
      return await execOn(client, 'whoami');
    } finally {
      client.end();
    }
  });
}

const shellOn = (client: ssh2.Client) =>
  new Promise<ClientChannel | null>((resolve) => client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, channel) => resolve(err ? null : channel)));

/** Opens a session channel and asks for no program (ssh2's client has no call for it: its protocol layer does). */
function bareSession(client: ssh2.Client): Promise<boolean> {
  const internals = client as unknown as { _chanMgr: { add(handler: unknown): number }; _protocol: { session(id: number, window: number, packet: number): void } };
  return new Promise((resolve) => {
    const opened = Object.assign((err: Error | undefined) => resolve(!err), { type: 'session' });
    internals._protocol.session(internals._chanMgr.add(opened), 2 * 1024 * 1024, 32 * 1024);
  });
}

function connectFrom(port: number, key: TestKey, from: string): Promise<ssh2.Client> {
  const client = new ssh2.Client();
  return new Promise((resolve, reject) => {
    client.once('ready', () => resolve(client)).once('error', reject);
    client.once('close', () => reject(new Error('closed before authentication')));
    client.connect({ host: '127.0.0.1', port, localAddress: from, username: 'keys', privateKey: privateKeyOf(key.privateKeyPath) });
  });
}

describe('the SSH door', () => {
  it('SSH_MAX_UNAUTH: when full, the oldest unauthenticated connection of the busiest address makes room for a newcomer, with one log line', async () => {
    const key = makeKey();
    await withServer({ ...FAST, maxUnauthenticated: 6 }, async (port) => {
      try {
        const busy = [];
        for (let i = 0; i < 4; i++) busy.push(await unauthenticatedFrom(port, '127.0.0.41'));
        const other = [await unauthenticatedFrom(port, '127.0.0.42'), await unauthenticatedFrom(port, '127.0.0.42')];
        for (const c of [...busy, ...other]) expect(c.state).toBe('open');
        // Full: a newcomer still gets in, and the first of 127.0.0.41's six is gone.
        expect(await whoamiOver(port, key)).toContain(key.fingerprint);
        expect(busy[0]!.socket.destroyed || busy[0]!.socket.readyState === 'closed').toBe(true);
        expect(busy.slice(1).every((c) => !c.socket.destroyed)).toBe(true);
        expect(other.every((c) => !c.socket.destroyed)).toBe(true);
        // The busiest address itself gets no room at another's cost: its next one is refused.
        expect((await unauthenticatedFrom(port, '127.0.0.41')).state).toBe('open'); // takes the slot the newcomer left
        expect((await unauthenticatedFrom(port, '127.0.0.41')).state).toBe('closed');
        expect(t.logs.filter((l) => l.includes('connection caps reached')).length).toBe(1);
      } finally {
        releaseHeld();
      }
    });
  });

  it('SSH_MAX_CONNECTIONS: when full, the address holding the most loses its oldest connection to a newcomer; that address itself gets no more', async () => {
    const key = makeKey();
    await withServer({ ...FAST, maxConnections: 3 }, async (port) => {
      const clients: ssh2.Client[] = [];
      try {
        for (let i = 0; i < 3; i++) clients.push(await connectFrom(port, key, '127.0.0.45'));
        const closed = clients.map(() => false);
        clients.forEach((client, i) => client.on('close', () => (closed[i] = true)));
        const fromBusiest = await tcpFrom(port, '127.0.0.45');
        expect(fromBusiest).toMatchObject({ state: 'closed', bytes: 0 });
        const newcomer = await connectFrom(port, key, '127.0.0.46');
        clients.push(newcomer);
        expect(await execOn(newcomer, 'whoami')).toContain(key.fingerprint);
        expect(closed).toEqual([true, false, false]);
        expect(await execOn(clients[1]!, 'whoami')).toContain(key.fingerprint);
      } finally {
        for (const client of clients) client.end();
        releaseHeld();
      }
    });
  });

  it('SSH_MAX_CONNECTIONS: a lone connection is never pushed out; when every address holds one, the newcomer is refused', async () => {
    const key = makeKey();
    await withServer({ ...FAST, maxConnections: 3 }, async (port) => {
      const clients: ssh2.Client[] = [];
      try {
        clients.push(await connectFrom(port, key, '127.0.0.48'), await connectFrom(port, key, '127.0.0.49'), await connectFrom(port, key, '127.0.0.49'));
        const closed = clients.map(() => false);
        clients.forEach((client, i) => client.on('close', () => (closed[i] = true)));
        clients.push(await connectFrom(port, key, '127.0.0.50'));
        await eventually(() => closed[1] === true);
        expect(closed).toEqual([false, true, false]);
        expect((await tcpFrom(port, '127.0.0.51')).state).toBe('closed');
        expect(await execOn(clients[0]!, 'whoami')).toContain(key.fingerprint);
      } finally {
        for (const client of clients) client.end();
        releaseHeld();
      }
    });
  });

  it('SSH_MAX_SESSIONS_PER_IP: one address cannot take every session; others still get theirs', async () => {
    const key = makeKey();
    await withServer({ ...FAST, maxSessionsPerIp: 3 }, async (port) => {
      const clients = [await connectFrom(port, key, '127.0.0.52'), await connectFrom(port, key, '127.0.0.52'), await connectFrom(port, key, '127.0.0.53')];
      try {
        const [a, b, c] = clients as [ssh2.Client, ssh2.Client, ssh2.Client];
        const opened = [await shellOn(a), await shellOn(a), await shellOn(b), await shellOn(b), await shellOn(c)];
        expect(opened.map((ch) => ch !== null)).toEqual([true, true, true, false, true]);
      } finally {
        for (const client of clients) client.end();
      }
    });
  });

  it('SSH_MAX_SESSIONS: when full, the address holding the most sessions loses the connection holding its oldest', async () => {
    const key = makeKey();
    await withServer({ ...FAST, maxSessions: 4 }, async (port) => {
      const busy = [await connectFrom(port, key, '127.0.0.56'), await connectFrom(port, key, '127.0.0.56')];
      const closed = busy.map(() => false);
      busy.forEach((client, i) => {
        client.on('error', () => undefined);
        client.on('close', () => (closed[i] = true));
      });
      try {
        for (const client of busy) for (let i = 0; i < 2; i++) expect(await shellOn(client)).not.toBeNull();
        expect(await whoamiOver(port, key, '127.0.0.57')).toContain(key.fingerprint);
        await eventually(() => closed[0] === true);
        expect(closed).toEqual([true, false]);
      } finally {
        for (const client of busy) client.end();
      }
    });
  });

  it('session slots come back when a connection drops, even for sessions that never started a program', async () => {
    const key = makeKey();
    await withServer({ ...FAST, maxSessions: 2 }, async (port) => {
      const first = await connectFrom(port, key, '127.0.0.54');
      first.on('error', () => undefined);
      expect(await bareSession(first)).toBe(true);
      expect(await shellOn(first)).not.toBeNull();
      // Gone without a word: no channel close, no disconnect.
      const gone = new Promise<void>((resolve) => first.once('close', () => resolve()));
      (first as unknown as { _sock: net.Socket })._sock.destroy();
      await gone;
      const second = await connectFrom(port, key, '127.0.0.55');
      try {
        // The server learns of the drop a moment later: its two slots come back then, not never.
        let opened = 0;
        for (let i = 0; i < 40 && opened < 2; i++) {
          if (await shellOn(second)) opened++;
          else await new Promise((resolve) => setTimeout(resolve, 50));
        }
        expect(opened).toBe(2);
      } finally {
        second.end();
      }
    });
  });

  it('IPv6 addresses count per /64 (IPV6_PREFIX) for the per-address caps', async () => {
    await withServer({ ...FAST, maxUnauthenticatedPerIp: 3, proxyProtocol: { from: ['127.0.0.1/32'], headerTimeoutMs: 5_000 } }, async (port) => {
      try {
        // Five different addresses of one /64, each behind the balancer's PROXY header.
        const states = [];
        for (let host = 1; host <= 5; host++) {
          const header = `PROXY TCP6 2001:db8:1:2::${host.toString(16)} ::1 40000 22\r\nSSH-2.0-`;
          states.push((await tcpFrom(port, '127.0.0.1', { send: header, settleMs: 150 })).state);
        }
        expect(states).toEqual(['open', 'open', 'open', 'closed', 'closed']);
        // Another /64 is another address.
        const elsewhere = await tcpFrom(port, '127.0.0.1', { send: 'PROXY TCP6 2001:db8:1:3::1 ::1 40000 22\r\nSSH-2.0-', settleMs: 150 });
        expect(elsewhere.state).toBe('open');
      } finally {
        releaseHeld();
      }
    });
  });

  it('two live connections with the same PROXY source address and port are both served', async () => {
    const key = makeKey();
    await withServer({ ...FAST, proxyProtocol: { from: ['127.0.0.1/32'], headerTimeoutMs: 5_000 } }, async (port) => {
      const connect = async () => {
        const sock = net.connect(port, '127.0.0.1');
        await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
        sock.write('PROXY TCP4 198.51.100.7 10.0.0.1 51000 22\r\n');
        const client = new ssh2.Client();
        await new Promise<void>((resolve, reject) => {
          client.once('ready', () => resolve()).once('error', reject);
          client.connect({ sock, username: 'keys', privateKey: privateKeyOf(key.privateKeyPath) });
        });
        return client;
      };
      const first = await connect();
      const second = await connect();
      try {
        const [a, b] = await Promise.all([execOn(first, 'whoami'), execOn(second, 'whoami')]);
        expect(a).toContain(key.fingerprint);
        expect(b).toContain(key.fingerprint);
      } finally {
        first.end();
        second.end();
      }
    });
  });

  it('a key linked to no account gets 2 sessions per connection, a linked one more, and SSH_MAX_SESSIONS caps them all', async () => {
    const openSession = (client: ssh2.Client) =>
      new Promise<ClientChannel | null>((resolve) => client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, channel) => resolve(err ? null : channel)));
    const unlinked = makeKey();
    const linked = makeKey();
    const email = uniqueEmail('sessions');
    await t.verifyByEmail(email, linked.publicKey);
    const login = await openssh(t.app.sshPort, linked.privateKeyPath, ['login', email]);
    expect(login.code).toBe(0);

    await withServer({ ...FAST, maxSessions: 5 }, async (port) => {
      const anonymous = await connectClient(port, unlinked.privateKeyPath);
      const member = await connectClient(port, linked.privateKeyPath);
      try {
        const a = [await openSession(anonymous), await openSession(anonymous), await openSession(anonymous)];
        expect(a.map((c) => c !== null)).toEqual([true, true, false]);
        const m = [await openSession(member), await openSession(member), await openSession(member), await openSession(member)];
        // 2 + 3 = the process's 5: the member's fourth is refused by the global cap.
        expect(m.map((c) => c !== null)).toEqual([true, true, true, false]);
        a[0]!.close();
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect(await openSession(member)).not.toBeNull();
      } finally {
        anonymous.end();
        member.end();
      }
    });
  });

  it('a flood of connections that time out writes a line per address, then one line with the count', async () => {
    const linesBefore = t.logs.length;
    await withSshServer(t.app.deps, { ...FAST, loginGraceMs: 300 }, async (port, close) => {
      try {
        for (let i = 0; i < 20; i++) await tcpFrom(port, '127.0.0.44', { send: 'SSH-2.0-', settleMs: 0 });
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      } finally {
        releaseHeld();
      }
      await close(); // ends the interval: the counts are written
    });
    const lines = t.logs.slice(linesBefore).map((l) => JSON.parse(l) as { msg: string; ip?: string; repeated?: number });
    const grace = lines.filter((l) => l.ip === '127.0.0.44' && l.msg === 'ssh: login grace time over, dropping connection');
    const repeated = lines.filter((l) => l.ip === '127.0.0.44' && l.msg === 'ssh: login grace time over, dropping connection (repeated)');
    expect(grace.length).toBe(1);
    expect(repeated).toHaveLength(1);
    expect(repeated[0]!.repeated).toBe(19);
    expect(lines.filter((l) => l.ip === '127.0.0.44' && l.msg === 'ssh connection closed').length).toBe(1);
  });
});

describe('address groups and the open-file limit', () => {
  it('IPv4 stays itself; IPv4-mapped IPv6 is its IPv4; IPv6 is its network', () => {
    expect(addressGroupOf('192.0.2.7', 64)).toBe('192.0.2.7');
    expect(addressGroupOf('::ffff:192.0.2.7', 64)).toBe('192.0.2.7');
    expect(addressGroupOf('2001:db8:1:2:aaaa:bbbb:cccc:dddd', 64)).toBe('2001:db8:1:2::/64');
    expect(addressGroupOf('2001:db8:1:2:aaaa:bbbb:cccc:dddd', 56)).toBe('2001:db8:1::/56');
    expect(addressGroupOf('2001:db8:1:2ff:1::1', 60)).toBe('2001:db8:1:2f0::/60');
    expect(addressGroupOf('::1', 128)).toBe('::1');
  });

  it('caps that the open-file limit cannot hold are lowered to fit it, with a reason', () => {
    const config = loadConfig({});
    expect(fitToOpenFiles(config, 1_000_000).lowered).toBeNull();
    const fitted = fitToOpenFiles(config, 1024);
    expect(fitted.http.maxConnections + fitted.ssh.maxConnections).toBeLessThanOrEqual(1024 - 256 - config.database.poolSize);
    expect(fitted.ssh.maxUnauthenticated).toBeLessThanOrEqual(fitted.ssh.maxConnections);
    expect(fitted.lowered).toMatch(/HTTP_MAX_CONNECTIONS=1024 \+ SSH_MAX_CONNECTIONS=1024/);
    expect(openFileLimit()).toBeGreaterThan(0);
  });
});
