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
      : (destination ?? stdoutOncePerTurn());
  const logger = pino(
    {
      level,
      base: { service: 'shell-auth' },
      // Top-level names through pino's own redaction (a stringifier for those keys only: log lines and
      // child bindings alike); one level down through `redactNested`. pino's wildcard paths
      // ('*.token') did the same but ran for every field of every line: 4 of the 5 us a line cost.
      redact: { paths: [...SECRET_FIELDS], censor: CENSOR },
      formatters: { log: redactNested },
    },
    stream,
  );
  // Children inherit this (pino makes each from its parent): their bindings are redacted too.
  const child = logger.child; // pino's, called with each child as `this`
  logger.child = function (this: Logger, bindings, options) {
    return child.call(this, redactNested(bindings), options);
  } as Logger['child'];
  return logger;
}

/** Field names that could carry a secret, redacted in every log line and child binding, and one level down. */
const SECRET_FIELDS = ['api_key', 'token', 'secret', 'authorization'] as const;
const CENSOR = '[redacted]';

const holdsSecret = (value: unknown): value is object =>
  value !== null && typeof value === 'object' && SECRET_FIELDS.some((name) => Object.hasOwn(value, name));

/**
 * `fields` with each object value that holds a secret field replaced by a copy with it censored
 * (same prototype and properties, so an Error is still one); `fields` itself when none does. The
 * caller's objects are never changed.
 */
export function redactNested<T extends Record<string, unknown>>(fields: T): T {
  let out = fields;
  for (const key in fields) {
    const value = fields[key];
    if (!holdsSecret(value)) continue;
    const copy = Object.defineProperties(Object.create(Object.getPrototypeOf(value) as object | null) as Record<string, unknown>, Object.getOwnPropertyDescriptors(value));
    for (const name of SECRET_FIELDS) if (Object.hasOwn(copy, name)) copy[name] = CENSOR;
    if (out === fields) out = { ...fields };
    (out as Record<string, unknown>)[key] = copy;
  }
  return out;
}

/** Pipes keep a write of at most this many bytes whole among several writers (WORKERS share stdout). */
const PIPE_BUF = 4096;
let sharedStdout: pino.DestinationStream | null = null;

/**
 * Standard output, written once per turn of the event loop: one write(2) per line cost a refused
 * or cached `/api/whoami` about a fifth of its CPU (its access line), and lines logged in the same
 * turn now share one write of at most PIPE_BUF bytes (so a line never interleaves with another
 * worker's). No line waits past its turn, and a line logged just before `process.exit` is written
 * by the 'exit' handler; only a SIGKILL can lose the current turn's lines.
 */
export function stdoutOncePerTurn(): pino.DestinationStream {
  if (sharedStdout) return sharedStdout;
  const out = pino.destination({ dest: 1, sync: true });
  let pending: string[] = [];
  let pendingBytes = 0;
  let scheduled = false;
  const flush = (): void => {
    if (pending.length > 0) out.write(pending.length === 1 ? pending[0]! : pending.join(''));
    pending = [];
    pendingBytes = 0;
  };
  const endOfTurn = (): void => {
    scheduled = false;
    flush();
  };
  process.on('exit', flush);
  sharedStdout = {
    write(line: string) {
      const bytes = Buffer.byteLength(line);
      if (pendingBytes + bytes > PIPE_BUF) flush();
      pending.push(line);
      pendingBytes += bytes;
      if (!scheduled) {
        scheduled = true;
        setImmediate(endOfTurn);
      }
    },
  };
  return sharedStdout;
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
