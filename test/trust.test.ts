import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  bindingOf,
  httpAccess,
  onConfirm,
  onLinkRequest,
  sshAccountOf,
  type Binding,
  type HttpTrustWindow,
} from '../src/core/trust.js';

// The trust rules as a table: every binding state × event × door, and what it must give.
// Pure: no database, no clock but the one passed in.

const NOW = new Date('2026-06-01T12:00:00Z');
const MINUTE = 60_000;
const SELF = 'user-self';
const OTHER = 'user-other';

const row = (userId: string, confirmedMinutesAgo: number, proven: boolean) =>
  bindingOf({
    user_id: userId,
    confirmed_at: new Date(NOW.getTime() - confirmedMinutesAgo * MINUTE),
    proven_at: proven ? new Date(NOW.getTime() - 2 * 24 * 60 * MINUTE) : null,
  });

/** The states, seen from the account acting (SELF). "fresh": confirmed 1 minute ago; "stale": 1 hour ago. */
const STATES: Record<string, Binding> = {
  unbound: bindingOf(undefined),
  'emailed, self, fresh': row(SELF, 1, false),
  'emailed, self, stale': row(SELF, 60, false),
  'proven, self, fresh': row(SELF, 1, true),
  'proven, self, stale': row(SELF, 60, true),
  'emailed, other account': row(OTHER, 1, false),
  'proven, other account': row(OTHER, 1, true),
};

const WINDOWS: Record<string, HttpTrustWindow> = { '15m': 15 * MINUTE, off: 'off', forever: 'forever' };

type Expected = {
  /** HTTP door (verify-key, api-keys, verify-public-key): per window 15m / off / forever. */
  httpAccess: [string, string, string];
  /** SSH door: whose identity the key is ('holder' = the binding's account; 'none' = anonymous). */
  ssh: 'holder' | 'none';
  /** POST /api/shell-auth (no proof of possession): per window 15m / off / forever. */
  requestHttp: [string, string, string];
  /** `ssh … login` (signature proves possession). */
  requestSsh: string;
  /** Pressing a link requested over HTTP / over SSH. */
  confirmHttpLink: string;
  confirmSshLink: string;
};

const TABLE: Record<string, Expected> = {
  unbound: {
    httpAccess: ['unverified', 'unverified', 'unverified'],
    ssh: 'none',
    requestHttp: ['send-link', 'send-link', 'send-link'],
    requestSsh: 'send-link',
    confirmHttpLink: 'insert emailed',
    confirmSshLink: 'insert proven',
  },
  'emailed, self, fresh': {
    httpAccess: ['trusted', 'disabled', 'trusted'],
    ssh: 'none',
    requestHttp: ['already-linked', 'send-link', 'already-linked'],
    requestSsh: 'already-linked, prove',
    confirmHttpLink: 'reconfirm',
    confirmSshLink: 'reconfirm, prove',
  },
  'emailed, self, stale': {
    httpAccess: ['expired', 'disabled', 'trusted'],
    ssh: 'none',
    requestHttp: ['send-link', 'send-link', 'already-linked'],
    requestSsh: 'already-linked, prove',
    confirmHttpLink: 'reconfirm',
    confirmSshLink: 'reconfirm, prove',
  },
  'proven, self, fresh': {
    httpAccess: ['trusted', 'disabled', 'trusted'],
    ssh: 'holder',
    requestHttp: ['already-linked', 'send-link', 'already-linked'],
    requestSsh: 'already-linked',
    confirmHttpLink: 'reconfirm',
    confirmSshLink: 'reconfirm, prove',
  },
  'proven, self, stale': {
    httpAccess: ['expired', 'disabled', 'trusted'],
    ssh: 'holder',
    requestHttp: ['send-link', 'send-link', 'already-linked'],
    requestSsh: 'already-linked',
    confirmHttpLink: 'reconfirm',
    confirmSshLink: 'reconfirm, prove',
  },
  'emailed, other account': {
    httpAccess: ['unverified', 'unverified', 'unverified'],
    ssh: 'none',
    requestHttp: ['refuse-taken', 'refuse-taken', 'refuse-taken'],
    requestSsh: 'send-link',
    confirmHttpLink: 'refuse-taken',
    confirmSshLink: 'take-over proven',
  },
  'proven, other account': {
    httpAccess: ['unverified', 'unverified', 'unverified'],
    ssh: 'holder',
    requestHttp: ['refuse-taken', 'refuse-taken', 'refuse-taken'],
    requestSsh: 'refuse-taken',
    confirmHttpLink: 'refuse-taken',
    confirmSshLink: 'refuse-taken',
  },
};

