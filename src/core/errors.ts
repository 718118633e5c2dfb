import { classifyDatabaseError, type DatabaseErrorKind } from '../db/errors.js';

/**
 * The one error table. Every door (HTTP, SSH, admin CLI) reports a core failure with the code's
 * status and message, so the same mistake reads the same everywhere. Messages marked "contract"
 * are strings Vers's real clients know; do not reword them.
 */
export const ERRORS = {
  INVALID_INITIATE: { status: 400, message: 'Invalid email or SSH key format' }, // contract
  INVALID_REQUEST: { status: 400, message: 'Invalid request' }, // contract
  MALFORMED_JSON: { status: 400, message: 'Malformed JSON body' },
  UNSUPPORTED_CONTENT_TYPE: { status: 400, message: 'Content-Type must be application/json' },
  BODY_TOO_LARGE: { status: 400, message: 'Request body too large (limit 16 KB)' },
  BODY_INCOMPLETE: { status: 400, message: 'Request body was not received completely' },
  NO_ORGANIZATIONS: { status: 400, message: 'User has no organizations' }, // contract
  TTL_TOO_LONG: { status: 400, message: 'Requested expiry exceeds the maximum key lifetime' },
  TTL_TOO_SHORT: { status: 400, message: 'Requested expiry is below the minimum key lifetime (5m)' },
  PERMISSION_UNKNOWN: { status: 400, message: 'Unknown permission' },
  PERMISSIONS_EMPTY: { status: 400, message: 'A key needs at least one permission' },
  ROTATION_OVERLAP_TOO_LONG: { status: 400, message: 'The overlap may be at most 7d' },
  UNVERIFIED_KEY: { status: 401, message: 'Invalid or unverified SSH key' }, // contract
  HTTP_MINTING_DISABLED: {
    status: 401,
    message: 'API key creation over HTTP is disabled on this server: use the SSH door',
  },
  INVALID_API_KEY: { status: 401, message: 'Invalid API key' },
  PROOF_INVALID: { status: 401, message: 'SSH signature proof not accepted' },
  LEAK_REPORT_UNSIGNED: { status: 401, message: 'Unsigned report: send Github-Public-Key-Identifier and Github-Public-Key-Signature' },
  LEAK_REPORT_KEY_UNKNOWN: { status: 401, message: 'Github-Public-Key-Identifier names no key in SECRET_SCANNING_KEYS_FILE' },
  LEAK_REPORT_SIGNATURE_INVALID: { status: 401, message: 'Github-Public-Key-Signature does not verify over the request body' },
  LEAK_REPORT_INVALID: { status: 400, message: 'Invalid secret scanning report: expected a JSON array of {token, type, url, source}' },
  LEAK_REPORT_TOO_LARGE: { status: 400, message: 'Secret scanning report too large (limit 512 KB)' },
  BILLING_NOT_VERIFIED: { status: 402, message: 'Billing could not be verified' }, // contract
  BASE_ACCOUNT_MISSING: { status: 403, message: 'Base account does not exist' }, // contract
  BASE_ACCOUNT_UNVERIFIED: { status: 403, message: 'Base account is not verified' }, // contract
  NOT_ALLOWED: { status: 403, message: 'You are not allowed to do that' },
  ORG_POLICY: { status: 403, message: "Refused by the organization's key policy" },
  POLICY_CHANGE_NOT_ALLOWED: { status: 403, message: 'Only owners and admins of an organization can change its key policy' },
  CREATOR_LEFT_ORG: { status: 403, message: "This API key's creator is no longer a member of its org: it cannot be rotated" },
  NOT_FOUND: { status: 404, message: 'Not found' },
  ORG_NOT_FOUND: { status: 404, message: 'Organization not found' }, // contract
  API_KEY_NOT_FOUND: { status: 404, message: 'API key not found' },
  USER_NOT_FOUND: { status: 404, message: 'User not found' },
  NOT_A_MEMBER: { status: 404, message: 'That user is not a member of the organization' },
  LAST_OWNER: { status: 409, message: 'Cannot remove the last owner of an organization: make someone else its owner first' },
  VERIFICATION_LINK_UNKNOWN: { status: 404, message: 'This verification link is not valid' },
  KEY_TAKEN: { status: 409, message: 'SSH key already registered to another account' }, // contract
  API_KEY_ALREADY_REVOKED: { status: 409, message: 'API key already revoked' },
  API_KEY_ALREADY_ROTATED: { status: 409, message: 'This API key was already rotated: rotate the key that replaced it' },
  ROTATION_PERMISSIONS_GONE: { status: 409, message: "None of this API key's permissions exists on this server any more: create a new key instead" },
  API_KEY_EXPIRED: { status: 409, message: 'API key has expired: create a new one' },
  API_KEY_ID_AMBIGUOUS: { status: 409, message: 'More than one API key starts with that id: give more of it' },
  ORG_EXISTS: { status: 409, message: 'Organization already exists' },
  VERIFICATION_LINK_USED: { status: 410, message: 'This verification link has already been used' },
  VERIFICATION_LINK_EXPIRED: { status: 410, message: 'This verification link has expired' },
  VERIFICATION_LINK_CANCELLED: { status: 410, message: 'This verification request was cancelled' },
  RATE_LIMITED: { status: 429, message: 'Too many requests' }, // contract shape
  UNAVAILABLE: { status: 503, message: 'Service temporarily unavailable; try again later' },
  INTERNAL: { status: 500, message: 'Internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/** Error.stackTraceLimit as it was before an AppError's construction set it to 0. */
let stackTraceLimit = Error.stackTraceLimit;

/**
 * The message of `code`, as super()'s argument: evaluated before Error's constructor runs, it
 * turns stack capture off for a refusal (4xx), which is an answer, not a fault: nobody reads its
 * stack, and capturing one was a sixth of the CPU of a refused /api/whoami (profiled). A 5xx keeps
 * its stack for the log. The constructor puts the limit back right after.
 */
function messageCapturingNoStack(code: ErrorCode): string {
  stackTraceLimit = Error.stackTraceLimit;
  if (ERRORS[code].status < 500) Error.stackTraceLimit = 0;
  return ERRORS[code].message;
}

export class AppError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    /** `orgName`: the org a failure is about when the caller did not name it (the default org), for wording. */
    /** `policySetting`: the org policy setting that refused (ORG_POLICY). */
    readonly extra: { detail?: string; retryAfterSeconds?: number; orgName?: string; policySetting?: string } = {},
  ) {
    super(messageCapturingNoStack(code));
    Error.stackTraceLimit = stackTraceLimit;
    this.name = 'AppError';
    this.status = ERRORS[code].status;
  }

  /** A human explanation beyond the fixed message (which field, why), safe to show the user. */
  get detail(): string | undefined {
    return this.extra.detail;
  }
}

