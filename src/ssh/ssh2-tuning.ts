import { createPrivateKey, createPublicKey, KeyObject } from 'node:crypto';
import type net from 'node:net';
import ssh2, { type ParsedKey } from 'ssh2';

/**
 * Two workarounds for ssh2's speed, kept together because both lean on its internals, with the
 * self-checks that tell us (and the operator, at start-up) when an ssh2 upgrade undoes them.
 */

const PEM_SLOTS: Record<string, (pem: string) => KeyObject> = {
  'Private key PEM': createPrivateKey,
  'Public key PEM': createPublicKey,
};

function pemSlots(key: ParsedKey): symbol[] {
  return Object.getOwnPropertySymbols(key).filter((symbol) => symbol.description !== undefined && symbol.description in PEM_SLOTS);
}

/**
 * ssh2's ParsedKey keeps PEM strings and hands them to crypto.sign/verify on every call, which
 * re-decodes the key each time (host-key signing measured at ~570 µs instead of ~50 µs).
 * crypto.sign/verify accept a KeyObject in the same place, so we swap the PEM for a decoded
 * KeyObject once. `decodedKeysApplied` says whether that worked.
 */
export function withDecodedKeys(key: ParsedKey): ParsedKey {
  const slots = key as unknown as Record<symbol, unknown>;
  for (const symbol of pemSlots(key)) {
    const value = slots[symbol];
    const decode = PEM_SLOTS[symbol.description ?? ''];
    if (typeof value !== 'string' || !decode) continue;
    try {
      slots[symbol] = decode(value);
    } catch {
      // leave the PEM: ssh2 still works, just slower
    }
  }
  return key;
}

/** True when the key has PEM slots and each one in use (a public key has no private one) holds a KeyObject. */
export function decodedKeysApplied(key: ParsedKey): boolean {
  const slots = key as unknown as Record<symbol, unknown>;
  const used = pemSlots(key)
    .map((symbol) => slots[symbol])
    .filter((value) => value !== null && value !== undefined);
  return used.length > 0 && used.every((value) => value instanceof KeyObject);
}

/** Parsed client keys, so a key is decoded once rather than on every signature check. */
export class DecodedKeyCache {
  private readonly keys = new Map<string, ParsedKey>();
  constructor(private readonly max = 2000) {}

  get(blob: Buffer): ParsedKey | null {
    const id = blob.toString('base64');
    let key = this.keys.get(id);
    if (key) {
      this.keys.delete(id); // re-inserted below: most recently used last
    } else {
      const parsed = ssh2.utils.parseKey(blob);
      if (parsed instanceof Error || Array.isArray(parsed)) return null;
      key = withDecodedKeys(parsed);
      if (this.keys.size >= this.max) {
        const oldest = this.keys.keys().next();
        if (!oldest.done) this.keys.delete(oldest.value);
      }
    }
    this.keys.set(id, key);
    return key;
  }
}

export type WriteCoalescing = { writes: number };

/**
 * With Nagle off, each of ssh2's per-packet writes would be its own syscall and TCP segment.
 * Corking until the end of the tick sends the packets produced together in one writev, without
 * bringing back Nagle's wait for a delayed ACK. The returned counter lets the caller check that
 * ssh2 still writes through `socket.write` (if it stops, nothing is coalesced).
 */
export function coalesceWrites(socket: net.Socket): WriteCoalescing {
  const stats = { writes: 0 };
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = ((...args: unknown[]) => {
    stats.writes++;
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return write(...args);
  }) as typeof socket.write;
  return stats;
}

/**
 * The socket an ssh2 server connection runs on. ssh2 tells its connection handler only the
 * peer's address and port, which two live connections can share behind PROXY protocol (one
 * client through two balancers, NAT reusing a port); the socket itself is the only sure key.
 * Null if an ssh2 upgrade moved it (then no connection is let in, loudly, rather than mismatched).
 */
export function socketOf(client: ssh2.Connection): net.Socket | null {
  const socket = (client as unknown as { _sock?: unknown })._sock;
  return socket !== null && typeof socket === 'object' && typeof (socket as net.Socket).destroy === 'function' ? (socket as net.Socket) : null;
}
