import {
  addressGroupIn,
  AppError,
  cancelVerificationLink,
  confirmationGrantOf,
  confirmVerificationLink,
  inspectVerificationLink,
  LINK_STATE_ERRORS,
  nowOf,
  toAppError,
  verificationFactsOf,
  type CoreDeps,
  type LinkState,
  type OrgMembership,
} from '../core/index.js';
import { escapeHtml } from '../text/html.js';
import { ageInWords, factLines, grantInWords } from '../text/verification-facts.js';
import { readForm, sendHtml } from './io.js';
import type { RouteContext } from './route.js';

/** A page of this service: its title and escaped body, in the one style. */
export function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>${escapeHtml(title)} · shell-auth</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222;overflow-wrap:anywhere}
th{text-align:left;padding-right:1rem;vertical-align:top}code{overflow-wrap:anywhere}.command{white-space:nowrap}
button{font-size:1.1rem;padding:.5rem 1.5rem;cursor:pointer}.muted{color:#666}
form{display:inline-block;margin:0 1rem .5rem 0}.grant{border-left:4px solid #c60;padding:.25rem 1rem;background:#fff8f0}
.warning{border-left:4px solid #b00;padding:.25rem 1rem;background:#fff0f0;color:#900}</style></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

const LINK_ERROR_TITLES: Partial<Record<AppError['code'], string>> = {
  VERIFICATION_LINK_UNKNOWN: 'Link not valid',
  VERIFICATION_LINK_USED: 'Link already used',
  VERIFICATION_LINK_EXPIRED: 'Link expired',
  VERIFICATION_LINK_CANCELLED: 'Request cancelled',
};

function errorPage(err: AppError): string {
  const title = LINK_ERROR_TITLES[err.code] ?? 'Could not confirm';
  const hint = LINK_ERROR_TITLES[err.code]
    ? '<p>Links work once and for 10 minutes. Start again from your terminal to get a new one.</p>'
    : '';
  return page(title, `<p>${escapeHtml(err.message)}.</p>${hint}`);
}

/**
 * A confirmed link opened again (the mail reopened, the page reloaded, Confirm pressed twice): not
 * an error to act on. It says when it was confirmed and that nothing more is needed. Still 410:
 * the link itself is spent.
 */
function alreadyConfirmedPage(deps: CoreDeps, request: Extract<LinkState, { state: 'used' }>['request']): string {
  const confirmedAt = new Date(request.consumed_at ?? request.created_at);
  const when = `${confirmedAt.toUTCString().replace(/GMT$/, 'UTC')} (${ageInWords(nowOf(deps).getTime() - confirmedAt.getTime())})`;
  return page(
    'Already confirmed',
    `<p>This link was already confirmed, on ${escapeHtml(when)}: the key <code>${escapeHtml(request.fingerprint)}</code> was linked to
<strong>${escapeHtml(request.email)}</strong> then.</p>
<p>Nothing more is needed: you can close this page.</p>`,
  );
}

/** The page for a link that is not pending: already confirmed, or the state's error. */
function notPendingPage(deps: CoreDeps, link: Exclude<LinkState, { state: 'pending' }>): { status: number; html: string } {
  const err = new AppError(LINK_STATE_ERRORS[link.state]);
  return { status: err.status, html: link.state === 'used' ? alreadyConfirmedPage(deps, link.request) : errorPage(err) };
}

/**
 * GET /shell-auth/verify?token=… shows what is being confirmed and a button. Mail scanners
 * fetch links with GET, so GET never consumes the token; only the form's POST does.
 */
export async function showConfirmPage({ deps, res, url, origin }: RouteContext): Promise<void> {
  const token = url().searchParams.get('token') ?? '';
  const link = await inspectVerificationLink(deps, token);
  if (link.state !== 'pending') {
    const shown = notPendingPage(deps, link);
    sendHtml(res, shown.status, shown.html);
    return;
  }
  const r = link.request;
  const facts = verificationFactsOf(r);
  const rows = factLines(facts).map(([label, value]) => `<tr><th>${escapeHtml(label)}</th><td><code>${escapeHtml(value)}</code></td></tr>`).join('');
  const grant = grantInWords(facts, await confirmationGrantOf(deps, r), nowOf(deps).getTime() - facts.requestedAt.getTime());
  const action = escapeHtml(confirmAction(deps.settings.publicUrl));
  const hiddenToken = `<input type="hidden" name="token" value="${escapeHtml(token)}">`;
  sendHtml(
    res,
    200,
    page(
      'Confirm your SSH key',
      `<p>Someone asked to link this SSH key to the account <strong>${escapeHtml(r.email)}</strong>:</p>
<table>${rows}</table>
<p>Check that the fingerprint matches <code class="command">ssh-keygen -lf ~/.ssh/id_ed25519.pub</code> (or your key's file).</p>
<h2>What Confirm grants</h2>
<p class="grant">${escapeHtml(grant)}</p>
${addressesCompared(deps, r.requested_ip, origin.ip)}
<form method="post" action="${action}">
${hiddenToken}
<button type="submit">Confirm</button></form>
<form method="post" action="${action}">
${hiddenToken}<input type="hidden" name="answer" value="cancel">
<button type="submit">This wasn't me</button></form>
<p class="muted">If you did not ask for this, press “This wasn't me”: the request is cancelled and can never be confirmed.
Closing this page leaves it unconfirmed too, until it expires.</p>`,
    ),
  );
}

/**
 * The request's address beside this browser's, and a warning when they differ: someone else
 * (anyone with the email and a public key) may have asked. They differ legitimately too (a
 * request from a server, the mail read on a phone), so it warns, it does not refuse. Compared as
 * every per-address limit counts them (addressGroupIn): IPv4-mapped IPv6 is the IPv4 address, and
 * two addresses of one IPv6 /64 (IPV6_PREFIX; privacy addresses change) are the same.
 */
function addressesCompared(deps: CoreDeps, requestedIp: string | null, browserIp: string | null): string {
  const line = `<p>The request came from <code>${escapeHtml(requestedIp ?? 'an unknown address')}</code>; this browser is at <code>${escapeHtml(browserIp ?? 'an unknown address')}</code>.</p>`;
  if (requestedIp === null || browserIp === null || addressGroupIn(deps, requestedIp) === addressGroupIn(deps, browserIp)) return line;
  return `${line}
<p class="warning"><strong>These addresses differ.</strong> Unless you made this request yourself from another device or network
(a server you work on, a VPN), someone else did: press “This wasn't me”.</p>`;
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

/**
 * POST /shell-auth/verify (form: token=…): consumes the link. With `answer=cancel` ("This wasn't
 * me") it cancels the request instead; the same form protections hold for both (the token from
 * the email, POST only, CSP form-action 'self').
 */
export async function confirmFromPage({ deps, door, req, res, origin }: RouteContext): Promise<void> {
  let token = '';
  try {
    const form = await readForm(req);
    token = form.get('token') ?? '';
    const answer = form.get('answer') ?? 'confirm';
    if (answer === 'cancel') {
      const cancelled = await cancelVerificationLink(deps, token, origin);
      sendHtml(
        res,
        200,
        page(
          'Request cancelled',
          `<p>The request to link the key <code>${escapeHtml(cancelled.fingerprint)}</code> to <strong>${escapeHtml(cancelled.email)}</strong>
is cancelled: it can no longer be confirmed, and nothing was linked or made from it.</p>
${cancelled.httpWindowClosed ? '<p>The HTTP window that was open for this key and account is closed too: an HTTP client using it must confirm by email again.</p>' : ''}
<p>Anyone who knows your email address can ask for a link, but only you, at this inbox, can confirm one. If you did want
to link this key, start again from your terminal.</p>`,
        ),
      );
      return;
    }
    if (answer !== 'confirm') throw new AppError('INVALID_REQUEST');
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
    if (appError.code === 'VERIFICATION_LINK_USED') {
      // Confirm pressed again, or a race lost to another press: said as the GET says it.
      const link = await inspectVerificationLink(deps, token);
      if (link.state === 'used') {
        sendHtml(res, appError.status, alreadyConfirmedPage(deps, link.request));
        return;
      }
    }
    sendHtml(res, appError.status, errorPage(appError));
  }
}
