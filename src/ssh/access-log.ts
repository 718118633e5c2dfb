import type net from 'node:net';
import type { Logger } from 'pino';
import type { Identity, RateLimitName } from '../core/index.js';
import type { DoorMetrics, SshAuthResult, SshConnectionOutcome } from '../observability/door-metrics.js';
import type { RepeatedLines } from '../observability/repeated-lines.js';

/** Why a connection ended, as the access log says it. */
export type EndReason =
  /** The client disconnected (or closed its end of the socket). */
  | 'client_closed'
  | 'idle_timeout'
  | 'login_timeout'
  /** Dropped to make room for a newcomer at a full global cap (the busiest address's oldest). */
  | 'evicted'
  /** We hung up during authentication: too many attempts, or the signature budget is spent. */
  | 'auth_limit'
  | 'error'
  | 'server_shutdown'
  /** Closed from our side for no reason above. */
  | 'closed';

/** Refusals that are a limit, and which rate-limit counter they move. */
const LIMIT_OF: Partial<Record<string, RateLimitName>> = { attempts: 'ssh_auth_attempts', verify_budget: 'ssh_auth' };

/** Commands kept for the access line; a longer shell session reports how many it left out. */
const MAX_LOGGED_COMMANDS = 50;

/**
 * One SSH connection's record, from admission to close: the refused authentications (one log
 * line each), the key that signed, the account, each command's name, exit code and duration, and
 * at the end one access line and the connection metrics. Holds no secret: command names only
 * (never arguments), key fingerprints only.
 */
export class ConnectionRecord {
  private readonly started = Date.now();
  private fingerprint: string | null = null;
  private userId: string | null = null;
  private authenticatedAt: number | null = null;
  private refusals = 0;
  private reason: EndReason | null = null;
  private errorText: string | undefined;
  private remoteEnded = false;
  private readonly commands: Array<{ name: string; exit_code: number; ms: number }> = [];
  private commandCount = 0;
  /** Read at once: a closed socket no longer knows its peer. */
  private readonly port: number | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly ip: string,
    /** The address group its per-address limits count it under: repeated lines are counted per group. */
    private readonly group: string,
    private readonly log: Logger,
    private readonly metrics: DoorMetrics,
    /** Where the lines of connections that never got anywhere go: a flood writes one line per address a minute. */
    private readonly repeated?: RepeatedLines,
  ) {
    this.port = socket.remotePort;
    metrics.sshConnectionOpened();
    socket.once('end', () => (this.remoteEnded = true));
    socket.on('error', (err: NodeJS.ErrnoException) => this.failed(err));
    socket.once('close', () => this.finish());
  }

  /** The first reason given wins: an idle close's socket errors are still an idle close. */
  ended(reason: EndReason): void {
    this.reason ??= reason;
  }

  /** An error on the connection; a client's DISCONNECT with a reason code arrives this way too. */
  failed(err: Error & { code?: unknown }): void {
    if (typeof err.code === 'number') {
      this.ended('client_closed');
      return;
    }
    if (this.reason === null) this.errorText = (typeof err.code === 'string' ? err.code : err.message).slice(0, 120);
    this.ended('error');
  }

  /** An authentication request and our answer; refusals get a log line, with the reason. */
  authAttempt(
    result: SshAuthResult,
    detail: { method: string; attempt: number; fingerprint: string | null; reason?: string },
  ): void {
    if (detail.method === 'none') return; // every client's opening probe, not an attempt
    this.metrics.sshAuthAttempt(result);
    if (result === 'accepted' || result === 'key_ok' || result === 'held_back') return;
    this.refusals++;
    const limit = detail.reason ? LIMIT_OF[detail.reason] : undefined;
    if (limit) this.metrics.events.rateLimited(limit);
    this.log.info(
      {
        ip: this.ip,
        port: this.port,
        reason: detail.reason ?? result,
        method: detail.method,
        attempt: detail.attempt,
        fingerprint: detail.fingerprint,
      },
      limit ? 'ssh: authentication refused by limit, closing' : 'ssh: authentication refused',
    );
  }

  authenticated(fingerprint: string): void {
    this.fingerprint = fingerprint;
    this.authenticatedAt = Date.now();
  }

  /** Who the key is, as a session last saw it (a `login` can link it mid-connection). */
  identity(identity: Identity): void {
    this.userId = identity.kind === 'account' ? identity.user.id : null;
  }

  /** A command line ran: its command's name only (see `CommandRun` in command/framework.ts), never its arguments. */
  command(name: string, exitCode: number, ms: number, identity?: Identity): void {
    if (identity) this.identity(identity);
    this.metrics.sshCommand(name, exitCode, ms / 1000);
    this.commandCount++;
    if (this.commands.length < MAX_LOGGED_COMMANDS) this.commands.push({ name, exit_code: exitCode, ms: Math.round(ms * 10) / 10 });
  }

  private outcome(): Exclude<SshConnectionOutcome, 'refused_limit'> {
    if (this.reason === 'evicted') return 'evicted';
    if (this.authenticatedAt !== null) return 'authenticated';
    if (this.reason === 'login_timeout' || this.reason === 'auth_limit') return this.reason;
    return this.refusals > 0 ? 'auth_failed' : 'closed_preauth';
  }

  private finish(): void {
    const outcome = this.outcome();
    this.metrics.sshConnectionClosed(outcome);
    const reason = this.reason ?? (this.remoteEnded ? 'client_closed' : 'closed');
    const fields = {
      ip: this.ip,
      port: this.port,
      fingerprint: this.fingerprint,
      user_id: this.userId,
      outcome,
      reason,
      ...(reason === 'error' && this.errorText ? { error: this.errorText } : {}),
      refused_auth: this.refusals,
      commands: this.commands,
      ...(this.commandCount > this.commands.length ? { commands_not_listed: this.commandCount - this.commands.length } : {}),
      bytes_in: this.socket.bytesRead,
      bytes_out: this.socket.bytesWritten,
      ms: Date.now() - this.started,
    };
    const nothingDone = outcome === 'closed_preauth' || outcome === 'login_timeout' || outcome === 'evicted';
    if (nothingDone && this.repeated) this.repeated.info(this.group, fields, 'ssh connection closed');
    else this.log.info(fields, 'ssh connection closed');
  }
}
