import type { Logger } from 'pino';
import { z } from 'zod';
import {
  PolicySettingSchema,
  readOrgPolicy,
  allAuditEvents,
  createOrg,
  EmailSchema,
  listAllApiKeys,
  listOrgs,
  nowOf,
  OrgNameLookupSchema,
  OrgNameSchema,
  removeMember,
  revokeApiKey,
  SHORT_KEY_ID_LENGTH,
  setBilling,
  setMember,
  type CoreDeps,
  type RequestOrigin,
} from '../core/index.js';
import { AUDIT_OPTIONS, AUDIT_WINDOW_USAGE, runAudit } from '../command/audit-command.js';
import { keysJson, keysTable } from '../text/keys-table.js';
import { escapeForTerminal, formatTable, isoOrDash } from '../text/table.js';
import { optionalString, parseArgument, UsageError, type Command, type Output, type Program } from '../command/framework.js';
import { POLICY_SETTINGS_USAGE, runPolicySet } from '../command/policy-command.js';
import { policyJson, policySummary, policyTable, policyValues } from '../text/policy-table.js';

/** The operator's commands (`npm run admin -- …`), on the same command model as the SSH door's. */
export type AdminContext = Readonly<Output & { deps: CoreDeps }>;

/** The one way the admin CLI (and its tests) make the context its commands run with. */
export function adminContext(deps: CoreDeps, io: Output): AdminContext {
  return Object.freeze({ stdout: io.stdout, stderr: io.stderr, deps });
}

const ORIGIN: RequestOrigin = { channel: 'admin', ip: null };

const Role = z.enum(['owner', 'admin', 'member']);

/** The admin CLI as a program: its commands and how it is called. */
export function adminProgram(log: Logger): Program<AdminContext> {
  return { commands: ADMIN_COMMANDS, invocation: 'npm run admin --', helpHint: 'run "npm run admin -- --help" for the list', log };
}

