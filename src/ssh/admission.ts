import type net from 'node:net';
import type { Logger } from 'pino';
import type { SshLimits } from '../config.js';
import type { RateLimitName } from '../core/index.js';
import { NO_METRICS, type DoorMetrics } from '../door-metrics.js';
import { addressGroupOf } from '../net-addresses.js';
import type { RepeatedLines } from '../repeated-lines.js';
import { ConnectionRecord } from './access-log.js';
import { TokenBuckets } from './token-bucket.js';

/**
 * A connection let in: report when it authenticates; closing the socket releases it. `group` is
 * the key its per-address limits count under (an IPv6 address's network); `access` is its
 * record for the access log and the metrics.
 */
export type Admitted = { ip: string; group: string; authenticated(): void; access: ConnectionRecord };

type Entry = { group: string; since: number; access: ConnectionRecord; release(): void };

/**
 * The listener's gate, before any SSH byte is read. Per address: caps on unauthenticated and on
 * all connections, and a rate of new ones. For the whole process: caps on all connections and
 * on unauthenticated ones, so many addresses together cannot exhaust file descriptors or memory.
 * At a full cap, the address holding the most connections (unauthenticated ones first) loses
 * its oldest to make room: OpenSSH's MaxStartups refuses at random instead, which refuses a lone
 * honest client as often as a flooder. Unauthenticated connections are dropped after the login
 * grace time.
 */
