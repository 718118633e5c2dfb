import { execFileSync } from 'node:child_process';
import path from 'node:path';

/**
 * Compiles the service into dist/ (tsc, incremental) before any test runs: the tests that start
 * it as a process run the JavaScript that `npm start` and production run, not TypeScript through
 * a loader.
 */
export default function setup() {
  const root = path.resolve(import.meta.dirname, '..', '..');
  execFileSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], {
    cwd: root,
    stdio: 'inherit',
  });
}
