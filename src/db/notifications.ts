import type { PGlite } from '@electric-sql/pglite';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';

/**
 * Postgres LISTEN/NOTIFY on one channel, one listening connection per process, fanned out to
 * every local waiter by key. Notifications are sent on commit, from any instance. While the
 * listening connection is down, `listening()` is false and waiters fall back to polling; when it
 * comes back, every waiter is woken to look again (a notification may have been missed).
 */
export type Notifications = {
  listening(): boolean;
  /** Resolves with `notified` for a payload equal to `key`, `recheck` after a reconnect, `timeout` or `aborted`. */
  waitFor(key: string, signal: AbortSignal, timeoutMs: number): Promise<'notified' | 'recheck' | 'timeout' | 'aborted'>;
  /** Every payload, and `recheck` after a reconnect (anything may have been missed meanwhile). */
  subscribe(listener: NotificationListener): () => void;
  close(): Promise<void>;
};

export type NotificationListener = { message(payload: string): void; recheck(): void };

type Outcome = 'notified' | 'recheck';

function fanOut() {
  const waiters = new Map<string, Set<(outcome: Outcome) => void>>();
  const listeners = new Set<NotificationListener>();
  return {
    deliver(key: string) {
      for (const listener of listeners) listener.message(key);
      for (const wake of waiters.get(key) ?? []) wake('notified');
    },
    wakeAll() {
      for (const listener of listeners) listener.recheck();
      for (const set of waiters.values()) for (const wake of set) wake('recheck');
    },
    subscribe(listener: NotificationListener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    waitFor(key: string, signal: AbortSignal, timeoutMs: number) {
      return new Promise<Outcome | 'timeout' | 'aborted'>((resolve) => {
        if (signal.aborted) return resolve('aborted');
        const set = waiters.get(key) ?? new Set();
        waiters.set(key, set);
        const finish = (outcome: Outcome | 'timeout' | 'aborted') => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          set.delete(finish);
          if (set.size === 0) waiters.delete(key);
          resolve(outcome);
        };
        const onAbort = () => finish('aborted');
        const timer = setTimeout(() => finish('timeout'), timeoutMs);
        signal.addEventListener('abort', onAbort, { once: true });
        set.add(finish);
      });
    },
  };
}

/**
 * A dedicated (not pooled) connection: a pool could hand a LISTENing connection to anyone.
 *
 * A heartbeat proves it still hears: every `heartbeatMs` it notifies itself and must hear that
 * within `heartbeatDeadlineMs`, or it counts as lost (reconnect; meanwhile `listening()` is false,
 * and the reconnect tells subscribers to recheck). That catches what TCP keepalive catches only
 * after minutes (a half-open connection, a stalled network) and what it never catches (a pooler
 * in transaction mode, where LISTEN hears nothing).
 */
export function postgresNotifications(
  url: string,
  channel: string,
  log: Logger,
  options: { heartbeatMs?: number; heartbeatDeadlineMs?: number } = {},
): Notifications {
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const deadlineMs = options.heartbeatDeadlineMs ?? 5_000;
  const waiters = fanOut();
  /** The newest connection, connecting or listening; events of older ones are ignored. */
  let current: pg.Client | null = null;
  let up = false;
  let closed = false;
  let retryMs = 500;
  let retryTimer: NodeJS.Timeout | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  let awaitedBeat: { token: string; heard(): void } | null = null;

  const connect = async () => {
    if (closed) return;
    // TCP keepalive from 10 s idle (the OS default is 2 hours).
    const next = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000, keepAlive: true, keepAliveInitialDelayMillis: 10_000 });
    current = next;
    next.on('error', (err) => {
      log.warn({ err: err.message }, 'notifications: listening connection lost; waiting sessions poll meanwhile');
      lost(next);
    });
    next.on('end', () => lost(next));
    next.on('notification', (message) => {
      if (message.channel !== channel || !message.payload) return;
      if (awaitedBeat && message.payload === awaitedBeat.token) return awaitedBeat.heard();
      waiters.deliver(message.payload);
    });
    try {
      await next.connect();
      await next.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      if (closed || current !== next) {
        await next.end().catch(() => undefined); // closed, or given up on, while we were connecting
        return;
      }
      up = true;
      retryMs = 500;
      waiters.wakeAll(); // anything notified while we were down: look again
      heartbeat = setInterval(() => void beat(next), heartbeatMs);
      heartbeat.unref();
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'notifications: could not listen; retrying');
      lost(next);
    }
  };
  const beat = async (which: pg.Client) => {
    if (awaitedBeat || which !== current) return;
    const token = `heartbeat:${randomUUID()}`;
    const heard = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), deadlineMs);
      awaitedBeat = {
        token,
        heard() {
          clearTimeout(timer);
          resolve(true);
        },
      };
      which.query('SELECT pg_notify($1, $2)', [channel, token]).catch(() => resolve(false));
    });
    awaitedBeat = null;
    if (!heard && which === current && !closed) {
      log.warn({ deadlineMs }, 'notifications: the listening connection did not hear its own heartbeat; reconnecting');
      lost(which);
    }
  };
  const lost = (which: pg.Client) => {
    if (which !== current) return;
    up = false;
    current = null;
    clearInterval(heartbeat);
    void which.end().catch(() => undefined);
    // A stalled socket would never finish the goodbye: cut it.
    (which as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    if (closed || retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void connect();
    }, retryMs);
    retryTimer.unref();
    retryMs = Math.min(retryMs * 2, 30_000);
  };
  void connect();

  return {
    listening: () => up,
    waitFor: waiters.waitFor,
    subscribe: waiters.subscribe,
    async close() {
      closed = true;
      clearTimeout(retryTimer);
      clearInterval(heartbeat);
      up = false;
      const last = current;
      current = null;
      await last?.end().catch(() => undefined);
    },
  };
}

export function pgliteNotifications(db: PGlite, channel: string, log: Logger): Notifications {
  const waiters = fanOut();
  let up = false;
  let unlisten: (() => Promise<void>) | null = null;
  db.listen(channel, (payload) => waiters.deliver(payload)).then(
    (stop) => {
      unlisten = stop;
      up = true;
    },
    (err: unknown) => log.warn({ err: (err as Error).message }, 'notifications: PGlite could not listen; waiting sessions poll'),
  );
  return {
    listening: () => up,
    waitFor: waiters.waitFor,
    subscribe: waiters.subscribe,
    async close() {
      up = false;
      await unlisten?.().catch(() => undefined);
    },
  };
}
