import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { loadOrCreateHostKey, type HostKey } from '../ssh/host-key.js';
import { heapSettings } from './heap.js';
import { fitToOpenFiles, openFileLimit, type DoorCaps } from './open-files.js';

// The start-up block an operator reads: said by the single process, or once by a cluster's
// primary for all its workers (which say theirs at debug).

/** Where start-up lines go: the log, or (in a cluster worker) its debug level. */
export type StartupLog = Pick<Logger, 'info' | 'warn'>;

function warnAboutSettings(config: Config, log: StartupLog): void {
  if (config.httpTrust.window === 'forever') {
    log.warn(
      'HTTP_TRUST_WINDOW=forever: anyone who knows a verified public key can learn its email and mint API keys over HTTP. ' +
        'This is the literal Vers behaviour; use a finite window unless you need it.',
    );
  }
  if (!config.smtpUrl) {
    log.warn(
      { outbox: path.join(config.dataDir, 'outbox') },
      'SMTP_URL is not set: emails are written to the outbox and their links logged (development only)',
    );
  }
  if (config.httpTrust.window === 'off') {
    // Only the email window is off: a signed request proves the key as the SSH door does, so it still acts.
    log.info(
      'HTTP_TRUST_WINDOW=0: an email confirmation opens no HTTP window, so unsigned HTTP requests mint no API keys; ' +
        'requests signed with the key (challenge + ssh_signature) and the SSH door still do',
    );
  }
}

/**
 * Before the doors listen: warns about settings, loads (or makes) the SSH host key and fits the
 * connection caps to the open-file limit. A cluster's primary does it before forking, so its
 * workers find the host key made; each worker inherits its open-file limit and fits its own caps.
 */
export function prepareDoors(config: Config, log: StartupLog, options: { forEachWorker?: boolean } = {}): { hostKey: HostKey; caps: DoorCaps } {
  warnAboutSettings(config, log);
  // What the settings did to V8 in this process (src/main.ts); a cluster's workers start alike.
  log.info(heapSettings(), 'V8 heap settings');
  const hostKey = loadOrCreateHostKey(config.hostKeysDir);
  log.info({ fingerprint: hostKey.fingerprint, path: hostKey.path, created: hostKey.created }, 'SSH host key');
  const caps = fitToOpenFiles(config, openFileLimit());
  if (caps.lowered) log.warn(`connection caps lowered${options.forEachWorker ? ' (in each worker)' : ''}: ${caps.lowered}`);
  return { hostKey, caps };
}

/** A cluster's primary adds how many workers share the port. */
type Shared = { workers?: number };

export function announceSshDoor(log: StartupLog, config: Config, door: { port: number; hint: string }, shared: Shared = {}): void {
  log.info({ port: door.port, user: config.sshUser, try: door.hint, ...shared }, 'SSH door listening');
}

export function announceHttpDoor(log: StartupLog, config: Config, door: { url: string; database: string }, shared: Shared = {}): void {
  log.info({ url: door.url, publicUrl: config.publicUrl, database: door.database, ...shared }, 'HTTP API listening');
}
