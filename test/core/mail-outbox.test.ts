import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deliverNextMail,
  FIRST_RETRY_MS,
  MAX_RETRY_MS,
  sweepOutbox,
  SEND_LEASE_MS,
  startVerification,
  subscriptionBilling,
  VERIFICATION_LINK_TTL_MS,
  type CoreDeps,
  type VerificationMail,
} from '../../src/core/index.js';
import { openDatabase, type OpenDatabase } from '../../src/db/database.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';
import { freshPostgresUrl, usingPostgres } from '../support/database.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// The outbox on its own, with the test clock: retries, giving up, leases, and no double sends.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

const origin = { channel: 'http' as const, ip: '192.0.2.44' };

async function initiate(deps: CoreDeps = core.deps) {
  const email = uniqueEmail('outbox');
  const started = await startVerification(deps, { email, key: publicKeyOf(makeKey().publicKey), note: null, keyProven: false, origin });
  return { email, requestId: started.nonce ?? '' };
}

function outboxRowOf(requestId: string) {
  return core.deps.db.selectFrom('mail_outbox').selectAll().where('request_id', '=', requestId).executeTakeFirstOrThrow();
}

/** Runs the sender until nothing is due, and says what each attempt did. */
async function drain(deps: CoreDeps = core.deps) {
  const outcomes: string[] = [];
  for (let o = await deliverNextMail(deps); o !== 'idle'; o = await deliverNextMail(deps)) outcomes.push(o);
  return outcomes;
}

function failingMailer(attempts: string[]) {
  return {
    async sendNotice() {},
    async sendVerification(mail: VerificationMail) {
      attempts.push(mail.to);
      throw new Error('421 4.3.2 service not available');
    },
  };
}

describe('a request and its mail', () => {
  it('are committed together; the request answers before anything is sent, and the token is dropped once it is', async () => {
    await drain();
    const before = core.mails.length;
    const { email, requestId } = await initiate();
    expect(core.mails.length).toBe(before); // nothing sent yet: the sender's job
    const queued = await outboxRowOf(requestId);
    expect(queued).toMatchObject({ recipient: email, attempts: 0, sent_at: null });
    expect(queued.token).toMatch(/^[A-Za-z0-9_-]{20,}$/);

    expect(await drain()).toEqual(['sent']);
    expect(core.mails.at(-1)?.to).toBe(email);
    expect(core.mails.at(-1)?.link).toContain(queued.token);
    const sent = await outboxRowOf(requestId);
    expect(sent.token).toBeNull();
    expect(sent.sent_at).not.toBeNull();
    expect(await drain()).toEqual([]); // never twice
  });
});

describe('a failing mail server', () => {
  it('is retried with doubling delays until the link expires, then the mail is given up and its token dropped', async () => {
    await drain();
    const tries: string[] = [];
    const realMailer = core.deps.mailer;
    core.deps.mailer = failingMailer(tries);
    try {
      const { requestId } = await initiate();
      const delays: number[] = [];
      for (;;) {
        const outcomes = await drain();
        if (outcomes.includes('abandoned')) break;
        expect(outcomes).toEqual(['retry']);
        const row = await outboxRowOf(requestId);
        const delay = new Date(row.next_attempt_at).getTime() - core.clock.now.getTime();
        delays.push(delay);
        core.clock.advance(delay - 1);
        expect(await drain()).toEqual([]); // not a millisecond early
        core.clock.advance(1);
      }
      expect(delays.slice(0, 7)).toEqual([1, 2, 4, 8, 16, 32, 60].map((s) => s * FIRST_RETRY_MS));
      expect(delays.slice(7).every((d) => d === 60_000)).toBe(true);
      // Every try fit inside the link's ten minutes.
      expect(delays.reduce((a, b) => a + b, 0)).toBeLessThan(VERIFICATION_LINK_TTL_MS);
      const given = await outboxRowOf(requestId);
      expect(given.abandoned_at).not.toBeNull();
      expect(given.token).toBeNull();
      expect(given.last_error).toContain('421');
      expect(given.attempts).toBe(tries.length);
    } finally {
      core.deps.mailer = realMailer;
    }
  });

  it('gives up at once when the mail server refuses the message itself (a 5xx), and does not retry it', async () => {
    await drain();
    const tries: string[] = [];
    const realMailer = core.deps.mailer;
    core.deps.mailer = {
      async sendNotice() {},
      async sendVerification(mail) {
        tries.push(mail.to);
        throw Object.assign(new Error('550 5.1.1 mailbox unavailable'), { permanent: true });
      },
    };
    try {
      const { requestId } = await initiate();
      expect(await drain()).toEqual(['abandoned']);
      core.clock.advance(MAX_RETRY_MS);
      expect(await drain()).toEqual([]);
      expect(tries).toHaveLength(1);
      const row = await outboxRowOf(requestId);
      expect(row).toMatchObject({ token: null, last_error: '550 5.1.1 mailbox unavailable' });
      expect(row.abandoned_at).not.toBeNull();
    } finally {
      core.deps.mailer = realMailer;
    }
  });

  it('does not lift the send limits: they count requests, not deliveries', async () => {
    await drain();
    const realMailer = core.deps.mailer;
    core.deps.mailer = failingMailer([]);
    try {
      const key = publicKeyOf(makeKey().publicKey);
      const email = uniqueEmail('limit');
      await startVerification(core.deps, { email, key, note: null, keyProven: false, origin });
      expect(await drain()).toEqual(['retry']);
      await expect(startVerification(core.deps, { email, key, note: null, keyProven: false, origin })).rejects.toMatchObject({
        code: 'RATE_LIMITED',
        extra: { retryAfterSeconds: 60 },
      });
    } finally {
      core.deps.mailer = realMailer;
      core.clock.advance(VERIFICATION_LINK_TTL_MS);
      await drain();
    }
  });
});

