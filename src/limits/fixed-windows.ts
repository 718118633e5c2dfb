/**
 * Per-address request counts in fixed one-minute windows, in memory and per instance. Not
 * TokenBuckets: this stands in front of the database's per-minute budget (core/budgets.ts,
 * "HTTP_LOOKUPS_PER_MINUTE per address per minute"), and answers how long until the window ends;
 * a bucket would answer "one token in 60/N s", sending clients back while that budget still
 * refuses them.
 */
export class FixedWindows {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds to wait if `address` is over budget, else null (and the request is counted). */
  takeOrWait(address: string): number | null {
    const now = this.now();
    if (this.windows.size > 10_000) this.sweep(now);
    let window = this.windows.get(address);
    if (!window || now - window.start >= 60_000) {
      window = { start: now, count: 0 };
      this.windows.set(address, window);
    }
    if (window.count >= this.perMinute) return Math.max(1, Math.ceil((window.start + 60_000 - now) / 1000));
    window.count++;
    return null;
  }

  private sweep(now: number): void {
    for (const [address, window] of this.windows) if (now - window.start >= 60_000) this.windows.delete(address);
  }
}
