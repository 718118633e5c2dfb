import { auditEventsOf } from '../../core/index.js';
import { AUDIT_OPTIONS, AUDIT_WINDOW_USAGE, runAudit } from '../../command/audit-command.js';
import { accountCommand } from '../command.js';

export const audit = accountCommand({
  name: 'audit',
  summary: 'what happened in your orgs and to your keys: when, who, from where (newest first)',
  usage: `audit [--org ORG] [--since 7d] [--limit 50] [--wide] [--json]

  --org ORG       only this organization
${AUDIT_WINDOW_USAGE}
  --wide          every value whole (key ids, emails, labels) and the ORG column, nothing cut
  --json          machine-readable output, every value in full (ISO times, whole ids, details)

Owners and admins see every event of their orgs; everyone sees their own actions and, in their
orgs, events about their keys (revoked by an admin, by whoever held the key, by a leak report)
and changes to the org's key policy.
Columns: TIME, ACTOR (an email; "operator" for the admin CLI, "holder" for whoever held the key,
"github" for a leak report), ACTION, KEY and LABEL, DOOR (ssh, http, admin), ADDRESS, PROOF (how the
actor proved it: ssh, email, sshsig) and REASON (why a key was revoked; for a policy change,
what changed: "max-ttl 30d (was none)").`,
  options: AUDIT_OPTIONS,
  positionals: { min: 0, max: 0, names: '' },
  run: (ctx, args) => runAudit(ctx.deps, args, (query) => auditEventsOf(ctx.deps, ctx.identity.user, query, ctx.identity.orgs)),
});
