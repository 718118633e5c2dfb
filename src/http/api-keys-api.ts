import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { AppError, authenticateApiKey, parseInput, rotateApiKeyAsHolder, RotationOverlapSchema, undoUndeliveredRotation } from '../core/index.js';
import { bearerKeyOf, JSON_BODY_LIMIT, readBody, sendJson } from './io.js';
import type { RouteContext } from './route.js';

const RotateRequest = z.object({ overlap: RotationOverlapSchema.optional() });

/**
 * A body that may be left out: none (or only whitespace) reads as `{}`, anything else must be
 * JSON. Read whole before anything is judged, so a bad key's answer never depends on the body.
 */
async function optionalJsonBody(req: IncomingMessage): Promise<() => unknown> {
  const raw = (await readBody(req, JSON_BODY_LIMIT)).toString('utf8');
  return () => {
    if (raw.trim() === '') return {};
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') throw new AppError('UNSUPPORTED_CONTENT_TYPE');
    try {
      return JSON.parse(raw);
    } catch {
      throw new AppError('MALFORMED_JSON');
    }
  };
}

/**
 * POST /api/api-keys/rotate — self-rotation: whoever holds a key renews it with nothing but the
 * key (a CI job, an agent). A key that does not authenticate gets exactly GET /api/whoami's 401.
 */
export async function rotateOwnKey({ deps, req, res, origin }: RouteContext): Promise<void> {
  const apiKey = bearerKeyOf(req);
  if (apiKey === null) throw new AppError('INVALID_API_KEY');
  const body = await optionalJsonBody(req);
  // The key first: an invalid one answers as whoami does, whatever the body holds.
  await authenticateApiKey(deps, apiKey);
  const input = parseInput(RotateRequest, body(), 'INVALID_REQUEST');
  const rotated = await rotateApiKeyAsHolder(deps, { apiKey, overlapMs: input.overlap, origin });
  const delivered = await sendJsonIfConnected(res, {
    success: true,
    api_key: rotated.api_key,
    api_key_id: rotated.api_key_id,
    replaces: rotated.replaces,
    old_key_expires_at: rotated.old_key_expires_at,
    org_id: rotated.org_id,
    org_name: rotated.org_name,
    permissions: rotated.permissions,
    expires_at: rotated.expires_at,
  });
  // The holder never got the new key, and the old one is rotated: without this they would hold
  // a key that cannot be renewed and stops at the end of the overlap.
  if (!delivered) {
    const ids = { apiKeyId: rotated.api_key_id, replaces: rotated.replaces };
    // The answer is gone either way: a failure here is only logged, there is nobody to tell.
    await undoUndeliveredRotation(deps, rotated, origin).then(
      ({ oldKeyRestored }) => deps.log.warn({ ...ids, oldKeyRestored }, 'rotation answer not delivered; new key revoked'),
      (err: unknown) => deps.log.error({ ...ids, err: (err as Error).message }, 'rotation answer not delivered, and undoing it failed'),
    );
  }
}

/**
 * A 200 with `body`, unless the client has already left; true once all of it was handed to the
 * connection, false if the client was gone before that.
 */
function sendJsonIfConnected(res: ServerResponse, body: unknown): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    res.once('finish', () => resolve(true));
    res.once('close', () => resolve(res.writableFinished));
    sendJson(res, 200, body);
  });
}
