import { describeKeyType, isSecurityKeyType } from '../../core/index.js';
import { escapeForTerminal } from '../../text/table.js';
import { commandHint, openCommand, unverifiedMessage } from '../command.js';

export const whoami = openCommand({
  name: 'whoami',
  summary: 'show the account and key you are connected with',
  usage: 'whoami [--json]',
  options: {},
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx) {
    const { identity } = ctx;
    const { key } = identity;
    const user = identity.kind === 'account' ? identity.user : null;
    const data = {
      email: user?.email ?? null,
      user_id: user?.id ?? null,
      key_type: key.type,
      security_key: isSecurityKeyType(key.type),
      fingerprint: key.fingerprint,
      verified: user !== null,
    };
    const keyLine = `key:      ${key.fingerprint} (${describeKeyType(key.type)})\n`;
    if (identity.kind === 'anonymous') {
      return { data, text: `${keyLine}verified: no\n`, advice: unverifiedMessage(identity, commandHint(ctx)) };
    }
    return { data, text: `email:    ${escapeForTerminal(identity.user.email)}\nuser id:  ${identity.user.id}\n${keyLine}verified: yes\n` };
  },
});
