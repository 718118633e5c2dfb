import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, NO_EVENTS, type CoreDeps, type ErrorCode } from '../../src/core/index.js';
import { createRequestLimits } from '../../src/http/limits.js';
import type { RouteBudget } from '../../src/http/route.js';
import { countingStatements } from '../support/database.js';
import { startTestCore, type TestCore } from '../support/core.js';

// The HTTP door's request limits alone, on the test database and its movable clock.

const LIMIT = 3;
let core: TestCore;
let deps: CoreDeps;
let budgetStatements: string[];
let rateLimited: string[];
beforeAll(async () => {
  core = await startTestCore();
  const counted = countingStatements(core.deps.db, { table: 'request_budgets' });
  budgetStatements = counted.statements;
  rateLimited = [];
  deps = { ...core.deps, db: counted.db, events: { ...NO_EVENTS, rateLimited: (limit) => void rateLimited.push(limit) } };
});
afterAll(async () => {
  await core?.close();
});

let addressCounter = 0;
// Each test has addresses of its own: the budget rows stay in the database between tests.
const newAddress = () => `198.18.9.${++addressCounter}`;
const limits = () => createRequestLimits(deps, { lookupsPerMinute: LIMIT });
/** What each `before` answered: null (go on), or the refusal's code. */
async function befores(times: number, budget: RouteBudget | undefined, address: string, instance = limits()) {
  const answers: Array<string | null> = [];
  for (let i = 0; i < times; i++) answers.push((await instance.before(budget, address))?.code ?? null);
  return answers;
}
/** What each `after` turned the failure into. */
async function afters(times: number, budget: RouteBudget | undefined, address: string, code: ErrorCode, instance = limits()) {
  const answers: string[] = [];
  for (let i = 0; i < times; i++) answers.push((await instance.after(budget, address, new AppError(code))).code);
  return answers;
}
const refusedAfter = (allowed: number, total: number) => Array.from({ length: total }, (_, i) => (i < allowed ? null : 'RATE_LIMITED'));

describe('before the handler, per budget kind', () => {
  it.each([
    [undefined, Array(LIMIT + 2).fill(null)],
    ['each', refusedAfter(LIMIT, LIMIT + 2)],
    ['refusals', Array(LIMIT + 2).fill(null)], // only looks: its refusals are counted after
    ['failures', Array(LIMIT + 2).fill(null)], // judged after: a valid key is always answered
  ] as const)('%s', async (budget, expected) => {
    rateLimited.length = 0;
    expect(await befores(LIMIT + 2, budget, newAddress())).toEqual(expected);
    expect(rateLimited).toEqual(expected.filter(Boolean).map(() => 'http_lookups'));
  });

  it('a refusal says how long to wait, at most the window', async () => {
    const instance = limits();
    const address = newAddress();
    await befores(LIMIT, 'each', address, instance);
    const refusal = await instance.before('each', address);
    expect(refusal?.status).toBe(429);
    expect(refusal?.extra.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(refusal?.extra.retryAfterSeconds).toBeLessThanOrEqual(60);
  });
});

describe('after a failure, per budget kind', () => {
  it.each([
    [undefined, 'INVALID_API_KEY', Array(LIMIT + 2).fill('INVALID_API_KEY')],
    ['each', 'INVALID_API_KEY', Array(LIMIT + 2).fill('INVALID_API_KEY')], // counted before
    ['refusals', 'KEY_TAKEN', Array(LIMIT + 2).fill('KEY_TAKEN')], // counted; the next request is refused
    ['refusals', 'INVALID_INITIATE', Array(LIMIT + 2).fill('INVALID_INITIATE')],
    ['failures', 'INVALID_API_KEY', [...Array(LIMIT).fill('INVALID_API_KEY'), 'RATE_LIMITED', 'RATE_LIMITED']],
    ['failures', 'UNAVAILABLE', Array(LIMIT + 2).fill('UNAVAILABLE')],
  ] as const)('%s, %s', async (budget, code, expected) => {
    expect(await afters(LIMIT + 2, budget, newAddress(), code)).toEqual(expected);
  });

  it.each([
    ['KEY_TAKEN', refusedAfter(0, 1)],
    ['BASE_ACCOUNT_MISSING', refusedAfter(0, 1)],
    ['BASE_ACCOUNT_UNVERIFIED', refusedAfter(0, 1)],
    ['INVALID_INITIATE', refusedAfter(1, 1)],
    ['UNAVAILABLE', refusedAfter(1, 1)],
  ] as const)('refusals: %s counts toward refusing the next request, or not', async (code, expected) => {
    const address = newAddress();
    await afters(LIMIT, 'refusals', address, code);
    expect(await befores(1, 'refusals', address)).toEqual(expected);
  });
});

describe('the layers', () => {
  it('in memory first: once this instance has refused an address, its requests cost no database write', async () => {
    const instance = limits();
    const address = newAddress();
    await befores(LIMIT, 'each', address, instance);
    budgetStatements.length = 0;
    expect(await befores(5, 'each', address, instance)).toEqual(Array(5).fill('RATE_LIMITED'));
    expect(budgetStatements).toEqual([]);
  });

  it('the database budget is shared by instances', async () => {
    const [first, second] = [limits(), limits()];
    const address = newAddress();
    expect(await befores(2, 'each', address, first)).toEqual([null, null]);
    expect(await befores(2, 'each', address, second)).toEqual([null, 'RATE_LIMITED']);
    expect(await befores(1, 'each', address, first)).toEqual(['RATE_LIMITED']);
  });

  it('failures: an address over budget is remembered until its window ends (no database write), then counted afresh', async () => {
    const instance = limits();
    const address = newAddress();
    await afters(LIMIT + 1, 'failures', address, 'INVALID_API_KEY', instance);
    budgetStatements.length = 0;
    const remembered = await instance.after('failures', address, new AppError('INVALID_API_KEY'));
    expect(remembered.code).toBe('RATE_LIMITED');
    expect(remembered.extra.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(budgetStatements).toEqual([]);
    core.clock.advance(60_000);
    expect(await afters(1, 'failures', address, 'INVALID_API_KEY', instance)).toEqual(['INVALID_API_KEY']);
  });

  it('one budget per address in all: failures and lookups add up', async () => {
    const address = newAddress();
    await afters(LIMIT, 'failures', address, 'INVALID_API_KEY');
    expect(await befores(1, 'each', address)).toEqual(['RATE_LIMITED']);
    expect(await befores(1, 'refusals', address)).toEqual(['RATE_LIMITED']);
  });

  it('lookupsPerMinute null: no limits, and no database writes', async () => {
    const off = createRequestLimits(deps, { lookupsPerMinute: null });
    const address = newAddress();
    budgetStatements.length = 0;
    for (const budget of [undefined, 'each', 'refusals', 'failures'] as const) {
      expect(await befores(LIMIT + 2, budget, address, off)).toEqual(Array(LIMIT + 2).fill(null));
      expect(await afters(LIMIT + 2, budget, address, budget === 'refusals' ? 'KEY_TAKEN' : 'INVALID_API_KEY', off)).toEqual(
        Array(LIMIT + 2).fill(budget === 'refusals' ? 'KEY_TAKEN' : 'INVALID_API_KEY'),
      );
    }
    expect(budgetStatements).toEqual([]);
  });
});
