import { EXIT, json, unverifiedMessage, type Command } from '../command.js';

export const whoami: Command = {
  name: 'whoami',
  summary: 'show the account and key you are connected with',
  usage: 'whoami [--json]',
  options: { json: { type: 'boolean' } },
  positionals: { min: 0, max: 0, names: '' },
  allowUnverified: true,
  async run(ctx, args) {
    const { user, key } = ctx.identity;
    if (args.values.json) {
      ctx.stdout(
        json({
          email: user?.email ?? null,
          user_id: user?.id ?? null,
          key_type: key.type,
          fingerprint: key.fingerprint,
          verified: user !== null,
        }),
      );
      return EXIT.OK;
    }
    if (!user) {
      ctx.stdout(`key:      ${key.fingerprint} (${key.type})\nverified: no\n`);
      ctx.stderr(unverifiedMessage(ctx));
      return EXIT.OK;
    }
    ctx.stdout(`email:    ${user.email}\nuser id:  ${user.id}\nkey:      ${key.fingerprint} (${key.type})\nverified: yes\n`);
    return EXIT.OK;
  },
};
