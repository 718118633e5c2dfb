/**
 * B. Crafted RSA keys: clients offering huge ssh-rsa keys and signing with garbage, so that each
 * failed signature check costs the server what a real one would.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import ssh2 from 'ssh2';
import { clientCpuMs, cpuMsOf } from '../measure.js';
import { legitSshArgs } from './clients.js';
import { positiveEnv } from './env.js';
import { Observer } from './observer.js';
import { latencySummary, markdownTable, within } from './report.js';
import { ONE_ADDRESS_ENV, withService, type Run } from './service.js';

const RSA_MS = positiveEnv('RSA_SECONDS', 10) * 1000;
const RSA_CONCURRENCY = positiveEnv('RSA_CONCURRENCY', 16);
const RSA_TRIES = positiveEnv('RSA_TRIES', 3);
const rsaModes = (process.env.RSA_MODES || 'same,fresh').split(',');
const RSA_KEY = process.env.RSA_KEY || '/tmp/shell-auth-bench-rsa16384';
/** Not the observer's 127.0.0.1: the per-address budgets the attack spends must not refuse the observer's ssh. */
const RSA_FROM = process.env.RSA_FROM || '127.0.0.2';

/**
 * RSA_FROM's connection and authentication rates lifted (RSA_RATES=default keeps them): at the
 * default 10 connections a second per address, all but the first few attackers are refused
 * before they offer a key, and the phase measures the rate limit, not what a crafted key costs.
 */
const RSA_LIFTED = { ...ONE_ADDRESS_ENV, SSH_CONNECTIONS_PER_SECOND: '100000', SSH_AUTH_PER_MINUTE: '1000000' };

/** The `same` mode's key line, made before anything starts (ssh-keygen takes minutes), or '' without that mode. */
export function sameModeKeyLine(): string {
  return rsaModes.includes('same') ? rsaKeyLine() : '';
}

/** An idle baseline, then each of RSA_MODES, on one service watched throughout. */
export function runCraftedRsa(run: Run, sameKeyLine: string) {
  return withService(run.dbUrl, run.work, process.env.RSA_RATES === 'default' ? undefined : RSA_LIFTED, async (service) => {
    const observer = new Observer(service, legitSshArgs(service, run.legitKey));
    const phases: { name: string; from: number; to: number; cpuMs: number; genCpuMs: number; connections?: number; signatures?: number }[] = [];
    const idleFrom = Date.now();
    const idleCpu = cpuMsOf(service.pid);
    const idleGen = clientCpuMs();
    await sleep(2500);
    phases.push({ name: 'idle (baseline)', from: idleFrom, to: Date.now(), cpuMs: cpuMsOf(service.pid) - idleCpu, genCpuMs: clientCpuMs() - idleGen });
    for (const mode of rsaModes) {
      const from = Date.now();
      const cpu = cpuMsOf(service.pid);
      const gen = clientCpuMs();
      const { connections, signatures } = await rsaAttack(service.sshPort, mode, sameKeyLine);
      const name =
        mode === 'fresh'
          ? 'attack: new made-up 16384-bit modulus per connection'
          : mode === 'bige'
            ? 'attack: made-up 3072-bit modulus, 3070-bit exponent'
            : 'attack: same ssh-keygen 16384-bit key';
      phases.push({ name, from, to: Date.now(), cpuMs: cpuMsOf(service.pid) - cpu, genCpuMs: clientCpuMs() - gen, connections, signatures });
      console.error(`B ${mode}: ${connections} connections`);
      await sleep(1000); // let the tail of the attack drain before the next phase
    }
    const observed = await observer.stop();
    const rows = phases.map((p) => {
      const seconds = (p.to - p.from) / 1000;
      return {
        ...p,
        seconds,
        cpuMsPerS: p.cpuMs / seconds,
        healthz: latencySummary(within(observed.probes, p.from, p.to)),
        ssh: latencySummary(within(observed.sshRuns, p.from, p.to)),
      };
    });
    console.log(`## B. Crafted RSA keys: ${RSA_CONCURRENCY} concurrent attackers, ${RSA_TRIES} offers of an ssh-rsa key per connection (as named per phase), garbage signatures from a key-less agent\n`);
    console.log(
      markdownTable(
        ['phase', 's', 'connections (/s)', 'garbage sigs sent', 'server CPU ms/s', 'server CPU ms/conn', 'generator CPU ms/s', 'healthz p50 / p95 / max ms', 'ssh whoami p50 / p95 / max ms'],
        rows.map((r) => [
          r.name,
          r.seconds.toFixed(1),
          r.connections === undefined ? '–' : `${r.connections} (${(r.connections / r.seconds).toFixed(1)})`,
          r.signatures === undefined ? '–' : String(r.signatures),
          r.cpuMsPerS.toFixed(0),
          r.connections ? (r.cpuMs / r.connections).toFixed(1) : '–',
          (r.genCpuMs / r.seconds).toFixed(0),
          r.healthz.text,
          r.ssh.text,
        ]),
      ),
    );
    for (const r of rows) {
      for (const failure of r.healthz.failures) console.log(`\n/healthz failures during "${r.name}": ${failure}`);
      for (const failure of r.ssh.failures) console.log(`\nssh whoami failures during "${r.name}": ${failure}`);
    }
    console.log();
    return rows;
  });
}

