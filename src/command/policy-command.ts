import type { User } from '../db/schema.js';
import { AppError, setOrgPolicy, type CoreDeps, type PolicySetting, type RequestOrigin } from '../core/index.js';
import { policyJson } from '../text/policy-table.js';
import { escapeForTerminal } from '../text/table.js';
import { UsageError, type CommandResult } from './framework.js';

/**
 * What the SSH door's `policy set` and the admin CLI's `org policy ORG NAME VALUE` share: the
 * settings' help, the change, and its answer. They differ only in who acts (a user, the operator).
 */

export const POLICY_SETTINGS_USAGE = `Settings (the first value is the default: what an org that sets nothing has):
  max-ttl none|DURATION            no key lives longer (30d, 12h; at least 5m); a key made
                                   without --expires-in gets it
  permissions all|LIST             the permissions keys may carry (clusters:view,...); a key made
                                   without --perm gets them, one asking for more is refused
  require-security-key false|true  keys are made only with a security key (sk-ssh-ed25519,
                                   sk-ecdsa): over SSH, or by a request signed with one
  http-minting window|signed|off   over HTTP: in the email trust window and by signed requests,
                                   only by signed requests, or never
  members-mint true|false          whether members make keys, or only owners and admins

Rotation makes a key too: a key cannot renew itself over HTTP under http-minting signed or off,
nor under require-security-key.`;

/** Changes one setting; a value that is not one is a usage mistake, said in the setting's terms. */
export async function runPolicySet(
  deps: CoreDeps,
  input: { actor: User | null; orgName: string | undefined; setting: PolicySetting; value: string; origin: RequestOrigin },
): Promise<CommandResult> {
  const changed = await setOrgPolicy(deps, input).catch((err: unknown) => {
    if (err instanceof AppError && err.code === 'INVALID_REQUEST' && err.detail) throw new UsageError(escapeForTerminal(err.detail));
    throw err;
  });
  const org = escapeForTerminal(changed.org_name);
  const count = changed.nonconforming ?? 0;
  return {
    data: {
      ...policyJson(changed),
      setting: changed.setting,
      old: changed.old,
      new: changed.new,
      changed: changed.changed,
      nonconforming_keys: changed.nonconforming,
    },
    text: changed.changed
      ? `${changed.setting} of org ${org}: ${escapeForTerminal(changed.old)} -> ${escapeForTerminal(changed.new)}\n`
      : `${changed.setting} of org ${org} is already ${escapeForTerminal(changed.new)}: nothing changed\n`,
    // Keys made before a change keep working: say so, and how to find them.
    advice:
      count > 0
        ? `${count === 1 ? '1 live key' : `${count} live keys`} of org ${org}, made before, would not be allowed now; ${count === 1 ? 'it keeps' : 'they keep'} working until rotated, revoked or expired ("list --org ${org}").\n`
        : undefined,
  };
}
