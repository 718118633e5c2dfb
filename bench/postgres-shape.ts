/**
 * `npm run bench` part `pgshape`: what each piece of the SSH door's two statements costs Postgres.
 *
 * The statements are the real ones: an SSH create is run once through the core (resolveSshIdentity,
 * then mintApiKey) on a pool that records each statement's text and values. Then each variant
 * runs as fast as PGSHAPE_CLIENTS connections allow for PGSHAPE_SECONDS, as named (prepared)
 * statements like the service's, and Postgres's CPU per create is read from /proc:
 *
 * - shell-auth: the identity query, then the key + audit insert, as the service runs them;
 * - without row locks: the insert without FOR SHARE on the membership and FOR KEY SHARE on the org;
 * - without foreign keys: the same statement into a copy of api_keys with its indexes but no
 *   foreign keys (the three a create checks: org, creator, SSH key);
 * - without the audit row: the key insert alone (the CTE's inner statement), locks kept;
 * - without both: that insert into the copy;
 * - without the membership check: a plain INSERT ... VALUES of the key's row into that copy;
 * - the Go server's shape (the perf rig's): a primary-key lookup and one insert into a table with
 *   one index and no foreign key.
 *
 * Every variant writes real rows (fresh ids and hashes per call), and each starts on a warm cache.
 * The variants take turns, PGSHAPE_ROUNDS times (5): each one's median is shown, so a checkpoint
 * or an autovacuum falls on one run of one variant rather than on all of one.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Kysely, PostgresDialect, type PostgresPool } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { findUserByEmail, mintApiKey, parsePublicKeyLine, resolveSshIdentity, subscriptionBilling, type CoreDeps } from '../src/core/index.js';
import type { Database } from '../src/db/schema.js';
import { postgresCpuMs, table } from './measure.js';

type Statement = { text: string; values: unknown[] };
type Variant = { name: string; statements: (round: number) => Statement[] };

const seconds = Number(process.env.PGSHAPE_SECONDS ?? 4);
const clients = Number(process.env.PGSHAPE_CLIENTS ?? 4);
const rounds = Number(process.env.PGSHAPE_ROUNDS ?? 5);

/** A kysely pool whose clients record every statement they are given (and run it). */
function recordingPool(pool: pg.Pool, seen: Statement[]): PostgresPool {
  return {
    async connect() {
      const client = await pool.connect();
      return {
        query: ((text: string, values: unknown[]) => {
          seen.push({ text, values: [...values] });
          return client.query(text, values);
        }) as never,
        release: () => client.release(),
      };
    },
    end: () => pool.end(),
  };
}

/** The highest `$n` a statement uses: a statement cut out of a larger one keeps its leading parameters. */
function parameterCount(text: string): number {
  return Math.max(0, ...[...text.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
}

/** The key insert inside `with "written" as (...) insert into "audit_events" ...`. */
function keyInsertOf(text: string): string {
  const inner = /^with "written" as \((.*) returning "id"\) insert into "audit_events"/s.exec(text);
  if (!inner) throw new Error(`the mint's statement changed shape; update bench/postgres-shape.ts:\n${text}`);
  return inner[1]!;
}

/** Captures the SSH create's statements for the account holding `publicKeyLine` (already linked). */
async function capturedCreate(url: string, email: string, publicKeyLine: string): Promise<{ identity: Statement; mint: Statement; ids: Record<string, string> }> {
  const seen: Statement[] = [];
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: recordingPool(pool, seen) }) });
  try {
    const deps: CoreDeps = {
      db,
      mailer: { sendVerification: async () => undefined, sendNotice: async () => undefined },
      billing: subscriptionBilling(),
      log: pino({ level: 'silent' }),
      settings: { publicUrl: 'http://bench', httpTrust: { window: 'off', mintsPerConfirmation: 1 }, keyMaxTtlMs: null, mailPerIpHourly: null },
    };
    const parsed = parsePublicKeyLine(publicKeyLine);
    if (!parsed.ok) throw new Error(parsed.reason);
    seen.length = 0;
    const identity = await resolveSshIdentity(deps, parsed.key);
    if (identity.kind !== 'account') throw new Error(`${email}'s key is not linked`);
    const identityStatement = seen.at(-1)!;
    seen.length = 0;
    const minted = await mintApiKey(deps, {
      user: identity.user,
      orgs: identity.orgs,
      sshKeyId: identity.sshKeyId,
      label: 'pgshape',
      keyType: parsed.key.type,
      origin: { channel: 'ssh', ip: '127.0.0.1' },
    });
    const mint = seen.find((s) => /insert into "api_keys"/.test(s.text));
    if (!mint) throw new Error(`no key insert among the mint's statements:\n${seen.map((s) => s.text).join('\n')}`);
    const row = await db.selectFrom('api_keys').select(['secret_hash', 'org_id', 'ssh_key_id']).where('id', '=', minted.api_key_id).executeTakeFirstOrThrow();
    const event = await db.selectFrom('audit_events').select(['id']).where('subject_id', '=', minted.api_key_id).executeTakeFirstOrThrow();
    const user = (await findUserByEmail(db, email))!;
    return { identity: identityStatement, mint, ids: { keyId: minted.api_key_id, secretHash: row.secret_hash, eventId: event.id, userId: user.id, orgId: row.org_id, sshKeyId: row.ssh_key_id! } };
  } finally {
    await db.destroy();
  }
}

/** The captured mint with fresh values where a real mint has them: the key's id and hash, the event's id. */
function freshMint(mint: Statement, ids: Record<string, string>): unknown[] {
  return mint.values.map((value) => {
    if (value === ids.keyId || value === ids.eventId) return randomUUID();
    if (value === ids.secretHash) return randomBytes(32).toString('hex');
    return value;
  });
}

