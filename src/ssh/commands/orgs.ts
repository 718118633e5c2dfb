import { orgsOfUser, type OrgMembership } from '../../core/index.js';
import { policySummary, policyValues } from '../../text/policy-table.js';
import { formatTable } from '../../text/table.js';
import { accountCommand } from '../command.js';

export const orgs = accountCommand({
  name: 'orgs',
  summary: 'list your organizations, your roles, and their key policies in short',
  usage: 'orgs [--json]',
  options: {},
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx) {
    const memberships = await orgsOfUser(ctx.deps.db, ctx.identity.user);
    return { data: orgsJson(memberships), text: orgsTable(memberships) };
  },
});

export function orgsJson(memberships: OrgMembership[]) {
  return memberships.map((o) => ({ org_id: o.org_id, name: o.name, role: o.role, policy: policyValues(o.policy) }));
}

export function orgsTable(memberships: OrgMembership[]): string {
  return `${formatTable(['NAME', 'ROLE', 'ID', 'POLICY'], memberships.map((o) => [o.name, o.role, o.org_id, policySummary(o.policy)]))}\n`;
}
