import { createHash, verify } from 'node:crypto';
import { ecdsaP1363, parseSkSignatureField, verifySkSignature, type SkFlagsPolicy } from './security-keys.js';
import { isSecurityKeyType, keyObjectOf, WireReader, wireString, type PublicKey } from './ssh-public-key.js';

/**
 * SSHSIG (OpenSSH's PROTOCOL.sshsig): the armored signature `ssh-keygen -Y sign -n NAMESPACE`
 * prints, checked against the key it must come from, the namespace, and the exact message.
 * Detached and armored only, version 1, as the spec defines; every malformed input is a reason,
 * never a throw.
 */

export type SshsigFailure =
  | 'malformed' // not armor, not base64, truncated, trailing bytes, bad magic
  | 'unsupported_version'
  | 'wrong_key' // signed by (or naming) another key than the one claimed
  | 'wrong_namespace'
  | 'unsupported_hash'
  | 'sha1_rsa' // the legacy "ssh-rsa" (SHA-1) signature algorithm
  | 'sk_flags' // a security key's signature without the user presence (or verification) required
  | 'bad_signature'; // well formed, but does not verify over this message

/** `counter`: a security key's signature counter (for the clone check); absent for other keys. */
export type SshsigCheck = { ok: true; hash: 'sha256' | 'sha512'; counter?: number } | { ok: false; failure: SshsigFailure; reason: string };

const BEGIN = '-----BEGIN SSH SIGNATURE-----';
const END = '-----END SSH SIGNATURE-----';
const MAGIC = Buffer.from('SSHSIG');
/** Far above any real signature (an 8192-bit RSA one armors to about 1.6 KB). */
export const MAX_ARMORED_LENGTH = 8_192;

const ECDSA_HASH: Record<string, { hash: string; size: number }> = {
  'ecdsa-sha2-nistp256': { hash: 'sha256', size: 32 },
  'ecdsa-sha2-nistp384': { hash: 'sha384', size: 48 },
  'ecdsa-sha2-nistp521': { hash: 'sha512', size: 66 },
};

export function verifySshsig(
  armored: string,
  expected: { key: PublicKey; namespace: string; message: string | Buffer; securityKeys?: SkFlagsPolicy },
): SshsigCheck {
  const blob = unarmor(armored);
  if (!blob) return failed('malformed', `not an armored SSH signature ("${BEGIN}" … "${END}")`);
  const reader = new WireReader(blob);
  if (!MAGIC.equals(reader.bytes(6) ?? Buffer.alloc(0))) return failed('malformed', 'does not start with the SSHSIG preamble');
  const version = reader.uint32();
  if (version === null) return failed('malformed', 'is truncated');
  if (version !== 1) return failed('unsupported_version', `version ${version} is not supported (only 1)`);
  const publicKey = reader.string();
  const namespace = reader.string();
  const reserved = reader.string();
  const hashAlgorithm = reader.string()?.toString('latin1');
  const signature = reader.string();
  if (!publicKey || !namespace || !reserved || hashAlgorithm === undefined || !signature) return failed('malformed', 'is truncated');
  if (!reader.atEnd()) return failed('malformed', 'has trailing bytes');

  if (!publicKey.equals(Buffer.from(expected.key.blob, 'base64'))) return failed('wrong_key', 'was made with another key than ssh_public_key');
  if (namespace.toString('utf8') !== expected.namespace) {
    return failed('wrong_namespace', `namespace must be "${expected.namespace}" (ssh-keygen -Y sign -n ${expected.namespace})`);
  }
  if (hashAlgorithm !== 'sha256' && hashAlgorithm !== 'sha512') return failed('unsupported_hash', 'hash algorithm must be sha256 or sha512');

  const digest = createHash(hashAlgorithm).update(expected.message).digest();
  const signedData = Buffer.concat([MAGIC, wireString(namespace), wireString(reserved), wireString(hashAlgorithm), wireString(digest)]);
  const sig = new WireReader(signature);
  const algorithm = sig.string()?.toString('latin1');
  if (!algorithm) return failed('malformed', 'signature field is malformed');
  if (isSecurityKeyType(expected.key.type)) {
    if (algorithm !== expected.key.type) return failed('wrong_key', `signature algorithm ${algorithm} is not the key's`);
    const sk = parseSkSignatureField(signature.subarray(4 + algorithm.length));
    if (!sk) return failed('malformed', 'security-key signature field is malformed');
    const check = verifySkSignature(expected.key, signedData, sk, expected.securityKeys ?? { requireUserVerification: false });
    if (check.ok) return { ok: true, hash: hashAlgorithm, counter: check.counter };
    if (check.reason === 'bad_signature') return failed('bad_signature', 'does not verify over this message with this key');
    return failed('sk_flags', check.reason === 'no_user_presence' ? 'was made without touching the security key (no user-presence flag)' : 'was made without the PIN or biometric check this server requires (no user-verification flag)');
  }
  const raw = sig.string();
  if (!raw || !sig.atEnd()) return failed('malformed', 'signature field is malformed');
  const outcome = checkSignature(expected.key, algorithm, raw, signedData);
  if (outcome !== true) return outcome;
  return { ok: true, hash: hashAlgorithm };
}

