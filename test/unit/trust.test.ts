import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  bindingOf,
  httpAccess,
  onConfirm,
  onHttpMint,
  onLinkRequest,
  sshAccountOf,
  type Binding,
  type HttpTrustPolicy,
} from '../../src/core/trust.js';

// The trust rules as a table: every binding state × event × door, and what it must give.
// Pure: no database, no clock but the one passed in.

const NOW = new Date('2026-06-01T12:00:00Z');
const MINUTE = 60_000;
const SELF = 'user-self';
const OTHER = 'user-other';

/** A binding; `http`: the HTTP window, opened `minutesAgo` by an HTTP confirmation with `mints` spent. */
const row = (userId: string, proven: boolean, http: { minutesAgo: number; mints: number } | null = null) =>
  bindingOf({
    user_id: userId,
    proven_at: proven ? new Date(NOW.getTime() - 2 * 24 * 60 * MINUTE) : null,
    http_confirmed_at: http ? new Date(NOW.getTime() - http.minutesAgo * MINUTE) : null,
    http_mints: http?.mints ?? 0,
  });

/**
 * The states, seen from the account acting (SELF). HTTP window: "none" (never opened by an HTTP
 * confirmation, e.g. linked by `ssh … login`), "open" (1 minute ago, nothing minted), "spent"
 * (1 minute ago, one mint made), "stale" (opened an hour ago).
 */
const STATES: Record<string, Binding> = {
  unbound: bindingOf(undefined),
  'emailed, self, window none': row(SELF, false),
  'emailed, self, window open': row(SELF, false, { minutesAgo: 1, mints: 0 }),
  'emailed, self, window spent': row(SELF, false, { minutesAgo: 1, mints: 1 }),
  'emailed, self, window stale': row(SELF, false, { minutesAgo: 60, mints: 0 }),
  'proven, self, window none': row(SELF, true),
  'proven, self, window open': row(SELF, true, { minutesAgo: 1, mints: 0 }),
  'proven, self, window spent': row(SELF, true, { minutesAgo: 1, mints: 1 }),
  'proven, self, window stale': row(SELF, true, { minutesAgo: 60, mints: 0 }),
  'emailed, other account': row(OTHER, false, { minutesAgo: 1, mints: 0 }),
  'proven, other account': row(OTHER, true, { minutesAgo: 1, mints: 0 }),
};

/** 15m with one mint per confirmation (the defaults), 15m with no mint limit, off, forever (one mint). */
const POLICIES: Record<string, HttpTrustPolicy> = {
  default: { window: 15 * MINUTE, mintsPerConfirmation: 1 },
  unlimited: { window: 15 * MINUTE, mintsPerConfirmation: null },
  off: { window: 'off', mintsPerConfirmation: 1 },
  forever: { window: 'forever', mintsPerConfirmation: 1 },
};

type PerPolicy = [string, string, string, string];
type Expected = {
  /** HTTP door (verify-key, api-keys, verify-public-key), per policy default / unlimited / off / forever. */
  httpAccess: PerPolicy;
  /** An HTTP mint (spends one use): allowed, or the access that refuses it. */
  httpMint: PerPolicy;
  /** SSH door: whose identity the key is ('holder' = the binding's account; 'none' = anonymous). */
  ssh: 'holder' | 'none';
  /** POST /api/shell-auth (no proof of possession), per policy. */
  requestHttp: PerPolicy;
  /** `ssh … login` (signature proves possession): the same under every policy. */
  requestSsh: string;
  /** Pressing a link requested over HTTP / over SSH. */
  confirmHttpLink: string;
  confirmSshLink: string;
};

