import { randomUUID } from 'node:crypto';
import { sql, type InsertQueryBuilder, type Kysely, type QueryCreator } from 'kysely';
import type { Database } from '../db/schema.js';
import type { RequestOrigin } from './context.js';

export type AuditInput = {
  action: string;
  actorUserId?: string | null;
  orgId?: string | null;
  subjectId?: string | null;
  details?: Record<string, unknown>;
};

/** The row an event becomes. */
function auditRow(origin: RequestOrigin, event: AuditInput) {
  return {
    id: randomUUID(),
    action: event.action,
    actor_user_id: event.actorUserId ?? null,
    org_id: event.orgId ?? null,
    subject_id: event.subjectId ?? null,
    channel: origin.channel,
    ip: origin.ip,
    details: JSON.stringify(event.details ?? {}),
  };
}

type AuditColumn = keyof ReturnType<typeof auditRow>;

/** auditRow's columns with their SQL types: values selected rather than inserted need a cast to them. */
const AUDIT_COLUMN_TYPES = {
  id: 'uuid',
  action: 'text',
  actor_user_id: 'uuid',
  org_id: 'uuid',
  subject_id: 'text',
  channel: 'text',
  ip: 'text',
  details: 'jsonb',
} as const satisfies Record<AuditColumn, string>;
const AUDIT_COLUMNS = Object.keys(AUDIT_COLUMN_TYPES) as AuditColumn[];

/** Written inside the caller's transaction, so the event exists exactly when the change does. */
export async function recordAudit(trx: Kysely<Database>, origin: RequestOrigin, event: AuditInput): Promise<void> {
  await trx.insertInto('audit_events').values(auditRow(origin, event)).execute();
}

/** An event's values as `insertWithAudit` writes it (its subject is the row written with it). */
export type AuditValues = Omit<ReturnType<typeof auditRow>, 'subject_id'>;
/** AuditValues' columns. */
export const AUDIT_VALUE_COLUMNS = AUDIT_COLUMNS.filter((column): column is keyof AuditValues => column !== 'subject_id');

export function auditValues(origin: RequestOrigin, event: Omit<AuditInput, 'subjectId'>): AuditValues {
  const { subject_id: _none, ...values } = auditRow(origin, event);
  return values;
}

/**
 * A row and the audit event about it (the row's id as its subject) in one statement: atomic on
 * its own, no BEGIN/COMMIT round trips. The event is selected from what `insert` returned, so it
 * is written exactly when the row is. Returned unexecuted: the caller may compile it once as a
 * template (db/statement-templates.ts), every value of `audit` being a parameter.
 */
export function insertWithAudit<Table extends keyof Database>(
  db: Kysely<Database>,
  insert: (query: QueryCreator<Database>) => InsertQueryBuilder<Database, Table, { id: string }>,
  audit: AuditValues,
) {
  const valueOf = (column: AuditColumn) =>
    column === 'subject_id' ? sql<string>`written.id::text` : sql<unknown>`${audit[column]}::${sql.raw(AUDIT_COLUMN_TYPES[column])}`;
  return db
    .with('written', insert)
    .insertInto('audit_events')
    .columns(AUDIT_COLUMNS)
    .expression((query) => query.selectFrom('written').select(AUDIT_COLUMNS.map((column) => valueOf(column).as(column))));
}
