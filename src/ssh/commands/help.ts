import { helpText, usageText, UsageError, type Program } from '../../command/framework.js';
import { openCommand, type SshCommand } from '../command.js';
import type { SessionContext } from '../session-context.js';

/** `help [COMMAND]`; given the program it belongs to, so it can list its siblings. */
export function helpCommand(programOf: (ctx: SessionContext) => Program<SessionContext>): SshCommand {
  return openCommand({
    name: 'help',
    summary: 'show this list',
    usage: 'help [COMMAND]',
    options: {},
    positionals: { min: 0, max: 1, names: '' },
    async run(ctx, args) {
      const program = programOf(ctx);
      const topic = args.positionals[0];
      if (topic === undefined) {
        return { data: program.commands.map((c) => ({ name: c.name, summary: c.summary })), text: helpText(program) };
      }
      const command = program.commands.find((c) => c.name === topic);
      if (!command) throw new UsageError(`no command "${topic}"`);
      return { data: { name: command.name, usage: command.usage }, text: usageText(command) };
    },
  });
}
