import { listApiKeys, nowOf, OrgNameLookupSchema } from '../../core/index.js';
import { keysJson, keysTable } from '../../text/keys-table.js';
import { optionalString, parseArgument } from '../../command/framework.js';
import { accountCommand } from '../command.js';

export const list = accountCommand({
  name: 'list',
  summary: 'list API keys (all keys of orgs you own or administer; your own elsewhere)',
  usage: `list [--org ORG] [--wide] [--json]

  --org ORG  only this organization
  --wide     every column (CREATED BY, VIA, REVOKED, PERMISSIONS), nothing cut short
  --json     machine-readable output, every value in full (expiring_soon: true/false,
             replaced_by: the id of the key that replaced it by rotation, or null)

STATE is active, expiring (active, but expires within 7 days: "rotate" it), rotated (replaced
by rotation, still working until its overlap ends), expired or revoked. Secrets are never
shown: they exist only in the output of "create".`,
  options: { org: { type: 'string' }, wide: { type: 'boolean' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx, args) {
    const org = optionalString(args, 'org');
    const orgName = org === undefined ? undefined : parseArgument(OrgNameLookupSchema, org, '--org');
    const keys = await listApiKeys(ctx.deps, ctx.identity.user, orgName);
    const now = nowOf(ctx.deps);
    return { data: keysJson(keys, now), text: `${keysTable(keys, now, { wide: args.values.wide === true })}\n` };
  },
});
