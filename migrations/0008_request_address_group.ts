import type { Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * MAIL_PER_IP_HOURLY counts a request's address group, not its address (issue 16: IPv6 grouped
 * by /IPV6_PREFIX for every per-address limit; one host is routinely given a whole /64).
 * `requested_net` is the group (addressGroupOf), written with the request; `requested_ip` keeps
 * the address itself, which the confirm page and the email show. Rows from before this migration
 * have no group (NULL) and are not counted: for the limit's one-hour window after the upgrade, an
 * address may be mailed up to MAIL_PER_IP_HOURLY more times than it would have been.
 *
 * The limit's query moves from (requested_ip, created_at) to (requested_net, created_at): nothing
 * else looks requests up by address, so the old index goes.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('verification_requests').addColumn('requested_net', 'text').execute();
  await db.schema.createIndex('verification_requests_net_idx').on('verification_requests').columns(['requested_net', 'created_at']).execute();
  await db.schema.dropIndex('verification_requests_ip_idx').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('verification_requests_ip_idx').on('verification_requests').columns(['requested_ip', 'created_at']).execute();
  await db.schema.dropIndex('verification_requests_net_idx').execute();
  await db.schema.alterTable('verification_requests').dropColumn('requested_net').execute();
}
