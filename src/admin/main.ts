/**
 * Operator CLI: `npm run admin -- <command>`. Talks to the same database as the service
 * (DATABASE_URL, or the embedded one in DATA_DIR when the service is stopped).
 */
import { openCore } from '../process/core-wiring.js';
import { ConfigError, loadConfig } from '../config/config.js';
import { createLogger } from '../observability/log.js';
import { databaseSetupProblem } from '../process/startup-errors.js';
import { adminContext, adminProgram } from './commands.js';
import { EXIT, helpText, runCommand, type Output } from '../command/framework.js';

const io: Output = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

async function main(argv: string[]): Promise<number> {
  // Help needs neither configuration nor a database.
  const bareProgram = adminProgram(createLogger('silent'));
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    (argv.length === 0 ? io.stderr : io.stdout)(helpText(bareProgram));
    return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
  }
  let config;
  try {
    // Quieter than the service unless LOG_LEVEL says otherwise (an empty LOG_LEVEL is unset).
    config = loadConfig(process.env, { LOG_LEVEL: 'warn' });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const line of err.message.split('\n')) io.stderr(`error: ${line}\n`);
    return EXIT.FAILED;
  }
  const log = createLogger(config.logLevel, process.stderr);
  const program = adminProgram(log);
  let core;
  try {
    core = await openCore(config, log, { listen: false });
  } catch (err) {
    io.stderr(`error: ${databaseSetupProblem(err, config.databaseUrl) ?? `could not open the database: ${(err as Error).message}`}\n`);
    return EXIT.FAILED;
  }
  try {
    return (await runCommand(program, argv, adminContext(core.deps, io))).code;
  } finally {
    await core.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
