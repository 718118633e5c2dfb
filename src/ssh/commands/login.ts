import { describeKeyType, EmailSchema, formatDuration, nowOf, orgsOfUser, startVerification, VERIFICATION_LINK_TTL_MS, waitForConfirmation } from '../../core/index.js';
import { failure, parseArgument, type CommandResult } from '../../command/framework.js';
import { escapeForTerminal } from '../../text/table.js';
import { linkTimeInWords } from '../../text/verification-facts.js';
import { commandHint, openCommand } from '../command.js';
import type { SessionContext } from '../session-context.js';
import { orgsJson, orgsTable } from './orgs.js';

const PROGRESS_EVERY_MS = 30_000;

export const login = openCommand({
  name: 'login',
  summary: 'link this key to your account by email (creates the account if new)',
  usage: `login EMAIL

Sends a confirmation link to EMAIL and waits (up to 10 minutes) until you press Confirm on
the page it opens. After that this key is your identity here. Ctrl-C stops waiting, not the
link; run login again while it is valid to wait for it (no second email). (It does not open
the HTTP door's window: HTTP clients confirm with POST /api/shell-auth.)`,
  options: {},
  positionals: { min: 1, max: 1, names: 'EMAIL' },
  async run(ctx, args) {
    const email = parseArgument(EmailSchema, args.positionals[0], 'EMAIL', (value) => `"${value}" is not an email address`);
    const { key } = ctx.identity;
    if (ctx.identity.kind === 'account' && ctx.identity.user.email !== email) {
      return failure(
        `error: this key is already linked to you, as ${escapeForTerminal(ctx.identity.user.email)}. A key belongs to one account: ` +
          `to use ${escapeForTerminal(email)}, log in from another key pair.\n`,
      );
    }
    const started = await startVerification(ctx.deps, { email, key, note: null, keyProven: true, origin: ctx.origin });
    if (started.nonce === null) {
      ctx.stderr(
        started.provedNow
          ? `Your signature proves this key (${key.fingerprint}): it is now linked to ${email} here too, as it was over HTTP. No email was needed.\n`
          : `This key (${key.fingerprint}) is already linked to ${email}.\n`,
      );
      return linked(ctx, email);
    }

    let linkLeftMs = started.linkExpiresAt ? started.linkExpiresAt.getTime() - nowOf(ctx.deps).getTime() : VERIFICATION_LINK_TTL_MS;
    const linkSent = started.resumed
      ? // This key's own link, asked for by an earlier login (stopped with Ctrl-C, or another session): the same wait, no second email.
        `The confirmation link sent to ${email} earlier still works, so no new email: check your inbox and press Confirm.\n`
      : `${started.isNewUser ? 'Creating a new account. ' : ''}A confirmation link is on its way to ${email}: check your inbox and press Confirm.\n`;
    ctx.stderr(
      `Key ${key.fingerprint} (${describeKeyType(key.type)})\n` +
        linkSent +
        // Said up front: `ssh … login` without a terminal is stopped by killing ssh, after which nothing can be said.
        `Waiting for confirmation (the link expires in ${linkTimeInWords(linkLeftMs)}; Ctrl-C stops the wait, not the link)...\n`,
    );
    let lastProgress = Date.now();
    // A restart does not wait ten minutes for a click: the wait ends, the link does not. (Joined
    // by hand: AbortSignal.any with the process-long shutdown signal leaks on Node 20.)
    const stopWaiting = new AbortController();
    const stop = () => stopWaiting.abort();
    const interrupted = ctx.interrupted.signal;
    for (const signal of [interrupted, ctx.shuttingDown]) {
      if (signal.aborted) stop();
      else signal.addEventListener('abort', stop, { once: true });
    }
    const outcome = await waitForConfirmation(ctx.deps, started.nonce, {
      signal: stopWaiting.signal,
      onTick(msLeft) {
        linkLeftMs = msLeft;
        ctx.markActive(); // the wait is bounded by the link's own 10 minutes
        if (Date.now() - lastProgress < PROGRESS_EVERY_MS) return;
        lastProgress = Date.now();
        ctx.stderr(`  still waiting, ${formatDuration(msLeft)} left...\n`);
      },
    }).finally(() => {
      interrupted.removeEventListener('abort', stop);
      ctx.shuttingDown.removeEventListener('abort', stop);
    });
    if (outcome === 'aborted' && !interrupted.aborted) {
      return failure(
        'The service is restarting, so this session stops waiting. The link still works: ' +
          `confirm it within ${linkTimeInWords(linkLeftMs)}, then check with: ${ctx.sshHint} whoami\n`,
      );
    }
    if (outcome === 'aborted') {
      // Ctrl-C at the prompt (a client that went away reads nothing: the write is dropped).
      const hint = commandHint(ctx);
      ctx.deps.log.info({ requestId: started.nonce }, 'ssh login: the client stopped waiting');
      return failure(
        `Stopped waiting. The link still works for ${linkTimeInWords(linkLeftMs)}: press Confirm, then check with: ${hint}whoami\n` +
          `(Or run "${hint}login ${email}" again to wait for it: no new email is sent.)\n`,
      );
    }
    if (outcome === 'expired') return failure(`The link expired before it was confirmed. Run "login ${email}" again for a new one.\n`);
    if (outcome === 'cancelled') return failure(`The request was refused on its confirmation page ("This wasn't me"): this key was not linked.\n`);
    ctx.stderr(`Confirmed: this key is now linked to ${email}.\n`);
    return linked(ctx, email);
  },
});

/** The key is linked now (said on stderr as it happened): its account's orgs are the result. */
async function linked(ctx: SessionContext, email: string): Promise<CommandResult> {
  // Read afresh: the session's later lines act for the account.
  const identity = await ctx.readIdentity();
  const orgs = identity.kind === 'account' ? await orgsOfUser(ctx.deps.db, identity.user) : null;
  return {
    data: { email, fingerprint: identity.key.fingerprint, verified: orgs !== null, orgs: orgsJson(orgs ?? []) },
    text: orgs === null ? '' : orgsTable(orgs),
  };
}