export function createAdmission(limits: SshLimits, log: Logger, repeated: RepeatedLines, metrics: DoorMetrics = NO_METRICS) {
  const newConnections = new TokenBuckets(limits.connectionsPerSecond, limits.connectionBurst);
  /** Per address group, its unauthenticated sockets, oldest first (a Set keeps insertion order). */
  const unauthenticated = new Map<string, Set<net.Socket>>();
  let unauthenticatedCount = 0;
  /** Per address group, all its sockets, oldest first. */
  const open = new Map<string, Set<net.Socket>>();
  const sockets = new Map<net.Socket, Entry>();
  const graceTimers = new Set<NodeJS.Timeout>();
  const capsHit = { evicted: 0, refused: 0, loggedAt: -Infinity };

  const join = (groups: Map<string, Set<net.Socket>>, group: string, socket: net.Socket) => {
    let members = groups.get(group);
    if (!members) groups.set(group, (members = new Set()));
    members.add(socket);
  };
  const leave = (groups: Map<string, Set<net.Socket>>, group: string, socket: net.Socket): boolean => {
    const members = groups.get(group);
    if (!members?.delete(socket)) return false;
    if (members.size === 0) groups.delete(group);
    return true;
  };

  /**
   * Drops the oldest connection of the address holding the most in `groups` (of equally busy
   * ones, the connection there longest: an honest client authenticates in milliseconds and runs
   * a command in a few more, so it is not the oldest); false if no address holds more than
   * `group`, the newcomer's own.
   */
  function makeRoomFor(group: string, groups: Map<string, Set<net.Socket>>): boolean {
    let victim: net.Socket | undefined;
    let victimCount = 0;
    let victimSince = Infinity;
    for (const members of groups.values()) {
      if (members.size < victimCount) continue;
      const oldest = members.values().next().value as net.Socket;
      const since = sockets.get(oldest)?.since ?? Infinity;
      if (members.size > victimCount || since < victimSince) {
        victim = oldest;
        victimCount = members.size;
        victimSince = since;
      }
    }
    if (!victim || victimCount <= (groups.get(group)?.size ?? 0)) return false;
    const entry = sockets.get(victim);
    entry?.access.ended('evicted');
    entry?.release(); // counted out now: its close event comes later
    victim.destroy();
    return true;
  }

  function capReached(outcome: 'evicted' | 'refused'): void {
    capsHit[outcome]++;
    if (Date.now() - capsHit.loggedAt < 60_000) return;
    log.warn(
      {
        connections: sockets.size,
        unauthenticated: unauthenticatedCount,
        max_connections: limits.maxConnections,
        max_unauthenticated: limits.maxUnauthenticated,
        evicted: capsHit.evicted,
        refused: capsHit.refused,
      },
      'ssh: connection caps reached (SSH_MAX_CONNECTIONS / SSH_MAX_UNAUTH): dropping the oldest unauthenticated connections of the busiest addresses (logged at most once a minute)',
    );
    capsHit.loggedAt = Date.now();
    capsHit.evicted = 0;
    capsHit.refused = 0;
  }

  function refuse(socket: net.Socket, limit: RateLimitName): null {
    // Counted, not logged one by one: a flood must not become a flood of log lines.
    metrics.sshConnectionRefused();
    metrics.events.rateLimited(limit);
    socket.destroy();
    return null;
  }

  return {
    /** Counts the socket in, or destroys it and returns null when a cap refuses it. */
    admit(socket: net.Socket): Admitted | null {
      const ip = socket.remoteAddress ?? '';
      const group = addressGroupOf(ip, limits.ipv6Prefix);
      if ((unauthenticated.get(group)?.size ?? 0) >= limits.maxUnauthenticatedPerIp) return refuse(socket, 'ssh_unauthenticated_per_ip');
      if ((open.get(group)?.size ?? 0) >= limits.maxConnectionsPerIp) return refuse(socket, 'ssh_connections_per_ip');
      if (!newConnections.take(group)) return refuse(socket, 'ssh_connections');
      // Full: room is made from the busiest address, unauthenticated connections first.
      if (unauthenticatedCount >= limits.maxUnauthenticated || sockets.size >= limits.maxConnections) {
        const madeRoom =
          makeRoomFor(group, unauthenticated) ||
          (sockets.size >= limits.maxConnections && unauthenticatedCount < limits.maxUnauthenticated && makeRoomFor(group, open));
        if (!madeRoom) {
          capReached('refused');
          return refuse(socket, sockets.size >= limits.maxConnections ? 'ssh_connections_total' : 'ssh_unauthenticated_total');
        }
        capReached('evicted');
      }

      const access = new ConnectionRecord(socket, ip, log, metrics, repeated);
      join(unauthenticated, group, socket);
      unauthenticatedCount++;
      join(open, group, socket);

      let pending = true;
      const grace = setTimeout(() => {
        repeated.info(group, { ip }, 'ssh: login grace time over, dropping connection');
        access.ended('login_timeout');
        socket.destroy();
      }, limits.loginGraceMs);
      graceTimers.add(grace);
      const authenticated = () => {
        if (!pending) return;
        pending = false;
        clearTimeout(grace);
        graceTimers.delete(grace);
        if (leave(unauthenticated, group, socket)) unauthenticatedCount--;
      };
      let counted = true;
      const release = () => {
        authenticated();
        if (!counted) return;
        counted = false;
        sockets.delete(socket);
        leave(open, group, socket);
      };
      sockets.set(socket, { group, since: performance.now(), access, release });
      socket.once('close', release);
      return { ip, group, authenticated, access };
    },
    /** Drops the connections that have not authenticated (drain: they have nothing to finish). */
    closeUnauthenticated(): void {
      for (const waiting of [...unauthenticated.values()]) {
        for (const socket of [...waiting]) {
          sockets.get(socket)?.access.ended('server_shutdown');
          socket.destroy();
        }
      }
    },
    /** Connections still open. */
    get size(): number {
      return sockets.size;
    },
    /** Connections not yet authenticated. */
    get unauthenticated(): number {
      return unauthenticatedCount;
    },
    /** Drops every connection (shutdown). */
    closeAll(): void {
      for (const timer of graceTimers) clearTimeout(timer);
      graceTimers.clear();
      for (const [socket, { access }] of sockets) {
        access.ended('server_shutdown');
        socket.destroy();
      }
    },
  };
}

export type Admission = ReturnType<typeof createAdmission>;

/** The process's budget of open SSH sessions: each holds a channel's buffers and a program's state. */
export function sessionSlots(max: number, metrics: DoorMetrics = NO_METRICS) {
  let open = 0;
  return {
    /** Takes a slot; false (counted) when none is left. */
    take(): boolean {
      if (open >= max) {
        metrics.events.rateLimited('ssh_sessions_total');
        return false;
      }
      open++;
      return true;
    },
    release(): void {
      open = Math.max(0, open - 1);
    },
    get open(): number {
      return open;
    },
  };
}

export type SessionSlots = ReturnType<typeof sessionSlots>;
