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