describe('the sender', () => {
  it('does not send a link that expired before its first try', async () => {
    await drain();
    const before = core.mails.length;
    const { requestId } = await initiate();
    core.clock.advance(VERIFICATION_LINK_TTL_MS);
    expect(await drain()).toEqual(['abandoned']);
    expect(core.mails.length).toBe(before);
    expect((await outboxRowOf(requestId)).token).toBeNull();
  });

  it('picks up a message whose sender died mid-send once its lease runs out, and not before', async () => {
    await drain();
    const { requestId } = await initiate();
    // A sender claims it and dies (its mail server never answers).
    const stuck = deliverNextMail({ ...core.deps, mailer: { sendVerification: () => new Promise(() => {}), sendNotice: async () => undefined } });
    for (let i = 0; i < 1000 && (await outboxRowOf(requestId)).lease_until === null; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect((await outboxRowOf(requestId)).lease_until).not.toBeNull();
    void stuck;
    expect(await drain()).toEqual([]);
    core.clock.advance(SEND_LEASE_MS - 1);
    expect(await drain()).toEqual([]);
    core.clock.advance(1);
    expect(await drain()).toEqual(['sent']);
    const row = await outboxRowOf(requestId);
    expect(row.attempts).toBe(2);
    // The email states the time the link really has left.
    expect(core.mails.at(-1)?.ttlMs).toBe(Math.floor((VERIFICATION_LINK_TTL_MS - SEND_LEASE_MS) / 60_000) * 60_000);
  });
});

describe('the outbox sweep', () => {
  it('deletes sent and given-up messages after a day, never the ones still waiting', async () => {
    await drain();
    const realMailer = core.deps.mailer;
    const sent = await initiate();
    await drain();
    core.deps.mailer = failingMailer([]);
    const waiting = await initiate();
    await drain();
    core.deps.mailer = realMailer;
    core.clock.advance(24 * 3_600_000 - 1_000);
    await sweepOutbox(core.deps);
    expect(await core.deps.db.selectFrom('mail_outbox').select('id').where('request_id', '=', sent.requestId).execute()).toHaveLength(1);
    core.clock.advance(2_000);
    await sweepOutbox(core.deps);
    expect(await core.deps.db.selectFrom('mail_outbox').select('id').where('request_id', '=', sent.requestId).execute()).toHaveLength(0);
    // Never sent (its link long expired, but the sender has not looked yet): kept until it is given up and a day passes.
    expect(await core.deps.db.selectFrom('mail_outbox').select('id').where('request_id', '=', waiting.requestId).execute()).toHaveLength(1);
  });
});

describe('two instances on one database', () => {
  let second: OpenDatabase | undefined;
  afterAll(async () => {
    await second?.close();
  });

  it('send each message exactly once when their senders race', async () => {
    await drain();
    // Postgres: a second pool on the same database, as another instance has. PGlite has one
    // connection per process, so there the race is between two loops on it.
    const url = usingPostgres ? await freshPostgresUrl() : null;
    const first = url ? await openDatabase({ kind: 'postgres', url }) : null;
    second = url ? await openDatabase({ kind: 'postgres', url }) : undefined;
    const sentTo = new Map<string, number>();
    const slowMailer = {
      async sendNotice() {},
      async sendVerification(mail: VerificationMail) {
        await new Promise((resolve) => setTimeout(resolve, 5)); // long enough for the other to try the same row
        sentTo.set(mail.to, (sentTo.get(mail.to) ?? 0) + 1);
      },
    };
    const instance = (db: CoreDeps['db']): CoreDeps => ({
      db,
      mailer: slowMailer,
      billing: subscriptionBilling(),
      log: pino({ level: 'silent' }),
      settings: core.deps.settings,
    });
    const a = instance(first?.db ?? core.deps.db);
    const b = instance(second?.db ?? core.deps.db);
    const emails: string[] = [];
    for (let i = 0; i < 40; i++) emails.push((await initiate(i % 2 ? a : b)).email);
    const [fromA, fromB] = await Promise.all([drain(a), drain(b)]);
    expect(fromA.length + fromB.length).toBe(40);
    if (url) {
      expect(fromA.length).toBeGreaterThan(0); // both really sent
      expect(fromB.length).toBeGreaterThan(0);
    }
    expect(emails.map((e) => sentTo.get(e))).toEqual(emails.map(() => 1));
    await first?.close();
  });
});
