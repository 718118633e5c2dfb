import {
  AppError,
  confirmVerificationLink,
  inspectVerificationLink,
  LINK_STATE_ERRORS,
  toAppError,
  verificationFactsOf,
  type OrgMembership,
} from '../core/index.js';
import { escapeHtml } from '../text/html.js';
import { factLines } from '../text/verification-facts.js';
import { readForm, sendHtml } from './io.js';
import type { RouteContext } from './route.js';

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>${escapeHtml(title)} · shell-auth</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222;overflow-wrap:anywhere}
th{text-align:left;padding-right:1rem;vertical-align:top}code{overflow-wrap:anywhere}.command{white-space:nowrap}
button{font-size:1.1rem;padding:.5rem 1.5rem;cursor:pointer}.muted{color:#666}</style></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

const LINK_ERROR_TITLES: Partial<Record<AppError['code'], string>> = {
  VERIFICATION_LINK_UNKNOWN: 'Link not valid',
  VERIFICATION_LINK_USED: 'Link already used',
  VERIFICATION_LINK_EXPIRED: 'Link expired',
};

function errorPage(err: AppError): string {
  const title = LINK_ERROR_TITLES[err.code] ?? 'Could not confirm';
  const hint = LINK_ERROR_TITLES[err.code]
    ? '<p>Links work once and for 10 minutes. Start again from your terminal to get a new one.</p>'
    : '';
  return page(title, `<p>${escapeHtml(err.message)}.</p>${hint}`);
}

/**
 * GET /shell-auth/verify?token=… shows what is being confirmed and a button. Mail scanners
 * fetch links with GET, so GET never consumes the token; only the form's POST does.
 */
export async function showConfirmPage({ deps, res, url }: RouteContext): Promise<void> {
  const token = url.searchParams.get('token') ?? '';
  const link = await inspectVerificationLink(deps, token);
  if (link.state !== 'pending') {
    const err = new AppError(LINK_STATE_ERRORS[link.state]);
    sendHtml(res, err.status, errorPage(err));
    return;
  }
  const r = link.request;
  const facts = factLines(verificationFactsOf(r));
  const rows = facts.map(([label, value]) => `<tr><th>${escapeHtml(label)}</th><td><code>${escapeHtml(value)}</code></td></tr>`).join('');
  sendHtml(
    res,
    200,
    page(
      'Confirm your SSH key',
      `<p>Someone asked to link this SSH key to the account <strong>${escapeHtml(r.email)}</strong>:</p>
<table>${rows}</table>
<p>Check that the fingerprint matches <code class="command">ssh-keygen -lf ~/.ssh/id_ed25519.pub</code> (or your key's file).</p>
<form method="post" action="${escapeHtml(confirmAction(deps.settings.publicUrl))}">
<input type="hidden" name="token" value="${escapeHtml(token)}">
<button type="submit">Confirm</button></form>
<p class="muted">If this wasn't you, close this page: nothing happens unless you press Confirm.</p>`,
    ),
  );
}

/** The form posts to the route itself, not relative to the page (`/shell-auth/verify/?token=` must work too). */
function confirmAction(publicUrl: string): string {
  return `${new URL(publicUrl).pathname.replace(/\/+$/, '')}/shell-auth/verify`;
}

/**
 * Confirmed over HTTP: the inbox is proven, the key is not. Said here, so the SSH door's "not
 * linked yet" is no surprise: one signed login (no email) finishes it.
 */
function httpOnlyNote(sshHint: string, email: string): string {
  return `<p>Your HTTP client (such as <code>vers</code>) can use it now. To use this key on the SSH door too, prove you hold it once:
<code>${escapeHtml(`${sshHint} login ${email}`)}</code> (no email is sent).</p>`;
}

function orgList(orgs: OrgMembership[]): string {
  if (orgs.length === 0) return '';
  return `<p>Your organizations:</p><ul>${orgs.map((o) => `<li>${escapeHtml(o.name)} (${o.role})</li>`).join('')}</ul>`;
}

/** POST /shell-auth/verify (form: token=…): consumes the link. */
export async function confirmFromPage({ deps, door, req, res, origin }: RouteContext): Promise<void> {
  let token = '';
  try {
    token = (await readForm(req)).get('token') ?? '';
    const confirmation = await confirmVerificationLink(deps, token, origin);
    sendHtml(
      res,
      200,
      page(
        'SSH key confirmed',
        `<p>The key <code>${escapeHtml(confirmation.fingerprint)}</code> is now linked to
<strong>${escapeHtml(confirmation.user.email)}</strong>. You can close this page and return to your terminal.</p>
${confirmation.keyProven ? '' : httpOnlyNote(door.sshHint, confirmation.user.email)}${orgList(confirmation.orgs)}`,
      ),
    );
  } catch (err) {
    const appError = toAppError(err);
    if (appError.status >= 500) throw err;
    sendHtml(res, appError.status, errorPage(appError));
  }
}
