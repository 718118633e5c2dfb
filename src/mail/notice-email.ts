import type { NoticeKey, NoticeMail } from '../core/index.js';
import { escapeHtml } from '../text/html.js';
import type { RenderedMail } from './verification-email.js';

/** A notice to a key's creator, in text and HTML: which keys, what happened, what to do. */
export function renderNoticeEmail(mail: NoticeMail): RenderedMail {
  const { notice } = mail;
  const keyLines = notice.keys.map(keyLine);
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
      subject = `API key found in public and revoked: ${notice.keys.map((k) => k.label).join(', ')}`;
      before = [`${them} been found in public and revoked: it no longer works.`];
      after = [
        ...(notice.url ? [`Where it was found: ${notice.url}`] : []),
        ...(notice.source ? [`Reported by: ${notice.source}`] : []),
        '',
        'Remove it from where it was found, and mint a replacement with "create" if you still need one.',
      ];
    } else if (notice.reason === 'holder') {
      subject = `API key revoked by someone holding it: ${notice.keys.map((k) => k.label).join(', ')}`;
      before = [`${them} been revoked by someone holding it${notice.address ? `, from ${notice.address}` : ''}: it no longer works.`];
      after = ['If that was not you or your automation, the key had leaked: the revocation has made it harmless.'];
    } else {
      subject = 'Your API keys were revoked: you left the organization';
      before = [`${them} been revoked because you are no longer a member of the organization:`];
      after = [];
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

function keyLine(key: NoticeKey): string {
  const expires = key.expires_at === null ? 'no expiry' : `expires ${key.expires_at}`;
  return `${key.id}  "${key.label}"  org ${key.org_name}  (${expires})`;
}
