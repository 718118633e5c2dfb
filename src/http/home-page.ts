import { escapeHtml } from '../text/html.js';
import { sendHtml, sendJson } from './io.js';
import type { RouteContext } from './route.js';
import { page } from './verify-page.js';

/**
 * The quality (q) a client's Accept header gives one media type when it names it explicitly;
 * null when it does not (wildcards are not counted: `*\/*` asks for nothing in particular).
 */
function explicitQuality(accept: string, type: string): number | null {
  for (const range of accept.split(',')) {
    const [name, ...params] = range.split(';').map((part) => part.trim().toLowerCase());
    if (name !== type) continue;
    const q = params.find((p) => p.startsWith('q='));
    const quality = q === undefined ? 1 : Number(q.slice(2));
    return Number.isFinite(quality) ? quality : 0;
  }
  return null;
}

/**
 * A client that names JSON and prefers it to HTML (an API client, `curl -H 'Accept:
 * application/json'`) gets the JSON 404 every unknown path gets, as before this page existed:
 * `/` is no API, and a JSON client sent here has the wrong base URL, which a 404 tells it.
 * Browsers name text/html; `curl` sends `*\/*`: both get the page.
 */
function wantsJson(accept: string | undefined): boolean {
  if (!accept) return false;
  const json = explicitQuality(accept, 'application/json');
  if (json === null || json <= 0) return false;
  const html = Math.max(explicitQuality(accept, 'text/html') ?? 0, explicitQuality(accept, 'application/xhtml+xml') ?? 0);
  return json > html;
}

/** GET /: what this service is and how to reach it, for whoever opens the address in a browser. */
export async function showHomePage({ deps, door, req, res }: RouteContext): Promise<void> {
  if (wantsJson(req.headers.accept)) {
    sendJson(res, 404, { success: false, error: 'Not found' });
    return;
  }
  const hint = escapeHtml(door.sshHint);
  const api = (path: string) => `<code>${escapeHtml(`${deps.settings.publicUrl}${path}`)}</code>`;
  sendHtml(
    res,
    200,
    page(
      'shell-auth',
      `<p>Turns an SSH key pair into an API key: your SSH key is the credential, and one email click links it to your account.</p>
<h2>From a terminal</h2>
<pre><code>${hint} login you@example.com     # once per key: press Confirm in the email
${hint} create --label my-laptop  # prints a fresh API key</code></pre>
<p><code class="command">${hint} help</code> lists the commands; <code class="command">${hint}</code> alone opens a <code>keys&gt;</code> prompt.</p>
<h2>Over HTTP</h2>
<p>The Vers “Shell Auth” API (JSON, POST), which Vers's clients such as <code>vers login --git</code> use unchanged:</p>
<ul>
<li>${api('/api/shell-auth')}: <code>{email, ssh_public_key}</code>, sends the confirmation email</li>
<li>${api('/api/shell-auth/verify-key')}: poll until the link is confirmed</li>
<li>${api('/api/shell-auth/api-keys')}: <code>{email, ssh_public_key, label}</code>, mints an API key</li>
<li>${api('/api/shell-auth/challenge')}: for requests signed with <code>ssh-keygen -Y sign</code></li>
<li>${api('/api/whoami')} (GET, <code>Authorization: Bearer …</code>): who an API key is</li>
</ul>`,
    ),
  );
}
