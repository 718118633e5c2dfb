import { EXIT, helpText, usageText, UsageError, type Command } from '../command.js';
import { create } from './create.js';
import { list } from './list.js';
import { login } from './login.js';
import { orgs } from './orgs.js';
import { revoke } from './revoke.js';
import { whoami } from './whoami.js';

const help: Command = {
  name: 'help',
  summary: 'show this list',
  usage: 'help [COMMAND]',
  options: {},
  positionals: { min: 0, max: 1, names: '' },
  allowUnverified: true,
  async run(ctx, args) {
    const topic = args.positionals[0];
    if (topic !== undefined) {
      const command = COMMANDS.find((c) => c.name === topic);
      if (!command) throw new UsageError(`no command "${topic}"`);
      ctx.stdout(usageText(command));
      return EXIT.OK;
    }
    ctx.stdout(`usage: ${ctx.sshHint} COMMAND [OPTIONS]\n\n${helpText(COMMANDS)}`);
    return EXIT.OK;
  },
};

export const COMMANDS: Command[] = [create, list, revoke, orgs, whoami, login, help];
