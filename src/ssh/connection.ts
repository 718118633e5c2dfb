import type { Logger } from 'pino';
import type { AuthContext, Connection, Session } from 'ssh2';
import { fingerprintOf, formatDuration, recordKeySeen, recordSecurityKeyCounter, resolveSshIdentity, type CoreDeps, type Identity, type PublicKey } from '../core/index.js';
import type { SshLimits } from '../config/config.js';
import type { ConnectionRecord } from './access-log.js';
import type { Admitted, SessionSlots } from './admission.js';
import { decideAuthentication, preferLinkedKey, reoffersKeysAfterPartialSuccess, type AuthPolicy } from './authentication.js';
import { handleSession, type SessionConnection, type WrongUser } from './session.js';
import { LazyAbort, type AbortWatch } from './lazy-abort.js';
import { CLIENT_GONE } from './session-io.js';
import type { TokenBuckets } from '../limits/token-buckets.js';

export type ConnectionSetting = {
  deps: CoreDeps;
  log: Logger;
  limits: SshLimits;
  auth: Omit<AuthPolicy, 'maxAttempts' | 'mayVerify'>;
  /** The per-address signature-verification budget. */
  verifications: TokenBuckets;
  /** The process's budget of open sessions. */
  sessions: SessionSlots;
  sshHint: () => string;
  /** Aborted when the service starts draining: no new sessions; idle connections close now. */
  shuttingDown: AbortSignal;
  /** The user name clients should connect as; another one gets in but is told this. */
  sshUser: string;
  /** The software part of the client's SSH identification (`OpenSSH_9.2p1`). */
  clientSoftware?: string;
};

/**
 * authenticating → ready     ssh2 says 'ready' after a signature was accepted (while the service
 *                            is shutting down, the connection ends instead)
 * ready → draining           idle timeout, service shutdown, or eviction: no new sessions, and the
 *                            connection ends as soon as its sessions let it
 * any → closed               the client's socket ends or closes
 */
export type ConnectionState = 'authenticating' | 'ready' | 'draining' | 'closed';

/** A session the connection holds a global slot for, from its request until it ends or the connection closes. */
type SessionRecord = {
  releaseSlot(): void;
  /** It asked for its program (exec or shell): a shutdown drain waits for it. */
  programStarted: boolean;
  /** Tells its client why the connection is closing; set once its program has a channel. */
  idleNotice: ((message: string) => void) | null;
};

/** What authentication settled: the key that signed is who the connection is. */
type SignedIn = {
  key: PublicKey;
  /** Who the key is, as authentication found it: the first session uses it instead of asking again. */
  identity: Promise<Identity> | null;
  userName: string;
};

/**
 * One client connection: authentication, then up to `maxSessionsPerConnection` sessions, each
 * holding one of the process's session slots, and an idle timeout.
 */
export class SshConnection implements SessionConnection {
  private current: ConnectionState = 'authenticating';
  private readonly sessions = new Set<SessionRecord>();
  private signedIn: SignedIn | null = null;
  // Counted like sshd's MaxAuthTries: refusals only (not the "none" probe, a "key ok" or a held-back
  // key); every request is bounded too.
  private authFailures = 0;
  private authRequests = 0;
  /** An OpenSSH client's first verified unlinked key, while it may still offer a linked one (see preferLinkedKey). */
  private heldBack: PublicKey | null = null;
  /** The key is linked to an account: a yes is kept; a no is asked again (a `login` may link the key meanwhile). */
  private linked = false;
  private readonly policy: AuthPolicy;
  private readonly reoffersKeys: boolean;
  private readonly clientGone = new LazyAbort();
  private readonly idleTimer: IdleTimer;
  private readonly onShutdown = () => this.shutdown();

  readonly deps: CoreDeps;
  readonly log: Logger;
  readonly limits: SshLimits;
  readonly access: ConnectionRecord;
  readonly origin: SessionConnection['origin'];
  readonly shuttingDown: AbortSignal;
  /** Aborted when the client goes (a channel may never see its own 'close' then). */
  readonly gone: AbortWatch = this.clientGone;

  constructor(
    private readonly client: Connection,
    private readonly admitted: Admitted,
    private readonly setting: ConnectionSetting,
  ) {
    this.deps = setting.deps;
    this.log = setting.log;
    this.limits = setting.limits;
    this.shuttingDown = setting.shuttingDown;
    this.access = admitted.access;
    this.origin = { channel: 'ssh', ip: admitted.ip };
    this.reoffersKeys = reoffersKeysAfterPartialSuccess(setting.clientSoftware);
    this.policy = {
      ...setting.auth,
      maxAttempts: this.limits.maxAuthAttempts,
      mayVerify: () => setting.verifications.take(admitted.group),
    };
    this.idleTimer = idleTimer(this.limits.idleTimeoutMs, () => this.idle());
    client.on('error', (err) => {
      this.log.debug({ err: err.message, ip: admitted.ip }, 'ssh connection error');
      this.access.failed(err);
    });
    client.once('end', () => this.ended());
    client.once('close', () => this.close());
    client.on('authentication', (ctx: AuthContext) => this.authenticate(ctx));
    client.on('ready', () => this.ready());
    client.on('session', (accept, reject) => this.openSession(accept, reject));
  }

