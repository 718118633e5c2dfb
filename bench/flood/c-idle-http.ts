/**
 * C. Idle HTTP from one address: TCP connections to the HTTP port that send nothing, more than
 * the service may open files.
 */
import { positiveEnv } from './env.js';
import type { Run } from './service.js';
import { runTcpFlood } from './tcp-flood.js';

const IDLE_HTTP_CONNS = positiveEnv('IDLE_HTTP_CONNS', 22_000);
const IDLE_HTTP_FROM = process.env.IDLE_HTTP_FROM || '127.0.0.9';
const IDLE_HTTP_MS = positiveEnv('IDLE_HTTP_SECONDS', 45) * 1000;

export function runIdleHttp(run: Run) {
  return runTcpFlood(
    run,
    {
      name: 'C',
      title: `C. Idle HTTP from one address: ${IDLE_HTTP_CONNS} TCP connections from ${IDLE_HTTP_FROM} sending nothing, held ${IDLE_HTTP_MS / 1000} s`,
      door: 'http',
      payload: null,
      roundsPerSecond: 0,
      slots: [{ address: IDLE_HTTP_FROM, count: IDLE_HTTP_CONNS }],
      holdMs: IDLE_HTTP_MS,
    },
    { sayFileLimits: true },
  );
}
