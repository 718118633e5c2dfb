import { formatDuration } from './duration.js';
import type { MailMessage } from './context.js';

export type VerificationFacts = {
  email: string;
  keyType: string;
  fingerprint: string;
  requestedIp: string | null;
  requestedAt: Date;
  note: string | null;
  channel: 'http' | 'ssh';
  ttlMs: number;
};

/** The confirmation email: the same facts the confirm page shows, in text and HTML. */
export function verificationEmail(facts: VerificationFacts, link: string): MailMessage {
  const lines = factLines(facts);
  const text = [
    'Someone asked to link this SSH key to your shell-auth account:',
    '',
    ...lines.map(([label, value]) => `  ${label}: ${value}`),
    '',
    `To confirm, open this link within ${formatDuration(facts.ttlMs)} and press "Confirm":`,
    link,
    '',
    "If this wasn't you, ignore this email: nothing happens unless the link is confirmed.",
  ].join('\n');
  const html = `<!doctype html><html><body style="font-family:sans-serif">
<p>Someone asked to link this SSH key to your shell-auth account:</p>
<table>${lines.map(([label, value]) => `<tr><th align="left">${escapeHtml(label)}</th><td><code>${escapeHtml(value)}</code></td></tr>`).join('')}</table>
<p>To confirm, open this link within ${formatDuration(facts.ttlMs)} and press “Confirm”:<br><a href="${escapeHtml(link)}">${escapeHtml(link)}</a></p>
<p>If this wasn't you, ignore this email: nothing happens unless the link is confirmed.</p>
</body></html>`;
  return { to: facts.email, subject: `Confirm your SSH key (${facts.fingerprint})`, text, html, link };
}

export function factLines(facts: Omit<VerificationFacts, 'ttlMs'>): Array<[string, string]> {
  const lines: Array<[string, string]> = [
    ['Email', facts.email],
    ['Key type', facts.keyType],
    ['Fingerprint', facts.fingerprint],
    ['Requested from', `${facts.requestedIp ?? 'unknown address'} (${facts.channel === 'ssh' ? 'SSH' : 'HTTP'})`],
    ['Requested at', facts.requestedAt.toISOString()],
  ];
  if (facts.note) lines.push(['Note', facts.note]);
  return lines;
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
