import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import {
  AppError,
  authenticateApiKey,
  type AuthenticatedApiKey,
  EmailSchema,
  findTrustedHolder,
  httpKeyStatus,
  issueChallenge,
  LabelSchema,
  MAX_ARMORED_LENGTH,
  mintApiKeyOverHttp,
  NoteSchema,
  OrgNameLookupSchema,
  parseInput,
  proveBinding,
  PublicKeyLineSchema,
  redeemProof,
  startVerification,
  type PublicKey,
} from '../core/index.js';
import type { HttpDoorSettings, RouteContext } from './route.js';
import { bearerKeyOf, sendJson, sendJsonText } from './io.js';

/** Optional proof of possession (POST /api/shell-auth/challenge, then `ssh-keygen -Y sign`). */
const ProofFields = {
  challenge: z.string().max(200).optional(),
  ssh_signature: z.string().max(MAX_ARMORED_LENGTH).optional(),
};

const InitiateRequest = z.object({
  email: EmailSchema,
  ssh_public_key: PublicKeyLineSchema,
  body: NoteSchema.nullish(),
  ...ProofFields,
});

const KeyPairRequest = z.object({ email: EmailSchema, ssh_public_key: PublicKeyLineSchema, ...ProofFields });

const PublicKeyRequest = z.object({ ssh_public_key: PublicKeyLineSchema, ...ProofFields });

const ChallengeRequest = z.object({ ssh_public_key: PublicKeyLineSchema });

const CreateApiKeyRequest = z.object({
  email: EmailSchema,
  ssh_public_key: PublicKeyLineSchema,
  label: LabelSchema,
  ...ProofFields,
  // Clients may send "" or null for "my default org".
  org_name: OrgNameLookupSchema.nullish()
    .transform((name) => (name ? name : undefined)),
  // Not the contract's: absent (or null, as clients send for "unset"), every permission, as Vers's clients expect.
  permissions: z
    .array(z.string().max(100, 'must be permission names'))
    .min(1, 'must name at least one permission')
    .max(32)
    .nullish()
    .transform((names) => names ?? undefined),
});

/**
 * Whether the request proves possession of its key. No proof fields: false, and everything is as
 * the Vers contract has it. A proof that does not hold: 401 saying why.
 */
async function provenBySignature(deps: RouteContext['deps'], origin: RouteContext['origin'], input: { ssh_public_key: PublicKey; challenge?: string | undefined; ssh_signature?: string | undefined }): Promise<boolean> {
  if (input.challenge === undefined && input.ssh_signature === undefined) return false;
  if (input.challenge === undefined || input.ssh_signature === undefined) {
    throw new AppError('PROOF_INVALID', { detail: 'send both challenge and ssh_signature (from POST /api/shell-auth/challenge)' });
  }
  await redeemProof(deps, input.ssh_public_key, { challenge: input.challenge, ssh_signature: input.ssh_signature }, origin);
  return true;
}

/** POST /api/shell-auth/challenge: a challenge to sign with `ssh-keygen -Y sign`. */
export async function challenge({ deps, res, body, origin }: RouteContext): Promise<void> {
  const input = parseInput(ChallengeRequest, body, 'INVALID_INITIATE');
  const issued = await issueChallenge(deps, input.ssh_public_key, origin);
  sendJson(res, 200, { success: true, ...issued });
}

/** POST /api/shell-auth */
export async function initiate({ deps, res, body, origin }: RouteContext): Promise<void> {
  const input = parseInput(InitiateRequest, body, 'INVALID_INITIATE');
  // Signed: the binding this request leads to is proven, as one made by `ssh … login`.
  const signed = await provenBySignature(deps, origin, input);
  const result = await startVerification(deps, {
    email: input.email,
    key: input.ssh_public_key,
    note: input.body ?? null,
    keyProven: signed,
    origin,
  });
  sendJson(res, 200, {
    success: true,
    user_id: result.user.id,
    email: result.user.email,
    is_new_user: result.isNewUser,
    // Clients expect a UUID; with no email needed there is no request, so a fresh one that names nothing.
    nonce: result.nonce ?? randomUUID(),
    ssh_public_key: result.sshPublicKey,
    already_verified: result.alreadyVerified,
  });
}

/**
 * Why an HTTP caller may not act with a key. One text whatever the reason (unknown pair, window
 * never opened, expired, spent), so the answer never tells whether an email holds a key; only a
 * server-wide setting (HTTP minting off) is said as such.
 */
