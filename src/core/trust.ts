import type { SshKeyRow } from '../db/schema.js';

/**
 * The trust rules, in one place. Whether a public key may act — on which door, right now — and
 * what a request or an email confirmation changes, is decided here and nowhere else. Everything
 * in this file is pure: callers load the binding, ask, and write what the answer says.
 *
 * A binding (an `ssh_keys` row) ties a key to one account. It is:
 * - *emailed*: the account's owner confirmed it by email, but nobody proved they hold the private
 *   key (over HTTP anyone can submit anyone's public key). It can still be taken over by a request
 *   that proves possession, and it is no SSH identity.
 * - *proven*: confirmed by email and possession proven (a signature on the SSH door). It is an SSH
 *   identity and can no longer be taken over.
 * HTTP callers never prove possession, so the HTTP door trusts a binding only inside a window
 * opened by confirming an *HTTP* request (an SSH login never opens it), for `HTTP_TRUST_WINDOW`
 * and at most `HTTP_TRUST_MINTS` HTTP mints.
 */

/** `off`: the HTTP door never mints; `forever`: the literal Vers behaviour; else milliseconds (> 0). */
export type HttpTrustWindow = 'off' | 'forever' | number;

export type HttpTrustPolicy = {
  window: HttpTrustWindow;
  /** HTTP mints per confirmation; null = no limit inside the window. */
  mintsPerConfirmation: number | null;
};

export type Binding =
  | { state: 'unbound' }
  | {
      state: 'emailed' | 'proven';
      userId: string;
      /** The latest confirmation of an HTTP request, and the HTTP mints spent since. */
      httpWindow: { openedAt: Date; mints: number } | null;
    };

type BindingColumns = Pick<SshKeyRow, 'user_id' | 'proven_at' | 'http_confirmed_at' | 'http_mints'>;

/** The one reading of a binding row's timestamps. */
export function bindingOf(row: BindingColumns | undefined | null): Binding {
  if (!row) return { state: 'unbound' };
  return {
    state: row.proven_at === null ? 'emailed' : 'proven',
    userId: row.user_id,
    httpWindow: row.http_confirmed_at === null ? null : { openedAt: new Date(row.http_confirmed_at), mints: Number(row.http_mints) },
  };
}

/**
 * Whether an HTTP caller naming `userId` (the account of the email they sent) may act with the key.
 * Every answer but `trusted` and `disabled` reads the same to the caller (no oracle); they are
 * told apart here for the rules' own sake.
 */
export type HttpAccess = 'trusted' | 'unverified' | 'not-opened' | 'expired' | 'spent' | 'disabled';

export function httpAccess(binding: Binding, userId: string | null, policy: HttpTrustPolicy, now: Date): HttpAccess {
  if (binding.state === 'unbound' || userId === null || binding.userId !== userId) return 'unverified';
  if (policy.window === 'off') return 'disabled';
  const opened = binding.httpWindow;
  if (opened === null) return 'not-opened';
  if (policy.window !== 'forever' && now.getTime() >= opened.openedAt.getTime() + policy.window) return 'expired';
  if (policy.mintsPerConfirmation !== null && opened.mints >= policy.mintsPerConfirmation) return 'spent';
  return 'trusted';
}

/**
 * An HTTP caller who proved, with an SSHSIG over a fresh challenge, that it holds the key: it may
 * act for the account the key is bound to (by an email confirmation, over either door), at any
 * time and without spending the window. Possession of a key is not ownership of an email: an
 * unbound key gets nothing.
 */
export function provenHttpAccess(binding: Binding, userId: string | null): 'trusted' | 'unverified' {
  return binding.state !== 'unbound' && userId !== null && binding.userId === userId ? 'trusted' : 'unverified';
}

