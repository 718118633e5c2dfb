import { nowOf, undoUndeliveredRotation, rotateApiKey, RotationOverlapSchema } from '../../core/index.js';
import { failure, optionalString, parseArgument } from '../../command/framework.js';
import { escapeForTerminal } from '../../text/table.js';
import { accountCommand } from '../command.js';
import { permissionNames } from './create.js';

export const rotate = accountCommand({
  name: 'rotate',
  summary: 'replace an API key with a new one; the old one keeps working for an overlap',
  usage: `rotate KEY_ID [--overlap DURATION] [--json]

KEY_ID: the id as "list" shows it (its first 8 characters), or more of it, up to the whole id.
Mints a key with the same org, label, permissions and lifetime, printed once, alone on stdout
(like create). You may rotate the keys you may revoke; a key is rotated once (rotate its successor).

  --overlap DURATION  how long the old key keeps working: 1h (the default), 15m, 2d...;
                      0 = it stops at once; at most 7d
  --json              print {"api_key", "api_key_id", "replaces", "old_key_expires_at", "org_id",
                      "org_name", "permissions", "expires_at"}`,
  options: {
    overlap: { type: 'string' },
  },
  positionals: { min: 1, max: 1, names: 'KEY_ID' },
  async run(ctx, args) {
    const overlap = optionalString(args, 'overlap');
    const overlapMs = overlap === undefined ? undefined : parseArgument(RotationOverlapSchema, overlap, '--overlap');
    const rotated = await rotateApiKey(ctx.deps, {
      actor: ctx.identity.user,
      keyId: args.positionals[0] ?? '',
      overlapMs,
      origin: ctx.origin,
      keyType: ctx.identity.key.type,
    });
    // As with create: a key nobody received must not live. The old key stays as rotated (it
    // stops at the end of the overlap); its owner makes a fresh key with create.
    if (ctx.interrupted.aborted) {
      // As over HTTP: the new key is revoked and the old one given back as it was, so it can be rotated again.
      const { oldKeyRestored } = await undoUndeliveredRotation(ctx.deps, rotated, ctx.origin);
      ctx.deps.log.warn({ apiKeyId: rotated.api_key_id, oldKeyRestored }, 'command interrupted before the key was delivered; key revoked');
      const old = oldKeyRestored
        ? `the old key ${rotated.replaces} is as it was before (rotate it again).`
        : `the old key still stops working at ${rotated.old_key_expires_at.toISOString()}.`;
      return failure(`Interrupted: API key ${rotated.api_key_id} (replacing ${rotated.replaces}) was created but never shown, so it has been revoked; ${old}\n`);
    }

    const now = nowOf(ctx.deps);
    const stops = rotated.old_key_expires_at.getTime() <= now.getTime() ? 'has stopped working' : `works until ${rotated.old_key_expires_at.toISOString()}`;
    const expires = rotated.expires_at ? `expires ${rotated.expires_at.toISOString()}` : 'no expiry';
    return {
      data: {
        success: true,
        api_key: rotated.api_key,
        api_key_id: rotated.api_key_id,
        replaces: rotated.replaces,
        old_key_expires_at: rotated.old_key_expires_at,
        org_id: rotated.org_id,
        org_name: rotated.org_name,
        permissions: rotated.permissions,
        expires_at: rotated.expires_at,
      },
      text: `${rotated.api_key}\n`,
      note:
        `Created API key ${rotated.api_key_id} (${escapeForTerminal(rotated.label)}) in org ${escapeForTerminal(rotated.org_name)} ` +
        `(${permissionNames(ctx.deps, rotated.permissions)}; ${expires}). It will not be shown again.\n` +
        `It replaces API key ${rotated.replaces}, which ${stops}.\n`,
    };
  },
});
