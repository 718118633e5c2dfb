import { NO_EVENTS, type CoreEvents } from '../core/index.js';

/**
 * What the doors count, as an interface so they stay free of the metrics library (metrics.ts
 * implements it with prom-client). Every argument is one of a small fixed set of values, or a
 * number: never an email, key id, fingerprint or address.
 */

/** How far an SSH connection got, counted once when it ends (or is refused at the door). */
export const SSH_CONNECTION_OUTCOMES = [
  /** Refused by a per-address limit before any SSH byte was read. */
  'refused_limit',
  /** Dropped when the login grace time ran out. */
  'login_timeout',
  /** Dropped to make room for a newcomer at a full global cap (the busiest address's oldest), authenticated or not. */
  'evicted',
  /** Closed by us after too many attempts or with the address's signature budget spent. */
  'auth_limit',
  /** Ended after at least one refused authentication, never authenticated. */
  'auth_failed',
  /** Ended before any authentication was refused or accepted (scanners, handshake failures). */
  'closed_preauth',
  'authenticated',
] as const;
export type SshConnectionOutcome = (typeof SSH_CONNECTION_OUTCOMES)[number];

/**
 * One authentication request, by what we answered. (`none`, the protocol's "which methods?"
 * probe every client sends first, is not counted.)
 */
export const SSH_AUTH_RESULTS = [
  /** The signature verified. */
  'accepted',
  /** A signature-less "would you accept this key?": always yes for a well-formed key. */
  'key_ok',
  'bad_signature',
  /** Password, keyboard-interactive, hostbased... */
  'method_refused',
  /** Unreadable or unsupported key (DSA, certificates...). */
  'bad_key',
  /** Plain ssh-rsa (SHA-1) signature. */
  'sha1_signature',
  /** A security key's signature without user presence (or the user verification required). */
  'sk_flags',
  /** A security key's counter did not move forward, with SK_STRICT_COUNTER=true. */
  'sk_counter',
  /** Too many attempts on the connection, or the address's signature budget is spent. */
  'refused_by_limit',
  /** Verified but linked to no account: held back while the client offers its other keys (OpenSSH). */
  'held_back',
  /** Verified, linked to no account, and another such key is already held back. */
  'not_preferred',
] as const;
export type SshAuthResult = (typeof SSH_AUTH_RESULTS)[number];

export interface DoorMetrics {
  /** The core's port (rate limits are counted through it by the doors too). */
  readonly events: CoreEvents;
  sshConnectionRefused(): void;
  sshConnectionOpened(): void;
  sshConnectionClosed(outcome: Exclude<SshConnectionOutcome, 'refused_limit'>): void;
  sshAuthAttempt(result: SshAuthResult): void;
  /** `command` is a known command's name, `unknown` or `none`; exit codes are 0, 1 or 2. */
  sshCommand(command: string, exitCode: number, seconds: number): void;
  /** An HTTP connection closed at once by a connection cap. */
  httpConnectionRefused(): void;
  /** `route` is a route table key (`POST /api/shell-auth`) or `unknown`. */
  httpRequest(route: string, status: number, seconds: number): void;
}

export const NO_METRICS: DoorMetrics = {
  events: NO_EVENTS,
  sshConnectionRefused() {},
  sshConnectionOpened() {},
  sshConnectionClosed() {},
  sshAuthAttempt() {},
  sshCommand() {},
  httpConnectionRefused() {},
  httpRequest() {},
};
