/**
 * Memory for idle sessions: BENCH_IDLE_SESSIONS (1,000) authenticated SSH connections, each with
 * an interactive shell open at its prompt, held while the server's RSS is read. They come from
 * four loopback addresses (127.0.0.1-4), under the per-address cap of 256 connections.
 */
import net from 'node:net';
import ssh2 from 'ssh2';
import { rssMbOfTree, table } from './measure.js';

const SESSIONS = Number(process.env.BENCH_IDLE_SESSIONS ?? 1000);
const ADDRESSES = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];
const OPENING_AT_ONCE = 16;

export async function benchIdleSessions(options: { sshPort: number; serverPid: number; privateKey: Buffer }): Promise<void> {
  const { sshPort, serverPid, privateKey } = options;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const before = rssMbOfTree(serverPid);
  const clients: ssh2.Client[] = [];
  const started = performance.now();
  let next = 0;
  try {
    await Promise.all(
      Array.from({ length: OPENING_AT_ONCE }, async () => {
        while (next < SESSIONS) {
          const index = next++;
          clients.push(await openIdleShell(sshPort, ADDRESSES[index % ADDRESSES.length]!, privateKey));
        }
      }),
    );
    const openMs = performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const held = rssMbOfTree(serverPid);
    console.log(`\nIdle sessions: ${clients.length} authenticated connections, each with a shell at its prompt (opened in ${(openMs / 1000).toFixed(1)} s)`);
    console.log(
      table(
        ['sessions', 'RSS before MB', 'RSS held MB', 'per session KB'],
        [[String(clients.length), before.toFixed(0), held.toFixed(0), (((held - before) * 1024) / clients.length).toFixed(0)]],
      ),
    );
    console.log(`\n${JSON.stringify({ idle_sessions: clients.length, rss_before_mb: before, rss_held_mb: held })}\n`);
  } finally {
    for (const client of clients) client.end();
  }
}

function openIdleShell(port: number, localAddress: string, privateKey: Buffer): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('error', reject);
    client.on('ready', () => {
      client.shell(false, (err, channel) => {
        if (err) return reject(err);
        let seen = '';
        const onData = (d: Buffer) => {
          seen += d;
          if (seen.includes('keys> ')) {
            channel.removeListener('data', onData);
            channel.on('data', () => undefined);
            resolve(client);
          }
        };
        channel.on('data', onData);
        channel.stderr.on('data', () => undefined);
      });
    });
    const sock = net.connect({ port, host: '127.0.0.1', localAddress }, () => client.connect({ sock, username: 'keys', privateKey, readyTimeout: 30_000 }));
    sock.on('error', reject);
  });
}
