import { OrgNameLookupSchema, PolicySettingSchema, readOrgPolicy } from '../../core/index.js';
import { optionalString, parseArgument, type Parsed } from '../../command/framework.js';
import { POLICY_SETTINGS_USAGE, runPolicySet } from '../../command/policy-command.js';
import { policyJson, policyTable } from '../../text/policy-table.js';
import { accountCommand } from '../command.js';

/** `policy set` comes first: the program runs the first command whose words a line starts with. */
export const policySet = accountCommand({
  name: 'policy set',
  summary: "change a setting of your org's key policy (owners and admins)",
  usage: `policy set [--org ORG] NAME VALUE [--json]

  --org ORG  the organization (default: your personal org, else your oldest; see "orgs")

${POLICY_SETTINGS_USAGE}

Every change is in "audit" (who, old -> new, from where).`,
  options: { org: { type: 'string' } },
  positionals: { min: 2, max: 2, names: 'NAME VALUE' },
  run: (ctx, args) =>
    runPolicySet(ctx.deps, {
      actor: ctx.identity.user,
      orgName: orgOf(args),
      setting: parseArgument(PolicySettingSchema, args.positionals[0], 'NAME'),
      value: args.positionals[1] ?? '',
      origin: ctx.origin,
    }),
});

export const policy = accountCommand({
  name: 'policy',
  summary: "show your org's key policy: how its keys may be made",
  usage: `policy [--org ORG] [--json]

  --org ORG  the organization (default: your personal org, else your oldest; see "orgs")

Any member may read it; owners and admins change it with "policy set NAME VALUE".

${POLICY_SETTINGS_USAGE}`,
  options: { org: { type: 'string' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx, args) {
    const view = await readOrgPolicy(ctx.deps, ctx.identity.user, orgOf(args));
    return { data: { ...policyJson(view), role: view.role }, text: policyTable(ctx.deps, view) };
  },
});

function orgOf(args: Parsed): string | undefined {
  const org = optionalString(args, 'org');
  return org === undefined ? undefined : parseArgument(OrgNameLookupSchema, org, '--org');
}
