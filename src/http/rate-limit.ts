/**
 * Per-address request budget for the endpoints that answer questions about keys (verify-key,
 * verify-public-key, api-keys): they send no mail, so the database-backed mail limits do not
 * cover them, and their answers are worth probing. Fixed one-minute windows, in memory: the
 * budget is per instance (behind a load balancer, N instances allow up to N times as much).
 */
export class PerIpRateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds to wait if `ip` is over budget, else null (and the request is counted). */
  take(ip: string): number | null {
    const now = this.now();
    if (this.windows.size > 10_000) this.sweep(now);
    let window = this.windows.get(ip);
    if (!window || now - window.start >= 60_000) {
      window = { start: now, count: 0 };
      this.windows.set(ip, window);
    }
    if (window.count >= this.perMinute) return Math.max(1, Math.ceil((window.start + 60_000 - now) / 1000));
    window.count++;
    return null;
  }

  private sweep(now: number): void {
    for (const [ip, window] of this.windows) if (now - window.start >= 60_000) this.windows.delete(ip);
  }
}
