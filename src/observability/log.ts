import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';

/** pino-pretty costs ~60 ms to load: only a pretty logger pays for it (it is CommonJS, so require works). */
const loadPretty = (): typeof PinoPretty => createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;

export type LogFormat = 'json' | 'pretty';

/** LOG_FORMAT if set; otherwise human-readable on a terminal (development), JSON anywhere else. */
export function logFormatFor(configured: LogFormat | null, isTTY: boolean | undefined): LogFormat {
  return configured ?? (isTTY ? 'pretty' : 'json');
}

/**
 * JSON logs, or pino-pretty's lines for a person at a terminal. Field names that could carry a
 * secret are redacted wherever they appear, in either format.
 */
export function createLogger(level: string, destination?: pino.DestinationStream, format: LogFormat = 'json'): Logger {
  const stream =
    format === 'pretty'
      ? loadPretty()({
          // Synchronous, so the last lines before process.exit are not lost.
          sync: true,
          colorize: destination === undefined && process.stdout.isTTY === true,
          translateTime: 'SYS:HH:MM:ss.l',
          // One event, one line: an SSH connection's access line (its commands array) would
          // otherwise take a dozen.
          singleLine: true,
          ignore: 'pid,hostname,service',
          ...(destination ? { destination } : {}),
        })
      : destination;
  return pino(
    {
      level,
      base: { service: 'shell-auth' },
      redact: {
        paths: ['api_key', '*.api_key', 'token', '*.token', 'secret', '*.secret', 'authorization', '*.authorization'],
        censor: '[redacted]',
      },
    },
    stream,
  );
}

/**
 * What of an error is safe to log: name, code, message and stack. Never the whole object:
 * driver errors carry the query's parameters (emails, hashes).
 */
export function errorFields(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: String(err) };
  const code = (err as { code?: unknown }).code;
  return { name: err.name, message: err.message, ...(code !== undefined ? { code } : {}), stack: err.stack };
}
