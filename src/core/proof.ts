import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { addressGroupIn, nowOf, type CoreDeps, type RequestOrigin } from './context.js';
import { AppError } from './errors.js';
import { sha256Hex } from './secrets.js';
import { recordSecurityKeyCounter } from './security-key-counter.js';
import type { PublicKey } from './ssh-public-key.js';
import { verifySshsig } from './sshsig.js';

/**
 * Proof of possession over HTTP: the server hands out a challenge bound to a key; the client
 * signs the server's message with `ssh-keygen -Y sign`; a request carrying both is as strong as
 * an SSH connection made with that key. The message names this service and the expiry, so a
 * signature made here is worthless anywhere else or later; each challenge works once.
 */

export const CHALLENGE_TTL_MS = 2 * 60_000;
/**
 * Live (unexpired, unused) challenges per key and requester: a client needs one at a time, a
 * script signing requests in parallel a few. A new one beyond these replaces the oldest of the
 * same key asked from the same address group (addressGroupIn: an IPv6 address counts as its /64),
 * never another requester's: a key is public, so anyone could otherwise replace its holder's
 * challenges faster than a security key is touched. A key's rows then grow only with the number
 * of groups asking for it, each bounded by its lookup budget (HTTP_LOOKUPS_PER_MINUTE), and
 * expired ones go within CHALLENGE_KEEP_MS.
 */
export const CHALLENGES_PER_KEY = 5;
/**
 * Expired and used challenges are kept this long past their expiry, so a late or replayed proof
 * hears "expired" or "already used" rather than "not one this server issued"; then deleted.
 */
export const CHALLENGE_KEEP_MS = 5 * 60_000;
const CHALLENGE_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export type Challenge = { challenge: string; namespace: string; message: string; expires_at: Date };
export type Proof = { challenge: string; ssh_signature: string };

/** The `-n` namespace to sign with: this service's own, so no other SSHSIG use can be replayed here. */
export function proofNamespace(publicUrl: string): string {
  return `shell-auth@${new URL(publicUrl).host}`;
}

/** What the client signs, verbatim (`jq -j .message | ssh-keygen -Y sign …`). Rebuilt, never stored. */
export function challengeMessage(publicUrl: string, key: Pick<PublicKey, 'fingerprint'>, challenge: string, expiresAt: Date): string {
  return [
    'shell-auth proof of key possession',
    `service: ${publicUrl}`,
    `key: ${key.fingerprint}`,
    `challenge: ${challenge}`,
    `expires: ${expiresAt.toISOString()}`,
  ].join('\n');
}

export async function issueChallenge(deps: CoreDeps, key: PublicKey, origin: RequestOrigin): Promise<Challenge> {
  const challenge = randomBytes(32).toString('base64url');
  const now = nowOf(deps);
  const expiresAt = new Date(now.getTime() + CHALLENGE_TTL_MS);
  const group = addressGroupIn(deps, origin.ip);
  // `=` (not IS NOT DISTINCT FROM), so the (key_blob, requested_net, issued_seq) index serves it.
  const sameRequester = group === null ? sql`requested_net IS NULL` : sql`requested_net = ${group}`;
  // One statement: the newest CHALLENGES_PER_KEY - 1 live ones of this key from this requester's
  // address group stay, with the new one; its older live ones, and the key's challenges (from
  // anyone) expired past CHALLENGE_KEEP_MS, go. Issues racing for one key and group do not see
  // each other's row, so a few more may stay until the next issue (or the sweep).
  await sql`
    WITH kept AS (
      SELECT challenge_hash FROM ssh_challenges
      WHERE key_blob = ${key.blob} AND ${sameRequester} AND used_at IS NULL AND expires_at > ${now}
      ORDER BY issued_seq DESC
      LIMIT ${CHALLENGES_PER_KEY - 1}
    ), pruned AS (
      DELETE FROM ssh_challenges
      WHERE key_blob = ${key.blob}
        AND (expires_at < ${new Date(now.getTime() - CHALLENGE_KEEP_MS)}
          OR (${sameRequester} AND used_at IS NULL AND expires_at > ${now} AND challenge_hash NOT IN (SELECT challenge_hash FROM kept)))
    )
    INSERT INTO ssh_challenges (challenge_hash, key_blob, expires_at, requested_ip, requested_net, created_at)
    VALUES (${sha256Hex(challenge)}, ${key.blob}, ${expiresAt}, ${origin.ip}, ${group}, ${now})`.execute(deps.db);
  const { publicUrl } = deps.settings;
  return { challenge, namespace: proofNamespace(publicUrl), message: challengeMessage(publicUrl, key, challenge, expiresAt), expires_at: expiresAt };
}

/**
 * Checks a proof for `key` and spends its challenge. Throws PROOF_INVALID saying what was wrong
 * (about the challenge or the signature, never about accounts).
 */
export async function redeemProof(deps: CoreDeps, key: PublicKey, proof: Proof, origin: RequestOrigin): Promise<void> {
  const refuse = (detail: string) => new AppError('PROOF_INVALID', { detail });
  if (!CHALLENGE_PATTERN.test(proof.challenge)) throw refuse('challenge is not one this server issued');
  const hash = sha256Hex(proof.challenge);
  const row = await deps.db.selectFrom('ssh_challenges').selectAll().where('challenge_hash', '=', hash).executeTakeFirst();
  if (!row) throw refuse('challenge is not one this server issued');
  if (row.key_blob !== key.blob) throw refuse('challenge was issued for another key');
  if (row.used_at) throw refuse('challenge was already used: ask for a new one');
  const now = nowOf(deps);
  const expiresAt = new Date(row.expires_at);
  if (expiresAt.getTime() <= now.getTime()) throw refuse('challenge expired: ask for a new one');

  const { publicUrl } = deps.settings;
  const message = challengeMessage(publicUrl, key, proof.challenge, expiresAt);
  const securityKeys = { requireUserVerification: deps.settings.securityKeys?.requireUserVerification ?? false };
  const expected = { key, namespace: proofNamespace(publicUrl), securityKeys };
  let check = verifySshsig(proof.ssh_signature, { ...expected, message });
  // `jq -r` (rather than -j) adds a newline: the same message, the same binding; accepted too.
  if (!check.ok && check.failure === 'bad_signature') check = verifySshsig(proof.ssh_signature, { ...expected, message: `${message}\n` });
  if (!check.ok) throw refuse(check.reason);

  // Single use, also when two requests race with the same proof.
  const spent = await deps.db
    .updateTable('ssh_challenges')
    .set({ used_at: now })
    .where('challenge_hash', '=', hash)
    .where('used_at', 'is', null)
    .returning('challenge_hash')
    .executeTakeFirst();
  if (!spent) throw refuse('challenge was already used: ask for a new one');
  if (check.counter !== undefined && (await recordSecurityKeyCounter(deps, key, check.counter, origin)) === 'refused') {
    throw refuse('security key counter did not increase (a cloned authenticator?): refused');
  }
}

/** Challenges are worthless after two minutes: deleted CHALLENGE_KEEP_MS after that. The audit log keeps who proved what. */
export async function sweepChallenges(deps: CoreDeps): Promise<number> {
  const result = await deps.db.deleteFrom('ssh_challenges').where('expires_at', '<', new Date(nowOf(deps).getTime() - CHALLENGE_KEEP_MS)).executeTakeFirst();
  return Number(result.numDeletedRows);
}