  get state(): ConnectionState {
    return this.current;
  }

  /** The key that signed: who every program on this connection is. */
  get key(): PublicKey {
    if (!this.signedIn) throw new Error('no SSH key before authentication');
    return this.signedIn.key;
  }

  /** Connected as another user than the door's (`ssh root@host`): every program says how to connect. */
  get wrongUser(): WrongUser | null {
    const used = this.signedIn?.userName ?? this.setting.sshUser;
    return used === this.setting.sshUser ? null : { used, expected: this.setting.sshUser };
  }

  sshHint(): string {
    return this.setting.sshHint();
  }

  /** Input or output on any session, or one opening or closing: the idle timeout counts from the last. */
  activity(): void {
    this.idleTimer.touch();
  }

  /** Who authentication found the key to be, once: the first program uses it, later ones ask afresh. */
  takeKnownIdentity(): Promise<Identity> | null {
    const known = this.signedIn?.identity ?? null;
    if (this.signedIn) this.signedIn.identity = null;
    return known;
  }

  /** Sessions whose program started: a drain waits for them. */
  private get runningSessions(): number {
    let running = 0;
    for (const session of this.sessions) if (session.programStarted) running++;
    return running;
  }

  private authenticate(ctx: AuthContext): void {
    const { deps, access, client } = this;
    const publickey = ctx.method === 'publickey' ? ctx : null;
    const decision = decideAuthentication(
      {
        method: ctx.method,
        username: ctx.username,
        keyBlob: publickey?.key.data,
        keyAlgorithm: publickey?.key.algo,
        signature: publickey?.signature,
        signedData: publickey?.blob,
        hashAlgo: publickey?.hashAlgo,
      },
      ++this.authRequests > 4 * this.limits.maxAuthAttempts ? Infinity : this.authFailures + 1,
      this.policy,
      this.heldBack ? Buffer.from(this.heldBack.blob, 'base64') : undefined,
    );
    // The fingerprint is all the access log keeps of a key.
    const attempt = { method: ctx.method, attempt: this.authRequests, fingerprint: publickey ? fingerprintOf(publickey.key.data) : null };
    switch (decision.answer) {
      case 'hang-up':
        access.authAttempt('refused_by_limit', { ...attempt, reason: decision.reason });
        access.ended('auth_limit');
        ctx.reject();
        client.end();
        return;
      case 'reject':
        if (ctx.method !== 'none') this.authFailures++;
        access.authAttempt(decision.reason, attempt);
        return ctx.reject(['publickey']);
      case 'key-ok':
        access.authAttempt('key_ok', attempt);
        return ctx.accept();
      case 'accept': {
        const { key } = decision;
        // Of several keys, one linked to an account wins (see preferLinkedKey): asked only of
        // OpenSSH clients, once per verified key.
        const isHeldBack = this.heldBack?.blob === key.blob;
        const identity = this.reoffersKeys && !isHeldBack ? resolveSshIdentity(deps, key) : null;
        const choose = async (): Promise<'accept' | 'hold-back' | 'not-preferred'> => {
          // A lookup that fails only costs the preference: the signature already proved the key.
          const linked = identity ? await identity.then((found) => found.kind === 'account', () => true) : false;
          return preferLinkedKey(linked, { reoffersKeys: this.reoffersKeys, heldBack: this.heldBack !== null, isHeldBack });
        };
        // A security key: its counter must move forward (a clone's cannot keep in step).
        const counterOk = () =>
          decision.securityKeyCounter === undefined
            ? Promise.resolve(true)
            : recordSecurityKeyCounter(deps, key, decision.securityKeyCounter, { channel: 'ssh', ip: this.admitted.ip }).then(
                (verdict) => verdict !== 'refused',
                () => false,
              );
        void choose().then(async (choice) => {
          // The client may hang up meanwhile: then nobody is let in (ssh2 would still say "ready").
          if (this.gone.aborted) return;
          if (choice === 'hold-back') {
            this.heldBack = key;
            access.authAttempt('held_back', attempt);
            return ctx.reject(['publickey'], true);
          }
          if (choice === 'not-preferred') {
            this.authFailures++;
            access.authAttempt('not_preferred', attempt);
            return ctx.reject(['publickey']);
          }
          if (!(await counterOk())) {
            if (this.gone.aborted) return;
            access.authAttempt('sk_counter', attempt);
            return ctx.reject(['publickey']);
          }
          if (this.gone.aborted) return;
          access.authAttempt('accepted', attempt);
          this.signedIn = { key, identity, userName: ctx.username };
          ctx.accept();
        });
        return;
      }
    }
  }

