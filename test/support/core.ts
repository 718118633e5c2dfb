import pino from 'pino';
import { confirmVerificationLink, deliverNextMail, parsePublicKeyLine, startVerification, subscriptionBilling } from '../../src/core/index.js';
import type { CoreDeps, CoreSettings, NoticeMail, VerificationMail } from '../../src/core/index.js';
import type { OpenDatabase } from '../../src/db/database.js';
import { openTestDatabase } from './database.js';
import { makeKey, uniqueEmail, type TestKey } from './keys.js';

export type TestCore = {
  deps: CoreDeps;
  database: OpenDatabase;
  /** Every verification mail the core sent, newest last. */
  mails: VerificationMail[];
  /** Every notice (expiry, revocation) the core sent, newest last. */
  notices: NoticeMail[];
  /** Sends what the outbox holds (there is no sender loop here), as of the test clock. */
  deliverMail(): Promise<void>;
  /** The clock the core reads; tests move it instead of sleeping. */
  clock: { now: Date; advance(ms: number): void };
  /** A fresh key linked (and proven, as over SSH) to a fresh account. */
  verifiedUser(): Promise<{ email: string; key: TestKey; publicKey: ReturnType<typeof publicKeyOf> }>;
  close(): Promise<void>;
};

export function publicKeyOf(line: string) {
  const parsed = parsePublicKeyLine(line);
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.key;
}

/** The core in-process on the test database, with a mailer that keeps messages and a movable clock. */
export async function startTestCore(settings: Partial<CoreSettings> = {}): Promise<TestCore> {
  const database = await openTestDatabase();
  const mails: VerificationMail[] = [];
  const notices: NoticeMail[] = [];
  const clock = {
    now: new Date(),
    advance(ms: number) {
      clock.now = new Date(clock.now.getTime() + ms);
    },
  };
  const deps: CoreDeps = {
    db: database.db,
    mailer: { sendVerification: async (mail) => void mails.push(mail), sendNotice: async (mail) => void notices.push(mail) },
    billing: subscriptionBilling(),
    log: pino({ level: 'silent' }),
    settings: { publicUrl: 'http://shell-auth.test', httpTrust: { window: 15 * 60_000, mintsPerConfirmation: 1 }, keyMaxTtlMs: null, mailPerIpHourly: null, ...settings },
    now: () => clock.now,
  };
  async function deliverMail() {
    while ((await deliverNextMail(deps)) !== 'idle');
  }
  return {
    deps,
    database,
    mails,
    notices,
    clock,
    deliverMail,
    async verifiedUser() {
      const email = uniqueEmail('core');
      const key = makeKey();
      const publicKey = publicKeyOf(key.publicKey);
      const origin = { channel: 'ssh' as const, ip: '127.0.0.1' };
      await startVerification(deps, { email, key: publicKey, note: null, keyProven: true, origin });
      await deliverMail();
      const link = mails.at(-1)?.link;
      if (!link) throw new Error('no verification mail');
      await confirmVerificationLink(deps, new URL(link).searchParams.get('token') ?? '', origin);
      return { email, key, publicKey };
    },
    close: () => database.close(),
  };
}
