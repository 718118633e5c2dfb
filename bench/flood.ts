/**
 * `npm run build && npx tsx bench/flood.ts`: resource-exhaustion attacks on the service, measured from outside.
 *
 * One file per scenario in bench/flood/, and what they share there (the service, the observer, the
 * attackers, the report); bench/service.ts and bench/measure.ts are shared with `npm run bench`.
 *
 * Starts the service as bench/create.ts does (bench/service.ts: the compiled service as a child process, fresh
 * database on the local Postgres, SSH_PORT/HTTP_PORT 0, ports read from its JSON log), one fresh
 * service process per scenario so memory numbers do not carry over, and measures:
 *
 *  A. Shell flood: a key linked to no account (any key gets a shell) opens an interactive shell
 *     with a pty and writes FLOOD_KB KB of '\r' as fast as the channel accepts, (1) never reading
 *     the output, (2) reading and discarding it, (3) FLOOD_CONNS such connections at once, not
 *     reading. Server RSS (VmRSS of the node process) is sampled every 100 ms during the flood and
 *     FLOOD_AFTER_S after it; `GET /healthz` latency every 200 ms during the flood (open loop: a
 *     request every 200 ms whether or not the previous one answered; one that fails or gets no
 *     answer within 10 s counts at the time it took, and is listed under the table). A flood ends
 *     when everything is written (or writes have stalled) and the server has been idle for 1 s,
 *     or after FLOOD_MAX_S.
 *  B. Crafted RSA keys: RSA_CONCURRENCY clients from RSA_FROM (127.0.0.2: the per-address budgets
 *     they spend are not the observer's; that address's connection and auth rates are lifted unless
 *     RSA_RATES=default, so the attack reaches the key offer) keep connecting for RSA_SECONDS, each offering an
 *     ssh-rsa public key with a 16384-bit modulus and signing with garbage (an ssh2 agent that
 *     holds no private key: the attacker needs none). Two variants: the same ssh-keygen key every
 *     time, and a freshly made-up modulus per connection (defeats any per-key cache). Meanwhile
 *     `/healthz` every 200 ms and a legitimate OpenSSH `ssh ... whoami` every 500 ms, plus the
 *     server's CPU time per second of attack. An idle phase first gives the baseline.
 *
 * C, D and E attack the service as a whole rather than one address's budgets, so they start it
 * with its own defaults (A and B raise SSH_MAX_UNAUTH_PER_IP, since all their attackers share
 * one address) and come from other loopback addresses than the observer's 127.0.0.1. Each measures,
 * from 2 s before the attack to its end: the server's RSS (every 100 ms) and open files (entries
 * of /proc/PID/fd, every 500 ms), `/healthz` from 127.0.0.1 every 200 ms (as in A), and a
 * legitimate OpenSSH `ssh -o BatchMode=yes ... whoami` with a throwaway key every 500 ms (as in B;
 * ok = exit 0 with the key's fingerprint, killed after 20 s). Raw TCP attackers (C, D) run in
 * child processes of at most ATTACK_SOCKETS_PER_PROCESS sockets each, so the attacker never runs
 * out of its own file descriptors (the bench's fd limit is printed; the service's too); they
 * count connections accepted (TCP handshake done), refused (connect failed or no handshake within
 * 10 s), closed at once (by the server within 1 s of connecting), closed later, and still open at
 * 5 s, 20 s and 40 s after the attack starts. A slot whose connection is closed reconnects after
 * FLOOD_RECONNECT_S seconds (0: never: the attacker only holds what it got).
 *
 *  C. Idle HTTP from one address: IDLE_HTTP_CONNS TCP connections to the HTTP port from
 *     IDLE_HTTP_FROM (bound as the local address), sending nothing, held for IDLE_HTTP_SECONDS.
 *     Beyond the service's file limit both doors fail (and new database connections would: the
 *     table counts the service's error and EMFILE log lines); the 5/20/40 s counts show when the
 *     header/idle timeout really closes them.
 *  D. Unauthenticated SSH from many addresses: UNAUTH_ADDRESSES loopback addresses (127.0.0.2,
 *     127.0.0.3, …, skipping .0/.255) × UNAUTH_PER_ADDRESS TCP connections to the SSH port, each
 *     sending only `SSH-2.0-` (no end of line: the server waits for the rest of its identification
 *     until the login grace time), held for UNAUTH_SECONDS. Connections are opened in rounds of one
 *     per address, UNAUTH_RATE rounds a second (under the default 10 new connections per address a
 *     second, so the per-address rate limit does not hide the attack; the per-address caps stay at
 *     their defaults: the point is many addresses each inside its budget). UNAUTH_SEND=line sends
 *     a whole identification line (`SSH-2.0-flood\r\n`) instead.
 *  E. Authenticated sessions from many addresses: SESSIONS_ADDRESSES addresses ×
 *     SESSIONS_PER_ADDRESS ssh2 connections authenticating with one key linked to no account (any
 *     key gets in), each then opening interactive shells (pty 80x24, output read and discarded)
 *     one after another until the server refuses one or SESSIONS_MAX are open; SESSIONS_INFLIGHT
 *     connections being set up at once, round-robin over the addresses (so per-address rates stay
 *     low), for at most SESSIONS_RAMP_S, then everything held SESSIONS_HOLD_S. RSS and open files
 *     in total and per connection held (growth over the baseline divided by the connections still
 *     open at the end). These connections are held by this process, so the total is capped at 15,000.
 *
 * Env: BENCH_ROOT (service checkout, default: this one), BENCH_PG_URL (default
 * postgres://postgres@127.0.0.1:5432/test: a database is created beside it and dropped),
 * BENCH_ATTACKS (A,B,C,D,E), FLOOD_KB (50), FLOOD_CONNS (5), FLOOD_MAX_S (20), FLOOD_AFTER_S (3),
 * RSA_SECONDS (10), RSA_CONCURRENCY (16), RSA_TRIES (3 keys offered per connection),
 * RSA_FROM (127.0.0.2), RSA_RATES (lifted | default), RSA_MODES (same,fresh; also bige: 3072-bit modulus with a 3070-bit exponent), RSA_KEY (default /tmp/shell-auth-bench-rsa16384, made with ssh-keygen
 * if missing, which takes minutes), IDLE_HTTP_CONNS (22000: more than the 20,000 files a process
 * may open here), IDLE_HTTP_FROM (127.0.0.9), IDLE_HTTP_SECONDS (45), UNAUTH_ADDRESSES (320),
 * UNAUTH_PER_ADDRESS (64, the default SSH_MAX_UNAUTH_PER_IP), UNAUTH_RATE (8), UNAUTH_SECONDS (40),
 * UNAUTH_SEND (prefix | line), FLOOD_RECONNECT_S (0), ATTACK_SOCKETS_PER_PROCESS (8000),
 * SESSIONS_ADDRESSES (160), SESSIONS_PER_ADDRESS (32), SESSIONS_MAX (16), SESSIONS_INFLIGHT (32),
 * SESSIONS_RAMP_S (40), SESSIONS_HOLD_S (10). All attacks stop by themselves within their time
 * bounds (C, D: the hold time; E: ramp + hold) and close every connection they opened; no more
 * than 60,000 attacker sockets are allowed in all, and no more per address than 80% of the local
 * ports the attackers bind explicitly (10000-65535).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runShellFloods } from './flood/a-shell-flood.js';
import { runCraftedRsa, sameModeKeyLine } from './flood/b-crafted-rsa.js';
import { runIdleHttp } from './flood/c-idle-http.js';
import { keygen } from './flood/clients.js';
import { runUnauthSsh } from './flood/d-unauth-ssh.js';
import { runSessionFlood } from './flood/e-sessions.js';
import { ROOT, type Run } from './flood/service.js';
import { withFreshDatabase } from './service.js';

const attacks = (process.env.BENCH_ATTACKS || 'A,B,C,D,E').toUpperCase().split(',');

/** `git` about ROOT, or `fallback` where it is not a checkout. */
function git(args: string[], fallback: string): string {
  try {
    return execFileSync('git', ['-C', ROOT, ...args]).toString().trim();
  } catch {
    return fallback;
  }
}

