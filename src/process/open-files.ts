import fs from 'node:fs';
import type { Config } from '../config/config.js';

/**
 * Descriptors kept back from both doors, beside the database pool, for everything else a process
 * opens: the database listeners, SMTP connections, the metrics listener, files, Node's own.
 */
export const RESERVED_DESCRIPTORS = 256;

/** This process's open-file limit (Node raises the soft limit to the hard one at start), or null where it cannot be read. */
export function openFileLimit(limitsFile = '/proc/self/limits'): number | null {
  try {
    const line = fs.readFileSync(limitsFile, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === undefined || soft === 'unlimited') return null;
    const n = Number(soft);
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

type Caps = { http: Config['http']; ssh: Config['ssh']; database: Pick<Config['database'], 'poolSize'> };

/** Each door's caps as fitted; `lowered` says what was lowered, or null. */
export type DoorCaps = Pick<Caps, 'http' | 'ssh'> & { lowered: string | null };

/**
 * The doors' connection caps, lowered in proportion when together they would not fit in the
 * open-file limit beside RESERVED_DESCRIPTORS: a cap that can never be reached protects nothing
 * (the process would fail with EMFILE first, on every door and on the database). `lowered`
 * says what was done, for a warning at start-up.
 */
export function fitToOpenFiles(caps: Caps, limit: number | null): DoorCaps {
  // Behind PROXY protocol, connections still owing their header are not yet admitted: up to SSH_MAX_UNAUTH more.
  const awaitingHeaders = caps.ssh.proxyProtocol ? caps.ssh.maxUnauthenticated : 0;
  const wanted = caps.http.maxConnections + caps.ssh.maxConnections + awaitingHeaders;
  const reserved = RESERVED_DESCRIPTORS + caps.database.poolSize;
  const room = limit === null ? Infinity : limit - reserved;
  if (wanted <= room) return { http: caps.http, ssh: caps.ssh, lowered: null };
  const share = Math.max(0, room) / wanted;
  const http = Math.max(1, Math.floor(caps.http.maxConnections * share));
  const ssh = Math.max(1, Math.floor(caps.ssh.maxConnections * share));
  return {
    http: { ...caps.http, maxConnections: http, maxConnectionsPerIp: Math.min(caps.http.maxConnectionsPerIp, http) },
    ssh: { ...caps.ssh, maxConnections: ssh, maxUnauthenticated: Math.min(caps.ssh.maxUnauthenticated, ssh) },
    lowered:
      `the open-file limit (${limit}) cannot hold HTTP_MAX_CONNECTIONS=${caps.http.maxConnections} + ` +
      `SSH_MAX_CONNECTIONS=${caps.ssh.maxConnections} + ${reserved} kept for the database (DB_POOL_SIZE) and files: ` +
      `using ${http} and ${ssh}; raise the limit (ulimit -n, systemd LimitNOFILE) or lower them`,
  };
}
