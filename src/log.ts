import pino, { type Logger } from 'pino';

/** JSON logs. Field names that could carry a secret are redacted wherever they appear. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'shell-auth' },
      redact: {
        paths: ['api_key', '*.api_key', 'token', '*.token', 'secret', '*.secret', 'authorization', '*.authorization'],
        censor: '[redacted]',
      },
    },
    destination,
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
