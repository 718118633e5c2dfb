/** E. Authenticated sessions from many addresses: connections with a key linked to no account, each opening all the shells it may. */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type ssh2 from 'ssh2';
import { loopbackAddresses } from './attackers.js';
import { legitSshArgs, sshConnect } from './clients.js';
import { positiveEnv } from './env.js';
import { Observer, underAttack, type Observed, type ServiceUnderAttack } from './observer.js';
import { markdownTable, mb } from './report.js';
import { withService, type Run, type Service } from './service.js';

const SESSIONS_ADDRESSES = positiveEnv('SESSIONS_ADDRESSES', 160);
const SESSIONS_PER_ADDRESS = positiveEnv('SESSIONS_PER_ADDRESS', 32);
const SESSIONS_MAX = positiveEnv('SESSIONS_MAX', 16);
const SESSIONS_INFLIGHT = positiveEnv('SESSIONS_INFLIGHT', 32);
const SESSIONS_RAMP_MS = positiveEnv('SESSIONS_RAMP_S', 40) * 1000;
const SESSIONS_HOLD_MS = positiveEnv('SESSIONS_HOLD_S', 10) * 1000;
/** This process holds the connections: a bound on them, the machine's, not the service's. */
const MAX_HELD_SESSION_CONNS = 15_000;

/** On a service with its own defaults. */
export function runSessionFlood(run: Run): Promise<SessionFloodResult> {
  return withService(run.dbUrl, run.work, {}, async (service) => {
    const result = await sessionFlood(service, run.floodKey, run.legitKey);
    printSessionFlood(result);
    return result;
  });
}

type SessionFloodResult = {
  planned: number;
  rampS: number;
  authenticated: number;
  refused: number;
  refusals: Record<string, number>;
  sessions: number;
  sessionRefusals: number;
  maxSessionsSeen: number;
  closedByServer: number;
  heldAtEnd: number;
  service: ServiceUnderAttack;
};

async function sessionFlood(service: Service, keyFile: string, legitKey: string): Promise<SessionFloodResult> {
  const addresses = loopbackAddresses(SESSIONS_ADDRESSES);
  const planned = SESSIONS_ADDRESSES * SESSIONS_PER_ADDRESS;
  if (planned > MAX_HELD_SESSION_CONNS) throw new Error(`E: ${planned} connections, more than the ${MAX_HELD_SESSION_CONNS} this process may hold`);
  const privateKey = fs.readFileSync(keyFile);
  const observer = new Observer(service, legitSshArgs(service, legitKey), 500);
  await sleep(2000); // baseline
  const logBefore = { ...service.counts };
  const start = Date.now();
  const clients = new Set<ssh2.Client>();
  const refusals: Record<string, number> = {};
  let next = 0;
  let authenticated = 0;
  let refused = 0;
  let sessions = 0;
  let sessionRefusals = 0;
  let maxSessionsSeen = 0;
  let closedByServer = 0;
  let ending = false;
  const reason = (err: unknown) => (err instanceof Error ? err.message : String(err)).slice(0, 80);
  let rampEnd = 0;
  let reported = start;
  let end = 0;
  let heldAtEnd = 0;
  let observed: Observed;
  try {
    await Promise.all(
      Array.from({ length: SESSIONS_INFLIGHT }, async () => {
        while (next < planned && Date.now() - start < SESSIONS_RAMP_MS) {
          const address = addresses[next++ % addresses.length]!;
          let client: ssh2.Client;
          try {
            client = await sshConnect(service.sshPort, { username: 'keys', privateKey, readyTimeout: 20_000 }, address);
          } catch (err) {
            refused++;
            refusals[reason(err)] = (refusals[reason(err)] ?? 0) + 1;
            continue;
          }
          authenticated++;
          clients.add(client);
          client.on('error', () => undefined);
          client.once('close', () => {
            clients.delete(client);
            if (!ending) closedByServer++;
          });
          let opened = 0;
          while (opened < SESSIONS_MAX && Date.now() - start < SESSIONS_RAMP_MS) {
            const channel = await new Promise<ssh2.ClientChannel | null>((resolve) => {
              try {
                client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, ch) => resolve(err ? null : ch));
              } catch {
                resolve(null); // the connection is gone
              }
            });
            if (!channel) {
              sessionRefusals++;
              break;
            }
            channel.on('data', () => undefined);
            channel.stderr.on('data', () => undefined);
            channel.on('error', () => undefined);
            opened++;
            sessions++;
          }
          maxSessionsSeen = Math.max(maxSessionsSeen, opened);
          if (Date.now() - reported >= 5000) {
            reported = Date.now();
            console.error(`E: ${((reported - start) / 1000).toFixed(0)} s, ${authenticated} connections, ${sessions} sessions, ${refused} refused`);
          }
        }
      }),
    );
    rampEnd = Date.now();
    console.error(`E: ramp done in ${((rampEnd - start) / 1000).toFixed(1)} s: ${authenticated} connections, ${sessions} sessions; holding ${SESSIONS_HOLD_MS / 1000} s`);
    await sleep(SESSIONS_HOLD_MS);
    heldAtEnd = clients.size;
    end = Date.now();
  } finally {
    ending = true;
    for (const client of clients) client.destroy();
    observed = await observer.stop();
  }
  return {
    planned,
    rampS: (rampEnd - start) / 1000,
    authenticated,
    refused,
    refusals,
    sessions,
    sessionRefusals,
    maxSessionsSeen,
    closedByServer,
    heldAtEnd,
    service: underAttack(observed, start, end, logBefore, service.counts),
  };
}

