/**
 * The floor of bench/floor.ts on the Node side: an ssh2 server (the project's ssh2) doing one SSH
 * op the way shell-auth's `create` does, with nothing of shell-auth around it (no admission, no
 * access log, no database, no limits).
 *
 * The op: TCP connect, kex, auth none → publickey query → signed publickey (the signature is
 * verified here, as ssh2 leaves that to the server; any key of user `keys` whose signature
 * verifies gets in), session, exec `create ...` → exactly 100 bytes on stdout (a uuid v4 and 64
 * hex, from crypto), exit-status 0, EOF, close. Anything else: exit-status 1.
 *
 * ssh2 is configured as src/ssh/server.ts configures it: its default algorithm lists (the app
 * restricts none; against libssh that negotiates curve25519-sha256, ssh-ed25519 and
 * chacha20-poly1305, which bench/floor.ts checks), an ed25519 host key, and our own TCP listener
 * handing sockets to `injectSocket` with TCP_NODELAY on.
 *
 * usage: node --import tsx bench/floor/bare-ssh2.ts [plain|tuned] [HOST_KEY_FILE]
 *   plain  ssh2 as shipped: the host key as a PEM, each client key parsed for each signature check
 *   tuned  with src/ssh/ssh2-tuning.ts as shell-auth applies it: withDecodedKeys on the host key,
 *          DecodedKeyCache for client keys, coalesceWrites on each socket; and V8's allocation-site
 *          pretenuring off and the semi-spaces capped at 8 MB, as shell-auth starts by default
 *          (src/process/heap.ts)
 * The mode may also come from FLOOR_SSH2_MODE, the port from FLOOR_PORT (default: any free one).
 * The host key is generated at start unless a file is given. Prints `listening PORT` when ready.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import ssh2, { type AuthContext, type ParsedKey } from 'ssh2';
import { holdSemiSpaces, turnOffPretenuring } from '../../src/process/heap.js';
import { coalesceWrites, decodedKeysApplied, DecodedKeyCache, withDecodedKeys } from '../../src/ssh/ssh2-tuning.js';

const SSH_USER = 'keys';
const mode = process.argv[2] ?? process.env.FLOOR_SSH2_MODE ?? 'plain';
if (mode !== 'plain' && mode !== 'tuned') {
  console.error(`bare-ssh2: mode must be plain or tuned, not ${mode}`);
  process.exit(2);
}
const tuned = mode === 'tuned';
if (tuned) {
  turnOffPretenuring();
  holdSemiSpaces()(8); // MAX_SEMI_SPACE_MB's default
}

function parsed(key: Buffer | string, what: string): ParsedKey {
  const result = ssh2.utils.parseKey(key);
  if (result instanceof Error || Array.isArray(result)) throw new Error(`${what} is not a readable key`);
  return result;
}

const hostKeyFile = process.argv[3];
const hostKeyPem = hostKeyFile ? fs.readFileSync(hostKeyFile) : Buffer.from(ssh2.utils.generateKeyPairSync('ed25519').private);
if (parsed(hostKeyPem, 'the host key').type !== 'ssh-ed25519') throw new Error('the host key must be ssh-ed25519');

let hostKey: Buffer | ParsedKey = hostKeyPem;
if (tuned) {
  const decoded = withDecodedKeys(parsed(hostKeyPem, 'the host key'));
  if (!decodedKeysApplied(decoded)) console.error('bare-ssh2: ssh2 internals changed: the host key is not pre-decoded');
  hostKey = decoded;
}
const keyCache = new DecodedKeyCache();

/** Whether `signature` over `data` verifies with the key in `blob`: the cache (tuned) or a fresh parse (plain). */
function verifies(blob: Buffer, data: Buffer, signature: Buffer, hashAlgo: string | undefined): boolean {
  let key: ParsedKey | null;
  if (tuned) {
    key = keyCache.get(blob);
  } else {
    const result = ssh2.utils.parseKey(blob);
    key = result instanceof Error || Array.isArray(result) ? null : result;
  }
  return key !== null && key.verify(data, signature, hashAlgo) === true;
}

function authenticate(ctx: AuthContext): void {
  if (ctx.method !== 'publickey' || ctx.username !== SSH_USER) return ctx.reject(['publickey']);
  if (!ctx.signature || !ctx.blob) return ctx.accept(); // the query: "would you take this key?"
  if (verifies(ctx.key.data, ctx.blob, ctx.signature, ctx.hashAlgo)) return ctx.accept();
  return ctx.reject(['publickey']);
}

/** A uuid v4 (36 characters) and 64 hex: 100 characters, like shell-auth's keys. */
const newApiKey = () => randomUUID() + randomBytes(32).toString('hex');

const ssh = new ssh2.Server(
  // {key: ParsedKey} is passed through as is by ssh2's parser (as src/ssh/server.ts does).
  { hostKeys: [tuned ? { key: hostKey as unknown as Buffer } : hostKeyPem], ident: 'floor-ssh2' },
  (client) => {
    client.on('error', () => undefined); // a client that hangs up mid-op
    client.on('authentication', authenticate);
    client.on('session', (accept) => {
      const session = accept();
      session.once('exec', (acceptExec, _reject, info) => {
        const channel = acceptExec();
        const ok = info.command.startsWith('create ');
        if (ok) channel.write(newApiKey());
        // exit-status, then EOF and close (what src/ssh/session-io.ts does)
        channel.exit(ok ? 0 : 1);
        channel.end();
      });
    });
  },
);
ssh.on('error', (err: Error) => console.error(`bare-ssh2: ${err.message}`));

let coalescingChecked = false;
const tcp = net.createServer((socket) => {
  socket.on('error', () => undefined);
  // ssh2 writes every packet separately; with Nagle on, each waits for a delayed ACK.
  socket.setNoDelay(true);
  if (tuned) {
    const writes = coalesceWrites(socket);
    if (!coalescingChecked) {
      socket.once('data', () => {
        if (coalescingChecked) return;
        coalescingChecked = true;
        if (writes.writes === 0) console.error('bare-ssh2: ssh2 internals changed: packet writes are not coalesced');
      });
    }
  }
  ssh.injectSocket(socket);
});
tcp.listen(Number(process.env.FLOOR_PORT ?? 0), '127.0.0.1', () => {
  console.log(`listening ${(tcp.address() as net.AddressInfo).port}`);
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(0));
