import { Writable } from 'node:stream';
import { sql, type Transaction } from 'kysely';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  findUserByEmail,
  mintApiKey,
  queueDueExpiryNotices,
  revokeApiKey,
  rotateApiKey,
  startExpiryNotices,
  sweepExpiryNotices,
  type CoreDeps,
  type NoticeMail,
} from '../../src/core/index.js';
import { openDatabase, type OpenDatabase } from '../../src/db/database.js';
import type { Database } from '../../src/db/schema.js';
import { renderNoticeEmail } from '../../src/mail/notice-email.js';
import { startTestCore, type TestCore } from '../support/core.js';
import { adminPostgresUrl, usingPostgres } from '../support/database.js';
import { until } from '../support/processes.js';

// Expiry notices (issue 19 point 4): at each KEY_EXPIRY_NOTICES threshold before a key expires,
// its creator gets one email (through the outbox), exactly once however many instances scan.
// Time moves with the test clock, not by waiting.

const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const origin = { channel: 'ssh' as const, ip: '127.0.0.1' };

// A database of its own per test: keys of one test never come due in another's.
let core: TestCore;
beforeEach(async () => {
  core = await startTestCore({ sshHint: 'ssh -p 2222 keys@auth.example.com' });
});
afterEach(async () => {
  await core?.close();
});

async function newCreator(on: TestCore = core) {
  const { email } = await on.verifiedUser();
  const user = (await findUserByEmail(on.deps.db, email))!;
  const mint = async (label: string, expiresInMs: number, deps: CoreDeps = on.deps) =>
    (await mintApiKey(deps, { user, sshKeyId: null, label, expiresInMs, origin })).api_key_id;
  return { email, user, mint };
}

/** Scans, delivers, and returns the notices sent by this round. */
async function scanAndDeliver(on: TestCore = core): Promise<NoticeMail[]> {
  const before = on.notices.length;
  await queueDueExpiryNotices(on.deps);
  await on.deliverMail();
  return on.notices.slice(before);
}

const keyIdsIn = (mails: NoticeMail[]) => mails.flatMap((m) => m.notice.keys.map((k) => k.id));

/** Postgres: a second connection pool on the test's database, as another instance has. */
async function secondPool(): Promise<OpenDatabase> {
  const { rows } = await sql<{ name: string }>`SELECT current_database() AS name`.execute(core.deps.db);
  const url = new URL(adminPostgresUrl());
  url.pathname = `/${rows[0]!.name}`;
  return openDatabase({ kind: 'postgres', url: url.toString() });
}

