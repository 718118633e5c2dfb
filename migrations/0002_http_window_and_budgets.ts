import type { Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

export async function up(db: Kysely<any>): Promise<void> {
  // The HTTP trust window is opened only by confirming an HTTP request, and spent by HTTP mints.
  // Existing bindings start with the window closed (it lasted minutes; nobody is locked out:
  // a new POST /api/shell-auth opens it again).
  await db.schema
    .alterTable('ssh_keys')
    .addColumn('http_confirmed_at', 'timestamptz')
    .addColumn('http_mints', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();

  // Per-address request budgets shared by every instance: one row per (budget, address),
  // a fixed window restarted in place.
  await db.schema
    .createTable('request_budgets')
    .addColumn('bucket', 'text', (c) => c.primaryKey())
    .addColumn('window_start', 'timestamptz', (c) => c.notNull())
    .addColumn('count', 'integer', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('request_budgets_window_idx').on('request_budgets').column('window_start').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('request_budgets').execute();
  await db.schema.alterTable('ssh_keys').dropColumn('http_mints').dropColumn('http_confirmed_at').execute();
}
