import {
  AUDIT_DEFAULT_LIMIT,
  AUDIT_DEFAULT_SINCE_MS,
  auditEventsOf,
  AuditLimitSchema,
  AuditSinceSchema,
  nowOf,
  OrgNameLookupSchema,
} from '../../core/index.js';
import { optionalString, parseArgument } from '../../command/framework.js';
import { auditJson, auditLimitAdvice, auditTable } from '../../text/audit-table.js';
import { accountCommand } from '../command.js';

export const audit = accountCommand({
  name: 'audit',
  summary: 'what happened in your orgs and to your keys: when, who, from where (newest first)',
  usage: `audit [--org ORG] [--since 7d] [--limit 50] [--wide] [--json]

  --org ORG       only this organization
  --since WINDOW  how far back: 12h, 7d, 2w… (default 7d, at most 365d)
  --limit N       at most N events, 1 to 500 (default 50)
  --wide          every value whole (key ids, emails, labels) and the ORG column, nothing cut
  --json          machine-readable output, every value in full (ISO times, whole ids, details)

Owners and admins see every event of their orgs; everyone sees their own actions and, in their
orgs, events about their keys (revoked by an admin, by whoever held the key, by a leak report).
Columns: TIME, ACTOR (an email; "operator" for the admin CLI, "holder" for whoever held the key,
"github" for a leak report), ACTION, KEY and LABEL, DOOR (ssh, http, admin), ADDRESS, PROOF (how the
actor proved it: ssh, email, sshsig) and REASON (why a key was revoked).`,
  options: { org: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' }, wide: { type: 'boolean' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx, args) {
    const org = optionalString(args, 'org');
    const since = optionalString(args, 'since');
    const limit = optionalString(args, 'limit');
    const query = {
      orgName: org === undefined ? undefined : parseArgument(OrgNameLookupSchema, org, '--org'),
      sinceMs: since === undefined ? AUDIT_DEFAULT_SINCE_MS : parseArgument(AuditSinceSchema, since, '--since'),
      limit: limit === undefined ? AUDIT_DEFAULT_LIMIT : parseArgument(AuditLimitSchema, limit, '--limit'),
    };
    const entries = await auditEventsOf(ctx.deps, ctx.identity.user, query, ctx.identity.orgs);
    return { data: auditJson(entries), text: `${auditTable(entries, nowOf(ctx.deps), query, { wide: args.values.wide === true })}\n`, advice: auditLimitAdvice(entries, query) };
  },
});
