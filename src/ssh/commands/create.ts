import {
  AppError,
  formatDuration,
  formatLifetime,
  keyPermissionsFor,
  keyPermissionsOf,
  LabelSchema,
  MIN_KEY_TTL_MS,
  mintApiKey,
  OrgNameLookupSchema,
  parseDuration,
  revokeApiKey,
  type CoreDeps,
} from '../../core/index.js';
import { failure, optionalList, optionalString, parseArgument, requireString, UsageError, type Parsed } from '../../command/framework.js';
import { escapeForTerminal } from '../../text/table.js';
import { accountCommand } from '../command.js';

export const create = accountCommand({
  name: 'create',
  summary: 'create an API key (printed once, alone on stdout)',
  usage: `create --label LABEL [--org ORG] [--perm NAME]... [--expires-in DURATION] [--json]

  --label LABEL          what the key is for (at least 5 characters)
  --org ORG              the organization (default: your personal org, else your oldest; see "orgs")
  --perm NAME            only these permissions: repeat it, or separate with commas
                         (--perm clusters:view); default: every permission the org's
                         policy allows (see "policy")
  --expires-in DURATION  lifetime such as 15m, 12h, 30d, 2w; at least 5m
                         (default: no expiry, or the shorter of the server's and the org's
                         maximum)
  --json                 print {"api_key", "api_key_id", "org_id", "org_name", "permissions", "expires_at"}

The key alone goes to stdout, so scripts can capture it:  KEY=$(ssh keys@HOST create --label ci-runner)`,
  options: {
    label: { type: 'string' },
    org: { type: 'string' },
    perm: { type: 'string', multiple: true },
    'expires-in': { type: 'string' },
  },
  positionals: { min: 0, max: 0, names: '' },
  async run(ctx, args) {
    const label = parseArgument(LabelSchema, requireString(args, 'label'), '--label');
    const org = optionalString(args, 'org');
    const orgName = org === undefined ? undefined : parseArgument(OrgNameLookupSchema, org, '--org');
    const expiresIn = optionalString(args, 'expires-in');
    const expiresInMs = expiresIn === undefined ? undefined : lifetimeOf(expiresIn, ctx.deps.settings.keyMaxTtlMs);
    const permissions = permissionsOf(args, ctx.deps);

    const minted = await mintApiKey(ctx.deps, {
      user: ctx.identity.user,
      orgs: ctx.identity.orgs,
      sshKeyId: ctx.identity.sshKeyId,
      label,
      orgName,
      expiresInMs,
      permissions,
      keyType: ctx.identity.key.type,
      origin: ctx.origin,
    });
    // The client left while we were minting: nobody can ever see this key, so it must not live.
    if (ctx.interrupted.aborted) {
      await revokeApiKey(ctx.deps, ctx.identity.user, minted.api_key_id, ctx.origin, 'undelivered');
      ctx.deps.log.warn({ apiKeyId: minted.api_key_id }, 'command interrupted before the key was delivered; key revoked');
      return failure(`Interrupted: API key ${minted.api_key_id} was created but never shown, so it has been revoked.\n`);
    }

    const expires = minted.expires_at ? `expires ${minted.expires_at.toISOString()}` : 'no expiry';
    const shownPermissions = permissionNames(ctx.deps, minted.permissions);
    return {
      data: {
        success: true,
        api_key: minted.api_key,
        api_key_id: minted.api_key_id,
        org_id: minted.org_id,
        org_name: minted.org_name,
        permissions: minted.permissions,
        expires_at: minted.expires_at,
      },
      text: `${minted.api_key}\n`,
      note: `Created API key ${minted.api_key_id} in org ${escapeForTerminal(minted.org_name)} (${shownPermissions}; ${expires}). It will not be shown again.\n`,
    };
  },
});

/** `--expires-in` as milliseconds, or a usage error that says what would be accepted. */
function lifetimeOf(text: string, maxMs: number | null): number {
  const shown = escapeForTerminal(text);
  const most = maxMs === null ? '' : `; at most ${formatLifetime(maxMs)} on this server`;
  const ms = parseDuration(text);
  if (ms === null) {
    // Shaped like one (digits and units) but unparseable: only a size can be wrong with it.
    if (/^\s*(\d+[smhdw])+\s*$/i.test(text)) throw new UsageError(`--expires-in ${shown} is too long${most || '; at most 100 years'}`);
    throw new UsageError(`--expires-in: "${shown}" is not a duration such as 30d, 12h or 2w`);
  }
  if (ms < MIN_KEY_TTL_MS) throw new UsageError(`--expires-in ${shown} is too short: the shortest lifetime is ${formatDuration(MIN_KEY_TTL_MS)}`);
  if (maxMs !== null && ms > maxMs) throw new UsageError(`--expires-in ${shown} is too long${most}`);
  return ms;
}

/** `--perm` values as the core checks them, its refusal a usage error; undefined: every permission. */
function permissionsOf(args: Parsed, deps: CoreDeps): string[] | undefined {
  const asked = optionalList(args, 'perm')?.filter((name) => name !== '');
  if (asked === undefined) return undefined;
  try {
    return keyPermissionsFor(deps, asked);
  } catch (err) {
    if (!(err instanceof AppError)) throw err;
    const detail = escapeForTerminal(err.detail ?? '');
    throw new UsageError(err.code === 'PERMISSIONS_EMPTY' ? `--perm needs a permission (${detail})` : `--perm: ${detail}`);
  }
}

/** Permissions as people read them: the platform's display names (KEY_PERMISSIONS). */
export function permissionNames(deps: CoreDeps, names: readonly string[]): string {
  const displayName = new Map(keyPermissionsOf(deps).map((p) => [p.name, p.displayName]));
  return names.map((name) => escapeForTerminal(displayName.get(name) ?? name)).join(', ');
}
