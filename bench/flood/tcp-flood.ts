/** What C and D share: a service with its own defaults, attacked by raw TCP connections from child processes. */
import { setTimeout as sleep } from 'node:timers/promises';
import { openFileLimit } from '../../src/process/open-files.js';
import { Attackers, checkAttackSize, SOCKETS_PER_PROCESS, type AttackJob, type AttackStats } from './attackers.js';
import { legitSshArgs } from './clients.js';
import { wholeEnv } from './env.js';
import { Observer, underAttack, type Observed, type ServiceUnderAttack } from './observer.js';
import { markdownTable, mb } from './report.js';
import { withService, type Run, type Service } from './service.js';

const RECONNECT_MS = wholeEnv('FLOOD_RECONNECT_S', 0) * 1000;

export type TcpAttack = {
  name: string;
  /** The table's heading, before what the run adds (attacker processes, reconnects). */
  title: string;
  door: 'ssh' | 'http';
  payload: string | null;
  roundsPerSecond: number;
  slots: { address: string; count: number }[];
  holdMs: number;
};

/** Starts a service with its own defaults, runs `attack` on it and prints what happened; first, if asked, the open-file limits at play. */
export function runTcpFlood(run: Run, attack: TcpAttack, options: { sayFileLimits: boolean }): Promise<TcpFloodResult> {
  return withService(run.dbUrl, run.work, {}, async (service) => {
    if (options.sayFileLimits) {
      const limit = (pid: number | 'self') => openFileLimit(`/proc/${pid}/limits`) ?? '?';
      console.log(`service open-file limit ${limit(service.pid)}; this bench's ${limit('self')}, its attackers' the same, each holding ≤ ${SOCKETS_PER_PROCESS} sockets\n`);
    }
    const port = attack.door === 'ssh' ? service.sshPort : service.httpPort;
    const job = { port, payload: attack.payload, roundsPerSecond: attack.roundsPerSecond, inFlight: 256, reconnectMs: RECONNECT_MS };
    const result = await tcpFlood(service, run.legitKey, attack.name, job, attack.slots, attack.holdMs);
    printTcpFlood(`${attack.title} (${result.processes} attacker processes${RECONNECT_MS ? `, reconnecting after ${RECONNECT_MS / 1000} s` : ''})`, result);
    return result;
  });
}

const CHECKPOINTS_S = [5, 20, 40];

type TcpFloodResult = {
  name: string;
  planned: number;
  processes: number;
  seconds: number;
  stats: AttackStats;
  openAt: { s: number; open: number }[];
  openPeak: number;
  service: ServiceUnderAttack;
};

/** Runs one raw TCP attack for `holdMs` against a service, observed throughout. */
async function tcpFlood(
  service: Service,
  legitKey: string,
  name: string,
  job: Omit<AttackJob, 'slots'>,
  slots: { address: string; count: number }[],
  holdMs: number,
): Promise<TcpFloodResult> {
  checkAttackSize(name, slots);
  const observer = new Observer(service, legitSshArgs(service, legitKey), 500);
  await sleep(2000); // baseline
  const logBefore = { ...service.counts };
  const start = Date.now();
  const attackers = new Attackers(job, slots);
  const openAt: { s: number; open: number }[] = [];
  let openPeak = 0;
  let final: AttackStats;
  let end = 0;
  let observed: Observed;
  // Polled every second by the wall clock; a checkpoint takes the poll answered nearest to it.
  const polls: { s: number; open: number }[] = [];
  try {
    for (let tick = 1; Date.now() - start < holdMs; tick++) {
      await sleep(Math.min(start + tick * 1000, start + holdMs) - Date.now());
      const stats = await attackers.stats();
      const s = (Date.now() - start) / 1000;
      polls.push({ s, open: stats.open });
      openPeak = Math.max(openPeak, stats.open);
      if (tick % 5 === 0) console.error(`${name}: ${s.toFixed(1)} s, ${stats.open} open, ${stats.accepted} accepted, ${stats.refused} refused, ${stats.closedAtOnce} closed at once`);
    }
    for (const c of CHECKPOINTS_S) {
      if (c * 1000 > holdMs) continue;
      const nearest = polls.reduce((a, b) => (Math.abs(b.s - c) < Math.abs(a.s - c) ? b : a));
      openAt.push({ s: c, open: nearest.open });
    }
  } finally {
    end = Date.now();
    final = await attackers.stop();
    observed = await observer.stop();
  }
  return {
    name,
    planned: slots.reduce((n, s) => n + s.count, 0),
    processes: attackers.processes,
    seconds: (end - start) / 1000,
    stats: final,
    openAt,
    openPeak,
    service: underAttack(observed, start, end, logBefore, service.counts),
  };
}

function printTcpFlood(title: string, r: TcpFloodResult) {
  console.log(`## ${title}\n`);
  const s = r.service;
  console.log(
    markdownTable(
      ['attack', 'accepted / refused', 'closed at once / later', `open at ${CHECKPOINTS_S.join(' / ')} s (peak)`, 'RSS before / peak MB', 'open files before / peak', 'healthz p50 / p99 / max ms', 'legit ssh ok / failed', 'service log lines (errors, EMFILE)'],
      [
        [
          `${r.planned} conns, ${r.seconds.toFixed(0)} s`,
          `${r.stats.accepted} / ${r.stats.refused}`,
          `${r.stats.closedAtOnce} / ${r.stats.closedLater}`,
          `${CHECKPOINTS_S.map((c) => r.openAt.find((o) => o.s === c)?.open ?? '–').join(' / ')} (${r.openPeak})`,
          `${mb(s.rssBeforeKb)} / ${mb(s.rssPeakKb)}`,
          `${s.fdsBefore} / ${s.fdsPeak}`,
          s.healthz.text99,
          `${s.ssh.ok} / ${s.ssh.failed}`,
          `${s.log.lines} (${s.log.errors}, ${s.log.emfile})`,
        ],
      ],
    ),
  );
  const errors = Object.entries(r.stats.errors).sort((a, b) => b[1] - a[1]);
  if (errors.length) console.log(`\nattacker socket errors: ${errors.map(([e, n]) => `${n}× ${e}`).join(', ')}`);
  if (r.stats.greeted) console.log(`\nattacker connections that received bytes from the server: ${r.stats.greeted}`);
  for (const failure of s.healthz.failures) console.log(`\n/healthz failures: ${failure}`);
  for (const failure of s.ssh.summary.failures) console.log(`\nlegit ssh failures: ${failure}`);
  console.log();
}
