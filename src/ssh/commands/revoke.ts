import { revokeApiKey } from '../../core/index.js';
import { escapeForTerminal } from '../../text/table.js';
import { accountCommand } from '../command.js';

export const revoke = accountCommand({
  name: 'revoke',
  summary: 'revoke an API key by its id',
  usage: `revoke KEY_ID [--json]

KEY_ID: the id as "list" shows it (its first 8 characters), or more of it, up to the whole id.
You may revoke keys you created, and any key of an org you own or administer.`,
  options: {},
  positionals: { min: 1, max: 1, names: 'KEY_ID' },
  async run(ctx, args) {
    const key = await revokeApiKey(ctx.deps, ctx.identity.user, args.positionals[0] ?? '', ctx.origin);
    return {
      data: { success: true, id: key.id, label: key.label, org_name: key.org_name, revoked_at: key.revoked_at },
      text: `Revoked API key ${key.id} (${escapeForTerminal(key.label)}) in org ${escapeForTerminal(key.org_name)}\n`,
    };
  },
});
