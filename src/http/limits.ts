import { AppError, budgetSpent, eventsOf, nowOf, takeFromBudget, type Budget, type CoreDeps, type ErrorCode } from '../core/index.js';
import { FixedWindows } from '../limits/fixed-windows.js';
import type { RouteBudget } from './route.js';

/** Answers that tell a prober something about accounts: counted against the lookup budget. */
const ACCOUNT_REFUSALS: ReadonlySet<ErrorCode> = new Set(['KEY_TAKEN', 'BASE_ACCOUNT_MISSING', 'BASE_ACCOUNT_UNVERIFIED']);

/** Failed authentications: what `failures` and `signed` count. */
const AUTHENTICATION_FAILURES: ReadonlySet<ErrorCode> = new Set(['INVALID_API_KEY', 'LEAK_REPORT_UNSIGNED', 'LEAK_REPORT_KEY_UNKNOWN', 'LEAK_REPORT_SIGNATURE_INVALID']);

/** A bound on the addresses remembered as over budget: forgetting one costs one budget write. */
const MAX_REMEMBERED = 10_000;

/** The HTTP door's per-address request limits, asked before and after each request's handler. */
export type RequestLimits = {
  /** RATE_LIMITED (with the seconds to wait) when the route's budget is spent for this address. */
  before(budget: RouteBudget | undefined, addressGroup: string): Promise<AppError | null>;
  /** Counts a failure the route budgets; returns the answer to send (RATE_LIMITED once over budget). */
  after(budget: RouteBudget | undefined, addressGroup: string, failure: AppError): Promise<AppError>;
};

/** `lookupsPerMinute` null: no limits. */
export function createRequestLimits(deps: CoreDeps, { lookupsPerMinute }: { lookupsPerMinute: number | null }): RequestLimits {
  if (lookupsPerMinute === null) return { before: async () => null, after: async (_budget, _group, failure) => failure };
  const now = () => nowOf(deps).getTime();
  // In memory first (per instance, no I/O for a flood), then the database (shared by all instances).
  const memory = new FixedWindows(lookupsPerMinute, now);
  const lookups: Budget = { name: 'http-lookups', limit: lookupsPerMinute, windowMs: 60_000 };
  // `failures`: addresses this instance found over budget, until their window ends (their further
  // failures are 429 with no budget write).
  const failedTooOften = new Map<string, number>();

  function rateLimited(retryAfterSeconds: number): AppError {
    eventsOf(deps).rateLimited('http_lookups');
    return new AppError('RATE_LIMITED', { retryAfterSeconds });
  }

  async function waitBefore(budget: RouteBudget | undefined, group: string): Promise<number | null> {
    if (budget === 'each') return memory.takeOrWait(group) ?? (await takeFromBudget(deps, lookups, group));
    if (budget === 'refusals') return budgetSpent(deps, lookups, group);
    if (budget === 'signed') return overBudgetUntil(group);
    // `failures` is judged after the answer: a valid key is answered whatever the address did.
    return null;
  }

  /** Seconds left while this instance knows `group` to be over its failure budget; no I/O. */
  function overBudgetUntil(group: string): number | null {
    const until = failedTooOften.get(group);
    const at = now();
    if (until !== undefined && until > at) return Math.ceil((until - at) / 1000);
    return null;
  }

  /** After a failed authentication: counts it; once over budget, the seconds to wait. */
  async function failureOverBudget(group: string): Promise<number | null> {
    const over = overBudgetUntil(group);
    if (over !== null) return over;
    failedTooOften.delete(group);
    const wait = await takeFromBudget(deps, lookups, group).catch(() => null);
    if (wait === null) return null;
    if (failedTooOften.size >= MAX_REMEMBERED) failedTooOften.clear();
    failedTooOften.set(group, now() + wait * 1000);
    return wait;
  }

  return {
    async before(budget, group) {
      const wait = await waitBefore(budget, group);
      return wait === null ? null : rateLimited(wait);
    },
    async after(budget, group, failure) {
      if (budget === 'refusals' && ACCOUNT_REFUSALS.has(failure.code)) await takeFromBudget(deps, lookups, group).catch(() => null);
      if ((budget === 'failures' || budget === 'signed') && AUTHENTICATION_FAILURES.has(failure.code)) {
        const wait = await failureOverBudget(group);
        if (wait !== null) return rateLimited(wait);
      }
      return failure;
    },
  };
}
