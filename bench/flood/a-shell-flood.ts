/** A. Shell flood: shells with a pty flooded with '\r' by clients that read their output, or never do. */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type ssh2 from 'ssh2';
import { cpuMsOf } from '../measure.js';
import { sshConnect } from './clients.js';
import { positiveEnv } from './env.js';
import { Observer } from './observer.js';
import { latencySummary, markdownTable, mb, within } from './report.js';
import { withService, type Run, type Service } from './service.js';

const FLOOD_KB = positiveEnv('FLOOD_KB', 50);
const FLOOD_CONNS = positiveEnv('FLOOD_CONNS', 5);
const FLOOD_MAX_MS = positiveEnv('FLOOD_MAX_S', 20) * 1000;
const FLOOD_AFTER_MS = positiveEnv('FLOOD_AFTER_S', 3) * 1000;

/** Three floods, each on a fresh service: one connection not reading, one reading, FLOOD_CONNS not reading. */
export async function runShellFloods(run: Run): Promise<FloodResult[]> {
  const variants: [string, number, boolean][] = [
    ['1: not reading', 1, false],
    ['2: reading', 1, true],
    [`3: ${FLOOD_CONNS} conns, not reading`, FLOOD_CONNS, false],
  ];
  const flood: FloodResult[] = [];
  for (const [name, conns, reading] of variants) {
    const result = await withService(run.dbUrl, run.work, undefined, (service) => shellFlood(service, run.floodKey, name, conns, reading));
    flood.push(result);
    console.error(`A ${name}: done (${(result.busyMs / 1000).toFixed(1)} s)`);
  }
  console.log(`## A. Shell flood: ${FLOOD_KB} KB of '\\r' per connection, unlinked ed25519 key, pty 80x24\n`);
  console.log(
    markdownTable(
      ['variant', 'KB sent/conn', 'busy s', 'server CPU s', 'RSS before MB', 'RSS peak MB', `RSS +${FLOOD_AFTER_MS / 1000}s MB`, 'healthz p50 / p95 / max ms', 'notes'],
      flood.map((r) => [
        r.variant,
        `${r.kbSentPerConn}/${FLOOD_KB}`,
        `${(r.busyMs / 1000).toFixed(1)}${r.capped ? ' (cap)' : ''}`,
        (r.serverCpuMs / 1000).toFixed(1),
        mb(r.rssBeforeKb),
        mb(r.rssPeakKb),
        mb(r.rssEndKb),
        r.healthz.text,
        [r.outputMb !== null ? `read ${r.outputMb.toFixed(1)} MB` : '', r.closedByServer ? `${r.closedByServer} closed by server` : '']
          .filter(Boolean)
          .join('; ') || '–',
      ]),
    ),
  );
  for (const r of flood) for (const failure of r.healthz.failures) console.log(`\n/healthz failures during "${r.variant}": ${failure}`);
  console.log();
  return flood;
}

type FloodResult = {
  variant: string;
  connections: number;
  reading: boolean;
  kbSentPerConn: number;
  busyMs: number;
  capped: boolean;
  closedByServer: number;
  outputMb: number | null;
  rssBeforeKb: number;
  rssPeakKb: number;
  rssEndKb: number;
  serverCpuMs: number;
  healthz: ReturnType<typeof latencySummary>;
};

async function shellFlood(service: Service, keyFile: string, variant: string, connections: number, reading: boolean): Promise<FloodResult> {
  const privateKey = fs.readFileSync(keyFile);
  const clients: ssh2.Client[] = [];
  const channels: ssh2.ClientChannel[] = [];
  let outputBytes = 0;
  let closedByServer = 0;
  let ending = false;
  try {
    for (let i = 0; i < connections; i++) {
      const client = await sshConnect(service.sshPort, { username: 'keys', privateKey, readyTimeout: 30_000 });
      client.on('error', () => undefined);
      clients.push(client);
      const channel = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
        client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, ch) => (err ? reject(err) : resolve(ch))),
      );
      if (reading) {
        channel.on('data', (d: Buffer) => (outputBytes += d.length));
        channel.stderr.on('data', (d: Buffer) => (outputBytes += d.length));
      } else {
        // Never read: ssh2 stops granting window once 2 MB sit unread, so the server must hold the rest.
        channel.pause();
        channel.stderr.pause();
      }
      channel.on('close', () => {
        if (!ending) closedByServer++;
      });
      channel.on('error', () => undefined);
      channels.push(channel);
    }
    await sleep(500); // greeting and prompt out of the way

    const observer = new Observer(service);
    await sleep(300);
    const start = Date.now();
    const cpuStart = cpuMsOf(service.pid);
    const sent = channels.map(() => 0);
    let lastProgress = Date.now();
    const chunk = Buffer.alloc(1024, '\r');
    const writers = channels.map(async (channel, i) => {
      let open = true;
      channel.once('close', () => (open = false));
      while (open && sent[i]! < FLOOD_KB && Date.now() - start < FLOOD_MAX_MS) {
        const more = channel.write(chunk);
        sent[i]!++;
        lastProgress = Date.now();
        if (!more) {
          await new Promise<void>((resolve) => {
            const done = () => {
              channel.off('drain', done);
              channel.off('close', done);
              clearTimeout(timer);
              resolve();
            };
            const timer = setTimeout(done, Math.max(0, FLOOD_MAX_MS - (Date.now() - start)));
            channel.once('drain', done);
            channel.once('close', done);
          });
        }
      }
    });
    let allWritten = false;
    void Promise.all(writers).then(() => (allWritten = true));

    // The flood lasts while the server works on it: until writing is over (done or stalled for
    // 1 s) and the server has used < 10% of a core over the last second, or FLOOD_MAX_S.
    const cpuTrail: { t: number; cpu: number }[] = [];
    let end = 0;
    let capped = false;
    while (!end) {
      await sleep(100);
      const now = Date.now();
      cpuTrail.push({ t: now, cpu: cpuMsOf(service.pid) });
      const old = cpuTrail.find((s) => s.t >= now - 1000)!;
      const idle = now - start >= 1000 && now - old.t >= 900 && cpuTrail.at(-1)!.cpu - old.cpu < 100;
      const writingOver = allWritten || now - lastProgress >= 1000;
      if (idle && writingOver) end = now;
      else if (now - start >= FLOOD_MAX_MS) {
        end = now;
        capped = true;
      }
    }
    const cpuEnd = cpuMsOf(service.pid);
    await sleep(FLOOD_AFTER_MS);
    const afterEnd = Date.now();
    const observed = await observer.stop();

    const before = observed.samples.filter((s) => s.t <= start).at(-1) ?? observed.samples[0]!;
    const window = within(observed.samples, start, afterEnd + 1);
    return {
      variant,
      connections,
      reading,
      kbSentPerConn: Math.min(...sent),
      busyMs: end - start,
      capped,
      closedByServer,
      outputMb: reading ? outputBytes / 1048576 : null,
      rssBeforeKb: before.rssKb,
      rssPeakKb: Math.max(before.rssKb, ...window.map((s) => s.rssKb)),
      rssEndKb: observed.samples.at(-1)!.rssKb,
      serverCpuMs: cpuEnd - cpuStart,
      healthz: latencySummary(within(observed.probes, start, end)),
    };
  } finally {
    ending = true;
    for (const client of clients) client.destroy();
  }
}
