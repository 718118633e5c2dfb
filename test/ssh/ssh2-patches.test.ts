import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKey } from '../support/keys.js';
import { runNodeForJson } from '../support/processes.js';
import { openssh } from '../support/ssh.js';

/**
 * patches/ holds our changes to ssh2, applied by `patch-package` in npm's postinstall (see the
 * README, "Patches to ssh2"). This file fails when the patch is not in node_modules (an install
 * that skipped scripts, a lost postinstall, an ssh2 upgrade that left the patch behind), and checks
 * that what the patch changes still works on the wire: curve25519 key exchange between ssh2 peers,
 * with OpenSSH, and a client public key of the wrong length refused cleanly; packet padding drawn
 * and KEXINIT cookies drawn from a pool (every packet of every test here is padded from it); the
 * WebAssembly poly1305 left unloaded beside the native binding; a channel destroyed after its
 * output ended not ended twice; a connection that closes with no channel left builds no Error.
 */

const requireFromHere = createRequire(import.meta.url);
const SSH2_DIR = path.dirname(requireFromHere.resolve('ssh2/package.json'));
const SSH2_VERSION = (JSON.parse(fs.readFileSync(path.join(SSH2_DIR, 'package.json'), 'utf8')) as { version: string }).version;
const PATCHES_DIR = path.resolve(import.meta.dirname, '../../patches');
const KEX_JS = path.join(SSH2_DIR, 'lib/protocol/kex.js');

const CURVE25519 = ['curve25519-sha256', 'curve25519-sha256@libssh.org'] as const;
const HAS_OPENSSH = spawnSync('ssh', ['-V']).status === 0;

