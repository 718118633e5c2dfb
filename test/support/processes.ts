import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { expect } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/**
 * Runs `node ARGS` in the repository's root, in a process of its own (what a module costs to
 * load, V8 flags, globals replaced: nothing leaks into the test's), killed after `timeoutMs`; it
 * must exit 0, and its last line of output is its answer, as JSON.
 */
export function runNodeForJson<T>(args: string[], timeoutMs = 60_000): T {
  const run = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  expect(run.status, run.stderr).toBe(0);
  return JSON.parse(run.stdout.trim().split('\n').pop()!) as T;
}

/** Waits until `check` holds; fails naming `what`, with the output so far. */
export async function until(check: () => boolean | Promise<boolean>, what: string, output: () => string, ms = 45_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** How many times `needle` occurs in `text`. */
export const count = (text: string, needle: string) => text.split(needle).length - 1;

/** A GET on a connection of its own, so a cluster's round robin can hand each to another worker. */
export function getFresh(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}

/** The live child processes of `pid` (the workers of a cluster's primary). */
export function childrenOf(pid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return Number(fields[1]) === pid && fields[0] !== 'Z';
      } catch {
        return false;
      }
    })
    .map(Number);
}
