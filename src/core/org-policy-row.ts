import type { HttpMinting } from '../db/schema.js';

/**
 * An org's key policy as stored on its row (migration 0012) and read with the memberships
 * (accounts.ts): the shape only. What it means, and who may change it, is org-policy.ts.
 */

export type OrgPolicy = {
  /** No key of the org lives longer; a key minted without a lifetime gets it. null: none of the org's own. */
  maxTtlMs: number | null;
  /** The permissions the org's keys may carry. null: every permission of the platform. */
  permissions: readonly string[] | null;
  /** Keys are minted only by a security-key SSH key (sk-…): over SSH, or by an SSHSIG proof made with one. */
  requireSecurityKey: boolean;
  httpMinting: HttpMinting;
  /** Whether plain members may mint, or only owners and admins. */
  membersMint: boolean;
  /** Grows with each change: a mint writes its key only under the version it judged. */
  version: number;
};

export const DEFAULT_ORG_POLICY: OrgPolicy = Object.freeze({
  maxTtlMs: null,
  permissions: null,
  requireSecurityKey: false,
  httpMinting: 'window',
  membersMint: true,
  version: 0,
});

/** The org row's policy columns, as the memberships query reads them. */
export type OrgPolicyColumns = {
  policy_max_ttl_seconds: number | null;
  policy_permissions: string[] | null;
  policy_require_security_key: boolean;
  policy_http_minting: HttpMinting;
  policy_members_mint: boolean;
  policy_version: number;
};

export const ORG_POLICY_COLUMNS = [
  'orgs.policy_max_ttl_seconds',
  'orgs.policy_permissions',
  'orgs.policy_require_security_key',
  'orgs.policy_http_minting',
  'orgs.policy_members_mint',
  'orgs.policy_version',
] as const;

export function policyOfColumns(row: OrgPolicyColumns): OrgPolicy {
  return {
    maxTtlMs: row.policy_max_ttl_seconds === null ? null : Number(row.policy_max_ttl_seconds) * 1000,
    permissions: row.policy_permissions === null ? null : [...row.policy_permissions],
    requireSecurityKey: row.policy_require_security_key,
    httpMinting: row.policy_http_minting,
    membersMint: row.policy_members_mint,
    version: Number(row.policy_version),
  };
}