describe('the ssh2 patch in node_modules', () => {
  const patchFile = path.join(PATCHES_DIR, `ssh2+${SSH2_VERSION}.patch`);

  it('exists for the installed ssh2 version', () => {
    const patches = fs.readdirSync(PATCHES_DIR).filter((f) => f.startsWith('ssh2+'));
    // An ssh2 upgrade needs the patch redone (or dropped if upstream took it): npx patch-package ssh2
    expect(patches, `installed ssh2 is ${SSH2_VERSION}`).toEqual([path.basename(patchFile)]);
  });

  it('is applied: every line it adds is in the file it patches', () => {
    // One section per file: `diff --git a/node_modules/ssh2/lib/... b/...`.
    const sections = fs.readFileSync(patchFile, 'utf8').split(/^diff --git a\/node_modules\/ssh2\/(\S+) .*$/m).slice(1);
    const files = new Map<string, string[]>();
    for (let i = 0; i < sections.length; i += 2) {
      const added = sections[i + 1]!
        .split('\n')
        .filter((l) => l.startsWith('+') && !l.startsWith('+++') && l.trim() !== '+')
        .map((l) => l.slice(1));
      files.set(sections[i]!, added);
    }
    expect([...files.keys()].sort()).toEqual(['lib/Channel.js', 'lib/protocol/crypto.js', 'lib/protocol/kex.js', 'lib/server.js']);
    for (const [file, added] of files) {
      expect(added.length, file).toBeGreaterThan(1);
      const text = fs.readFileSync(path.join(SSH2_DIR, file), 'utf8');
      const missing = added.filter((l) => !text.includes(l));
      expect(missing, `${file}: run \`npm ci\` (its postinstall runs patch-package)`).toEqual([]);
    }
  });

  it('draws packet padding from a pool: one call into OpenSSL per 4 KiB, not one per packet, and no byte used twice', () => {
    // In a process of its own, so that ssh2 loads after randomFillSync is counted.
    const script = `
      const crypto = require('node:crypto');
      const original = crypto.randomFillSync;
      let calls = 0;
      crypto.randomFillSync = (...args) => { calls++; return original(...args); };
      const { NullCipher } = require('ssh2/lib/protocol/crypto.js');
      const cipher = new NullCipher(0, () => {});
      const paddings = new Set();
      for (let i = 0; i < 1000; i++) {
        const payloadLen = 10 + (i % 50);
        const packet = cipher.allocPacket(payloadLen);
        paddings.add(packet.subarray(5 + payloadLen, 5 + payloadLen + packet[4]).toString('hex'));
      }
      console.log(JSON.stringify({ calls, distinct: paddings.size }));
    `;
    const { calls, distinct } = runNodeForJson<{ calls: number; distinct: number }>(['-e', script]);
    // 1,000 packets of 4-11 padding bytes: at most 11,000 bytes, three pool refills.
    expect(calls).toBeLessThanOrEqual(3);
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(distinct).toBe(1000);
  });

  it('draws KEXINIT cookies from the same pool: a handful of calls into OpenSSL for 20 handshakes, not two per handshake', () => {
    // Both ends here are ssh2 (a client and a server, each sending a cookie and padding its packets).
    const script = `
      const crypto = require('node:crypto');
      const original = crypto.randomFillSync;
      let calls = 0;
      crypto.randomFillSync = (...args) => { calls++; return original(...args); };
      const ssh2 = require('ssh2');
      const hostKey = ssh2.utils.generateKeyPairSync('ed25519').private;
      const server = new ssh2.Server({ hostKeys: [hostKey] }, (conn) => {
        conn.on('error', () => {});
        conn.on('authentication', (ctx) => ctx.accept());
      });
      server.listen(0, '127.0.0.1', async () => {
        const { port } = server.address();
        for (let i = 0; i < 20; i++) {
          await new Promise((resolve, reject) => {
            const client = new ssh2.Client();
            client.on('error', reject).on('ready', () => { client.end(); resolve(); });
            client.connect({ host: '127.0.0.1', port, username: 'u', readyTimeout: 10000 });
          });
        }
        server.close();
        console.log(JSON.stringify({ calls }));
      });
    `;
    const { calls } = runNodeForJson<{ calls: number }>(['-e', script]);
    // 20 handshakes send 40 cookies (one call each without the pool) and ~800 bytes of padding
    // each: about 5 KiB from the pool in all, so two or three refills.
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(calls).toBeLessThanOrEqual(5);
  });

  it('builds no Error when a connection closes with no channel left, and still closes one that is', () => {
    // In a process of its own: Error is counted by replacing the global ssh2 reads it from.
    const script = `
      const ssh2 = require('ssh2');
      const Original = Error;
      let built = 0;
      globalThis.Error = class extends Original {
        constructor(...args) {
          super(...args);
          if (args[0] === 'No response from server' && /ssh2[\\\\/]lib[\\\\/]server\\.js/.test(this.stack)) built++;
        }
      };
      const hostKey = ssh2.utils.generateKeyPairSync('ed25519').private;
      let serverChannelClosed = false;
      const server = new ssh2.Server({ hostKeys: [hostKey] }, (conn) => {
        conn.on('error', () => {});
        conn.on('authentication', (ctx) => ctx.accept());
        // The session request is left unanswered: its channel is still pending when the client goes.
        conn.on('session', () => {});
      });
      const connect = (port, then) => new Promise((resolve, reject) => {
        const client = new ssh2.Client();
        client.on('error', () => {}).on('close', () => setTimeout(resolve, 50));
        client.on('ready', () => then(client));
        client.connect({ host: '127.0.0.1', port, username: 'u', readyTimeout: 10000 });
      });
      server.listen(0, '127.0.0.1', async () => {
        const { port } = server.address();
        for (let i = 0; i < 5; i++) await connect(port, (client) => client.end());
        const quiet = built;
        await connect(port, (client) => {
          client.exec('pending', () => {});
          setTimeout(() => client._sock.destroy(), 100);
        });
        server.close();
        console.log(JSON.stringify({ quiet, withChannel: built - quiet }));
      });
    `;
    const { quiet, withChannel } = runNodeForJson<{ quiet: number; withChannel: number }>(['-e', script]);
    expect(quiet).toBe(0);
    // A channel left open still hears that the connection went (ssh2's behaviour, kept).
    expect(withChannel).toBe(1);
  });

  it('makes Curve25519Exchange use raw keys through JWK, not SPKI DER', () => {
    const kex = fs.readFileSync(KEX_JS, 'utf8');
    const start = kex.indexOf('class Curve25519Exchange');
    const end = kex.indexOf('class ECDHExchange');
    expect(start).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(start);
    const curve25519 = kex.slice(start, end);
    expect(curve25519).toContain("publicKeyEncoding: { format: 'jwk' }");
    expect(curve25519).toContain("kty: 'OKP'");
    expect(curve25519).toContain("format: 'jwk'");
    expect(curve25519).not.toContain("type: 'spki'");
    expect(curve25519).not.toContain('Ber.Writer');
    // The export that can deadlock on Node 20.20 (see the comment in the patch) is not used.
    expect(curve25519).not.toContain('this._keys.publicKey.export(');
  });

  it('leaves the WebAssembly poly1305 unloaded when the native binding does chacha20-poly1305', () => {
    // In a process of its own: what loading ssh2 costs, and the JavaScript fallback's answer.
    const script = `
      const { createCipher, createDecipher, init, bindingAvailable } = require('ssh2/lib/protocol/crypto.js');
      const key = Buffer.alloc(64, 1);
      const chacha = { sslName: 'chacha20', keyLen: 64, ivLen: 0, authLen: 16, blockLen: 8, discardLen: 0, isGCM: false };
      const attempt = (make) => { try { make(); return 'made'; } catch (err) { return err.message; } };
      init.then(() => {
        const forced = {
          cipher: attempt(() => createCipher({ outbound: { cipherInfo: chacha, cipherKey: key, seqno: 0, onWrite() {}, forceNative: true } })),
          decipher: attempt(() => createDecipher({ inbound: { decipherInfo: chacha, decipherKey: key, seqno: 0, onPayload() {}, forceNative: true } })),
        };
        const loaded = Object.keys(require.cache).some((file) => file.endsWith('poly1305.js'));
        console.log(JSON.stringify({ bindingAvailable, loaded, externalMiB: process.memoryUsage().external / 1048576, forced }));
      });
    `;
    const result = runNodeForJson<{ bindingAvailable: boolean; loaded: boolean; externalMiB: number; forced: { cipher: string; decipher: string } }>(['-e', script]);
    // The service's machines build the binding (npm ci); without it ssh2 loads the module as before.
    expect(result.bindingAvailable).toBe(true);
    expect(result.loaded).toBe(false);
    // Loaded, the module's linear memory alone is 16 MiB of external memory.
    expect(result.externalMiB).toBeLessThan(8);
    // Asking for the JavaScript chacha20-poly1305 anyway gets a clear error, not a crash later.
    expect(result.forced.cipher).toMatch(/needs the WebAssembly poly1305, which is not loaded/);
    expect(result.forced.decipher).toMatch(/needs the WebAssembly poly1305, which is not loaded/);
  });

  it('destroys a channel whose output has ended without ending it again (which built an Error nobody saw)', async () => {
    const { Channel } = requireFromHere('ssh2/lib/Channel.js') as { Channel: new (...args: unknown[]) => NodeJS.ReadWriteStream & { destroy(): unknown } };
    const sent: string[] = [];
    const protocol = { channelData: () => sent.push('data'), channelEOF: () => sent.push('eof'), channelClose: () => sent.push('close') };
    const side = (id: number) => ({ id, window: 1 << 20, packetSize: 32768, state: 'open' });
    const channel = new Channel({ _protocol: protocol }, { type: 'session', incoming: side(0), outgoing: side(1) }, { server: true });
    const endCalls: unknown[][] = [];
    const end = channel.end.bind(channel);
    channel.end = ((...args: unknown[]) => (endCalls.push(args), end(...(args as [])))) as typeof channel.end;
    channel.end('key\n');
    await new Promise((resolve) => channel.once('finish', resolve));
    channel.destroy();
    // One end (ours), and the data, EOF and close on the wire as before.
    expect(endCalls).toHaveLength(1);
    expect(sent).toEqual(['data', 'eof', 'close']);
    // A channel destroyed before its output ended is still ended by destroy().
    const early = new Channel({ _protocol: protocol }, { type: 'session', incoming: side(2), outgoing: side(3) }, { server: true });
    early.destroy();
    await new Promise((resolve) => early.once('finish', resolve));
    expect((early as unknown as { writableEnded: boolean }).writableEnded).toBe(true);
  });
});

