import { orgsOfUser, type OrgMembership } from '../../core/index.js';
import { formatTable } from '../../text/table.js';
import { EXIT, json } from '../../command/framework.js';
import { accountCommand } from '../command.js';

export const orgs = accountCommand({
  name: 'orgs',
  summary: 'list your organizations and roles',
  usage: 'orgs [--json]',
  options: { json: { type: 'boolean' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx, args) {
    const memberships = await orgsOfUser(ctx.deps.db, ctx.identity.user);
    const rows = memberships.map((o) => ({ org_id: o.org_id, name: o.name, role: o.role }));
    if (args.values.json) ctx.stdout(json(rows));
    else ctx.stdout(orgsTable(memberships));
    return EXIT.OK;
  },
});

export function orgsTable(memberships: OrgMembership[]): string {
  return `${formatTable(['NAME', 'ROLE', 'ID'], memberships.map((o) => [o.name, o.role, o.org_id]))}\n`;
}
