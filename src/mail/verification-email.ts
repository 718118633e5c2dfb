import type { VerificationMail } from '../core/index.js';
import { escapeHtml } from '../text/html.js';
import { factLines, linkTimeInWords } from '../text/verification-facts.js';

export type RenderedMail = { to: string; subject: string; text: string; html: string };

/** The confirmation email: the same facts the confirm page shows, in text and HTML. */
export function renderVerificationEmail(mail: VerificationMail): RenderedMail {
  const lines = factLines(mail.facts);
  const within = linkTimeInWords(mail.ttlMs);
  const text = [
    'Someone asked to link this SSH key to your shell-auth account:',
    '',
    ...lines.map(([label, value]) => `  ${label}: ${value}`),
    '',
    `To confirm, open this link within ${within} and press "Confirm":`,
    mail.link,
    '',
    "If this wasn't you, ignore this email: nothing happens unless the link is confirmed.",
    'Or open the link and press "This wasn\'t me" to cancel the request, so it can never be confirmed.',
  ].join('\n');
  const rows = lines.map(([label, value]) => `<tr><th align="left">${escapeHtml(label)}</th><td><code>${escapeHtml(value)}</code></td></tr>`);
  const html = `<!doctype html><html><body style="font-family:sans-serif">
<p>Someone asked to link this SSH key to your shell-auth account:</p>
<table>${rows.join('')}</table>
<p>To confirm, open this link within ${within} and press “Confirm”:<br><a href="${escapeHtml(mail.link)}">${escapeHtml(mail.link)}</a></p>
<p>If this wasn't you, ignore this email: nothing happens unless the link is confirmed.
Or open the link and press “This wasn't me” to cancel the request, so it can never be confirmed.</p>
</body></html>`;
  return { to: mail.to, subject: `Confirm your SSH key (${mail.facts.fingerprint})`, text, html };
}