function describeRequest(binding: Binding, keyProven: boolean, window: HttpTrustWindow): string {
  const decision = onLinkRequest(binding, SELF, keyProven, window, NOW);
  return decision.outcome === 'already-linked' && decision.prove ? 'already-linked, prove' : decision.outcome;
}

/** What a confirmation writes, in words: the action, and what it does to the proof. */
function describeConfirm(binding: Binding, keyProven: boolean): string {
  const decision = onConfirm(binding, SELF, keyProven, NOW);
  if (decision.action === 'refuse-taken') return 'refuse-taken';
  const { patch } = decision;
  expect(patch.confirmed_at).toEqual(NOW); // every confirmation restarts the HTTP window
  if (decision.action === 'reconfirm') {
    expect(patch.verified_at).toBeUndefined(); // the first verification time stays
    return patch.proven_at === undefined ? 'reconfirm' : `reconfirm, ${patch.proven_at === NOW ? 'prove' : 'unprove'}`;
  }
  // A new binding (or a taken-over one) starts from scratch: no earlier proof carries over.
  expect(patch.verified_at).toEqual(NOW);
  return `${decision.action} ${patch.proven_at === null ? 'emailed' : 'proven'}`;
}

describe('trust rules: every binding state × event × door', () => {
  for (const [name, binding] of Object.entries(STATES)) {
    const expected = TABLE[name]!;
    it(name, () => {
      const windows = Object.values(WINDOWS);
      expect(windows.map((w) => httpAccess(binding, SELF, w, NOW)), 'HTTP access').toEqual(expected.httpAccess);
      const sshAccount = sshAccountOf(binding);
      expect(sshAccount === null ? 'none' : 'holder', 'SSH identity').toBe(expected.ssh);
      if (sshAccount !== null && binding.state !== 'unbound') expect(sshAccount).toBe(binding.userId);
      expect(windows.map((w) => describeRequest(binding, false, w)), 'request over HTTP').toEqual(expected.requestHttp);
      for (const w of windows) expect(describeRequest(binding, true, w), 'request over SSH').toBe(expected.requestSsh);
      expect(describeConfirm(binding, false), 'confirm an HTTP link').toBe(expected.confirmHttpLink);
      expect(describeConfirm(binding, true), 'confirm an SSH link').toBe(expected.confirmSshLink);
    });
  }

  it('the HTTP window ends exactly window ms after the last confirmation', () => {
    const binding = row(SELF, 15, false);
    expect(httpAccess(binding, SELF, 15 * MINUTE, new Date(NOW.getTime() - 1))).toBe('trusted');
    expect(httpAccess(binding, SELF, 15 * MINUTE, NOW)).toBe('expired');
  });

  it('an account that is not the holder, or no account, is never trusted over HTTP', () => {
    for (const binding of Object.values(STATES)) {
      expect(httpAccess(binding, null, 'forever', NOW)).toBe('unverified');
      expect(httpAccess(binding, 'someone-else', 'forever', NOW)).toBe('unverified');
    }
  });

  it('a new account (no id yet) asking for a bound key is refused unless it proves possession of an emailed binding', () => {
    for (const [name, binding] of Object.entries(STATES)) {
      const overHttp = onLinkRequest(binding, null, false, 'forever', NOW).outcome;
      const overSsh = onLinkRequest(binding, null, true, 'forever', NOW).outcome;
      expect(overHttp, name).toBe(binding.state === 'unbound' ? 'send-link' : 'refuse-taken');
      expect(overSsh, name).toBe(binding.state === 'proven' ? 'refuse-taken' : 'send-link');
    }
  });

  it('only core/trust.ts reads the binding timestamps: the doors never name them', () => {
    const grep = spawnSync('grep', ['-rlE', 'proven_at|confirmed_at', 'src/ssh', 'src/http', 'src/cli'], { encoding: 'utf8' });
    expect(grep.status, grep.stderr).toBe(1); // 1: no match; 2 would be an error
    expect(grep.stdout).toBe('');
  });
});