describe('expiry notices', () => {
  it('one at each threshold (7d, then 1d), naming the key, its org, its expiry and the rotate command; none before, none twice, none after expiry', async () => {
    const alice = await newCreator();
    const id = await alice.mint('thirty-day-key', 30 * DAY);
    expect(await scanAndDeliver()).toEqual([]);
    core.clock.advance(23 * DAY - MINUTE);
    expect(await scanAndDeliver()).toEqual([]);

    core.clock.advance(2 * MINUTE); // the 7-day threshold has passed by a minute
    const first = await scanAndDeliver();
    expect(first).toHaveLength(1);
    const key = await core.deps.db.selectFrom('api_keys').innerJoin('orgs', 'orgs.id', 'api_keys.org_id').select(['orgs.name', 'api_keys.expires_at']).where('api_keys.id', '=', id).executeTakeFirstOrThrow();
    expect(first[0]).toEqual({
      to: alice.email,
      notice: {
        kind: 'key_expiry',
        keys: [{ id, label: 'thirty-day-key', org_name: key.name, expires_at: new Date(key.expires_at!).toISOString() }],
        rotate_command: 'ssh -p 2222 keys@auth.example.com',
      },
    });
    // The email as its reader sees it: when (UTC and from now), and what to run.
    const mail = renderNoticeEmail(first[0]!, core.clock.now);
    expect(mail.subject).toBe('Your API key "thirty-day-key" expires soon');
    expect(mail.text).toContain(`${id}  "thirty-day-key"  org ${key.name}  (expires ${new Date(key.expires_at!).toISOString()}, in 6 days)`);
    expect(mail.text).toContain(`ssh -p 2222 keys@auth.example.com rotate ${id}`);

    expect(await scanAndDeliver()).toEqual([]);
    core.clock.advance(6 * DAY - 2 * MINUTE);
    expect(await scanAndDeliver()).toEqual([]);
    core.clock.advance(2 * MINUTE);
    const second = await scanAndDeliver();
    expect(keyIdsIn(second)).toEqual([id]);
    expect(renderNoticeEmail(second[0]!, core.clock.now).text).toContain('in 23 hours');
    core.clock.advance(2 * DAY);
    expect(await scanAndDeliver()).toEqual([]);
  });

  it('keys of one creator due together make one email listing them; another creator gets their own', async () => {
    const bob = await newCreator();
    const carol = await newCreator();
    const b1 = await bob.mint('bob-deploy', 10 * DAY);
    const b2 = await bob.mint('bob-nightly', 10 * DAY + HOUR);
    const later = await bob.mint('bob-later', 12 * DAY);
    const c1 = await carol.mint('carol-ci', 10 * DAY);
    core.clock.advance(3 * DAY + 2 * HOUR);
    const sent = await scanAndDeliver();
    expect(sent.map((m) => m.to).sort()).toEqual([bob.email, carol.email].sort());
    const toBob = sent.find((m) => m.to === bob.email)!;
    expect(keyIdsIn([toBob])).toEqual([b1, b2]); // soonest expiry first
    expect(renderNoticeEmail(toBob, core.clock.now).subject).toBe('2 of your API keys expire soon');
    expect(keyIdsIn(sent.filter((m) => m.to === carol.email))).toEqual([c1]);
    core.clock.advance(2 * DAY);
    expect(keyIdsIn(await scanAndDeliver())).toEqual([later]);
  });

  it('a key minted with less time left than a threshold gets no notice for it; missed thresholds (service down) make one notice', async () => {
    const dave = await newCreator();
    const threeDays = await dave.mint('three-days', 3 * DAY);
    const twelveHours = await dave.mint('twelve-hours', 12 * HOUR);
    const thirtyDays = await dave.mint('thirty-days', 30 * DAY);
    core.clock.advance(11 * HOUR + 59 * MINUTE);
    expect(await scanAndDeliver()).toEqual([]); // 12 hours is less than both thresholds
    core.clock.advance(2 * DAY - 11 * HOUR); // 1d before the three-day key's expiry
    expect(keyIdsIn(await scanAndDeliver())).toEqual([threeDays]);

    // Down for a month: the thirty-day key's 7d and 1d thresholds both passed. One line, both recorded.
    core.clock.advance(27 * DAY);
    const late = await scanAndDeliver();
    expect(keyIdsIn(late)).toEqual([thirtyDays]);
    const recorded = await core.deps.db.selectFrom('key_expiry_notices').select(['api_key_id', 'threshold_seconds']).where('api_key_id', 'in', [threeDays, twelveHours, thirtyDays]).orderBy('threshold_seconds').execute();
    expect(recorded).toEqual([
      { api_key_id: threeDays, threshold_seconds: 86_400 },
      { api_key_id: thirtyDays, threshold_seconds: 86_400 },
      { api_key_id: thirtyDays, threshold_seconds: 604_800 },
    ]);
    expect(await scanAndDeliver()).toEqual([]);
  });

  it('revoked keys, and keys already rotated, get none', async () => {
    const erin = await newCreator();
    const revoked = await erin.mint('revoked-key', 10 * DAY);
    const rotated = await erin.mint('rotated-key', 10 * DAY);
    const successor = await erin.mint('successor-key', 30 * DAY);
    await revokeApiKey(core.deps, erin.user, revoked, origin);
    await core.deps.db.updateTable('api_keys').set({ replaced_by_id: successor }).where('id', '=', rotated).execute();
    core.clock.advance(3 * DAY + MINUTE);
    expect(keyIdsIn(await scanAndDeliver())).toEqual([]);
  });

  it('a key revoked or rotated after the scan read it, before its notice was recorded, gets none (the insert checks again)', async () => {
    const ivan = await newCreator();
    const revoked = await ivan.mint('revoked-meanwhile', 10 * DAY);
    const rotated = await ivan.mint('rotated-meanwhile', 10 * DAY);
    const untouched = await ivan.mint('untouched', 10 * DAY);
    core.clock.advance(3 * DAY + MINUTE);
    // Between the two steps of the scan: once the read of due keys has its answer, and before
    // the transaction that records the notices begins, another request revokes one key and
    // rotates another. (No connection is held there, as PGlite's only one would be in a plugin.)
    let meanwhile = 0;
    let dueRead: string[] = [];
    const db = core.deps.db.withPlugin({
      transformQuery: (args) => args.node,
      async transformResult(args) {
        const rows = args.result.rows as Array<Record<string, unknown>>;
        if (rows.length > 0 && 'due' in rows[0]!) dueRead = rows.map((r) => String(r.id));
        return args.result;
      },
    });
    const interleaved: CoreDeps = {
      ...core.deps,
      db: new Proxy(db, {
        get(target, name) {
          if (name === 'transaction') {
            return () => ({
              async execute<T>(work: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
                if (meanwhile++ === 0) {
                  expect(dueRead.sort()).toEqual([revoked, rotated, untouched].sort());
                  await revokeApiKey(core.deps, ivan.user, revoked, origin);
                  await rotateApiKey(core.deps, { actor: ivan.user, keyId: rotated, overlapMs: HOUR, origin });
                }
                return target.transaction().execute(work);
              },
            });
          }
          const value: unknown = Reflect.get(target, name, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      }),
    };
    const before = core.notices.length;
    expect(await queueDueExpiryNotices(interleaved)).toEqual({ keys: 1, notices: 1 });
    expect(meanwhile).toBe(1);
    await core.deliverMail();
    expect(keyIdsIn(core.notices.slice(before))).toEqual([untouched]);
    const recorded = await core.deps.db.selectFrom('key_expiry_notices').select('api_key_id').where('api_key_id', 'in', [revoked, rotated, untouched]).execute();
    expect(recorded.map((r) => r.api_key_id)).toEqual([untouched]);
  });

  it.runIf(usingPostgres)('a key that a rotation has locked but not committed is left to the next scan, without waiting for it', async () => {
    const judy = await newCreator();
    const held = await judy.mint('held-by-rotation', 10 * DAY);
    const touched = await judy.mint('held-by-last-used', 10 * DAY + HOUR);
    const successor = await judy.mint('its-successor', 30 * DAY);
    core.clock.advance(3 * DAY + 2 * HOUR);
    const second = await secondPool();
    try {
      const before = core.notices.length;
      let midScan: { keys: number; notices: number } | null = null;
      // Another instance mid-rotation (the key's row updated, not yet committed), and mid-touch.
      await second.db.transaction().execute(async (trx) => {
        await trx.updateTable('api_keys').set({ replaced_by_id: successor }).where('id', '=', held).execute();
        await trx.updateTable('api_keys').set({ last_used_at: core.clock.now }).where('id', '=', touched).execute();
        // A full batch of one, all of it held: the scan stops rather than read it again and again.
        expect(await queueDueExpiryNotices(core.deps, { batch: 1 })).toEqual({ keys: 0, notices: 0 });
        midScan = await queueDueExpiryNotices(core.deps);
      });
      // Neither key was noticed while held, and the scan did not wait for the rotation to commit.
      expect(midScan).toEqual({ keys: 0, notices: 0 });
      // The next scan sees them settled: the rotated key needs no notice, the touched one gets its own.
      expect(await queueDueExpiryNotices(core.deps)).toEqual({ keys: 1, notices: 1 });
      await core.deliverMail();
      expect(keyIdsIn(core.notices.slice(before))).toEqual([touched]);
    } finally {
      await second.close();
    }
  });

  it('a scan takes a bounded batch and goes on while batches come back full', async () => {
    const frank = await newCreator();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push(await frank.mint(`batch-key-${i}`, 10 * DAY));
    core.clock.advance(3 * DAY + MINUTE);
    const before = core.notices.length;
    expect(await queueDueExpiryNotices(core.deps, { batch: 3 })).toEqual({ keys: 7, notices: 3 });
    await core.deliverMail();
    expect(keyIdsIn(core.notices.slice(before)).sort()).toEqual([...ids].sort());
  });

  it('two instances scanning at once on one database: each (key, threshold) is noticed exactly once', async () => {
    // A second connection pool on the same database, as another instance has (PGlite: the same handle).
    const second = usingPostgres ? await secondPool() : null;
    try {
      const other: CoreDeps = { ...core.deps, db: second?.db ?? core.deps.db };
      const creators = [await newCreator(), await newCreator(), await newCreator()];
      const ids: string[] = [];
      for (const creator of creators) for (let i = 0; i < 12; i++) ids.push(await creator.mint(`race-key-${i}`, 10 * DAY));
      core.clock.advance(3 * DAY + MINUTE);
      const before = core.notices.length;
      const scans = await Promise.all([
        queueDueExpiryNotices(core.deps, { batch: 5 }),
        queueDueExpiryNotices(other, { batch: 5 }),
        queueDueExpiryNotices(core.deps, { batch: 4 }),
        queueDueExpiryNotices(other, { batch: 4 }),
      ]);
      expect(scans.reduce((sum, s) => sum + s.keys, 0)).toBe(ids.length);
      await core.deliverMail();
      const noticed = keyIdsIn(core.notices.slice(before));
      expect(noticed.sort()).toEqual([...ids].sort()); // every key once, none twice
      expect(await queueDueExpiryNotices(other)).toEqual({ keys: 0, notices: 0 });
    } finally {
      await second?.close();
    }
  });

  it('the records of a key that stopped working (revoked or expired) go a day later; a live key keeps its own', async () => {
    const kim = await newCreator();
    const revoked = await kim.mint('revoked-later', 10 * DAY);
    const expiring = await kim.mint('four-day-key', 4 * DAY);
    const live = await kim.mint('still-live', 10 * DAY);
    core.clock.advance(3 * DAY + MINUTE);
    expect(keyIdsIn(await scanAndDeliver()).sort()).toEqual([revoked, expiring, live].sort());
    const recordedKeys = async () =>
      (await core.deps.db.selectFrom('key_expiry_notices').select('api_key_id').where('api_key_id', 'in', [revoked, expiring, live]).orderBy('api_key_id').execute()).map((r) => r.api_key_id);
    await revokeApiKey(core.deps, kim.user, revoked, origin);
    expect(await sweepExpiryNotices(core.deps)).toBe(0);

    // A day less a minute after the revocation, its records are still there; a minute past the day, gone.
    core.clock.advance(DAY - MINUTE);
    expect(await sweepExpiryNotices(core.deps)).toBe(0);
    core.clock.advance(2 * MINUTE);
    expect(await sweepExpiryNotices(core.deps)).toBe(1);
    expect(await recordedKeys()).toEqual([expiring, live].sort());

    // The four-day key expired a day and a minute ago: its records go too.
    core.clock.advance(DAY - 3 * MINUTE);
    expect(await sweepExpiryNotices(core.deps)).toBe(0);
    core.clock.advance(2 * MINUTE);
    expect(await sweepExpiryNotices(core.deps)).toBe(1);
    expect(await recordedKeys()).toEqual([live]);

    // The live key's 7-day notice is not sent again; its 1-day notice comes as it should.
    expect(await scanAndDeliver()).toEqual([]);
    core.clock.advance(4 * DAY);
    expect(keyIdsIn(await scanAndDeliver())).toEqual([live]);
  });

  it('a sweep deletes the records of a bounded number of keys; the next sweep goes on', async () => {
    const lena = await newCreator();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await lena.mint(`swept-${i}`, 10 * DAY));
    core.clock.advance(3 * DAY + MINUTE);
    expect(keyIdsIn(await scanAndDeliver()).sort()).toEqual([...ids].sort());
    core.clock.advance(6 * DAY); // the 1-day notices too: two records a key
    expect(keyIdsIn(await scanAndDeliver()).sort()).toEqual([...ids].sort());
    core.clock.advance(2 * DAY);
    expect(await sweepExpiryNotices(core.deps, { batch: 2 })).toBe(4);
    expect(await sweepExpiryNotices(core.deps, { batch: 2 })).toBe(2);
    expect(await sweepExpiryNotices(core.deps, { batch: 2 })).toBe(0);
  });

  it('KEY_EXPIRY_NOTICES=off: no notices, and no loop at all', async () => {
    const off = await startTestCore({ keyExpiryNoticesMs: [] });
    try {
      const grace = await newCreator(off);
      await grace.mint('no-notice', 10 * DAY);
      off.clock.advance(9 * DAY + 23 * HOUR);
      expect(await scanAndDeliver(off)).toEqual([]);
      // A loop would have scanned (and said so at debug) by the time the event loop turns.
      let statements = 0;
      const lines: string[] = [];
      const watched: CoreDeps = {
        ...off.deps,
        log: pino({ level: 'debug' }, new Writable({ write: (chunk, _encoding, callback) => (lines.push(String(chunk)), callback()) })),
        db: off.deps.db.withPlugin({ transformQuery: (args) => (statements++, args.node), transformResult: async (args) => args.result }),
      };
      const loop = startExpiryNotices(watched, { idleMs: 10 });
      await new Promise((resolve) => setTimeout(resolve, 0));
      await new Promise((resolve) => setImmediate(resolve));
      loop.stop();
      expect(lines).toEqual([]);
      expect(statements).toBe(0);
      expect(await off.deps.db.selectFrom('key_expiry_notices').selectAll().execute()).toEqual([]);
    } finally {
      await off.close();
    }
  });
});

describe('the notice loop', () => {
  /** The core on a clock that runs in real time from `offsetMs` ahead, and its log lines. */
  function runningClock(offsetMs: () => number) {
    const lines: string[] = [];
    const log = pino(
      { level: 'debug' },
      new Writable({
        write(chunk, _encoding, callback) {
          lines.push(String(chunk));
          callback();
        },
      }),
    );
    return { lines, deps: { ...core.deps, log, now: () => new Date(Date.now() + offsetMs()) } satisfies CoreDeps };
  }
  const recordedFor = (id: string) => core.deps.db.selectFrom('key_expiry_notices').select('threshold_seconds').where('api_key_id', '=', id).execute();

  it('sleeps until the next threshold passes, not its idle time, and stops', async () => {
    const gina = await newCreator();
    const id = await gina.mint('loop-key', 10 * DAY);
    // The key's 7-day threshold passes 1.5 s from now on the loop's clock; its idle time is 10 minutes.
    const offset = core.clock.now.getTime() + 3 * DAY - 1_500 - Date.now();
    const { deps, lines } = runningClock(() => offset);
    const loop = startExpiryNotices(deps, { idleMs: 10 * MINUTE });
    try {
      await until(() => lines.some((l) => l.includes('expiry notices scanned')), 'a first scan', () => lines.join(''), 5_000);
      expect(await recordedFor(id)).toEqual([]);
      const queued = async () => (await recordedFor(id)).length > 0;
      let done = false;
      await until(() => (void queued().then((q) => (done = q)), done), 'the notice queued at the threshold', () => lines.join(''), 6_000);
      expect(lines.join('')).toContain('"msg":"expiry notices queued"');
    } finally {
      loop.stop();
    }
  });

  it('logs a database error and tries again', async () => {
    const hana = await newCreator();
    const id = await hana.mint('retry-key', 10 * DAY);
    core.clock.advance(3 * DAY + MINUTE);
    const { deps, lines } = runningClock(() => core.clock.now.getTime() - Date.now());
    let failures = 1;
    const flaky: CoreDeps = {
      ...deps,
      db: deps.db.withPlugin({
        transformQuery(args) {
          if (failures > 0) {
            failures--;
            throw new Error('connect ECONNREFUSED 127.0.0.1:5432');
          }
          return args.node;
        },
        transformResult: async (args) => args.result,
      }),
    };
    const loop = startExpiryNotices(flaky, { idleMs: 100 });
    try {
      let recorded = false;
      await until(() => (void recordedFor(id).then((r) => (recorded = r.length > 0)), recorded), 'the notice queued after the error', () => lines.join(''), 5_000);
      const warning = lines.find((l) => l.includes('expiry notices: database error, will retry'));
      expect(warning).toContain('ECONNREFUSED');
    } finally {
      loop.stop();
    }
  });
});
