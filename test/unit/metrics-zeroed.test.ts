import { expect, it } from 'vitest';
import { API_KEY_LOOKUP_SOURCES, BILLING_CHECK_RESULTS, RATE_LIMIT_NAMES } from '../../src/core/index.js';
import { SSH_AUTH_RESULTS, SSH_CONNECTION_OUTCOMES } from '../../src/observability/door-metrics.js';
import { createMetrics } from '../../src/observability/metrics.js';

// Every value a label can take is listed once, where its type comes from: a new one cannot be
// forgotten by the metrics, which start each at 0 (rate() and absence alerts work from the first scrape).

const LABELLED: [metric: string, label: string, values: readonly string[]][] = [
  ['shell_auth_ssh_connections_total', 'outcome', SSH_CONNECTION_OUTCOMES],
  ['shell_auth_ssh_auth_attempts_total', 'result', SSH_AUTH_RESULTS],
  ['shell_auth_rate_limited_total', 'limit', RATE_LIMIT_NAMES],
  ['shell_auth_api_keys_minted_total', 'door', ['http', 'ssh']],
  ['shell_auth_billing_checks_total', 'result', BILLING_CHECK_RESULTS],
  ['shell_auth_api_key_lookups_total', 'source', API_KEY_LOOKUP_SOURCES],
  ['shell_auth_ssh_identity_lookups_total', 'source', API_KEY_LOOKUP_SOURCES],
];

it.each(LABELLED)('%s: every %s at 0 from the start, and nothing else', async (metric, label, values) => {
  const { registry } = createMetrics();
  const counted = (await registry.getSingleMetric(metric)!.get()).values;
  expect(counted.map((v) => [v.labels[label], v.value])).toEqual(values.map((value) => [value, 0]));
});