const T = 'trusted';
const A = 'already-linked';
const S = 'send-link';
const TABLE: Record<string, Expected> = {
  unbound: {
    httpAccess: ['unverified', 'unverified', 'unverified', 'unverified'],
    httpMint: ['unverified', 'unverified', 'unverified', 'unverified'],
    ssh: 'none',
    requestHttp: [S, S, S, S],
    requestSsh: S,
    confirmHttpLink: 'insert emailed, window opened',
    confirmSshLink: 'insert proven, window closed',
  },
  'emailed, self, window none': {
    httpAccess: ['not-opened', 'not-opened', 'disabled', 'not-opened'],
    httpMint: ['not-opened', 'not-opened', 'disabled', 'not-opened'],
    ssh: 'none',
    requestHttp: [S, S, S, S],
    requestSsh: 'already-linked, prove',
    confirmHttpLink: 'reconfirm, window opened',
    confirmSshLink: 'reconfirm, prove',
  },
  'emailed, self, window open': {
    httpAccess: [T, T, 'disabled', T],
    httpMint: ['allowed', 'allowed', 'disabled', 'allowed'],
    ssh: 'none',
    requestHttp: [A, A, S, A],
    requestSsh: 'already-linked, prove',
    confirmHttpLink: 'reconfirm, window opened',
    confirmSshLink: 'reconfirm, prove',
  },
  'emailed, self, window spent': {
    httpAccess: ['spent', T, 'disabled', 'spent'],
    httpMint: ['spent', 'allowed', 'disabled', 'spent'],
    ssh: 'none',
    requestHttp: [S, A, S, S],
    requestSsh: 'already-linked, prove',
    confirmHttpLink: 'reconfirm, window opened',
    confirmSshLink: 'reconfirm, prove',
  },
  'emailed, self, window stale': {
    httpAccess: ['expired', 'expired', 'disabled', T],
    httpMint: ['expired', 'expired', 'disabled', 'allowed'],
    ssh: 'none',
    requestHttp: [S, S, S, A],
    requestSsh: 'already-linked, prove',
    confirmHttpLink: 'reconfirm, window opened',
    confirmSshLink: 'reconfirm, prove',
  },
  'proven, self, window none': {
    httpAccess: ['not-opened', 'not-opened', 'disabled', 'not-opened'],
    httpMint: ['not-opened', 'not-opened', 'disabled', 'not-opened'],
    ssh: 'holder',
    requestHttp: [S, S, S, S],
    requestSsh: A,
    confirmHttpLink: 'reconfirm, window opened',
    confirmSshLink: 'reconfirm, prove',
  },
  'proven, self, window open': {
    httpAccess: [T, T, 'disabled', T],
    httpMint: ['allowed', 'allowed', 'disabled', 'allowed'],
    ssh: 'holder',
    requestHttp: [A, A, S, A],
    requestSsh: A,
    confirmHttpLink: 'reconfirm, window opened',
    confirmSshLink: 'reconfirm, prove',
  },
  'proven, self, window spent': {
    httpAccess: ['spent', T, 'disabled', 'spent'],
    httpMint: ['spent', 'allowed', 'disabled', 'spent'],
    ssh: 'holder',
    requestHttp: [S, A, S, S],
    requestSsh: A,
    confirmHttpLink: 'reconfirm, window opened',
    confirmSshLink: 'reconfirm, prove',
  },
  'proven, self, window stale': {
    httpAccess: ['expired', 'expired', 'disabled', T],
    httpMint: ['expired', 'expired', 'disabled', 'allowed'],
    ssh: 'holder',
    requestHttp: [S, S, S, A],
    requestSsh: A,
    confirmHttpLink: 'reconfirm, window opened',
    confirmSshLink: 'reconfirm, prove',
  },
  'emailed, other account': {
    httpAccess: ['unverified', 'unverified', 'unverified', 'unverified'],
    httpMint: ['unverified', 'unverified', 'unverified', 'unverified'],
    ssh: 'none',
    requestHttp: ['refuse-taken', 'refuse-taken', 'refuse-taken', 'refuse-taken'],
    requestSsh: S,
    confirmHttpLink: 'refuse-taken',
    confirmSshLink: 'take-over proven, window closed',
  },
  'proven, other account': {
    httpAccess: ['unverified', 'unverified', 'unverified', 'unverified'],
    httpMint: ['unverified', 'unverified', 'unverified', 'unverified'],
    ssh: 'holder',
    requestHttp: ['refuse-taken', 'refuse-taken', 'refuse-taken', 'refuse-taken'],
    requestSsh: 'refuse-taken',
    confirmHttpLink: 'refuse-taken',
    confirmSshLink: 'refuse-taken',
  },
};

function describeRequest(binding: Binding, keyProven: boolean, policy: HttpTrustPolicy): string {
  const decision = onLinkRequest(binding, SELF, keyProven, policy, NOW);
  return decision.outcome === 'already-linked' && decision.prove ? 'already-linked, prove' : decision.outcome;
}

function describeMint(binding: Binding, policy: HttpTrustPolicy): string {
  const decision = onHttpMint(binding, SELF, policy, NOW);
  if (!decision.allowed) return decision.access;
  const spent = binding.state === 'unbound' || binding.httpWindow === null ? NaN : binding.httpWindow.mints;
  expect(decision.patch).toEqual({ http_mints: spent + 1 });
  return 'allowed';
}

