import type { Logger } from 'pino';
import type { AuthContext, Connection, Session } from 'ssh2';
import { fingerprintOf, formatDuration, recordKeySeen, recordSecurityKeyCounter, resolveSshIdentity, type CoreDeps, type Identity, type PublicKey } from '../core/index.js';
import type { SshLimits } from '../config/config.js';
import type { Admitted, SessionSlots } from './admission.js';
import { decideAuthentication, preferLinkedKey, reoffersKeysAfterPartialSuccess, type AuthPolicy } from './authentication.js';
import { handleSession } from './session.js';
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
 * One client connection: authentication (the key that signed is fixed as who the connection
 * is), then up to `maxSessionsPerConnection` sessions, and an idle timeout while none is open.
 */
export function handleConnection(client: Connection, admitted: Admitted, setting: ConnectionSetting): void {
  const { deps, log, limits } = setting;
  const { ip, group, access } = admitted;
  client.on('error', (err) => {
    log.debug({ err: err.message, ip }, 'ssh connection error');
    access.failed(err);
  });
  // Counted like sshd's MaxAuthTries: refusals only (not the "none" probe, a "key ok" or a held-back
  // key); every request is bounded too.
  let failures = 0;
  let requests = 0;
  let signedKey: PublicKey | null = null;
  /** Who the accepted key is, as authentication found it: the first session uses it instead of asking again. */
  let authIdentity: Promise<Identity> | null = null;
  const reoffersKeys = reoffersKeysAfterPartialSuccess(setting.clientSoftware);
  let heldBack: PublicKey | null = null;
  const heldBackBlob = () => (heldBack ? Buffer.from(heldBack.blob, 'base64') : undefined);
  let userName = setting.sshUser;
  const policy: AuthPolicy = {
    ...setting.auth,
    maxAttempts: limits.maxAuthAttempts,
    mayVerify: () => setting.verifications.take(group),
  };

  let gone = false;
  client.once('close', () => (gone = true));
  client.once('end', () => (gone = true));

  client.on('authentication', (ctx: AuthContext) => {
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
      ++requests > 4 * limits.maxAuthAttempts ? Infinity : failures + 1,
      policy,
      heldBackBlob(),
    );
    // The fingerprint is all the access log keeps of a key.
    const attempt = { method: ctx.method, attempt: requests, fingerprint: publickey ? fingerprintOf(publickey.key.data) : null };
    switch (decision.answer) {
      case 'hang-up':
        access.authAttempt('refused_by_limit', { ...attempt, reason: decision.reason });
        access.ended('auth_limit');
        ctx.reject();
        client.end();
        return;
      case 'reject':
        if (ctx.method !== 'none') failures++;
        access.authAttempt(decision.reason, attempt);
        return ctx.reject(['publickey']);
      case 'key-ok':
        access.authAttempt('key_ok', attempt);
        return ctx.accept();
      case 'accept': {
        const { key } = decision;
        const accept = (identity: Promise<Identity> | null) => {
          access.authAttempt('accepted', attempt);
          signedKey = key;
          authIdentity = identity;
          userName = ctx.username;
          ctx.accept();
        };
        // Of several keys, one linked to an account wins (see preferLinkedKey): asked only of
        // OpenSSH clients, once per verified key.
        const isHeldBack = heldBack !== null && heldBack.blob === key.blob;
        const identity = reoffersKeys && !isHeldBack ? resolveSshIdentity(deps, key) : null;
        const choose = async (): Promise<'accept' | 'hold-back' | 'not-preferred'> => {
          // A lookup that fails only costs the preference: the signature already proved the key.
          const linked = identity ? await identity.then((found) => found.kind === 'account', () => true) : false;
          return preferLinkedKey(linked, { reoffersKeys, heldBack: heldBack !== null, isHeldBack });
        };
        // A security key: its counter must move forward (a clone's cannot keep in step).
        const counterOk = () =>
          decision.securityKeyCounter === undefined
            ? Promise.resolve(true)
            : recordSecurityKeyCounter(deps, key, decision.securityKeyCounter, { channel: 'ssh', ip }).then((verdict) => verdict !== 'refused', () => false);
        void choose().then(async (choice) => {
          // The client may hang up meanwhile: then nobody is let in (ssh2 would still say "ready").
          if (gone) return;
          if (choice === 'hold-back') {
            heldBack = key;
            access.authAttempt('held_back', attempt);
            return ctx.reject(['publickey'], true);
          }
          if (choice === 'not-preferred') {
            failures++;
            access.authAttempt('not_preferred', attempt);
            return ctx.reject(['publickey']);
          }
          if (!(await counterOk())) {
            if (gone) return;
            access.authAttempt('sk_counter', attempt);
            return ctx.reject(['publickey']);
          }
          if (!gone) accept(identity);
        });
        return;
      }
    }
  });

  client.on('ready', () => {
    if (gone) return;
    admitted.authenticated();
    if (!signedKey) {
      client.end(); // ssh2 only gets here after an accept, which always sets the key
      return;
    }
    const key: PublicKey = signedKey;
    if (setting.shuttingDown.aborted) {
      access.ended('server_shutdown');
      client.end();
      return;
    }
    access.authenticated(key.fingerprint);
    const connection = new AbortController();
    client.once('close', () => connection.abort(CLIENT_GONE));
    client.once('end', () => connection.abort(CLIENT_GONE));
    void recordKeySeen(deps, key);

    let openSessions = 0;
    let closing = false;
    const idle = idleTimer(limits.idleTimeoutMs, () => {
      log.info({ ip }, 'ssh: idle connection closed');
      access.ended('idle_timeout');
      const message = `Connection closed: no activity for ${formatDuration(limits.idleTimeoutMs)}.\n`;
      for (const notify of idleNotices) notify(message);
      // The sessions close first, so their clients print the message; then the connection goes.
      closing = true;
      if (openSessions === 0) client.end();
      else setTimeout(() => client.end(), 1_000).unref();
    });
    const idleNotices = new Set<(message: string) => void>();
    client.once('close', () => idle.stop());

    // Draining: sessions finish what they run (a shell says so and closes at its prompt); a
    // connection with nothing open goes now.
    // A session that never asked for a program has nothing to finish and must not hold the drain.
    let runningSessions = 0;
    const onShutdown = () => {
      closing = true;
      if (runningSessions === 0) {
        access.ended('server_shutdown');
        client.end();
      }
    };
    setting.shuttingDown.addEventListener('abort', onShutdown, { once: true });
    client.once('close', () => setting.shuttingDown.removeEventListener('abort', onShutdown));

    // A key linked to no account can only `login`, `whoami` or `help`: it gets few sessions, so
    // that any key from anywhere cannot hold many. Asked only past that many; a yes is kept (a
    // `login` may link the key meanwhile, so a no is asked again).
    let linked = false;
    const isLinked = async () =>
      (linked ||= await resolveSshIdentity(deps, key).then(
        (identity) => identity.kind === 'account',
        () => false,
      ));

    // Every session slot this connection holds, released when its session ends or, at the
    // latest, with the connection: ssh2 never closes a session that had no program yet when the
    // connection drops.
    const slots = new Set<() => void>();
    const releaseAll = () => {
      for (const release of [...slots]) release();
    };
    client.once('close', releaseAll);
    // Chosen to make room at a full SSH_MAX_SESSIONS: its slots are free at once, the connection goes.
    const evicted = () => {
      releaseAll();
      access.ended('evicted');
      client.end();
    };
    const takeSlot = (): (() => void) | null => {
      const freeSlot = setting.sessions.take(group, evicted);
      if (!freeSlot) return null;
      openSessions++;
      const release = () => {
        if (!slots.delete(release)) return;
        openSessions--;
        freeSlot();
      };
      slots.add(release);
      return release;
    };

    const origin = { channel: 'ssh' as const, ip };
    client.on('session', (accept, reject) => {
      if (closing || openSessions >= limits.maxSessionsPerConnection) return reject();
      const release = takeSlot();
      if (!release) return reject();
      idle.touch();
      if (openSessions <= limits.maxSessionsUnlinked) return openSession(accept, release);
      void isLinked().then((mayOpen) => {
        if (mayOpen && !gone && !closing) return openSession(accept, release);
        if (!mayOpen) deps.events?.rateLimited('ssh_sessions_unlinked');
        release();
        reject();
      });
    });

    function openSession(accept: () => Session, release: () => void) {
      let running = false;
      const notices: Array<(message: string) => void> = [];
      const session = {
        deps,
        log,
        key,
        access,
        origin,
        sshHint: setting.sshHint(),
        connectionGone: connection.signal,
        shuttingDown: setting.shuttingDown,
        wrongUser: userName === setting.sshUser ? null : { used: userName, expected: setting.sshUser },
        activity: idle.touch,
        outputHighWaterBytes: limits.outputHighWaterBytes,
        maxQueuedLines: limits.maxQueuedLines,
        onIdleClose(notify: (message: string) => void) {
          notices.push(notify);
          idleNotices.add(notify);
        },
        programStarted() {
          running = true;
          runningSessions++;
        },
        knownIdentity() {
          const known = authIdentity;
          authIdentity = null;
          return known;
        },
      };
      handleSession(accept(), session, () => {
        release();
        if (running) runningSessions--;
        for (const notify of notices) idleNotices.delete(notify);
        idle.touch();
        if (closing && (openSessions === 0 || (setting.shuttingDown.aborted && runningSessions === 0))) client.end();
      });
    }
  });
}

/**
 * Closes the connection `ms` after the last activity (input or output on any session, or a
 * session opening or closing). One timer, re-armed lazily rather than on every byte.
 */
function idleTimer(ms: number, onIdle: () => void) {
  let last = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const check = () => {
    const quiet = Date.now() - last;
    if (quiet >= ms) onIdle();
    else timer = setTimeout(check, ms - quiet);
  };
  timer = setTimeout(check, ms);
  return {
    touch: () => {
      last = Date.now();
    },
    stop: () => clearTimeout(timer),
  };
}
