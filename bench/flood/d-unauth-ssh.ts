/**
 * D. Unauthenticated SSH from many addresses: connections that never finish their identification
 * line, each address within its own budgets.
 */
import { loopbackAddresses } from './attackers.js';
import { positiveEnv } from './env.js';
import type { Run } from './service.js';
import { runTcpFlood } from './tcp-flood.js';

const UNAUTH_ADDRESSES = positiveEnv('UNAUTH_ADDRESSES', 320);
const UNAUTH_PER_ADDRESS = positiveEnv('UNAUTH_PER_ADDRESS', 64);
const UNAUTH_RATE = positiveEnv('UNAUTH_RATE', 8);
const UNAUTH_MS = positiveEnv('UNAUTH_SECONDS', 40) * 1000;
const UNAUTH_SEND = process.env.UNAUTH_SEND || 'prefix';

export function runUnauthSsh(run: Run, options: { sayFileLimits: boolean }) {
  const payload = UNAUTH_SEND === 'line' ? 'SSH-2.0-flood\r\n' : 'SSH-2.0-';
  return runTcpFlood(
    run,
    {
      name: 'D',
      title: `D. Unauthenticated SSH from many addresses: ${UNAUTH_ADDRESSES} addresses × ${UNAUTH_PER_ADDRESS} connections sending only ${JSON.stringify(payload)}, ${UNAUTH_RATE} new per address a second, held ${UNAUTH_MS / 1000} s`,
      door: 'ssh',
      payload,
      roundsPerSecond: UNAUTH_RATE,
      slots: loopbackAddresses(UNAUTH_ADDRESSES).map((address) => ({ address, count: UNAUTH_PER_ADDRESS })),
      holdMs: UNAUTH_MS,
    },
    options,
  );
}
