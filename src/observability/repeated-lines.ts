import type { Logger } from 'pino';

type Level = 'info' | 'warn';

/**
 * Log lines that a flood would repeat thousands of times (an address's connections timing out,
 * refusals at a cap), aggregated like OpenSSH's MaxStartups logging: the first of a kind per
 * address per interval is written as is; the rest are counted, and one line per address with
 * the count closes the interval. Holds at most `maxKeys` addresses; beyond them, one shared count.
 */
export class RepeatedLines {
  private readonly counts = new Map<string, { level: Level; message: string; address: string; count: number }>();
  private others = new Map<string, { level: Level; count: number }>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 60_000,
    private readonly maxKeys = 1_000,
  ) {
    this.timer = setInterval(() => this.flush(), intervalMs);
    this.timer.unref();
  }

  /** Writes `message` at info with `fields`, unless this address already did so in this interval. */
  info(address: string, fields: Record<string, unknown>, message: string): void {
    this.write('info', address, fields, message);
  }

  warn(address: string, fields: Record<string, unknown>, message: string): void {
    this.write('warn', address, fields, message);
  }

  private write(level: Level, address: string, fields: Record<string, unknown>, message: string): void {
    const key = `${message}\u0000${address}`;
    const seen = this.counts.get(key);
    if (seen) {
      seen.count++;
      return;
    }
    if (this.counts.size >= this.maxKeys) {
      const other = this.others.get(message) ?? { level, count: 0 };
      other.count++;
      this.others.set(message, other);
      return;
    }
    this.counts.set(key, { level, message, address, count: 0 });
    this.log[level](fields, message);
  }

  /** Writes the counts of the interval that ends now. */
  flush(): void {
    const seconds = Math.round(this.intervalMs / 1000);
    for (const { level, message, address, count } of this.counts.values()) {
      if (count > 0) this.log[level]({ ip: address, repeated: count, seconds }, `${message} (repeated)`);
    }
    for (const [message, { level, count }] of this.others) {
      this.log[level]({ ip: 'other addresses', repeated: count, seconds }, `${message} (repeated)`);
    }
    this.counts.clear();
    this.others = new Map();
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
