import { isSecurityKeyType, parsePublicKeyBlob, parseSkSignatureFromSsh2, verifySkSignature, type PublicKey, type SkFlagsPolicy } from '../core/index.js';

/** The parts of ssh2's AuthContext that decide the answer. */
export type AuthRequest = {
  method: string;
  username: string;
  /** publickey only: the offered key blob, and for a signed request the signature and what it signs. */
  keyBlob?: Buffer;
  /** The algorithm the client named for the key. */
  keyAlgorithm?: string;
  signature?: Buffer;
  signedData?: Buffer;
  hashAlgo?: string;
};

/** Why a request was refused, for the access log and metrics. */
export type RejectReason = 'method_refused' | 'bad_key' | 'sha1_signature' | 'bad_signature' | 'sk_flags';

export type AuthDecision =
  /** A signature-less "would you accept this key?": say yes, bind nothing. */
  | { answer: 'key-ok' }
  /**
   * The signature verified: this key, and only this key, is who the connection is. A security
   * key's signature also carries its authenticator's counter (for the clone check).
   */
  | { answer: 'accept'; key: PublicKey; securityKeyCounter?: number }
  | { answer: 'reject'; reason: RejectReason }
  /** Too many attempts, or the address has spent its verification budget: hang up unverified. */
  | { answer: 'hang-up'; reason: 'attempts' | 'verify_budget' };

export type AuthPolicy = {
  maxAttempts: number;
  /** Spends one of the address's signature verifications; false when it has none left. */
  mayVerify(): boolean;
  /** Checks `signature` over `data` with the key in `keyBlob`; true only when it verifies. */
  verify(keyBlob: Buffer, data: Buffer, signature: Buffer, hashAlgo: string | undefined): boolean;
  /** What a security key's signature must say about the person (PROTOCOL.u2f flags). */
  securityKeys: SkFlagsPolicy;
};

/**
 * Decides one authentication request (`attempt` counts from 1). Publickey only; identity comes
 * only from a signature that verifies, never from a key merely offered (a client may offer
 * someone else's public key first and sign with its own next: GHSA-pchf-49fh-w34r). Any user
 * name gets in: the key is the identity, and a client that came as `root@` is then told, in
 * words, which user to connect as (a refusal would only say "Permission denied").
 */
export function decideAuthentication(request: AuthRequest, attempt: number, policy: AuthPolicy, heldBack?: Buffer): AuthDecision {
  if (attempt > policy.maxAttempts) return { answer: 'hang-up', reason: 'attempts' };
  if (request.method !== 'publickey') return { answer: 'reject', reason: 'method_refused' };
  if (!request.keyBlob) return { answer: 'reject', reason: 'bad_key' };
  const parsed = parsePublicKeyBlob(request.keyBlob);
  if (!parsed.ok) return { answer: 'reject', reason: 'bad_key' };
  if (!request.signature || !request.signedData) return { answer: 'key-ok' };
  // Plain "ssh-rsa" signs with SHA-1; like OpenSSH >= 8.8 we take only rsa-sha2-256/512.
  if (parsed.key.type === 'ssh-rsa' && request.hashAlgo !== 'sha256' && request.hashAlgo !== 'sha512') {
    return { answer: 'reject', reason: 'sha1_signature' };
  }
  // Verifying costs CPU (an attacker needs no private key to make us do it): budgeted per address.
  // A key held back on this connection (see preferLinkedKey) was paid for when it first signed.
  const paidFor = heldBack !== undefined && heldBack.equals(request.keyBlob);
  if (!paidFor && !policy.mayVerify()) return { answer: 'hang-up', reason: 'verify_budget' };
  if (isSecurityKeyType(parsed.key.type)) {
    // ssh2 strips the signature's algorithm name only when it is the one offered: they must agree.
    if (request.keyAlgorithm !== undefined && request.keyAlgorithm !== parsed.key.type) return { answer: 'reject', reason: 'bad_signature' };
    // ssh2 knows no sk-* algorithm, so it hands over the raw signature: checked here, per PROTOCOL.u2f.
    const sk = parseSkSignatureFromSsh2(parsed.key.type, request.signature);
    if (!sk) return { answer: 'reject', reason: 'bad_signature' };
    const check = verifySkSignature(parsed.key, request.signedData, sk, policy.securityKeys);
    if (!check.ok) return { answer: 'reject', reason: check.reason === 'bad_signature' ? 'bad_signature' : 'sk_flags' };
    return { answer: 'accept', key: parsed.key, securityKeyCounter: check.counter };
  }
  if (!policy.verify(request.keyBlob, request.signedData, request.signature, request.hashAlgo)) {
    return { answer: 'reject', reason: 'bad_signature' };
  }
  return { answer: 'accept', key: parsed.key };
}

/**
 * Which of the client's keys gets in, when it has several (ssh-agent offers them in its own
 * order, and a key linked to no account may come before the one that is). For OpenSSH clients
 * only, which after a "partial success" offer every key again with the one just tried last
 * (sshconnect2.c: pubkey_reset, since 7.4): the first verified unlinked key is held back with a
 * partial success; a linked key that comes then is accepted; if the held-back key comes again,
 * the client has no other, and it is accepted (so a lone unlinked key still gets in, also in
 * BatchMode). Other clients (ssh2, Go) never offer a key twice: the first verified key wins.
 */
export function preferLinkedKey(
  linked: boolean,
  state: { reoffersKeys: boolean; heldBack: boolean; isHeldBack: boolean },
): 'accept' | 'hold-back' | 'not-preferred' {
  if (linked || !state.reoffersKeys || state.isHeldBack) return 'accept';
  return state.heldBack ? 'not-preferred' : 'hold-back';
}

/** Clients known to offer their keys again after a partial success (an SSH identification's software part). */
export function reoffersKeysAfterPartialSuccess(software: string | undefined): boolean {
  const version = /^OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)/.exec(software ?? '');
  if (!version) return false;
  const [major, minor] = [Number(version[1]), Number(version[2])];
  return major > 7 || (major === 7 && minor >= 4);
}