  /** ssh2 let the client in: authenticating → ready, unless the service is shutting down. */
  private ready(): void {
    if (this.current === 'closed') return;
    const { access, client } = this;
    this.admitted.authenticated();
    if (!this.signedIn) {
      client.end(); // ssh2 only gets here after an accept, which always sets the key
      return;
    }
    if (this.shuttingDown.aborted) {
      access.ended('server_shutdown');
      client.end();
      return;
    }
    this.current = 'ready';
    access.authenticated(this.key.fingerprint);
    void recordKeySeen(this.deps, this.key);
    this.idleTimer.start();
    this.shuttingDown.addEventListener('abort', this.onShutdown, { once: true });
  }

  /**
   * A session request: refused while draining, past the connection's cap, or without a free
   * slot. A key linked to no account can only `login`, `whoami` or `help`: it gets few sessions,
   * so that any key from anywhere cannot hold many (asked only past that many).
   */
  private openSession(accept: () => Session, reject: () => void): void {
    if (this.current !== 'ready' || this.sessions.size >= this.limits.maxSessionsPerConnection) return reject();
    const releaseSlot = this.setting.sessions.take(this.admitted.group, () => this.evict());
    if (!releaseSlot) return reject();
    // Making room may have evicted this very connection: it is going, so the session is not opened.
    if (this.current !== 'ready') {
      releaseSlot();
      return reject();
    }
    const session: SessionRecord = { releaseSlot, programStarted: false, idleNotice: null };
    this.sessions.add(session);
    this.idleTimer.touch();
    if (this.sessions.size <= this.limits.maxSessionsUnlinked) return this.startSession(session, accept);
    void this.isLinked().then((mayOpen) => {
      if (mayOpen && this.current === 'ready') return this.startSession(session, accept);
      if (!mayOpen) this.deps.events?.rateLimited('ssh_sessions_unlinked');
      this.release(session);
      reject();
    });
  }

  private startSession(session: SessionRecord, accept: () => Session): void {
    handleSession(accept(), this, {
      programStarted: (idleNotice) => {
        session.programStarted = true;
        session.idleNotice = idleNotice;
      },
      closed: () => this.sessionClosed(session),
    });
  }

  /** A session ended: its slot is free; a draining connection ends with its last session (or, at shutdown, its last program). */
  private sessionClosed(session: SessionRecord): void {
    this.release(session);
    this.idleTimer.touch();
    const nothingHeld = this.sessions.size === 0 || (this.shuttingDown.aborted && this.runningSessions === 0);
    if (this.current === 'draining' && nothingHeld) this.client.end();
  }

  /** No activity for the idle timeout: the sessions close first, so their clients print why; then the connection goes. */
  private idle(): void {
    this.log.info({ ip: this.admitted.ip }, 'ssh: idle connection closed');
    this.access.ended('idle_timeout');
    const message = `Connection closed: no activity for ${formatDuration(this.limits.idleTimeoutMs)}.\n`;
    for (const session of this.sessions) session.idleNotice?.(message);
    this.current = 'draining';
    if (this.sessions.size === 0) this.client.end();
    else setTimeout(() => this.client.end(), 1_000).unref();
  }

  /**
   * The service drains: sessions finish what they run (a shell says so and closes at its prompt);
   * a connection running nothing goes now. A session that never asked for a program has nothing
   * to finish and does not hold the drain.
   */
  private shutdown(): void {
    this.current = 'draining';
    if (this.runningSessions === 0) {
      this.access.ended('server_shutdown');
      this.client.end();
    }
  }

  /** Chosen to make room at a full SSH_MAX_SESSIONS: its slots are free at once, and it goes. */
  private evict(): void {
    this.releaseAll();
    this.access.ended('evicted');
    this.current = 'draining';
    this.client.end();
  }

  /** The client's side ended (or the socket closed): nobody is let in or started any more. */
  private ended(): void {
    if (this.current === 'closed') return;
    this.current = 'closed';
    this.clientGone.abort(CLIENT_GONE);
  }

  /**
   * The socket closed: every slot is released here (ssh2 never closes a session that had no
   * program yet), not at 'end', while a running command may still be writing.
   */
  private close(): void {
    this.ended();
    this.idleTimer.stop();
    this.shuttingDown.removeEventListener('abort', this.onShutdown);
    this.releaseAll();
  }

  private release(session: SessionRecord): void {
    if (this.sessions.delete(session)) session.releaseSlot();
  }

  private releaseAll(): void {
    for (const session of [...this.sessions]) this.release(session);
  }

  private async isLinked(): Promise<boolean> {
    return (this.linked ||= await resolveSshIdentity(this.deps, this.key).then(
      (identity) => identity.kind === 'account',
      () => false,
    ));
  }
}

type IdleTimer = ReturnType<typeof idleTimer>;

/**
 * Calls `onIdle` once `ms` have passed since the last touch, counting from `start`. One timer,
 * re-armed lazily rather than on every byte.
 */
function idleTimer(ms: number, onIdle: () => void) {
  let last = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const check = () => {
    const quiet = Date.now() - last;
    if (quiet >= ms) onIdle();
    else timer = setTimeout(check, ms - quiet);
  };
  return {
    start: () => {
      last = Date.now();
      timer = setTimeout(check, ms);
    },
    touch: () => {
      last = Date.now();
    },
    stop: () => clearTimeout(timer),
  };
}