/** Runs `variant` from `clients` connections for `seconds`; its creates per second and Postgres's CPU ms per create. */
async function measure(url: string, variant: Variant): Promise<{ perSecond: number; cpuMs: number }> {
  const connections = await Promise.all(
    Array.from({ length: clients }, async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      // Each variant commits once per create, as the service does; the flush that waits for the
      // disk is left out (it is the same for all, and this machine's disk makes it noisy).
      await client.query('set synchronous_commit = off');
      return client;
    }),
  );
  try {
    const names = new Map<string, string>();
    const nameOf = (text: string) => names.get(text) ?? (names.set(text, `pgshape${names.size}`), names.get(text)!);
    const run = async (client: pg.Client, until: number): Promise<number> => {
      let done = 0;
      while (Date.now() < until) {
        for (const { text, values } of variant.statements(done)) await client.query({ name: nameOf(text), text, values });
        done++;
      }
      return done;
    };
    await Promise.all(connections.map((c) => run(c, Date.now() + 500))); // prepared and cached on every connection
    // The last variant's dirty pages are written now, not during this one (needs a superuser: else skipped).
    await connections[0]!.query('checkpoint').catch(() => undefined);
    const cpuBefore = postgresCpuMs();
    const started = Date.now();
    const counts = await Promise.all(connections.map((c) => run(c, started + seconds * 1000)));
    const elapsed = (Date.now() - started) / 1000;
    const cpu = postgresCpuMs() - cpuBefore;
    const total = counts.reduce((a, b) => a + b, 0);
    return { perSecond: total / elapsed, cpuMs: cpu / total };
  } finally {
    await Promise.all(connections.map((c) => c.end()));
  }
}

/** `pgshape`: for an account verified by the caller (email, public key line), a table of the variants. */
export async function benchPostgresShape(url: string, email: string, publicKeyLine: string): Promise<string> {
  const { identity, mint, ids } = await capturedCreate(url, email, publicKeyLine);
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  try {
    await setup.query('create table if not exists bench_api_keys_no_fk (like api_keys including all)');
    await setup.query('create table if not exists bench_go_keys (key_blob text primary key, user_id uuid not null)');
    await setup.query('create table if not exists bench_go_api_keys (key_hash text primary key, user_id uuid not null, label text not null, created_at timestamptz not null default now())');
    await setup.query('insert into bench_go_keys values ($1, $2) on conflict do nothing', [identity.values[0], ids.userId]);
  } finally {
    await setup.end();
  }
  const withoutLocks = mint.text.replace(/ for share of "memberships"( for key share of "orgs")?/, '');
  if (withoutLocks === mint.text) throw new Error(`the mint's statement takes no row lock any more; update bench/postgres-shape.ts:\n${mint.text}`);
  const keyOnly = keyInsertOf(mint.text);
  const noFk = (text: string) => text.replace('insert into "api_keys"', 'insert into "bench_api_keys_no_fk"');
  const keyOnlyNoFk = noFk(keyOnly);
  const cut = (text: string, values: unknown[]): Statement => ({ text, values: values.slice(0, parameterCount(text)) });
  const variants: Variant[] = [
    { name: 'shell-auth (identity + key and audit insert)', statements: () => [identity, { text: mint.text, values: freshMint(mint, ids) }] },
    { name: 'without row locks', statements: () => [identity, { text: withoutLocks, values: freshMint(mint, ids) }] },
    { name: 'without foreign keys (audit row kept)', statements: () => [identity, { text: noFk(mint.text), values: freshMint(mint, ids) }] },
    { name: 'without the audit row', statements: () => [identity, cut(keyOnly, freshMint(mint, ids))] },
    { name: 'without the audit row and foreign keys', statements: () => [identity, cut(keyOnlyNoFk, freshMint(mint, ids))] },
    {
      name: 'without the audit row, foreign keys and membership check',
      statements: () => [
        identity,
        {
          text: 'insert into bench_api_keys_no_fk (id, org_id, created_by_user_id, ssh_key_id, label, secret_hash, permissions, created_via) values ($1, $2, $3, $4, $5, $6, $7, $8)',
          values: [randomUUID(), ids.orgId, ids.userId, ids.sshKeyId, 'perfx', randomBytes(32).toString('hex'), ['clusters:view'], 'ssh'],
        },
      ],
    },
    { name: 'identity query alone', statements: () => [identity] },
    {
      name: "Go server's shape (lookup + one insert)",
      statements: () => [
        { text: 'select user_id from bench_go_keys where key_blob = $1', values: [identity.values[0]] },
        { text: 'insert into bench_go_api_keys (key_hash, user_id, label) values ($1, $2, $3)', values: [randomBytes(32).toString('hex'), ids.userId, 'perfx'] },
      ],
    },
  ];
  const runs = variants.map(() => [] as Array<{ perSecond: number; cpuMs: number }>);
  for (let round = 0; round < rounds; round++) {
    for (const [i, variant] of variants.entries()) runs[i]!.push(await measure(url, variant));
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const results = variants.map((variant, i) => ({
    name: variant.name,
    perSecond: median(runs[i]!.map((r) => r.perSecond)),
    cpuMs: median(runs[i]!.map((r) => r.cpuMs)),
    all: runs[i]!.map((r) => r.cpuMs.toFixed(2)).join(' '),
  }));
  const go = results.at(-1)!.cpuMs;
  return table(
    ['statements per create', 'creates/s', 'Postgres CPU ms/create (median)', 'each run', 'vs Go shape'],
    results.map((r) => [r.name, r.perSecond.toFixed(0), r.cpuMs.toFixed(3), r.all, `${(r.cpuMs / go).toFixed(2)}x`]),
  );
}
