/**
 * `npm run bench:sshsig`: what checking one SSHSIG costs, per key type: signs a challenge-sized
 * message once with the real `ssh-keygen -Y sign`, then times verifySshsig (parse + key import +
 * signature check) in batches and reports the median batch's µs per verification.
 * Env: BENCH_RUNS per batch (default 500), BENCH_BATCHES (default 7).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parsePublicKeyLine } from '../src/core/index.js';
import { verifySshsig } from '../src/core/sshsig.js';

const runs = Number(process.env.BENCH_RUNS ?? 500);
const batches = Number(process.env.BENCH_BATCHES ?? 7);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-bench-sshsig-'));
const message = `shell-auth challenge ${'x'.repeat(43)} for auth.example.com until 2026-11-27T17:00:00Z\n`;
const namespace = 'shell-auth@auth.example.com';

try {
  console.log(`${runs} verifications per batch, median of ${batches} batches\n`);
  for (const [name, args] of [
    ['ed25519', ['-t', 'ed25519']],
    ['ecdsa P-256', ['-t', 'ecdsa', '-b', '256']],
    ['ecdsa P-384', ['-t', 'ecdsa', '-b', '384']],
    ['rsa 2048', ['-t', 'rsa', '-b', '2048']],
    ['rsa 3072', ['-t', 'rsa', '-b', '3072']],
  ] as const) {
    const file = path.join(dir, name.replace(/\W/g, '_'));
    execFileSync('ssh-keygen', ['-q', ...args, '-N', '', '-f', file]);
    const parsed = parsePublicKeyLine(fs.readFileSync(`${file}.pub`, 'utf8'));
    if (!parsed.ok) throw new Error(parsed.reason);
    const armored = execFileSync('ssh-keygen', ['-Y', 'sign', '-n', namespace, '-f', file], { input: message, stdio: ['pipe', 'pipe', 'ignore'] }).toString();
    const expected = { key: parsed.key, namespace, message };
    if (!verifySshsig(armored, expected).ok) throw new Error(`${name}: the signature does not verify`);
    const perBatch: number[] = [];
    for (let b = 0; b < batches; b++) {
      const started = process.hrtime.bigint();
      for (let i = 0; i < runs; i++) verifySshsig(armored, expected);
      perBatch.push(Number(process.hrtime.bigint() - started) / 1e3 / runs);
    }
    perBatch.sort((a, b) => a - b);
    console.log(`${name.padEnd(12)} ${perBatch[Math.floor(batches / 2)]!.toFixed(1).padStart(8)} µs/verification (min ${perBatch[0]!.toFixed(1)}, max ${perBatch.at(-1)!.toFixed(1)})`);
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
