import { formatLifetime, keyPermissionsOf, maxTtlIn, POLICY_SETTINGS, settingText, type CoreDeps, type OrgPolicy, type OrgPolicyView, type PolicySetting } from '../core/index.js';
import { escapeForTerminal, formatTable } from './table.js';

/**
 * An org's key policy as the SSH door's `policy` and the admin CLI's `org policy` show it: a
 * table of the five settings with what each value means, one JSON shape, and the short summary
 * `orgs` and `org list` print per org.
 */

/** `--json`: the settings as values a script compares (seconds, arrays, booleans; null: no limit / all). */
export function policyJson(view: OrgPolicyView) {
  return {
    org_id: view.org_id,
    org_name: view.org_name,
    ...policyValues(view.policy),
    managers: view.managers,
  };
}

export function policyValues(policy: OrgPolicy) {
  return {
    max_ttl_seconds: policy.maxTtlMs === null ? null : policy.maxTtlMs / 1000,
    permissions: policy.permissions === null ? null : [...policy.permissions],
    require_security_key: policy.requireSecurityKey,
    http_minting: policy.httpMinting,
    members_mint: policy.membersMint,
  };
}

/** What a setting's value means, in a line. */
function meaning(deps: CoreDeps, policy: OrgPolicy, setting: PolicySetting): string {
  switch (setting) {
    case 'max-ttl': {
      const effective = maxTtlIn(deps, policy);
      const server = deps.settings.keyMaxTtlMs;
      if (policy.maxTtlMs === null) return effective === null ? 'keys may live forever' : `no limit of the org's own (the server's: ${formatLifetime(effective)})`;
      const lower = server !== null && server < policy.maxTtlMs ? ` (the server's ${formatLifetime(server)} is lower and applies)` : '';
      return `keys live at most ${formatLifetime(policy.maxTtlMs)}; one made without --expires-in gets it${lower}`;
    }
    case 'permissions':
      return policy.permissions === null
        ? `keys may carry any permission (${keyPermissionsOf(deps).map((p) => p.name).join(', ')})`
        : `keys may carry only these; a key made without --perm gets them`;
    case 'require-security-key':
      return policy.requireSecurityKey ? 'keys are made only with a security key (sk-…), over SSH or a signed request' : 'any SSH key may make keys';
    case 'http-minting':
      return { window: 'over HTTP: in the email trust window and by signed requests', signed: 'over HTTP: only by signed requests', off: 'never over HTTP: only the SSH door' }[policy.httpMinting];
    case 'members-mint':
      return policy.membersMint ? 'members make keys, as owners and admins do' : 'only owners and admins make keys';
  }
}

export function policyTable(deps: CoreDeps, view: OrgPolicyView): string {
  const rows = POLICY_SETTINGS.map((setting) => [setting, escapeForTerminal(settingText(view.policy, setting)), meaning(deps, view.policy, setting)]);
  const managers = view.managers.length ? view.managers.map(escapeForTerminal).join(', ') : 'none';
  return `Key policy of org ${escapeForTerminal(view.org_name)} (owners and admins: ${managers})\n\n${formatTable(['SETTING', 'VALUE', 'MEANING'], rows)}\n`;
}

/** A few words per org for `orgs` and `org list`: `max 30d · only clusters:view · security key`; `default` when nothing is set. */
export function policySummary(policy: OrgPolicy): string {
  const parts: string[] = [];
  if (policy.maxTtlMs !== null) parts.push(`max ${formatLifetime(policy.maxTtlMs)}`);
  if (policy.permissions !== null) parts.push(`only ${policy.permissions.join(',')}`);
  if (policy.requireSecurityKey) parts.push('security key');
  if (policy.httpMinting === 'signed') parts.push('http signed');
  if (policy.httpMinting === 'off') parts.push('no http');
  if (!policy.membersMint) parts.push('admins mint');
  return parts.length ? escapeForTerminal(parts.join(' · ')) : 'default';
}
