import type net from 'node:net';
import type { Logger } from 'pino';
import type { SshLimits } from '../config.js';
import { TokenBuckets } from './token-bucket.js';

/** A connection let in: report when it authenticates; closing the socket releases it. */
export type Admitted = { ip: string; authenticated(): void };

/**
 * The listener's gate, before any SSH byte is read: per-address caps on unauthenticated and on
 * all connections, a per-address rate of new connections, and the login grace time (OpenSSH
 * LoginGraceTime) after which a connection that has not authenticated is dropped.
 */
export function createAdmission(limits: SshLimits, log: Logger) {
  const newConnections = new TokenBuckets(limits.connectionsPerSecond, limits.connectionBurst);
  const unauthenticated = new Map<string, number>();
  const open = new Map<string, number>();
  const sockets = new Set<net.Socket>();
  const graceTimers = new Set<NodeJS.Timeout>();

  const bump = (counts: Map<string, number>, ip: string, by: number) => {
    const next = (counts.get(ip) ?? 0) + by;
    if (next <= 0) counts.delete(ip);
    else counts.set(ip, next);
  };

  return {
    /** Counts the socket in, or destroys it and returns null when its address is over a cap. */
    admit(socket: net.Socket): Admitted | null {
      const ip = socket.remoteAddress ?? '';
      if (
        (unauthenticated.get(ip) ?? 0) >= limits.maxUnauthenticatedPerIp ||
        (open.get(ip) ?? 0) >= limits.maxConnectionsPerIp ||
        !newConnections.take(ip)
      ) {
        socket.destroy();
        return null;
      }
      bump(unauthenticated, ip, 1);
      bump(open, ip, 1);
      sockets.add(socket);
      let pending = true;
      const grace = setTimeout(() => {
        log.info({ ip }, 'ssh: login grace time over, dropping connection');
        socket.destroy();
      }, limits.loginGraceMs);
      graceTimers.add(grace);
      const authenticated = () => {
        if (!pending) return;
        pending = false;
        clearTimeout(grace);
        graceTimers.delete(grace);
        bump(unauthenticated, ip, -1);
      };
      socket.once('close', () => {
        sockets.delete(socket);
        bump(open, ip, -1);
        authenticated();
      });
      return { ip, authenticated };
    },
    /** Drops every connection (shutdown). */
    closeAll(): void {
      for (const timer of graceTimers) clearTimeout(timer);
      graceTimers.clear();
      for (const socket of sockets) socket.destroy();
    },
  };
}

export type Admission = ReturnType<typeof createAdmission>;