function checkSignature(key: PublicKey, algorithm: string, raw: Buffer, data: Buffer): true | SshsigCheck {
  try {
    const keyObject = keyObjectOf(key);
    if (key.type === 'ssh-ed25519') {
      if (algorithm !== 'ssh-ed25519') return failed('wrong_key', `signature algorithm ${algorithm} is not the key's`);
      return verify(null, data, keyObject, raw) ? true : failed('bad_signature', 'does not verify over this message with this key');
    }
    const ecdsa = ECDSA_HASH[key.type];
    if (ecdsa) {
      if (algorithm !== key.type) return failed('wrong_key', `signature algorithm ${algorithm} is not the key's`);
      const fixed = ecdsaP1363(raw, ecdsa.size);
      if (!fixed) return failed('malformed', 'ECDSA signature is malformed');
      const good = verify(ecdsa.hash, data, { key: keyObject, dsaEncoding: 'ieee-p1363' }, fixed);
      return good ? true : failed('bad_signature', 'does not verify over this message with this key');
    }
    if (key.type === 'ssh-rsa') {
      if (algorithm === 'ssh-rsa') return failed('sha1_rsa', 'RSA signatures must be rsa-sha2-256 or rsa-sha2-512, not SHA-1 "ssh-rsa"');
      const hash = algorithm === 'rsa-sha2-256' ? 'sha256' : algorithm === 'rsa-sha2-512' ? 'sha512' : null;
      if (!hash) return failed('wrong_key', `signature algorithm ${algorithm} is not an RSA one`);
      return verify(hash, data, keyObject, raw) ? true : failed('bad_signature', 'does not verify over this message with this key');
    }
    return failed('wrong_key', `key type ${key.type} cannot sign`);
  } catch {
    // OpenSSL refusing the input (a wrong-length signature, say) is a signature that does not verify.
    return failed('bad_signature', 'does not verify over this message with this key');
  }
}

/** The base64 blob between the armor lines; null when it is not armor or not base64. */
function unarmor(armored: string): Buffer | null {
  if (typeof armored !== 'string' || armored.length > MAX_ARMORED_LENGTH) return null;
  const text = armored.replace(/\r\n/g, '\n').trim();
  if (!text.startsWith(`${BEGIN}\n`) || !text.endsWith(`\n${END}`)) return null;
  const body = text.slice(BEGIN.length + 1, text.length - END.length - 1).replace(/\n/g, '');
  if (body.length === 0 || body.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body)) return null;
  return Buffer.from(body, 'base64');
}

function failed(failure: SshsigFailure, reason: string): SshsigCheck {
  return { ok: false, failure, reason: `ssh_signature ${reason}` };
}
