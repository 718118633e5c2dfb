import {
  AUDIT_DEFAULT_LIMIT,
  AUDIT_DEFAULT_SINCE_MS,
  AuditLimitSchema,
  AuditSinceSchema,
  nowOf,
  OrgNameLookupSchema,
  type AuditEntry,
  type AuditQuery,
  type CoreDeps,
} from '../core/index.js';
import { auditJson, auditLimitAdvice, auditTable } from '../text/audit-table.js';
import { optionalString, parseArgument, type Command, type CommandResult, type Parsed } from './framework.js';

/**
 * What the SSH door's `audit` and the admin CLI's `audit` share: their options, how those are read
 * (one parser for --org, --since and --limit, with one set of defaults and messages) and the
 * answer. The two differ only in whose events they read.
 */

export const AUDIT_OPTIONS: Command<unknown>['options'] = {
  org: { type: 'string' },
  since: { type: 'string' },
  limit: { type: 'string' },
  wide: { type: 'boolean' },
};

/** The usage lines of --since and --limit, as both programs print them. */
export const AUDIT_WINDOW_USAGE = `  --since WINDOW  how far back: 12h, 7d, 2w… (default 7d, at most 365d)
  --limit N       at most N events, 1 to 500 (default 50)`;

/** --org, --since and --limit as a query; a bad value is a usage error naming its option. */
export function auditQueryOf(args: Parsed): AuditQuery {
  const org = optionalString(args, 'org');
  const since = optionalString(args, 'since');
  const limit = optionalString(args, 'limit');
  return {
    orgName: org === undefined ? undefined : parseArgument(OrgNameLookupSchema, org, '--org'),
    sinceMs: since === undefined ? AUDIT_DEFAULT_SINCE_MS : parseArgument(AuditSinceSchema, since, '--since'),
    limit: limit === undefined ? AUDIT_DEFAULT_LIMIT : parseArgument(AuditLimitSchema, limit, '--limit'),
  };
}

/** Runs an audit command: the query from `args`, the events `read` gives for it, as a table or JSON. */
export async function runAudit(deps: CoreDeps, args: Parsed, read: (query: AuditQuery) => Promise<AuditEntry[]>): Promise<CommandResult> {
  const query = auditQueryOf(args);
  const entries = await read(query);
  return {
    data: auditJson(entries),
    text: `${auditTable(entries, nowOf(deps), query, { wide: args.values.wide === true })}\n`,
    advice: auditLimitAdvice(entries, query),
  };
}
