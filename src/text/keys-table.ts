import { apiKeyState, EXPIRING_SOON_MS, isSecurityKeyType, SHORT_KEY_ID_LENGTH, type ApiKeySummary } from '../core/index.js';
import { formatTable } from './table.js';

/**
 * The one keys listing, for the SSH door's `list` and the admin CLI's `keys list`: a table that
 * fits 100 columns (ids by their first 8 characters, which `revoke` takes, like git's short
 * hashes; relative times; long labels and org names cut), every column in full with `wide`, and
 * one JSON shape for `--json`. An active key expiring within 7 days reads `expiring` in STATE,
 * so it stands out before it stops working; a key replaced by rotation that still works (its
 * overlap) reads `rotated`: there is nothing to do about it, its successor is the one to watch.
 * `--json` keeps `state` (`active` for both, as scripts filter on it) and adds `expiring_soon`
 * and `replaced_by`.
 */

export const KEYS_TABLE_WIDTH = 100;

const ID = 'ID';
const LABEL = 'LABEL';
const ORG = 'ORG';

export function keysTable(keys: ApiKeySummary[], now: Date, options: { wide?: boolean } = {}): string {
  const when = (date: Date | null, none: string) => (date === null ? none : relativeTime(new Date(date), now));
  if (options.wide) {
    return formatTable(
      [ID, LABEL, ORG, 'CREATED BY', 'VIA', 'STATE', 'CREATED', 'LAST USED', 'EXPIRES', 'REVOKED', 'PERMISSIONS'],
      keys.map((k) => [
        k.id,
        k.label,
        k.org_name,
        k.created_by,
        viaOf(k),
        shownState(k, now),
        when(k.created_at, '-'),
        when(k.last_used_at, 'never'),
        when(k.expires_at, 'never'),
        when(k.revoked_at, '-'),
        k.permissions.join(','),
      ]),
    );
  }
  // A whole id is 36 of the 100 columns; the label and org give way only past what is left.
  return formatTable(
    [ID, LABEL, ORG, 'STATE', 'CREATED', 'LAST USED', 'EXPIRES'],
    keys.map((k) => [k.id.slice(0, SHORT_KEY_ID_LENGTH), k.label, k.org_name, shownState(k, now), when(k.created_at, '-'), when(k.last_used_at, 'never'), when(k.expires_at, 'never')]),
    { width: KEYS_TABLE_WIDTH, shrink: [1, 2], min: 8 },
  );
}

/** `--json`: every value in full, timestamps as ISO strings. */
export function keysJson(keys: ApiKeySummary[], now: Date) {
  return keys.map((k) => ({
    id: k.id,
    label: k.label,
    org_id: k.org_id,
    org_name: k.org_name,
    created_by: k.created_by,
    created_via: k.created_via,
    ssh_key_type: k.ssh_key_type,
    security_key: isSecurityKeyType(k.ssh_key_type),
    permissions: k.permissions,
    state: apiKeyState(k, now),
    expiring_soon: expiringSoon(k, now),
    created_at: k.created_at,
    last_used_at: k.last_used_at,
    expires_at: k.expires_at,
    revoked: k.revoked_at !== null,
    revoked_at: k.revoked_at,
    replaced_by: k.replaced_by_id,
  }));
}

type KeyTimes = Pick<ApiKeySummary, 'revoked_at' | 'expires_at' | 'replaced_by_id'>;

/** Replaced by rotation, and still working: in its overlap (its expiry is the overlap's end). */
export function inRotationOverlap(key: KeyTimes, now: Date): boolean {
  return key.replaced_by_id !== null && apiKeyState(key, now) === 'active';
}

/** Active, not yet rotated, and expiring within EXPIRING_SOON_MS: as the shell's greeting counts. */
export function expiringSoon(key: KeyTimes, now: Date): boolean {
  return (
    apiKeyState(key, now) === 'active' &&
    key.replaced_by_id === null &&
    key.expires_at !== null &&
    new Date(key.expires_at).getTime() - now.getTime() <= EXPIRING_SOON_MS
  );
}

/** STATE as tables show it: `rotated` in a rotation's overlap, `expiring` for an active key expiring soon, else the key's state. */
function shownState(key: ApiKeySummary, now: Date): string {
  if (inRotationOverlap(key, now)) return 'rotated';
  return expiringSoon(key, now) ? 'expiring' : apiKeyState(key, now);
}

/** How the key was made: `ssh`, `http` or `admin`, and whether the SSH key was a security key. */
function viaOf(key: ApiKeySummary): string {
  return isSecurityKeyType(key.ssh_key_type) ? `${key.created_via}, security key` : key.created_via;
}

const UNITS: Array<[string, number]> = [
  ['y', 365 * 86_400_000],
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
];

/** `3d ago`, `in 29d`: the largest whole unit (days up to a year), rounded down. */
export function relativeTime(date: Date, now: Date): string {
  const ms = date.getTime() - now.getTime();
  const size = Math.abs(ms);
  const [unit, unitMs] = UNITS.find(([, n]) => size >= n) ?? ['s', 1_000];
  const amount = `${Math.floor(size / unitMs)}${unit}`;
  return ms > 0 ? `in ${amount}` : `${amount} ago`;
}
