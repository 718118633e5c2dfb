import { escapeForTerminal } from '../text/table.js';
import type { ErrorPhrases } from '../command/terminal-errors.js';

const quoted = (value: string | boolean | undefined) => `"${escapeForTerminal(String(value ?? ''))}"`;

/**
 * The error table's codes, worded for the SSH door's command line. The HTTP door keeps the
 * contract's exact strings (core/errors.ts); a person at a terminal gets what went wrong in terms
 * of what they typed: the flag, the value, the next command to run.
 */
export const SSH_ERROR_PHRASES: ErrorPhrases = {
  KEY_TAKEN: () => 'this key is linked to another account: use another key pair here, or revoke it there first',
  BILLING_NOT_VERIFIED: (args, err) =>
    args.values.org
      ? `org ${quoted(args.values.org)} is suspended: minting is off until its billing is active`
      : `your default org${err.extra.orgName ? ` ${quoted(err.extra.orgName)}` : ''} is suspended: minting is off until its billing is active`,
  ORG_NOT_FOUND: (args) => `no org ${quoted(args.values.org ?? args.positionals[0])} among yours (see "orgs")`,
  NO_ORGANIZATIONS: () => 'you are not in any org yet: ask an org owner to add you',
  API_KEY_NOT_FOUND: (args) => `no API key ${quoted(args.positionals[0])} that you can see (see "list")`,
  API_KEY_ALREADY_REVOKED: (args) => `API key ${quoted(args.positionals[0])} is already revoked`,
  API_KEY_ID_AMBIGUOUS: (args) => `more than one of your API keys starts with ${quoted(args.positionals[0])}: give more of the id (see "list --wide")`,
  NOT_ALLOWED: () => 'only its creator or an owner or admin of its org may do that',
  RATE_LIMITED: (_args, err) =>
    err.extra.retryAfterSeconds ? `too many requests: try again in ${err.extra.retryAfterSeconds} s` : 'too many requests: try again later',
  BASE_ACCOUNT_MISSING: () => 'this +alias has no base account yet: log in with the address without the +part first',
  BASE_ACCOUNT_UNVERIFIED: () => 'the base account of this +alias is not verified yet: confirm its email first',
  // The detail says it all: which org, which setting, who can change it and how.
  ORG_POLICY: (_args, err) => escapeForTerminal(err.detail ?? err.message),
  POLICY_CHANGE_NOT_ALLOWED: (_args, err) => `only owners and admins can change an org's key policy: ${escapeForTerminal(err.detail ?? '')}`,
  UNAVAILABLE: () => 'the service is unavailable for a moment: try again shortly',
};