/** An HTTP mint spends one use of the window: the caller writes `patch` in the mint's transaction. */
export function onHttpMint(
  binding: Binding,
  userId: string,
  policy: HttpTrustPolicy,
  now: Date,
): { allowed: true; patch: { http_mints: number } } | { allowed: false; access: Exclude<HttpAccess, 'trusted'> } {
  const access = httpAccess(binding, userId, policy, now);
  if (access !== 'trusted' || binding.state === 'unbound' || binding.httpWindow === null) {
    return { allowed: false, access: access === 'trusted' ? 'unverified' : access };
  }
  return { allowed: true, patch: { http_mints: binding.httpWindow.mints + 1 } };
}

/** The SSH door: a key is an account's identity only once its binding is proven. */
export function sshAccountOf(binding: Binding): string | null {
  return binding.state === 'proven' ? binding.userId : null;
}

/**
 * Someone asks to link the key to the account of an email (`POST /api/shell-auth` over HTTP;
 * `login` over SSH, where the signature has proven possession: `keyProven`). `requesterId` is
 * that account, or null when it does not exist yet.
 * - `already-linked`: no email; with proof of possession the binding becomes proven (`prove`).
 * - `send-link`: email a confirmation link.
 * - `refuse-taken`: the key belongs to someone else (409).
 */
export type RequestDecision =
  | { outcome: 'already-linked'; prove: boolean }
  | { outcome: 'send-link' }
  | { outcome: 'refuse-taken' };

export function onLinkRequest(
  binding: Binding,
  requesterId: string | null,
  keyProven: boolean,
  policy: HttpTrustPolicy,
  now: Date,
): RequestDecision {
  if (binding.state === 'unbound') return { outcome: 'send-link' };
  if (requesterId !== null && binding.userId === requesterId) {
    // The email's owner confirmed this key before; a signature now proves possession too.
    if (keyProven) return { outcome: 'already-linked', prove: binding.state === 'emailed' };
    if (httpAccess(binding, requesterId, policy, now) === 'trusted') return { outcome: 'already-linked', prove: false };
    return { outcome: 'send-link' };
  }
  return mayTakeOver(binding, keyProven) ? { outcome: 'send-link' } : { outcome: 'refuse-taken' };
}

/** Column values to write on a binding row (the caller adds `user_id`, ids and key facts). */
export type BindingPatch = {
  verified_at?: Date;
  confirmed_at?: Date;
  proven_at?: Date | null;
  http_confirmed_at?: Date | null;
  http_mints?: number;
};

/**
 * A confirmation link is pressed: the email's owner (`userId`) confirms the key; `keyProven`
 * says whether the request behind the link proved possession (it came from the SSH door). Only
 * the confirmation of an HTTP request opens the HTTP window, with a fresh allowance of mints.
 */
export type ConfirmDecision =
  | { action: 'insert'; patch: Required<BindingPatch> }
  | { action: 'reconfirm'; patch: BindingPatch }
  | { action: 'take-over'; patch: Required<BindingPatch> }
  | { action: 'refuse-taken' };

export function onConfirm(binding: Binding, userId: string, keyProven: boolean, now: Date): ConfirmDecision {
  const httpWindow = keyProven ? {} : { http_confirmed_at: now, http_mints: 0 };
  const fresh = { verified_at: now, confirmed_at: now, proven_at: keyProven ? now : null, http_confirmed_at: null, http_mints: 0 };
  if (binding.state === 'unbound') return { action: 'insert', patch: { ...fresh, ...httpWindow } };
  if (binding.userId === userId) {
    // Never downgrade: an unproven confirmation leaves an earlier proof in place.
    return { action: 'reconfirm', patch: { confirmed_at: now, ...(keyProven ? { proven_at: now } : {}), ...httpWindow } };
  }
  if (!mayTakeOver(binding, keyProven)) return { action: 'refuse-taken' };
  // A fresh binding for the new holder: nothing of the old holder's carries over.
  return { action: 'take-over', patch: { ...fresh, ...httpWindow } };
}

/**
 * A key bound to another account blocks a new binding, except that a request proving possession
 * may take over a binding that never proved it (made over HTTP, where anyone can submit anyone's
 * public key).
 */
function mayTakeOver(binding: Binding, keyProven: boolean): boolean {
  return keyProven && binding.state === 'emailed';
}