/** What a confirmation writes, in words: the action, the proof, and the HTTP window. */
function describeConfirm(binding: Binding, keyProven: boolean): string {
  const decision = onConfirm(binding, SELF, keyProven, NOW);
  if (decision.action === 'refuse-taken') return 'refuse-taken';
  const { patch } = decision;
  expect(patch.confirmed_at).toEqual(NOW);
  // Only an HTTP confirmation opens the HTTP window, with a fresh allowance; an SSH one leaves it.
  if (keyProven) expect(patch.http_mints === undefined || patch.http_confirmed_at === null).toBe(true);
  else expect([patch.http_confirmed_at, patch.http_mints]).toEqual([NOW, 0]);
  const window = keyProven ? 'window closed' : 'window opened';
  if (decision.action === 'reconfirm') {
    expect(patch.verified_at).toBeUndefined(); // the first verification time stays
    expect(patch.proven_at === null).toBe(false); // a proof is never taken away
    if (keyProven) expect(patch.http_confirmed_at).toBeUndefined(); // an SSH login leaves the window as it was
    return keyProven ? 'reconfirm, prove' : 'reconfirm, window opened';
  }
  // A new binding (or a taken-over one) starts from scratch: nothing of the old holder's carries over.
  expect(patch.verified_at).toEqual(NOW);
  return `${decision.action} ${patch.proven_at === null ? 'emailed' : 'proven'}, ${window}`;
}

describe('trust rules: every binding state × event × door', () => {
  const policies = Object.values(POLICIES);
  for (const [name, binding] of Object.entries(STATES)) {
    const expected = TABLE[name]!;
    it(name, () => {
      expect(policies.map((p) => httpAccess(binding, SELF, p, NOW)), 'HTTP access').toEqual(expected.httpAccess);
      expect(policies.map((p) => describeMint(binding, p)), 'HTTP mint').toEqual(expected.httpMint);
      const sshAccount = sshAccountOf(binding);
      expect(sshAccount === null ? 'none' : 'holder', 'SSH identity').toBe(expected.ssh);
      if (sshAccount !== null && binding.state !== 'unbound') expect(sshAccount).toBe(binding.userId);
      expect(policies.map((p) => describeRequest(binding, false, p)), 'request over HTTP').toEqual(expected.requestHttp);
      for (const p of policies) expect(describeRequest(binding, true, p), 'request over SSH').toBe(expected.requestSsh);
      expect(describeConfirm(binding, false), 'confirm an HTTP link').toBe(expected.confirmHttpLink);
      expect(describeConfirm(binding, true), 'confirm an SSH link').toBe(expected.confirmSshLink);
    });
  }

  it('the HTTP window ends exactly window ms after the HTTP confirmation', () => {
    const binding = row(SELF, false, { minutesAgo: 15, mints: 0 });
    expect(httpAccess(binding, SELF, POLICIES.default!, new Date(NOW.getTime() - 1))).toBe('trusted');
    expect(httpAccess(binding, SELF, POLICIES.default!, NOW)).toBe('expired');
  });

  it('HTTP_TRUST_MINTS=3 allows exactly three mints per confirmation', () => {
    const policy = { window: 15 * MINUTE, mintsPerConfirmation: 3 };
    const allowed = [0, 1, 2, 3].map((mints) => onHttpMint(row(SELF, false, { minutesAgo: 1, mints }), SELF, policy, NOW).allowed);
    expect(allowed).toEqual([true, true, true, false]);
  });

  it('an account that is not the holder, or no account, is never trusted over HTTP', () => {
    for (const binding of Object.values(STATES)) {
      expect(httpAccess(binding, null, POLICIES.forever!, NOW)).toBe('unverified');
      expect(httpAccess(binding, 'someone-else', POLICIES.forever!, NOW)).toBe('unverified');
    }
  });

  it('a new account (no id yet) asking for a bound key is refused unless it proves possession of an emailed binding', () => {
    for (const [name, binding] of Object.entries(STATES)) {
      const overHttp = onLinkRequest(binding, null, false, POLICIES.forever!, NOW).outcome;
      const overSsh = onLinkRequest(binding, null, true, POLICIES.forever!, NOW).outcome;
      expect(overHttp, name).toBe(binding.state === 'unbound' ? 'send-link' : 'refuse-taken');
      expect(overSsh, name).toBe(binding.state === 'proven' ? 'refuse-taken' : 'send-link');
    }
  });

  it('only core/trust.ts reads the binding timestamps: the doors never name them', () => {
    const grep = spawnSync('grep', ['-rlE', 'proven_at|confirmed_at|http_mints', 'src/ssh', 'src/http', 'src/admin', 'src/command'], { encoding: 'utf8' });
    expect(grep.status, grep.stderr).toBe(1); // 1: no match; 2 would be an error
    expect(grep.stdout).toBe('');
  });
});
