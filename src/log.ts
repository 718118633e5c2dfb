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
