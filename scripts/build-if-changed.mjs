#!/usr/bin/env node
// `npm start` and `npm run admin` compile first, but only when a source changed since the last
// successful build: tsc itself, even incremental with nothing to do, takes seconds to load and
// check the whole program, and the admin CLI should start at once. `npm run build` always compiles.
//
// "Changed": any file or directory under src/ or migrations/ (a directory's mtime moves when an
// entry is added, removed or renamed), or a tsconfig or package file, newer than the stamp this
// script writes after tsc succeeds. A failed build writes no stamp, so the next run tries again.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const stamp = path.join(root, 'dist', '.built-from-sources');
const entries = [path.join(root, 'dist', 'src', 'main.js'), path.join(root, 'dist', 'src', 'admin', 'main.js')];
const inputs = ['src', 'migrations', 'tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json'];

/** The newest mtime (ms) of `file` and, for a directory, of everything under it. */
function newest(file) {
  let stat;
  try {
    stat = fs.statSync(file);
  } catch {
    return 0; // absent (package-lock.json in a bare copy): nothing to compare
  }
  let latest = stat.mtimeMs;
  if (stat.isDirectory()) {
    for (const name of fs.readdirSync(file)) latest = Math.max(latest, newest(path.join(file, name)));
  }
  return latest;
}

function builtAt() {
  try {
    return fs.statSync(stamp).mtimeMs;
  } catch {
    return -1;
  }
}

const sourcesChanged = () => !entries.every((entry) => fs.existsSync(entry)) || inputs.some((input) => newest(path.join(root, input)) > builtAt());

if (sourcesChanged()) {
  // The stamp carries the time the build started: a source saved during the build is newer, and
  // the next run compiles again.
  const started = new Date();
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
  fs.writeFileSync(stamp, '');
  fs.utimesSync(stamp, started, started);
}
