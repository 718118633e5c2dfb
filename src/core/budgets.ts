import { sql } from 'kysely';
import { nowOf, type CoreDeps } from './context.js';

/**
 * Per-address request budgets kept in the database, so N instances behind one load balancer
 * allow what one would: fixed windows, one row per (budget, address), restarted in place by a
 * single upsert.
 */
export type Budget = { name: string; limit: number; windowMs: number };

function windowOf(deps: CoreDeps, budget: Budget) {
  const now = nowOf(deps).getTime();
  const start = now - (now % budget.windowMs);
  return { start: new Date(start), retryAfterSeconds: Math.max(1, Math.ceil((start + budget.windowMs - now) / 1000)) };
}

/** Counts one request; returns the seconds to wait when the budget is spent, else null. */
export async function takeFromBudget(deps: CoreDeps, budget: Budget, address: string): Promise<number | null> {
  const window = windowOf(deps, budget);
  const row = await deps.db
    .insertInto('request_budgets')
    .values({ bucket: `${budget.name}:${address}`, window_start: window.start, count: 1 })
    .onConflict((oc) =>
      oc.column('bucket').doUpdateSet({
        // A new window restarts the count; within the window, add one.
        count: sql<number>`CASE WHEN request_budgets.window_start = excluded.window_start THEN request_budgets.count + 1 ELSE 1 END`,
        window_start: sql<Date>`excluded.window_start`,
      }),
    )
    .returning('count')
    .executeTakeFirstOrThrow();
  return Number(row.count) > budget.limit ? window.retryAfterSeconds : null;
}

/** Whether the budget is already spent, without counting this request. */
export async function budgetSpent(deps: CoreDeps, budget: Budget, address: string): Promise<number | null> {
  const window = windowOf(deps, budget);
  const row = await deps.db
    .selectFrom('request_budgets')
    .select('count')
    .where('bucket', '=', `${budget.name}:${address}`)
    .where('window_start', '=', window.start)
    .executeTakeFirst();
  return row && Number(row.count) >= budget.limit ? window.retryAfterSeconds : null;
}

/** Old windows are never read again; dropping them keeps the table to the addresses of the last hour. */
export async function sweepBudgets(deps: CoreDeps): Promise<void> {
  await deps.db
    .deleteFrom('request_budgets')
    .where('window_start', '<', new Date(nowOf(deps).getTime() - 3_600_000))
    .execute();
}