function sshString(data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  return Buffer.concat([length, data]);
}

/** A made-up odd number of exactly `bits` bits (top bit set), big-endian. */
function oddNumber(bits: number): Buffer {
  const bytes = randomBytes(Math.ceil(bits / 8));
  const top = (bits - 1) % 8;
  bytes[0] = (bytes[0]! & ((1 << top) - 1)) | (1 << top);
  bytes[bytes.length - 1]! |= 1;
  return bytes;
}

/** As an SSH mpint: a leading zero byte when the top bit is set. */
const mpint = (n: Buffer) => sshString(n[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), n]) : n);

/**
 * An ssh-rsa public key line with a made-up odd modulus (no primes needed): 16384 bits with
 * e = 65537, or ('bige') 3072 bits with a 3070-bit exponent. OpenSSL caps e at 64 bits only for
 * moduli above 3072 bits, so the latter makes each verify cost about a private-key operation.
 */
function craftedRsaLine(kind: 'big-n' | 'big-e'): string {
  const exponent = kind === 'big-e' ? oddNumber(3070) : Buffer.from([0x01, 0x00, 0x01]);
  const modulus = oddNumber(kind === 'big-e' ? 3072 : 16384);
  const blob = Buffer.concat([sshString(Buffer.from('ssh-rsa')), mpint(exponent), mpint(modulus)]);
  return `ssh-rsa ${blob.toString('base64')} crafted`;
}

/** An agent that holds only public keys and "signs" with random bytes of the modulus's length. */
class GarbageAgent extends ssh2.BaseAgent {
  signatures = 0;
  constructor(
    private readonly lines: string[],
    private readonly modulusBytes: number,
  ) {
    super();
  }
  override getIdentities(cb: (err: Error | undefined, keys?: string[]) => void) {
    cb(undefined, this.lines);
  }
  override sign(_key: unknown, _data: Buffer, options: unknown, cb?: (err: Error | undefined, signature?: Buffer) => void) {
    const done = (typeof options === 'function' ? options : cb) as (err: Error | undefined, signature?: Buffer) => void;
    this.signatures++;
    const signature = randomBytes(this.modulusBytes);
    signature[0] = 0x01; // below the modulus, so the server does the full modexp
    done(undefined, signature);
  }
}

function attackOnce(port: number, agent: GarbageAgent): Promise<void> {
  return new Promise((resolve) => {
    const client = new ssh2.Client();
    const timer = setTimeout(() => client.destroy(), 30_000);
    const finish = () => {
      clearTimeout(timer);
      resolve();
    };
    client.on('error', () => undefined); // "All configured authentication methods failed" is the point
    client.on('ready', () => client.end()); // would be a bug in the server
    client.on('close', finish);
    const sock = net.connect({ port, host: '127.0.0.1', localAddress: RSA_FROM }, () => {
      sock.setNoDelay(true);
      client.connect({ sock, username: 'keys', agent, authHandler: ['agent'], readyTimeout: 30_000 });
    });
    sock.on('error', () => {
      client.destroy();
      finish();
    });
  });
}

async function rsaAttack(port: number, mode: string, sameKeyLine: string) {
  let connections = 0;
  let signatures = 0;
  const deadline = Date.now() + RSA_MS;
  await Promise.all(
    Array.from({ length: RSA_CONCURRENCY }, async () => {
      while (Date.now() < deadline) {
        const lines = Array.from({ length: RSA_TRIES }, () =>
          mode === 'fresh' ? craftedRsaLine('big-n') : mode === 'bige' ? craftedRsaLine('big-e') : sameKeyLine,
        );
        const agent = new GarbageAgent(lines, mode === 'bige' ? 384 : 2048);
        await attackOnce(port, agent);
        connections++;
        signatures += agent.signatures;
      }
    }),
  );
  return { connections, signatures };
}

function rsaKeyLine(): string {
  if (!fs.existsSync(`${RSA_KEY}.pub`)) {
    console.error(`generating ${RSA_KEY} (ssh-keygen -t rsa -b 16384, takes minutes; cached for next time)`);
    execFileSync('ssh-keygen', ['-q', '-t', 'rsa', '-b', '16384', '-N', '', '-C', 'bench-rsa16384', '-f', RSA_KEY]);
  }
  return fs.readFileSync(`${RSA_KEY}.pub`, 'utf8').trim();
}
