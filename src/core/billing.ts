import type { BillingCheck } from './context.js';

/**
 * Without BILLING_URL, the org's subscription row decides. It was read with the memberships (in
 * the same query), so this check costs no round trip.
 */
export function subscriptionBilling(): BillingCheck {
  return {
    async isActive(org) {
      return org.subscription === 'active';
    },
  };
}

/**
 * With BILLING_URL, an external service decides: POST {org_id, org_name}, and only a 200 with
 * {"active": true} within the timeout counts. Anything else fails closed (402, nothing written).
 */
export function httpBilling(url: string, timeoutMs: number): BillingCheck {
  return {
    async isActive(org) {
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ org_id: org.id, org_name: org.name }),
          signal: AbortSignal.timeout(timeoutMs),
          redirect: 'error',
        });
        if (response.status !== 200) {
          await response.body?.cancel();
          return false;
        }
        const body = (await response.json()) as { active?: unknown } | null;
        return body?.active === true;
      } catch {
        return false;
      }
    },
  };
}
