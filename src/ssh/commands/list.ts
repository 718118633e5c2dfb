import { isSecurityKeyType, listApiKeys, OrgNameLookupSchema } from '../../core/index.js';
import { formatTable, isoOrDash } from '../../text/table.js';
import { EXIT, json, optionalString, parseArgument } from '../../cli/framework.js';
import { accountCommand } from '../command.js';

export const list = accountCommand({
  name: 'list',
  summary: 'list API keys (all keys of orgs you own or administer; your own elsewhere)',
  usage: `list [--org ORG] [--json]

  --org ORG  only this organization
  --json     machine-readable output

Secrets are never shown: they exist only in the output of "create".`,
  options: { org: { type: 'string' }, json: { type: 'boolean' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx, args) {
    const org = optionalString(args, 'org');
    const orgName = org === undefined ? undefined : parseArgument(OrgNameLookupSchema, org, '--org');
    const keys = await listApiKeys(ctx.deps, ctx.identity.user, orgName);
    if (args.values.json) {
      ctx.stdout(
        json(
          keys.map((k) => ({
            id: k.id,
            label: k.label,
            org_id: k.org_id,
            org_name: k.org_name,
            created_by: k.created_by,
            created_via: k.created_via,
            security_key: isSecurityKeyType(k.ssh_key_type),
            permissions: k.permissions,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked: k.revoked_at !== null,
            revoked_at: k.revoked_at,
          })),
        ),
      );
      return EXIT.OK;
    }
    ctx.stdout(
      `${formatTable(
        ['ID', 'LABEL', 'ORG', 'CREATED BY', 'VIA', 'CREATED', 'LAST USED', 'EXPIRES', 'REVOKED'],
        keys.map((k) => [
          k.id,
          k.label,
          k.org_name,
          k.created_by,
          isSecurityKeyType(k.ssh_key_type) ? `${k.created_via}, security key` : k.created_via,
          isoOrDash(k.created_at),
          isoOrDash(k.last_used_at),
          isoOrDash(k.expires_at),
          k.revoked_at ? isoOrDash(k.revoked_at) : 'no',
        ]),
      )}\n`,
    );
    return EXIT.OK;
  },
});
