import type { Server } from 'node:http';
import type { Logger } from 'pino';
import type { MailSender } from '../core/index.js';
import type { MetricsServer } from '../observability/metrics.js';
import type { SshServer } from '../ssh/server.js';
import type { Core } from './core-wiring.js';

/** How a started app stops. */
export type Shutdown = {
  /**
   * The graceful stop (SIGTERM): readiness fails at once, both listeners stop accepting, running
   * commands and requests get up to `graceMs`, shells are told, the mail sender finishes its
   * message; then everything is closed.
   */
  drain(graceMs: number): Promise<void>;
  /** Stops at once, cutting whatever runs. */
  close(): Promise<void>;
};

/** What a started app stops, and how it stops being ready. */
export type Running = {
  ssh: SshServer;
  http: Server;
  mailSender: MailSender;
  core: Core;
  scrapes: MetricsServer | null;
  log: Logger;
  /** Readiness fails from now on, and periodic work stops. */
  stopServing(): void;
};

/** An app's drain and close: one shutdown, however it is asked for; close() during a drain cuts the drain short. */
export function shutdownOf(running: Running): Shutdown {
  const { ssh, http, mailSender, core, scrapes, log } = running;
  let shutdown: Promise<void> | null = null;
  const release = async (mailWaitMs: number) => {
    await mailSender.stop(mailWaitMs);
    await core.close();
    await scrapes?.close();
  };
  const httpClosed = new Promise<void>((resolve) => http.once('close', () => resolve()));
  const cut = () => {
    void ssh.close();
    if (http.listening) http.close();
    http.closeAllConnections();
    void mailSender.stop(0);
  };
  return {
    drain(graceMs) {
      if (shutdown) return shutdown;
      running.stopServing();
      log.info({ graceMs }, 'draining: not ready, listeners closed, running commands and requests may finish');
      const started = Date.now();
      shutdown = (async () => {
        await Promise.all([ssh.drain(graceMs), drainHttp(http, graceMs)]);
        // The sender finishes the message in hand, within what is left of the grace.
        await release(Math.max(1_000, graceMs - (Date.now() - started)));
        log.info({ ms: Date.now() - started }, 'drained');
      })();
      return shutdown;
    },
    close() {
      running.stopServing();
      cut();
      shutdown ??= (async () => {
        await ssh.close();
        await httpClosed;
        await release(0);
      })();
      return shutdown;
    },
  };
}

/**
 * Stops accepting; closes keep-alive connections as they fall idle; cuts the rest after
 * `graceMs`. Resolves when the last connection is gone.
 */
function drainHttp(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const idle = setInterval(() => server.closeIdleConnections(), 250);
    const cut = setTimeout(() => server.closeAllConnections(), graceMs);
    server.close(() => {
      clearInterval(idle);
      clearTimeout(cut);
      resolve();
    });
    server.closeIdleConnections();
  });
}
