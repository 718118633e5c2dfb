import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { confirmForm, tokenOf } from '../support/app.js';
import { freshPostgresUrl } from '../support/database.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { until } from '../support/processes.js';
import { killSpawnedServices, listeningOf, spawnService, type SpawnedService } from '../support/service.js';
import { startSmtpServer, type SmtpServer } from '../support/smtp.js';
import { openssh } from '../support/ssh.js';

// Expiry notices with two real instances on one database, both scanning: together they send the
// notice once, through the real outbox to a real SMTP server, within a minute of its threshold
// (the promise). The threshold passes 45 s after the key is minted, so by then each
// instance has looked (they wake at least every 30 s) and has seen it coming.
//
// What this does not prove: that the two scans truly raced. On a loaded machine they may run one
// after the other, and then one email is no feat. Exactly once under a real race (scans on two
// connection pools at the same instant, a rotation holding the key meanwhile) is proven in
// test/core/expiry-notices.test.ts. Nor does it hold the instances to "within seconds": their
// timers are real, and a loaded CI may delay them; it holds them to the minute.

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  killSpawnedServices();
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const MINUTE = 60_000;

type Scan = { time: number; keys: number; notices: number; nextDueAt: string | null };

/** The "expiry notices scanned" lines an instance logged (debug): when each ended, what it queued, the next threshold it saw. */
function scansOf(service: SpawnedService): Scan[] {
  return service
    .output()
    .split('\n')
    .filter((line) => line.includes('"msg":"expiry notices scanned"'))
    .map((line) => JSON.parse(line) as Scan);
}

describe('expiry notices, two instances', () => {
  it('exactly one email per key and threshold, naming the key and the rotate command', async () => {
    const smtp: SmtpServer = await startSmtpServer();
    cleanups.push(smtp.close);
    const databaseUrl = await freshPostgresUrl();
    const env = {
      DATABASE_URL: databaseUrl,
      SMTP_URL: smtp.url,
      // A key minted for 6 minutes passes its threshold 45 s later.
      KEY_EXPIRY_NOTICES: '5m15s',
      LOG_LEVEL: 'debug',
      MAIL_PER_IP_HOURLY: '0',
      HTTP_LOOKUPS_PER_MINUTE: '0',
      SSH_CONNECTIONS_PER_SECOND: '1000',
    };
    const one = spawnService(env);
    const two = spawnService(env);
    const [first, second] = await Promise.all([listeningOf(one), listeningOf(two)]);
    const output = () => `--- one ---\n${one.output()}\n--- two ---\n${two.output()}`;

    // A user logged in over SSH on the first instance, the emailed link confirmed.
    const key = makeKey();
    const email = uniqueEmail('expiring');
    const login = openssh(first.sshPort, key.privateKeyPath, ['login', email]);
    const verification = await smtp.waitForMail(email, 20_000);
    expect((await fetch(`${first.httpUrl}/shell-auth/verify`, confirmForm(tokenOf(verification.link!)))).status).toBe(200);
    expect((await login).code).toBe(0);

    const made = await openssh(first.sshPort, key.privateKeyPath, ['create', '--label', 'six-minute-key', '--expires-in', '6m', '--json']);
    expect(made.code, made.stderr).toBe(0);
    const { api_key_id: keyId } = JSON.parse(made.stdout) as { api_key_id: string };
    const db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();
    cleanups.push(() => db.end());
    const { rows } = await db.query<{ expires_at: Date; org: string }>(
      'SELECT k.expires_at, o.name AS org FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.id = $1',
      [keyId],
    );
    const expiresAt = rows[0]!.expires_at;
    const dueAt = expiresAt.getTime() - (5 * 60 + 15) * 1000;

    const notice = await smtp.waitForMail(email, 45_000 + 2 * MINUTE);
    // Not before the threshold, and within a minute of it.
    expect(Date.now()).toBeGreaterThanOrEqual(dueAt);
    expect(Date.now() - dueAt).toBeLessThan(MINUTE);
    expect(notice.subject).toBe('Your API key "six-minute-key" expires soon');
    expect(notice.text).toContain(`${keyId}  "six-minute-key"  org ${rows[0]!.org}  (expires ${expiresAt.toISOString()}, in `);
    expect(notice.text).toMatch(/, in [45] minutes\)/);
    // The rotate command as the instance that queued it names its door.
    expect(notice.text).toMatch(new RegExp(`^  ssh -p (${first.sshPort}|${second.sshPort}) keys@localhost rotate ${keyId}$`, 'm'));

    // Both instances scanned after the threshold, each within a minute of it (a scan that began
    // before it still saw it coming, as nextDueAt), and the two together queued the one email.
    const dueIso = new Date(dueAt).toISOString();
    const firstScanAfterDue = (service: SpawnedService) => scansOf(service).find((scan) => scan.time >= dueAt && scan.nextDueAt !== dueIso);
    await until(() => !!firstScanAfterDue(one) && !!firstScanAfterDue(two), 'a scan by each instance after the threshold', output, 2 * MINUTE);
    for (const service of [one, two]) expect(firstScanAfterDue(service)!.time - dueAt).toBeLessThan(MINUTE);
    const queuedBy = [one, two].map((service) => scansOf(service).reduce((sum, scan) => sum + scan.notices, 0));
    expect(queuedBy.sort()).toEqual([0, 1]);
    expect(smtp.mailsTo(email).map((m) => m.subject)).toEqual([verification.subject, notice.subject]);
    const recorded = await db.query('SELECT threshold_seconds FROM key_expiry_notices WHERE api_key_id = $1', [keyId]);
    expect(recorded.rows).toEqual([{ threshold_seconds: 315 }]);
    // The SMTP server has the email a moment before its sender records it sent (sent_at is set once
    // the server's answer is back): wait for that record, then count.
    const sentNotices = async () =>
      (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM mail_outbox WHERE kind = 'notice' AND recipient = $1 AND sent_at IS NOT NULL", [email])).rows[0]!.n;
    await until(async () => (await sentNotices()) > 0, 'the notice recorded as sent in the outbox', output, 20_000);
    expect(await sentNotices()).toBe(1);
  }, 6 * MINUTE);
});
