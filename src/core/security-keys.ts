import { createHash, verify } from 'node:crypto';
import { keyObjectOf, SK_ECDSA_P256, SK_ED25519, WireReader, type PublicKey } from './ssh-public-key.js';

/**
 * Security-key (FIDO) signatures, per OpenSSH's PROTOCOL.u2f. The authenticator does not sign
 * the message itself but
 *
 *     SHA256(application) || flags || uint32 counter || SHA256(message)
 *
 * with Ed25519 (`sk-ssh-ed25519@openssh.com`) or ECDSA P-256/SHA-256
 * (`sk-ecdsa-sha2-nistp256@openssh.com`). `flags` says whether a person touched the key (user
 * presence, 0x01) and whether it checked a PIN or biometric (user verification, 0x04); `counter`
 * is the authenticator's signature count, which a cloned authenticator cannot keep in step.
 */

export const SK_USER_PRESENT = 0x01;
export const SK_USER_VERIFIED = 0x04;

/** What a security-key signature carries besides the signature proper. */
export type SkSignature = { signature: Buffer; flags: number; counter: number };

export type SkFlagsPolicy = { requireUserVerification: boolean };

export type SkCheck = { ok: true; flags: number; counter: number } | { ok: false; reason: 'bad_signature' | 'no_user_presence' | 'no_user_verification' };

/**
 * The signature field of an SSH signature blob after its algorithm name:
 * `string signature || byte flags || uint32 counter`.
 */
export function parseSkSignatureField(rest: Buffer): SkSignature | null {
  const reader = new WireReader(rest);
  const signature = reader.string();
  const flags = reader.bytes(1);
  const counter = reader.uint32();
  if (!signature || !flags || counter === null || !reader.atEnd()) return null;
  return { signature, flags: flags[0]!, counter };
}

/**
 * The same, as ssh2 hands it to a server's auth handler: it strips the inner signature's length
 * prefix (it does so for every algorithm), so an Ed25519 signature is the first 64 bytes and an
 * ECDSA one the two mpints r and s.
 */
export function parseSkSignatureFromSsh2(type: string, raw: Buffer): SkSignature | null {
  let length: number;
  if (type === SK_ED25519) {
    length = 64;
  } else if (type === SK_ECDSA_P256) {
    const reader = new WireReader(raw);
    if (!reader.string() || !reader.string()) return null;
    length = reader.position(); // mpint r, mpint s: then exactly flags and counter
  } else {
    return null;
  }
  if (raw.length !== length + 5) return null;
  return { signature: raw.subarray(0, length), flags: raw[length]!, counter: raw.readUInt32BE(length + 1) };
}

/** Checks a security-key signature over `message` (for SSH authentication, the session's signed data). */
export function verifySkSignature(key: PublicKey, message: Buffer, sig: SkSignature, policy: SkFlagsPolicy): SkCheck {
  if (!key.application) return { ok: false, reason: 'bad_signature' };
  const counter = Buffer.alloc(4);
  counter.writeUInt32BE(sig.counter);
  const signed = Buffer.concat([sha256(Buffer.from(key.application, 'utf8')), Buffer.from([sig.flags]), counter, sha256(message)]);
  let good = false;
  try {
    const keyObject = keyObjectOf(key);
    if (key.type === SK_ED25519) {
      good = sig.signature.length === 64 && verify(null, signed, keyObject, sig.signature);
    } else if (key.type === SK_ECDSA_P256) {
      const fixed = ecdsaP1363(sig.signature, 32);
      good = fixed !== null && verify('sha256', signed, { key: keyObject, dsaEncoding: 'ieee-p1363' }, fixed);
    }
  } catch {
    good = false; // OpenSSL refusing the input is a signature that does not verify
  }
  // Flags are judged only on a signature that verifies: they are part of what was signed.
  if (!good) return { ok: false, reason: 'bad_signature' };
  if ((sig.flags & SK_USER_PRESENT) === 0) return { ok: false, reason: 'no_user_presence' };
  if (policy.requireUserVerification && (sig.flags & SK_USER_VERIFIED) === 0) return { ok: false, reason: 'no_user_verification' };
  return { ok: true, flags: sig.flags, counter: sig.counter };
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

/** SSH's (mpint r, mpint s) as the fixed-width r || s that node:crypto takes ("ieee-p1363"). */
export function ecdsaP1363(raw: Buffer, size: number): Buffer | null {
  const reader = new WireReader(raw);
  const r = reader.string();
  const s = reader.string();
  if (!r || !s || !reader.atEnd()) return null;
  const fixed = (mpint: Buffer) => {
    let start = 0;
    while (start < mpint.length - 1 && mpint[start] === 0) start++;
    const digits = mpint.subarray(start);
    return digits.length > size ? null : Buffer.concat([Buffer.alloc(size - digits.length), digits]);
  };
  const rr = fixed(r);
  const ss = fixed(s);
  return rr && ss ? Buffer.concat([rr, ss]) : null;
}

/**
 * Whether a new counter value suggests a cloned authenticator: it must move forward. An
 * authenticator that keeps no counter always says 0 (WebAuthn's rule: then nothing is judged).
 */
export function counterRegressed(highestSeen: number | null, counter: number): boolean {
  if (highestSeen === null) return false;
  if (highestSeen === 0 && counter === 0) return false;
  return counter <= highestSeen;
}
