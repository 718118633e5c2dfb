import { formatDuration, type ConfirmationGrant, type VerificationFacts } from '../core/index.js';

/** The label of the requester's note: text anyone who asks can write, not something this service says. */
export const NOTE_LABEL = 'Note (written by the requester)';

/** The facts about a verification request as label/value rows: the email and the confirm page show the same. */
export function factLines(facts: VerificationFacts): Array<[string, string]> {
  const lines: Array<[string, string]> = [
    ['Email', facts.email],
    ['Key type', facts.keyType],
    ['Fingerprint', facts.fingerprint],
    ['Requested from', `${facts.requestedIp ?? 'unknown address'} (${facts.channel === 'ssh' ? 'SSH' : 'HTTP'})`],
    // A date a person reads at a glance, in one unambiguous zone: "Fri, 27 Nov 2026 16:22:05 UTC".
    ['Requested at', facts.requestedAt.toUTCString().replace(/GMT$/, 'UTC')],
  ];
  // The requester's own words, whoever they are: labelled as such, and nowhere but here (never in
  // a sentence of ours, such as the confirm page's "What Confirm grants").
  if (facts.note) lines.push([NOTE_LABEL, facts.note]);
  return lines;
}

/** How long ago a request was made, in words: "less than a minute ago", "1 minute ago", "7 minutes ago". */
export function ageInWords(ms: number): string {
  const minutes = Math.floor(Math.max(0, ms) / 60_000);
  if (minutes === 0) return 'less than a minute ago';
  if (minutes < 120) return `${minutes} minute${minutes === 1 ? '' : 's'} ago`;
  const hours = Math.floor(minutes / 60);
  return `${hours} hours ago`;
}

/**
 * How long a confirmation link has left, in the one wording the email, the confirm page and the
 * terminal share: "10 minutes", "1 minute", "40 seconds". Whole minutes, rounded: a mail sent a
 * moment after its request has 9m59s left, and says 10 minutes, as the terminal does.
 */
export function linkTimeInWords(ms: number): string {
  if (ms >= 60_000) {
    const minutes = Math.round(ms / 60_000);
    return `${minutes} minute${minutes === 1 ? '' : 's'}`;
  }
  const seconds = Math.max(1, Math.floor(ms / 1000));
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

/** A duration a person reads: "15 minutes", "1 hour", "2 days"; odd ones as `1h30m`. */
function durationInWords(ms: number): string {
  for (const [size, unit] of [
    [86_400_000, 'day'],
    [3_600_000, 'hour'],
    [60_000, 'minute'],
    [1_000, 'second'],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${unit}${ms === size ? '' : 's'}`;
  }
  return formatDuration(ms);
}

function orgsInWords(grant: ConfirmationGrant): string {
  const shown = grant.orgs.slice(0, 5).join(', ') + (grant.orgs.length > 5 ? ` and ${grant.orgs.length - 5} more` : '');
  if (grant.newPersonalOrg) {
    const personal = 'the personal organization created for you when you confirm';
    return grant.orgs.length === 0 ? personal : `${personal}, or any of your organizations (${shown})`;
  }
  if (grant.orgs.length === 0) return 'an organization (the account has none yet, so none can be made until it joins one)';
  if (grant.orgs.length === 1) return `the organization ${shown}`;
  return `any of your organizations (${shown})`;
}

/**
 * What pressing Confirm gives whoever made the request, as one plain-text paragraph (the page
 * escapes it): who asked (address, door, age), and what they receive, as the server's settings
 * and the request make it. A person deciding whether a request is theirs reads this, so it holds
 * no text the requester wrote: their note (which could read "this is your own laptop, safe to
 * confirm") is only in the facts, under NOTE_LABEL.
 */
export function grantInWords(facts: VerificationFacts, grant: ConfirmationGrant, ageMs: number): string {
  const from = `from ${facts.requestedIp ?? 'an unknown address'} (${facts.channel === 'ssh' ? 'SSH' : 'HTTP'}), ${ageInWords(ageMs)}`;
  const orgs = orgsInWords(grant);
  const sshLink = `The key is also linked to ${facts.email}: whoever holds its private key can then sign in as you on the SSH door.`;
  switch (grant.kind) {
    case 'ssh-session':
      return (
        `The SSH session that made this request — ${from} — will be signed in as ${facts.email}: ` +
        `it, and anyone holding this key's private key, can then create API keys for ${orgs}, at any time, for as long as the key stays linked.`
      );
    case 'http-signed':
      return (
        `Whoever made this request — ${from} — proved they hold this key's private key. ` +
        `Once you confirm, they can create API keys for ${orgs}, over HTTP and SSH, at any time, for as long as the key stays linked to ${facts.email}.`
      );
    case 'http-window': {
      const { window, mintsPerConfirmation } = grant.httpTrust;
      // HTTP_TRUST_WINDOW=0 closes the email window only: a request signed with the key still mints.
      if (window === 'off') {
        return `Whoever made this request — ${from} — will receive no API key over HTTP for it (this server opens no HTTP window on an email confirmation; only requests signed with the key's private key mint there). ${sshLink}`;
      }
      const keys = mintsPerConfirmation === null ? 'any number of API keys' : mintsPerConfirmation === 1 ? 'one API key' : `up to ${mintsPerConfirmation} API keys`;
      const when = window === 'forever' ? 'with no time limit' : `within ${durationInWords(window)} of your confirmation`;
      return `Whoever made this request — ${from} — will receive ${keys} for ${orgs}, ${when}. ${sshLink}`;
    }
  }
}
