import { describeKeyType, isSecurityKeyType } from '../../core/index.js';
import { EXIT, json } from '../../command/framework.js';
import { escapeForTerminal } from '../../text/table.js';
import { commandHint, openCommand, unverifiedMessage } from '../command.js';

export const whoami = openCommand({
  name: 'whoami',
  summary: 'show the account and key you are connected with',
  usage: 'whoami [--json]',
  options: { json: { type: 'boolean' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx, args) {
    const { identity } = ctx;
    const { key } = identity;
    const user = identity.kind === 'account' ? identity.user : null;
    if (args.values.json) {
      ctx.stdout(
        json({
          email: user?.email ?? null,
          user_id: user?.id ?? null,
          key_type: key.type,
          security_key: isSecurityKeyType(key.type),
          fingerprint: key.fingerprint,
          verified: user !== null,
        }),
      );
      return EXIT.OK;
    }
    if (!user) {
      ctx.stdout(`key:      ${key.fingerprint} (${describeKeyType(key.type)})\nverified: no\n`);
      if (ctx.identity.kind === 'anonymous') ctx.stderr(unverifiedMessage(ctx.identity, commandHint(ctx)));
      return EXIT.OK;
    }
    ctx.stdout(`email:    ${escapeForTerminal(user.email)}\nuser id:  ${user.id}\nkey:      ${key.fingerprint} (${describeKeyType(key.type)})\nverified: yes\n`);
    return EXIT.OK;
  },
});
