import { z } from 'zod';

/** Emails compare trimmed and case-insensitively; `+tags` are meaningful and never stripped. */
export const EmailSchema = z
  .string()
  .trim()
  .toLowerCase()
  .max(254)
  .pipe(z.email({ message: 'must be an email address' }));

/** For `alice+agent@x.com` the base account's email, `alice@x.com`; null for a plain email. */
export function baseEmailOf(email: string): string | null {
  const at = email.lastIndexOf('@');
  const local = email.slice(0, at);
  const plus = local.indexOf('+');
  if (plus <= 0) return null;
  return `${local.slice(0, plus)}${email.slice(at)}`;
}

/** Providers whose mailboxes ignore dots in the local part (`a.l.i.c.e@` is `alice@`): MAIL_DOTLESS_DOMAINS' default. */
export const DEFAULT_DOTLESS_DOMAINS: readonly string[] = ['gmail.com', 'googlemail.com'];

/** Other names of one provider's inboxes: `alice@googlemail.com` is `alice@gmail.com`. */
const SAME_INBOX_DOMAINS: Readonly<Record<string, string>> = { 'googlemail.com': 'gmail.com' };

/**
 * The inbox an email is delivered to, for the per-inbox mail limit only (accounts and mail use
 * the email as typed): `+tags` stripped, and for a domain in `dotlessDomains` the local part's
 * dots removed and the domain's other name folded in (googlemail.com -> gmail.com). Emails are
 * already lower case (EmailSchema).
 */
export function inboxKeyOf(email: string, dotlessDomains: readonly string[] = DEFAULT_DOTLESS_DOMAINS): string {
  const base = baseEmailOf(email) ?? email;
  const at = base.lastIndexOf('@');
  const domain = base.slice(at + 1);
  if (at <= 0 || !dotlessDomains.includes(domain)) return base;
  const local = base.slice(0, at).replaceAll('.', '');
  // `...@gmail.com` is no address anyone receives: keep it as typed rather than make it `@gmail.com`.
  if (local === '') return base;
  return `${local}@${SAME_INBOX_DOMAINS[domain] ?? domain}`;
}

/** A personal organization's name: the email's local part, as a slug. */
export function orgNameFromEmail(email: string): string {
  const local = email.slice(0, email.lastIndexOf('@')).split('+')[0] ?? '';
  const slug = local
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  return slug || 'user';
}
