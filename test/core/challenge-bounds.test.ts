import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AppError,
  CHALLENGE_KEEP_MS,
  CHALLENGE_TTL_MS,
  CHALLENGES_PER_KEY,
  issueChallenge,
  redeemProof,
  sweepChallenges,
  type Challenge,
  type CoreDeps,
} from '../../src/core/index.js';
import * as challengeBounds from '../../migrations/0006_challenge_bounds.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';
import { openTestDatabase, usingPostgres } from '../support/database.js';
import { makeKey, type TestKey } from '../support/keys.js';

// Proof challenges are bounded per key and requester (a new one replaces the oldest of the same
// key asked from the same address group beyond a few) and go minutes after they expire: asking
// from many addresses grows the table only by a few rows per address, each budgeted, and asking
// for someone else's (public) key never replaces their challenges.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

const origin = { channel: 'http' as const, ip: '192.0.2.77' };

const issue = (key: TestKey) => issueChallenge(core.deps, publicKeyOf(key.publicKey), origin);

/** `ssh-keygen -Y sign` over the challenge's message, then redeemed: 'ok' or the refusal's detail. */
async function redeem(key: TestKey, issued: Pick<Challenge, 'challenge' | 'namespace' | 'message'>, deps: CoreDeps = core.deps): Promise<string> {
  const signature = execFileSync('ssh-keygen', ['-Y', 'sign', '-n', issued.namespace, '-f', key.privateKeyPath], {
    input: issued.message,
    stdio: ['pipe', 'pipe', 'ignore'],
  }).toString();
  try {
    await redeemProof(deps, publicKeyOf(key.publicKey), { challenge: issued.challenge, ssh_signature: signature }, origin);
    return 'ok';
  } catch (err) {
    if (err instanceof AppError && err.code === 'PROOF_INVALID') return err.detail ?? '';
    throw err;
  }
}

function rowsOf(key: TestKey, deps: CoreDeps = core.deps) {
  return deps.db.selectFrom('ssh_challenges').selectAll().where('key_blob', '=', publicKeyOf(key.publicKey).blob).execute();
}

describe('challenges per key', () => {
  it(`keeps the newest ${CHALLENGES_PER_KEY} of 20: those still redeem, the older ones are refused as never issued`, async () => {
    const key = makeKey();
    const issued: Challenge[] = [];
    for (let i = 0; i < 20; i++) issued.push(await issue(key)); // the test clock stands still: one instant
    expect(await rowsOf(key)).toHaveLength(CHALLENGES_PER_KEY);

    const newest = issued.slice(-CHALLENGES_PER_KEY);
    for (const challenge of issued.slice(0, 3)) expect(await redeem(key, challenge)).toBe('challenge is not one this server issued');
    expect(await redeem(key, issued[20 - CHALLENGES_PER_KEY - 1]!)).toBe('challenge is not one this server issued');
    for (const challenge of newest) expect(await redeem(key, challenge)).toBe('ok');
  });

  it('counts only unused ones, and only its own key', async () => {
    const key = makeKey();
    const other = makeKey();
    const otherChallenge = await issue(other);
    const used = await issue(key);
    expect(await redeem(key, used)).toBe('ok');
    for (let i = 0; i < CHALLENGES_PER_KEY; i++) await issue(key);
    // The used one stays (a replay hears "already used"); the other key's is untouched.
    expect(await rowsOf(key)).toHaveLength(CHALLENGES_PER_KEY + 1);
    expect(await redeem(key, used)).toBe('challenge was already used: ask for a new one');
    expect(await redeem(other, otherChallenge)).toBe('ok');
  });

  it.runIf(usingPostgres)('stays bounded when issues for one key race (Postgres: many connections)', async () => {
    const key = makeKey();
    await Promise.all(Array.from({ length: 30 }, () => issue(key)));
    // Racing issues do not see each other's rows; the next one trims back to the bound.
    const last = await issue(key);
    expect(await rowsOf(key)).toHaveLength(CHALLENGES_PER_KEY);
    expect(await redeem(key, last)).toBe('ok');
  });
});

describe('expired challenges', () => {
  it(`are deleted by the sweep ${CHALLENGE_KEEP_MS / 60_000} minutes after they expire, saying "expired" until then`, async () => {
    const key = makeKey();
    const expiring = await issue(key);
    const used = await issue(key);
    expect(await redeem(key, used)).toBe('ok');
    core.clock.advance(CHALLENGE_TTL_MS + CHALLENGE_KEEP_MS - 1);
    expect(await sweepChallenges(core.deps)).toBeGreaterThanOrEqual(0);
    expect(await rowsOf(key)).toHaveLength(2);
    expect(await redeem(key, expiring)).toBe('challenge expired: ask for a new one');

    core.clock.advance(2);
    expect(await sweepChallenges(core.deps)).toBeGreaterThanOrEqual(2);
    expect(await rowsOf(key)).toHaveLength(0);
    expect(await redeem(key, expiring)).toBe('challenge is not one this server issued');
    expect(await redeem(key, used)).toBe('challenge is not one this server issued');
  });

  it("of a key go when that key asks for a new one, without waiting for the sweep", async () => {
    const key = makeKey();
    for (let i = 0; i < 3; i++) await issue(key);
    core.clock.advance(CHALLENGE_TTL_MS + CHALLENGE_KEEP_MS + 1);
    const fresh = await issue(key);
    expect(await rowsOf(key)).toHaveLength(1);
    expect(await redeem(key, fresh)).toBe('ok');
  });
});