async function main() {
  const commit = git(['rev-parse', '--short', 'HEAD'], '?');
  const dirty = git(['status', '--porcelain', '--untracked-files=no'], '') ? ' + uncommitted changes' : '';
  const sameKeyLine = attacks.includes('B') ? sameModeKeyLine() : '';

  await withFreshDatabase('shell_auth_flood', async (dbUrl) => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-flood-'));
    try {
      const run: Run = { dbUrl, work, floodKey: path.join(work, 'flood_ed25519'), legitKey: path.join(work, 'legit_ed25519') };
      keygen(run.floodKey);
      keygen(run.legitKey);
      const results: Record<string, unknown> = { root: ROOT, commit: commit + dirty };
      console.log(`# shell-auth flood bench: ${ROOT} @ ${commit}${dirty}`);
      console.log(`${os.cpus().length} CPUs shared by service, Postgres and load generator; node ${process.version}\n`);
      if (attacks.includes('A')) results.flood = await runShellFloods(run);
      if (attacks.includes('B')) results.rsa = await runCraftedRsa(run, sameKeyLine);
      if (attacks.includes('C')) results.idleHttp = await runIdleHttp(run);
      if (attacks.includes('D')) results.unauthSsh = await runUnauthSsh(run, { sayFileLimits: !attacks.includes('C') });
      if (attacks.includes('E')) results.sessions = await runSessionFlood(run);
      console.log(`\n<!-- ${JSON.stringify(results)} -->`);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
}

await main();
