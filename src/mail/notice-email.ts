import type { NoticeKey, NoticeMail } from '../core/index.js';
import { escapeHtml } from '../text/html.js';
import type { RenderedMail } from './verification-email.js';

/** A notice to a key's creator, in text and HTML: which keys, what happened, what to do. */
export function renderNoticeEmail(mail: NoticeMail, now: Date = new Date()): RenderedMail {
  const { notice } = mail;
  // An expiry notice says how long is left as of sending: a retried mail does not claim more.
  const keyLines = notice.keys.map((key) => (notice.kind === 'key_expiry' ? expiryKeyLine(key, now) : keyLine(key)));
  let subject: string;
  let before: string[];
  let after: string[];
  if (notice.kind === 'key_expiry') {
    const one = notice.keys.length === 1;
    subject = one ? `Your API key "${notice.keys[0]!.label}" expires soon` : `${notice.keys.length} of your API keys expire soon`;
    before = [one ? 'This API key you created expires soon:' : 'These API keys you created expire soon:'];
    after = [
      'To keep a key working, rotate it: you get a new key with the same org, label and permissions,',
      'and the old one keeps working for an hour (--overlap sets how long) while you swap it in:',
      '',
      ...notice.keys.map((k) => `  ${notice.rotate_command} rotate ${k.id}`),
      '',
      'A script can also renew its own key: POST /api/api-keys/rotate with the key as its Bearer token.',
      'If you no longer need a key, do nothing: it stops working when it expires.',
    ];
  } else {
    const them = notice.keys.length === 1 ? 'This API key you created has' : 'These API keys you created have';
    if (notice.reason === 'leaked') {
      subject = `API key found in public and revoked: ${labelsOf(notice.keys)}`;
      before = [`${them} been found in public and revoked: it no longer works.`];
      after = [
        ...(notice.successors?.length
          ? [
              '',
              'Revoked with it, because whoever found it could have made them from it (POST /api/api-keys/rotate):',
              ...notice.successors.map((k) => `  ${keyLine(k)}`),
              '',
            ]
          : []),
        ...(notice.url ? [`Where it was found: ${notice.url}`] : []),
        // GitHub's secret scanning is the one reporter so far; `source` is its word for where (commit, issue_comment…).
        ...(notice.source ? [`Found in: ${notice.source} (reported by GitHub secret scanning)`] : []),
        '',
        'Remove it from where it was found, and mint a replacement with "create" if you still need one.',
      ];
    } else if (notice.reason === 'holder') {
      subject = `API key revoked by someone holding it: ${labelsOf(notice.keys)}`;
      before = [`${them} been revoked by someone holding it${notice.address ? `, from ${notice.address}` : ''}: it no longer works.`];
      after = ['If that was not you or your automation, the key had leaked: the revocation has made it harmless.'];
    } else {
      const orgs = [...new Set(notice.keys.map((k) => k.org_name))].join(', ');
      subject = `Your API keys in ${orgs} were revoked: you are no longer a member`;
      before = [`You are no longer a member of the organization ${orgs}, so ${notice.keys.length === 1 ? 'this API key you created there has' : 'these API keys you created there have'} been revoked: ${notice.keys.length === 1 ? 'it no longer works' : 'they no longer work'}.`];
      after = ['Your keys in other organizations are not affected.'];
    }
  }
  const text = [...before, '', ...keyLines.map((l) => `  ${l}`), '', ...after].join('\n').replace(/\n{3,}/g, '\n\n').trimEnd() + '\n';
  const html = `<!doctype html><html><body style="font-family:sans-serif">
${before.map((l) => `<p>${escapeHtml(l)}</p>`).join('\n')}
<ul>${keyLines.map((l) => `<li><code>${escapeHtml(l)}</code></li>`).join('')}</ul>
<pre>${escapeHtml(after.join('\n'))}</pre>
</body></html>`;
  return { to: mail.to, subject, text, html };
}

/** Labels for a subject line: one or two by name, more by count (a report may hold hundreds). */
function labelsOf(keys: readonly NoticeKey[]): string {
  return keys.length <= 2 ? keys.map((k) => `"${k.label}"`).join(', ') : `${keys.length} keys`;
}

function keyLine(key: NoticeKey): string {
  const expires = key.expires_at === null ? 'no expiry' : `expires ${key.expires_at}`;
  return `${key.id}  "${key.label}"  org ${key.org_name}  (${expires})`;
}

/** A key about to expire: when, in UTC (ISO, `Z`) and from now, e.g. `(expires 2026-12-09T10:00:00.000Z, in 23 hours)`. */
function expiryKeyLine(key: NoticeKey, now: Date): string {
  if (key.expires_at === null) return keyLine(key);
  return `${key.id}  "${key.label}"  org ${key.org_name}  (expires ${key.expires_at}, ${timeLeft(new Date(key.expires_at).getTime() - now.getTime())})`;
}

/** `in 6 days`, `in 23 hours`, `in 5 minutes` (rounded down), `now`. */
function timeLeft(ms: number): string {
  if (ms < 60_000) return ms > 0 ? 'in less than a minute' : 'now';
  const [unit, size] = ms >= 2 * 86_400_000 ? ['day', 86_400_000] : ms >= 2 * 3_600_000 ? ['hour', 3_600_000] : ['minute', 60_000];
  const amount = Math.floor(ms / (size as number));
  return `in ${amount} ${unit}${amount === 1 ? '' : 's'}`;
}
