/**
 * Operator CLI: `npm run admin -- <command>`. Talks to the same database as the service
 * (DATABASE_URL, or the embedded one in DATA_DIR when the service is stopped).
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { createCoreDeps } from '../app.js';
import { ConfigError, loadConfig } from '../config.js';
import {
  AppError,
  createOrg,
  EmailSchema,
  listAllApiKeys,
  listOrgs,
  OrgNameSchema,
  revokeApiKey,
  setBilling,
  setMember,
  toAppError,
  type CoreDeps,
  type RequestOrigin,
} from '../core/index.js';
import { createLogger, errorFields } from '../log.js';
import { formatTable, isoOrDash } from '../text/table.js';

const USAGE = `usage: npm run admin -- <command>

  org create NAME --owner EMAIL                      create an org (and its owner's account if new)
  org add-member ORG EMAIL --role owner|admin|member add someone to an org, or change their role
  org list                                           list orgs with plan, status and member count
  billing set ORG active|suspended                   allow or stop key creation for an org
  keys list [--org ORG]                              list API keys (never secrets)
  keys revoke KEY_ID                                 revoke an API key

Add --json to any command for machine-readable output.`;

class UsageError extends Error {}

const ORIGIN: RequestOrigin = { channel: 'admin', ip: null };

type Parsed = { positionals: string[]; values: { owner?: string; role?: string; org?: string; json?: boolean; help?: boolean } };

function parse(argv: string[]): Parsed {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        owner: { type: 'string' },
        role: { type: 'string' },
        org: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }) as Parsed;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function field<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new UsageError(`${what}: ${result.error.issues[0]?.message ?? 'invalid'}`);
  return result.data;
}

function expectArgs(positionals: string[], count: number): void {
  if (positionals.length !== count) throw new UsageError(`expected ${count - 2} argument(s) after "${positionals.slice(0, 2).join(' ')}"`);
}

type Output = { json: unknown; text: string };

async function run(deps: CoreDeps, { positionals, values }: Parsed): Promise<Output> {
  const [group, action] = positionals;
  const command = `${group ?? ''} ${action ?? ''}`;
  switch (command) {
    case 'org create': {
      expectArgs(positionals, 3);
      const name = field(OrgNameSchema, positionals[2], 'NAME');
      const owner = field(EmailSchema, values.owner, '--owner EMAIL');
      const { org, owner: user } = await createOrg(deps, name, owner, ORIGIN);
      return { json: { org_id: org.id, name: org.name, owner: user.email }, text: `Created org ${org.name} (${org.id}), owner ${user.email}` };
    }
    case 'org add-member': {
      expectArgs(positionals, 4);
      const role = field(z.enum(['owner', 'admin', 'member']), values.role, '--role');
      const email = field(EmailSchema, positionals[3], 'EMAIL');
      const { org, user, createdUser } = await setMember(deps, positionals[2]!, email, role, ORIGIN);
      return {
        json: { org_id: org.id, org_name: org.name, user_id: user.id, email: user.email, role, created_user: createdUser },
        text: `${user.email} is now ${role} of ${org.name}${createdUser ? ' (new account, not yet verified)' : ''}`,
      };
    }
    case 'org list': {
      expectArgs(positionals, 2);
      const orgs = await listOrgs(deps);
      return {
        json: orgs,
        text: formatTable(
          ['NAME', 'ID', 'PLAN', 'STATUS', 'MEMBERS', 'CREATED'],
          orgs.map((o) => [o.name, o.id, o.plan ?? '-', o.status ?? 'none', String(o.members), isoOrDash(o.created_at)]),
        ),
      };
    }
    case 'billing set': {
      expectArgs(positionals, 4);
      const status = field(z.enum(['active', 'suspended']), positionals[3], 'status');
      const org = await setBilling(deps, positionals[2]!, status, ORIGIN);
      return { json: { org_id: org.id, name: org.name, status }, text: `Billing for ${org.name} is now ${status}` };
    }
    case 'keys list': {
      expectArgs(positionals, 2);
      const keys = await listAllApiKeys(deps, values.org);
      return {
        json: keys,
        text: formatTable(
          ['ID', 'LABEL', 'ORG', 'CREATED BY', 'VIA', 'CREATED', 'LAST USED', 'EXPIRES', 'REVOKED'],
          keys.map((k) => [
            k.id,
            k.label,
            k.org_name,
            k.created_by,
            k.created_via,
            isoOrDash(k.created_at),
            isoOrDash(k.last_used_at),
            isoOrDash(k.expires_at),
            isoOrDash(k.revoked_at),
          ]),
        ),
      };
    }
    case 'keys revoke': {
      expectArgs(positionals, 3);
      const key = await revokeApiKey(deps, null, positionals[2]!, ORIGIN);
      return { json: key, text: `Revoked API key ${key.id} (${key.label}) in org ${key.org_name}` };
    }
    default:
      throw new UsageError(group ? `unknown command "${command.trim()}"` : 'no command given');
  }
}

async function main(argv: string[]): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parse(argv);
    if (parsed.values.help || parsed.positionals.length === 0) {
      process[parsed.values.help ? 'stdout' : 'stderr'].write(`${USAGE}\n`);
      return parsed.values.help ? 0 : 2;
    }
  } catch (err) {
    process.stderr.write(`error: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`error: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  const log = createLogger(process.env.LOG_LEVEL ?? 'warn', process.stderr as never);
  let opened: Awaited<ReturnType<typeof createCoreDeps>>;
  try {
    opened = await createCoreDeps(config, log);
  } catch (err) {
    process.stderr.write(`error: could not open the database: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const output = await run(opened.deps, parsed);
    process.stdout.write(parsed.values.json ? `${JSON.stringify(output.json, null, 2)}\n` : `${output.text}\n`);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`error: ${err.message}\n\n${USAGE}\n`);
      return 2;
    }
    const appError = err instanceof AppError ? err : toAppError(err);
    if (!(err instanceof AppError)) log.error({ err: errorFields(err) }, 'admin command failed');
    process.stderr.write(`error: ${appError.message}${appError.detail ? ` (${appError.detail})` : ''}\n`);
    return 1;
  } finally {
    opened.closeMailer();
    await opened.database.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
