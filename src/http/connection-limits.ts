import type http from 'node:http';
import type { Socket } from 'node:net';
import type { Config } from '../config/config.js';
import { FairShares } from '../limits/fair-shares.js';
import { addressGroupOf } from '../net/addresses.js';
import type { DoorMetrics } from '../observability/door-metrics.js';

export type HttpLimits = Config['http'] & {
  ipv6Prefix: number;
  /** A peer whose connections carry many clients (the balancer, with TRUST_PROXY): no per-address cap. */
  carriesManyClients?: (address: string | undefined) => boolean;
};

/**
 * Caps open connections in all and per address, closing the ones beyond at once: each holds a
 * file descriptor, and idle ones cost the client nothing. (Not `server.maxConnections`: under
 * node:cluster a worker at its cap hands the connection back to the primary, which offers it
 * again and again, spinning, instead of closing it.)
 */
export function limitConnections(server: http.Server, limits: HttpLimits, metrics: DoorMetrics): void {
  const open = new FairShares<Socket>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    const group = limits.carriesManyClients?.(address) ? 'balancers' : addressGroupOf(address ?? '', limits.ipv6Prefix);
    const refusal =
      open.size >= limits.maxConnections ? 'http_connections_total' : group !== 'balancers' && open.sizeOf(group) >= limits.maxConnectionsPerIp ? 'http_connections_per_ip' : null;
    if (refusal) {
      metrics.httpConnectionRefused();
      metrics.events.rateLimited(refusal);
      socket.destroy();
      return;
    }
    const leave = open.add(group, socket);
    socket.once('close', () => leave());
  });
}