/**
 * This machine out of something (file descriptors, memory, disk): a fault of the moment, not of
 * the request and not a bug, so 503 like a lost database, logged in one line (no stack).
 */
const LOCAL_RESOURCE_ERRNOS = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'ENOBUFS', 'EAGAIN', 'ENOSPC', 'EDQUOT']);

/** What each kind of database error (db/errors.ts) is to a caller: a database away or out of resources is a 503. */
const DATABASE_ERRORS: Record<DatabaseErrorKind, ErrorCode> = {
  unique_violation: 'INTERNAL', // a caller that expects one says what it means (KEY_TAKEN)
  unstorable_text: 'INVALID_REQUEST', // validation should have caught it; it is still a bad request
  stale_plan: 'INTERNAL',
  connection_lost: 'UNAVAILABLE',
  connection_fault: 'INTERNAL', // a protocol violation is a bug, not an outage to wait out
  unreachable: 'UNAVAILABLE',
  timed_out: 'UNAVAILABLE',
  out_of_resources: 'UNAVAILABLE',
  closed: 'UNAVAILABLE',
};

/**
 * What to log of a 503 (the database away, this machine out of descriptors), as fields of the
 * line itself: the code and the message, no stack: it is an outage to see, not a bug to trace.
 * (Not under `err`: pino's error serializer would add an empty stack.)
 */
export function unavailableFields(err: unknown): { code?: string; error: string } {
  const code = (err as { code?: unknown } | null)?.code;
  return { ...(typeof code === 'string' ? { code } : {}), error: errorText(err) };
}

/** The message of anything thrown, for logs and stored errors. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Maps anything thrown to an AppError: our own pass through, a lost database becomes 503. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const errno = (err as { code?: unknown } | null)?.code;
  if (typeof errno === 'string' && LOCAL_RESOURCE_ERRNOS.has(errno)) return new AppError('UNAVAILABLE');
  const kind = classifyDatabaseError(err);
  return new AppError(kind === null ? 'INTERNAL' : DATABASE_ERRORS[kind]);
}

export { isUniqueViolation } from '../db/errors.js';