describe('challenges per key and requester: asking for someone else\'s key (real HTTP, addresses from X-Forwarded-For)', () => {
  // bob's public key is public (GitHub): anyone may ask for challenges for it, but only replace
  // their own. A security-key touch takes seconds; bob's challenge must outlive anyone's flood.
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '127.0.0.1' });
  });
  afterAll(async () => {
    await t?.close();
  });

  async function challengeFrom(ip: string, key: TestKey): Promise<Challenge> {
    const res = await t.request('/api/shell-auth/challenge', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
      body: JSON.stringify({ ssh_public_key: key.publicKey }),
    });
    expect(res.status, res.text).toBe(200);
    return res.body as Challenge;
  }

  it(`another address asking 20 for bob's key keeps its own newest ${CHALLENGES_PER_KEY}; bob's challenge still redeems`, async () => {
    const bob = makeKey();
    const bobs = await challengeFrom('203.0.113.5', bob);
    const theirs: Challenge[] = [];
    for (let i = 0; i < 20; i++) theirs.push(await challengeFrom('198.51.100.66', bob));

    const rows = await rowsOf(bob, t.app.deps);
    expect(rows.filter((r) => r.requested_ip === '198.51.100.66')).toHaveLength(CHALLENGES_PER_KEY);
    expect(rows.filter((r) => r.requested_ip === '203.0.113.5')).toHaveLength(1);
    expect(await redeem(bob, bobs, t.app.deps)).toBe('ok');
    for (const challenge of [...theirs.slice(0, 3), theirs[20 - CHALLENGES_PER_KEY - 1]!]) {
      expect(await redeem(bob, challenge, t.app.deps)).toBe('challenge is not one this server issued');
    }
    for (const challenge of theirs.slice(-CHALLENGES_PER_KEY)) expect(await redeem(bob, challenge, t.app.deps)).toBe('ok');
  });

  it('IPv6 addresses of one /64 are one requester: 20 of them keep 5 rows between them; another /64 is another requester', async () => {
    const bob = makeKey();
    const bobs = await challengeFrom('2001:db8:b0b:1::10', bob);
    const theirs: Challenge[] = [];
    for (let i = 0; i < 20; i++) theirs.push(await challengeFrom(`2001:db8:66:1:${(0x1000 + i * 0x357).toString(16)}:ab:cd:${i + 1}`, bob));
    const neighbour = await challengeFrom('2001:db8:66:2::1', bob); // the next /64: its own requester

    const rows = await rowsOf(bob, t.app.deps);
    expect(rows.filter((r) => r.requested_ip!.startsWith('2001:db8:66:1:'))).toHaveLength(CHALLENGES_PER_KEY);
    expect(new Set(rows.filter((r) => r.requested_ip!.startsWith('2001:db8:66:1:')).map((r) => r.requested_net))).toEqual(new Set(['2001:db8:66:1::/64']));
    expect(rows).toHaveLength(CHALLENGES_PER_KEY + 2);
    expect(await redeem(bob, bobs, t.app.deps)).toBe('ok');
    expect(await redeem(bob, neighbour, t.app.deps)).toBe('ok');
    expect(await redeem(bob, theirs[0]!, t.app.deps)).toBe('challenge is not one this server issued');
    expect(await redeem(bob, theirs[20 - CHALLENGES_PER_KEY - 1]!, t.app.deps)).toBe('challenge is not one this server issued');
    for (const challenge of theirs.slice(-CHALLENGES_PER_KEY)) expect(await redeem(bob, challenge, t.app.deps)).toBe('ok');
  });
});

describe('migration 0006 on a table grown by the flood', () => {
  it('deletes the rows expired more than 5 minutes ago before it rewrites the table; keeps the rest', async () => {
    const database = await openTestDatabase();
    try {
      const db = database.db;
      await challengeBounds.down(db); // the table as 0005 left it
      const at = (minutes: number) => new Date(Date.now() + minutes * 60_000);
      const rows = [
        { challenge_hash: 'long-expired', expires_at: at(-60 * 23) },
        { challenge_hash: 'expired-6-min', expires_at: at(-6) },
        { challenge_hash: 'expired-4-min', expires_at: at(-4) },
        { challenge_hash: 'live', expires_at: at(1) },
      ];
      await db.insertInto('ssh_challenges').values(rows.map((r) => ({ ...r, key_blob: 'AAAA', requested_ip: '192.0.2.1' }))).execute();
      await challengeBounds.up(db);
      const left = await db.selectFrom('ssh_challenges').select(['challenge_hash', 'issued_seq', 'requested_net']).orderBy('issued_seq').execute();
      expect(left.map((r) => r.challenge_hash)).toEqual(['expired-4-min', 'live']);
      expect(left.every((r) => Number(r.issued_seq) > 0 && r.requested_net === null)).toBe(true);
    } finally {
      await database.close();
    }
  });
});
