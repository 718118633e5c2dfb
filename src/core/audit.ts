import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import type { RequestOrigin } from './context.js';

export type AuditInput = {
  action: string;
  actorUserId?: string | null;
  orgId?: string | null;
  subjectId?: string | null;
  details?: Record<string, unknown>;
};

/** The row an event becomes (recordAudit inserts it; a single-statement write may select it). */
export function auditRow(origin: RequestOrigin, event: AuditInput) {
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

/** Written inside the caller's transaction, so the event exists exactly when the change does. */
export async function recordAudit(trx: Kysely<Database>, origin: RequestOrigin, event: AuditInput): Promise<void> {
  await trx.insertInto('audit_events').values(auditRow(origin, event)).execute();
}
