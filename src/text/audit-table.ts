import { AUDIT_MAX_LIMIT, formatDuration, SHORT_KEY_ID_LENGTH, type AuditEntry, type AuditQuery } from '../core/index.js';
import { relativeTime } from './keys-table.js';
import { escapeForTerminal, formatTable } from './table.js';

/**
 * The one audit listing, for the SSH door's `audit` and the admin CLI's: a table within 100
 * columns like `list` (key ids by their first 8 characters, relative times, long emails, labels,
 * addresses and reasons cut with `…`), with `wide` every value whole plus the org, and one JSON
 * shape for `--json`.
 */

export const AUDIT_TABLE_WIDTH = 100;

/**
 * What gives way when the table is too wide, the widest first: ACTOR, LABEL, ADDRESS, REASON.
 * Only when those at 8 characters are not enough is an ACTION longer than the key actions
 * (`api_key.revoked`: 15) cut: an action cut short reads worst.
 */
const SHRINK = [1, 4, 6, 8];
const SHRINK_MIN = 8;
const ACTION = 2;
const ACTION_MIN = 15;

export function auditTable(entries: AuditEntry[], now: Date, query: AuditQuery, options: { wide?: boolean } = {}): string {
  if (entries.length === 0) {
    return `(no events in the last ${windowOf(query)}${query.orgName === undefined ? '' : ` in org ${escapeForTerminal(query.orgName)}`})`;
  }
  const dash = (value: string | null) => value ?? '-';
  const rows = entries.map((e) => [
    // The database's clock stamps events, the service's reads them: a fresh one is never "in 1s".
    relativeTime(e.created_at.getTime() > now.getTime() ? now : e.created_at, now),
    e.actor,
    e.action,
    e.key_id === null ? '-' : options.wide ? e.key_id : e.key_id.slice(0, SHORT_KEY_ID_LENGTH),
    dash(e.label),
    e.door,
    dash(e.ip),
    dash(e.proof),
    dash(e.reason),
  ]);
  if (options.wide) {
    return formatTable(
      ['TIME', 'ACTOR', 'ACTION', 'KEY', 'LABEL', 'ORG', 'DOOR', 'ADDRESS', 'PROOF', 'REASON'],
      rows.map((row, i) => [...row.slice(0, 5), dash(entries[i]!.org_name), ...row.slice(5)]),
    );
  }
  const headers = ['TIME', 'ACTOR', 'ACTION', 'KEY', 'LABEL', 'DOOR', 'ADDRESS', 'PROOF', 'REASON'];
  const table = formatTable(headers, rows, { width: AUDIT_TABLE_WIDTH, shrink: SHRINK, min: SHRINK_MIN });
  if (table.split('\n').every((line) => line.length <= AUDIT_TABLE_WIDTH)) return table;
  const cut = (cell: string) => (cell.length > SHRINK_MIN ? `${cell.slice(0, SHRINK_MIN - 1)}…` : cell);
  const narrowed = rows.map((row) => row.map((cell, i) => (SHRINK.includes(i) ? cut(cell) : cell)));
  return formatTable(headers, narrowed, { width: AUDIT_TABLE_WIDTH, shrink: [ACTION], min: ACTION_MIN });
}

/** `--json`: every value in full (ISO times, whole ids, the event's details). */
export function auditJson(entries: AuditEntry[]) {
  return entries.map((e) => ({
    id: e.id,
    created_at: e.created_at.toISOString(),
    action: e.action,
    actor: e.actor,
    actor_user_id: e.actor_user_id,
    actor_email: e.actor_email,
    org_id: e.org_id,
    org_name: e.org_name,
    key_id: e.key_id,
    label: e.label,
    door: e.door,
    ip: e.ip,
    proof: e.proof,
    reason: e.reason,
    subject_id: e.subject_id,
    details: e.details,
  }));
}

/** Said (to a person) when the listing stopped at the limit: older events of the window may exist. */
export function auditLimitAdvice(entries: AuditEntry[], query: AuditQuery): string | undefined {
  if (entries.length < query.limit) return undefined;
  return `(${query.limit === 1 ? 'the newest event' : `the newest ${query.limit} events`}; older ones of the last ${windowOf(query)} may exist: --limit shows up to ${AUDIT_MAX_LIMIT})\n`;
}

const DAY_MS = 86_400_000;

/** The window as typed most often: whole days as days (`7d`, not `1w`). */
function windowOf(query: AuditQuery): string {
  return query.sinceMs % DAY_MS === 0 ? `${query.sinceMs / DAY_MS}d` : formatDuration(query.sinceMs);
}