function printSessionFlood(r: SessionFloodResult) {
  const s = r.service;
  const perConn = (growth: number) => (r.heldAtEnd ? growth / r.heldAtEnd : NaN);
  console.log(
    `## E. Authenticated sessions: ${SESSIONS_ADDRESSES} addresses × ${SESSIONS_PER_ADDRESS} connections, an unlinked ed25519 key, up to ${SESSIONS_MAX} shells (pty) each, ramp ≤ ${SESSIONS_RAMP_MS / 1000} s, held ${SESSIONS_HOLD_MS / 1000} s\n`,
  );
  console.log(
    markdownTable(
      ['connections ok / refused (held at end)', 'sessions (max per conn; refused)', 'ramp s', 'RSS before / peak / end MB', 'RSS per conn KB', 'open files before / peak', 'files per conn', 'healthz p50 / p99 / max ms', 'legit ssh ok / failed', 'service log lines (errors, EMFILE)'],
      [
        [
          `${r.authenticated} / ${r.refused} (${r.heldAtEnd})`,
          `${r.sessions} (${r.maxSessionsSeen}; ${r.sessionRefusals})`,
          r.rampS.toFixed(1),
          `${mb(s.rssBeforeKb)} / ${mb(s.rssPeakKb)} / ${mb(s.rssEndKb)}`,
          perConn(s.rssEndKb - s.rssBeforeKb).toFixed(0),
          `${s.fdsBefore} / ${s.fdsPeak}`,
          perConn(s.fdsEnd - s.fdsBefore).toFixed(2),
          s.healthz.text99,
          `${s.ssh.ok} / ${s.ssh.failed}`,
          `${s.log.lines} (${s.log.errors}, ${s.log.emfile})`,
        ],
      ],
    ),
  );
  const refusals = Object.entries(r.refusals).sort((a, b) => b[1] - a[1]);
  if (refusals.length) console.log(`\nconnections refused: ${refusals.map(([e, n]) => `${n}× ${e}`).join(', ')}`);
  if (r.closedByServer) console.log(`\nconnections closed by the server while held: ${r.closedByServer}`);
  for (const failure of s.healthz.failures) console.log(`\n/healthz failures: ${failure}`);
  for (const failure of s.ssh.summary.failures) console.log(`\nlegit ssh failures: ${failure}`);
  console.log();
}