describe('curve25519 key exchange with the patched ssh2', () => {
  let server: ssh2.Server;
  let port: number;
  const negotiated: string[] = [];
  const serverErrors: Array<Error & { level?: string }> = [];

  beforeAll(async () => {
    const hostKey = ssh2.utils.generateKeyPairSync('ed25519').private;
    server = new ssh2.Server({ hostKeys: [hostKey] }, (conn) => {
      conn.on('handshake', (n) => negotiated.push(n.kex));
      conn.on('error', (err: Error & { level?: string }) => serverErrors.push(err));
      conn.on('authentication', (ctx) => ctx.accept());
      conn.on('ready', () =>
        conn.on('session', (acceptSession) =>
          acceptSession().on('exec', (acceptExec, _reject, info) => {
            const channel = acceptExec();
            channel.write(`kex ok: ${info.command}\n`);
            channel.exit(0);
            channel.end();
          }),
        ),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });

  it.each(CURVE25519)('ssh2 client to ssh2 server: %s', async (kex) => {
    const result = await new Promise<{ kex: string; out: string }>((resolve, reject) => {
      const client = new ssh2.Client();
      let clientKex = '';
      client.on('handshake', (n) => (clientKex = n.kex));
      client.on('error', reject);
      client.on('ready', () =>
        client.exec('ping', (err, channel) => {
          if (err) return reject(err);
          let out = '';
          channel.on('data', (d: Buffer) => (out += d));
          channel.on('close', () => {
            client.end();
            resolve({ kex: clientKex, out });
          });
        }),
      );
      client.connect({ host: '127.0.0.1', port, username: 'u', algorithms: { kex: [kex] }, readyTimeout: 10_000 });
    });
    expect(result).toEqual({ kex, out: 'kex ok: ping\n' });
    expect(negotiated.at(-1)).toBe(kex);
  });

  it.skipIf(!HAS_OPENSSH).each(CURVE25519)('OpenSSH client to ssh2 server: %s', async (kex) => {
    const key = makeKey('ed25519');
    const before = negotiated.length;
    const result = await openssh(port, key.privateKeyPath, ['ping'], { user: 'u', extra: ['-o', `KexAlgorithms=${kex}`] });
    expect(result).toEqual({ code: 0, stdout: 'kex ok: ping\n', stderr: '' });
    expect(negotiated.slice(before)).toEqual([kex]);
  });

  it.each([31, 33, 0])('a client public key of %i bytes fails the key exchange cleanly', async (length) => {
    const before = serverErrors.length;
    // 33 bytes with a leading zero: the server strips it for the exchange hash, but X25519 keys are
    // exactly 32 bytes (RFC 8731) and the secret must not be computed from it.
    const publicKey = length === 33 ? Buffer.concat([Buffer.alloc(1), randomBytes(32)]) : randomBytes(length);
    const reason = await rawCurve25519Init(port, publicKey);
    expect(reason).toBe(3); // SSH_DISCONNECT_KEY_EXCHANGE_FAILED
    const errors = serverErrors.slice(before);
    expect(errors.map((e) => [e.level, e.message])).toEqual([
      ['handshake', `Error while computing DH secret (25519): Invalid X25519 public key length: ${length}`],
    ]);
  });

  it('still serves after refused key exchanges', async () => {
    const result = await new Promise<boolean>((resolve, reject) => {
      const client = new ssh2.Client();
      client.on('error', reject).on('ready', () => {
        client.end();
        resolve(true);
      });
      client.connect({ host: '127.0.0.1', port, username: 'u', algorithms: { kex: ['curve25519-sha256'] }, readyTimeout: 10_000 });
    });
    expect(result).toBe(true);
  });
});

/**
 * A hand-written SSH client that sends KEXINIT (curve25519-sha256 only) then KEX_ECDH_INIT with
 * `publicKey` as Q_C, unencrypted as the protocol is at that point. Resolves with the reason code
 * of the server's SSH_MSG_DISCONNECT, or null if the server closed without one.
 */
function rawCurve25519Init(port: number, publicKey: Buffer): Promise<number | null> {
  const uint32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const string = (s: Buffer | string) => {
    const b = Buffer.from(s);
    return Buffer.concat([uint32(b.length), b]);
  };
  const packet = (payload: Buffer) => {
    let padding = 8 - ((5 + payload.length) % 8);
    if (padding < 4) padding += 8;
    return Buffer.concat([uint32(1 + payload.length + padding), Buffer.from([padding]), payload, Buffer.alloc(padding)]);
  };
  const kexinit = Buffer.concat([
    Buffer.from([20]), // SSH_MSG_KEXINIT
    randomBytes(16),
    ...['curve25519-sha256', 'ssh-ed25519', 'aes128-ctr', 'aes128-ctr', 'hmac-sha2-256', 'hmac-sha2-256', 'none', 'none', '', ''].map((s) =>
      string(s),
    ),
    Buffer.from([0]), // first_kex_packet_follows
    uint32(0),
  ]);
  const ecdhInit = Buffer.concat([Buffer.from([30]), string(publicKey)]); // SSH_MSG_KEX_ECDH_INIT

  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the server neither disconnected nor closed'));
    }, 10_000);
    const finish = (reason: number | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(reason);
    };
    let buffered = Buffer.alloc(0);
    let identSeen = false;
    socket.on('connect', () => socket.write(Buffer.concat([Buffer.from('SSH-2.0-rawtest\r\n'), packet(kexinit), packet(ecdhInit)])));
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!identSeen) {
        const eol = buffered.indexOf('\r\n');
        if (eol < 0) return;
        identSeen = true;
        buffered = buffered.subarray(eol + 2);
      }
      while (buffered.length >= 5) {
        const length = buffered.readUInt32BE(0);
        if (buffered.length < 4 + length) return;
        const padding = buffered[4]!;
        const payload = buffered.subarray(5, 4 + length - padding);
        buffered = buffered.subarray(4 + length);
        if (payload[0] === 1) return finish(payload.readUInt32BE(1)); // SSH_MSG_DISCONNECT
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => finish(null));
  });
}