export function notTrustedReason(door: HttpDoorSettings, status: 'disabled' | 'closed'): string {
  if (status === 'disabled') return `HTTP trust is disabled on this server: use the SSH door: ${door.sshHint}`;
  return (
    'No HTTP verification in force for this email and key: confirm by email again (POST /api/shell-auth), ' +
    `or use the SSH door: ${door.sshHint}`
  );
}

/** POST /api/shell-auth/verify-key */
export async function verifyKey({ deps, door, res, body, origin }: RouteContext): Promise<void> {
  const input = parseInput(KeyPairRequest, body, 'INVALID_INITIATE');
  const signed = await provenBySignature(deps, origin, input);
  const status = await httpKeyStatus(deps, input.email, input.ssh_public_key, { provenBySignature: signed });
  // The email's owner confirmed this key and the caller holds it: proven, as an SSH login makes it.
  if (signed && status.status === 'trusted') await proveBinding(deps, input.ssh_public_key, origin, 'sshsig');
  if (status.status !== 'trusted') {
    const reason = notTrustedReason(door, status.status === 'disabled' ? 'disabled' : 'closed');
    sendJson(res, 401, { verified: false, is_active: false, reason });
    return;
  }
  sendJson(res, 200, {
    verified: true,
    is_active: status.user.is_active,
    user_id: status.user.id,
    key_id: status.sshKeyId,
    orgs: status.orgs.map((o) => ({ org_id: o.org_id, name: o.name, role: o.role })),
  });
}

/** POST /api/shell-auth/verify-public-key */
export async function verifyPublicKey({ deps, res, body, origin }: RouteContext): Promise<void> {
  const input = parseInput(PublicKeyRequest, body, 'INVALID_INITIATE');
  const signed = await provenBySignature(deps, origin, input);
  const matches = await findTrustedHolder(deps, input.ssh_public_key, { provenBySignature: signed });
  if (matches.length === 0) {
    sendJson(res, 404, { verified: false, reason: 'No verified SSH key records found for this public key' });
    return;
  }
  sendJson(res, 200, {
    verified: true,
    count: matches.length,
    matches: matches.map((holder) => ({
      user_id: holder.user.id,
      key_id: holder.sshKeyId,
      email: holder.user.email,
      is_active: holder.user.is_active,
      public_key_verified: true,
      verified_at: holder.verifiedAt,
      last_seen_at: holder.lastSeenAt,
    })),
  });
}

/** POST /api/shell-auth/api-keys */
export async function createApiKey({ deps, door, res, body, origin }: RouteContext): Promise<void> {
  const input = parseInput(CreateApiKeyRequest, body, 'INVALID_REQUEST');
  const signed = await provenBySignature(deps, origin, input);
  const minted = await mintApiKeyOverHttp(deps, {
    email: input.email,
    key: input.ssh_public_key,
    label: input.label,
    orgName: input.org_name,
    permissions: input.permissions,
    origin,
    provenBySignature: signed,
  }).catch((err: unknown) => {
    // The contract's 401 text, with the same help verify-key gives.
    if (err instanceof AppError && err.code === 'UNVERIFIED_KEY') throw new AppError('UNVERIFIED_KEY', { detail: notTrustedReason(door, 'closed') });
    if (err instanceof AppError && err.code === 'HTTP_MINTING_DISABLED') throw new AppError('HTTP_MINTING_DISABLED', { detail: notTrustedReason(door, 'disabled') });
    throw err;
  });
  if (signed) await proveBinding(deps, input.ssh_public_key, origin, 'sshsig');
  sendJson(res, 200, {
    success: true,
    api_key: minted.api_key,
    api_key_id: minted.api_key_id,
    org_id: minted.org_id,
    org_name: minted.org_name,
    // Only for a client that asked: the contract's answer stays as it is.
    ...(input.permissions === undefined ? {} : { permissions: minted.permissions }),
  });
}

/** GET /api/whoami — introspection for the platform: `Authorization: Bearer <api_key>`. */
export async function whoami({ deps, res, req }: RouteContext): Promise<void> {
  const apiKey = bearerKeyOf(req);
  if (apiKey === null) throw new AppError('INVALID_API_KEY');
  const key = await authenticateApiKey(deps, apiKey);
  let body = whoamiBodies.get(key);
  if (body === undefined) whoamiBodies.set(key, (body = JSON.stringify({ success: true, ...key })));
  sendJsonText(res, 200, body);
}

/** A cached key's answer is one object while it is cached (core/api-keys.ts): its body is kept beside it. */
const whoamiBodies = new WeakMap<AuthenticatedApiKey, string>();
