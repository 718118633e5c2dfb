const MAX_ADDRESSES = 10_000;

/**
 * Per-address token buckets: each address may spend `burst` at once and earns `perSecond` back.
 * In memory and per instance: they bound the CPU one address can make this process spend, which
 * is a per-process matter. (The HTTP lookup budget counts per minute instead: fixed-windows.ts says why.)
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private sweptAt = -Infinity;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Spends one token for `address`; false when it has none left. */
  take(address: string): boolean {
    const now = this.now();
    if (this.buckets.size > MAX_ADDRESSES && now - this.sweptAt >= 1_000) this.sweep(now);
    const bucket = this.buckets.get(address) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
    bucket.at = now;
    this.buckets.set(address, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /**
   * Buckets that have refilled completely say nothing a new one would not. At most once a second
   * (many addresses would otherwise make every take walk them all); if too many are still
   * spending, the longest-known go: forgetting one gives its address a fresh burst, no more.
   */
  private sweep(now: number): void {
    this.sweptAt = now;
    for (const [address, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond >= this.burst) this.buckets.delete(address);
    }
    for (const address of this.buckets.keys()) {
      if (this.buckets.size <= MAX_ADDRESSES) break;
      this.buckets.delete(address);
    }
  }
}
