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
} from '../src/core/index.js';
import { publicKeyOf, startTestCore, type TestCore } from './support/core.js';
import { usingPostgres } from './support/database.js';
import { makeKey, type TestKey } from './support/keys.js';

// Proof challenges are bounded per key (a new one replaces the oldest beyond a few) and go
// minutes after they expire: asking from many addresses does not grow the table.

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
async function redeem(key: TestKey, issued: Challenge): Promise<string> {
  const signature = execFileSync('ssh-keygen', ['-Y', 'sign', '-n', issued.namespace, '-f', key.privateKeyPath], {
    input: issued.message,
    stdio: ['pipe', 'pipe', 'ignore'],
  }).toString();
  try {
    await redeemProof(core.deps, publicKeyOf(key.publicKey), { challenge: issued.challenge, ssh_signature: signature }, origin);
    return 'ok';
  } catch (err) {
    if (err instanceof AppError && err.code === 'PROOF_INVALID') return err.detail ?? '';
    throw err;
  }
}

function rowsOf(key: TestKey) {
  return core.deps.db.selectFrom('ssh_challenges').selectAll().where('key_blob', '=', publicKeyOf(key.publicKey).blob).execute();
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