export const ADMIN_COMMANDS: Command<AdminContext>[] = [
  {
    name: 'org create',
    summary: "create an org (and its owner's account if new)",
    usage: 'org create NAME --owner EMAIL [--json]',
    options: { owner: { type: 'string' } },
    positionals: { min: 1, max: 1, names: 'NAME' },
    async run(ctx, args) {
      const name = parseArgument(OrgNameSchema, args.positionals[0], 'NAME');
      const owner = parseArgument(EmailSchema, args.values.owner, '--owner EMAIL');
      const { org, owner: user } = await createOrg(ctx.deps, name, owner, ORIGIN);
      return { data: { org_id: org.id, name: org.name, owner: user.email }, text: `Created org ${escapeForTerminal(org.name)} (${org.id}), owner ${escapeForTerminal(user.email)}\n` };
    },
  },
  {
    name: 'org add-member',
    summary: 'add someone to an org, or change their role',
    usage: 'org add-member ORG EMAIL --role owner|admin|member [--json]',
    options: { role: { type: 'string' } },
    positionals: { min: 2, max: 2, names: 'ORG EMAIL' },
    async run(ctx, args) {
      const role = parseArgument(Role, args.values.role, '--role');
      const orgName = parseArgument(OrgNameLookupSchema, args.positionals[0], 'ORG');
      const email = parseArgument(EmailSchema, args.positionals[1], 'EMAIL');
      const { org, user, createdUser } = await setMember(ctx.deps, orgName, email, role, ORIGIN);
      return {
        data: { org_id: org.id, org_name: org.name, user_id: user.id, email: user.email, role, created_user: createdUser },
        text: `${escapeForTerminal(user.email)} is now ${role} of ${escapeForTerminal(org.name)}${createdUser ? ' (new account, not yet verified)' : ''}\n`,
      };
    },
  },
  {
    name: 'org remove-member',
    summary: "remove someone from an org; their keys in it are revoked at once",
    usage: `org remove-member ORG EMAIL [--json]

Removes the membership, not the account. The API keys EMAIL created in ORG stop working at once
(revoked, reason member_removed, on every instance), and EMAIL is told by email which ones. Their
keys in other orgs keep working. The last owner of an org cannot be removed (nor the last admin
of an org without owners, such as a personal one).`,
    options: {},
    positionals: { min: 2, max: 2, names: 'ORG EMAIL' },
    async run(ctx, args) {
      const orgName = parseArgument(OrgNameLookupSchema, args.positionals[0], 'ORG');
      const email = parseArgument(EmailSchema, args.positionals[1], 'EMAIL');
      const { org, user, role, revoked } = await removeMember(ctx.deps, orgName, email, ORIGIN);
      const keys = revoked.length === 1 ? '1 API key' : `${revoked.length} API keys`;
      const who = escapeForTerminal(user.email);
      return {
        data: { org_id: org.id, org_name: org.name, user_id: user.id, email: user.email, role, keys_revoked: revoked.length, revoked_keys: revoked },
        text:
          `Removed ${who} (${role}) from ${escapeForTerminal(org.name)}.\n` +
          (revoked.length
            ? `Revoked ${keys} made there, emailing the list to their creator: ${revoked.map((k) => `${k.id.slice(0, SHORT_KEY_ID_LENGTH)} ${escapeForTerminal(k.label)}`).join(', ')}\n`
            : 'No live API key made there to revoke.\n'),
      };
    },
  },
  {
    name: 'org list',
    summary: 'list orgs with plan, status and member count',
    usage: 'org list [--json]',
    options: {},
    positionals: { min: 0, max: 0, names: '' },
    async run(ctx) {
      const orgs = await listOrgs(ctx.deps);
      return {
        data: orgs.map(({ policy, ...org }) => ({ ...org, policy: policyValues(policy) })),
        text: `${formatTable(
          ['NAME', 'ID', 'PLAN', 'STATUS', 'MEMBERS', 'CREATED', 'POLICY'],
          orgs.map((o) => [o.name, o.id, o.plan ?? '-', o.status ?? 'none', String(o.members), isoOrDash(o.created_at), policySummary(o.policy)]),
        )}\n`,
      };
    },
  },
  {
    name: 'org policy',
    summary: "show an org's key policy, or change one setting",
    usage: `org policy ORG [NAME VALUE] [--json]

Without NAME VALUE: the policy, as the SSH door's "policy" shows it. With them: the change, as
its owners and admins make it with "policy set" (audited as the operator's).

${POLICY_SETTINGS_USAGE}`,
    options: {},
    positionals: { min: 1, max: 3, names: 'ORG [NAME VALUE]' },
    async run(ctx, args) {
      const orgName = parseArgument(OrgNameLookupSchema, args.positionals[0], 'ORG');
      if (args.positionals.length === 1) {
        const view = await readOrgPolicy(ctx.deps, null, orgName);
        return { data: policyJson(view), text: policyTable(ctx.deps, view) };
      }
      if (args.positionals.length === 2) throw new UsageError('give a setting and its value: NAME VALUE');
      const setting = parseArgument(PolicySettingSchema, args.positionals[1], 'NAME');
      return runPolicySet(ctx.deps, { actor: null, orgName, setting, value: args.positionals[2]!, origin: ORIGIN });
    },
  },
  {
    name: 'billing set',
    summary: 'allow or stop key creation for an org',
    usage: 'billing set ORG active|suspended [--json]',
    options: {},
    positionals: { min: 2, max: 2, names: 'ORG STATUS' },
    async run(ctx, args) {
      const orgName = parseArgument(OrgNameLookupSchema, args.positionals[0], 'ORG');
      const status = parseArgument(z.enum(['active', 'suspended']), args.positionals[1], 'status');
      const org = await setBilling(ctx.deps, orgName, status, ORIGIN);
      return { data: { org_id: org.id, name: org.name, status }, text: `Billing for ${escapeForTerminal(org.name)} is now ${status}\n` };
    },
  },
  {
    name: 'keys list',
    summary: 'list API keys (never secrets)',
    usage: 'keys list [--org ORG] [--wide] [--json]',
    options: { org: { type: 'string' }, wide: { type: 'boolean' } },
    positionals: { min: 0, max: 0, names: '' },
    async run(ctx, args) {
      const org = optionalString(args, 'org');
      const keys = await listAllApiKeys(ctx.deps, org === undefined ? undefined : parseArgument(OrgNameLookupSchema, org, '--org'));
      const now = nowOf(ctx.deps);
      // The same table and JSON as the SSH door's `list`.
      return { data: keysJson(keys, now), text: `${keysTable(keys, now, { wide: args.values.wide === true })}\n` };
    },
  },
  {
    name: 'audit',
    summary: 'audit events of every org, newest first',
    usage: `audit [--org ORG] [--since 7d] [--limit 50] [--wide] [--json]

  --org ORG       only this organization's events
${AUDIT_WINDOW_USAGE}
  --wide          every value whole and the ORG column, nothing cut

The SSH door's audit table, over every event (also those of no org: logins, confirmations).`,
    options: AUDIT_OPTIONS,
    positionals: { min: 0, max: 0, names: '' },
    run: (ctx, args) => runAudit(ctx.deps, args, (query) => allAuditEvents(ctx.deps, query)),
  },
  {
    name: 'keys revoke',
    summary: 'revoke an API key',
    usage: 'keys revoke KEY_ID [--json]',
    options: {},
    positionals: { min: 1, max: 1, names: 'KEY_ID' },
    async run(ctx, args) {
      const key = await revokeApiKey(ctx.deps, null, args.positionals[0] ?? '', ORIGIN);
      return { data: key, text: `Revoked API key ${key.id} (${escapeForTerminal(key.label)}) in org ${escapeForTerminal(key.org_name)}\n` };
    },
  },
];
