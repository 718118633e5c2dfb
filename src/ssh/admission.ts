import type net from 'node:net';
import type { Logger } from 'pino';
import type { SshLimits } from '../config/config.js';
import type { RateLimitName } from '../core/index.js';
import { NO_METRICS, type DoorMetrics } from '../observability/door-metrics.js';
import { addressGroupOf } from '../net/addresses.js';
import type { RepeatedLines } from '../observability/repeated-lines.js';
import { ConnectionRecord } from './access-log.js';
import { TokenBuckets } from '../limits/token-buckets.js';
import { FairShares } from '../limits/fair-shares.js';

/**
 * A connection let in: report when it authenticates; closing the socket releases it. `group` is
 * the key its per-address limits count under (an IPv6 address's network); `access` is its
 * record for the access log and the metrics.
 */
export type Admitted = { ip: string; group: string; authenticated(): void; access: ConnectionRecord };

/** What the caps hold for a connection (not the socket: nothing here is looked up by socket, see FairShares). */
type Entry = { socket: net.Socket; access: ConnectionRecord; release(): void; stopGraceTimer(): void };

/**
 * The listener's gate, before any SSH byte is read. Per address: caps on unauthenticated and on
 * all connections, and a rate of new ones. For the whole process: caps on all connections and
 * on unauthenticated ones, so many addresses together cannot exhaust file descriptors or memory.
 * At a full cap the address holding the most loses its oldest connection to the newcomer
 * (see FairShares): an unauthenticated one if any can go; an authenticated one only from an
 * address holding at least two, so a lone honest connection is never pushed out. OpenSSH's
 * MaxStartups refuses at random instead, which refuses a lone honest client as often as a
 * flooder. Unauthenticated connections are dropped after the login grace time.
 */
export function createAdmission(limits: SshLimits, log: Logger, repeated: RepeatedLines, metrics: DoorMetrics = NO_METRICS) {
  const newConnections = new TokenBuckets(limits.connectionsPerSecond, limits.connectionBurst);
  const unauthenticated = new FairShares<Entry>();
  const open = new FairShares<Entry>();

  /** Drops a connection to make room: counted out now (its close event comes later). */
  function evict(victim: Entry): void {
    victim.access.ended('evicted');
    victim.release();
    victim.socket.destroy();
  }

  function capReached(outcome: 'evicted' | 'refused'): void {
    repeated.warn(
      'all addresses',
      { outcome, connections: open.size, unauthenticated: unauthenticated.size, max_connections: limits.maxConnections, max_unauthenticated: limits.maxUnauthenticated },
      'ssh: connection caps reached (SSH_MAX_CONNECTIONS / SSH_MAX_UNAUTH): the busiest addresses lose their oldest connections to newcomers',
    );
  }

  return {
    /** Counts the socket in, or destroys it and returns null when a cap refuses it. */
    admit(socket: net.Socket): Admitted | null {
      const ip = socket.remoteAddress ?? '';
      const group = addressGroupOf(ip, limits.ipv6Prefix);
      if (unauthenticated.sizeOf(group) >= limits.maxUnauthenticatedPerIp) return refuseConnection(socket, 'ssh_unauthenticated_per_ip', metrics);
      if (open.sizeOf(group) >= limits.maxConnectionsPerIp) return refuseConnection(socket, 'ssh_connections_per_ip', metrics);
      if (!newConnections.take(group)) return refuseConnection(socket, 'ssh_connections', metrics);
      const unauthenticatedFull = unauthenticated.size >= limits.maxUnauthenticated;
      const allFull = open.size >= limits.maxConnections;
      if (unauthenticatedFull || allFull) {
        const victim = unauthenticated.victimFor(group) ?? (allFull && !unauthenticatedFull ? open.victimFor(group, 2) : undefined);
        if (!victim) {
          capReached('refused');
          return refuseConnection(socket, allFull ? 'ssh_connections_total' : 'ssh_unauthenticated_total', metrics);
        }
        evict(victim);
        capReached('evicted');
      }

      const access = new ConnectionRecord(socket, ip, group, log, metrics, repeated);
      const grace = setTimeout(() => {
        repeated.info(group, { ip }, 'ssh: login grace time over, dropping connection');
        access.ended('login_timeout');
        socket.destroy();
      }, limits.loginGraceMs);
      const authenticated = () => {
        if (leaveUnauthenticated()) clearTimeout(grace);
      };
      const entry: Entry = {
        socket,
        access,
        release: () => {
          authenticated();
          leaveOpen();
        },
        stopGraceTimer: () => clearTimeout(grace),
      };
      const leaveUnauthenticated = unauthenticated.add(group, entry);
      const leaveOpen = open.add(group, entry);
      socket.once('close', () => entry.release());
      return { ip, group, authenticated, access };
    },
    /** Drops the connections that have not authenticated (drain: they have nothing to finish). */
    closeUnauthenticated(): void {
      for (const { access, socket } of unauthenticated.all()) {
        access.ended('server_shutdown');
        socket.destroy();
      }
    },
    /** Connections still open. */
    get size(): number {
      return open.size;
    },
    /** Drops every connection (shutdown). */
    closeAll(): void {
      for (const { access, socket, stopGraceTimer } of open.all()) {
        stopGraceTimer();
        access.ended('server_shutdown');
        socket.destroy();
      }
    },
  };
}

/** A connection refused by a cap: counted, not logged one by one (a flood must not become a flood of log lines). */
export function refuseConnection(socket: net.Socket, limit: RateLimitName, metrics: DoorMetrics): null {
  metrics.sshConnectionRefused();
  metrics.events.rateLimited(limit);
  socket.destroy();
  return null;
}

export type Admission = ReturnType<typeof createAdmission>;

/**
 * The budget of open SSH sessions (each holds a channel's buffers and a program's state): at
 * most `maxPerGroup` per address group, and `max` in the process. At `max`, the address holding
 * the most sessions (at least two, more than the newcomer's) loses the connection holding its
 * oldest, as connections do at SSH_MAX_CONNECTIONS. `take` returns the slot's release
 * (idempotent), or null, counted, when refused; `evict` ends the slot holder's connection.
 */
export function sessionSlots(max: number, maxPerGroup: number, metrics: DoorMetrics = NO_METRICS) {
  const open = new FairShares<{ evict(): void }>();
  return {
    take(group: string, evict: () => void): (() => void) | null {
      let refusal: RateLimitName | null = open.sizeOf(group) >= maxPerGroup ? 'ssh_sessions_per_ip' : null;
      if (!refusal && open.size >= max) {
        const victim = open.victimFor(group, 2);
        if (victim) victim.evict();
        else refusal = 'ssh_sessions_total';
      }
      if (refusal) {
        metrics.events.rateLimited(refusal);
        return null;
      }
      const leave = open.add(group, { evict });
      return () => void leave();
    },
  };
}

export type SessionSlots = ReturnType<typeof sessionSlots>;
