import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { AppError, authenticateApiKey, parseInput, rotateApiKeyAsHolder, RotationOverlapSchema } from '../core/index.js';
import { JSON_BODY_LIMIT, readBody, sendJson } from './io.js';
import type { RouteContext } from './route.js';

/** The API key of `Authorization: Bearer <api_key>`; anything else is the same 401 as a wrong key. */
export function bearerKeyOf(req: IncomingMessage): string {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (!match) throw new AppError('INVALID_API_KEY');
  return match[1]!;
}

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
  const body = await optionalJsonBody(req);
  // The key first: an invalid one answers as whoami does, whatever the body holds.
  await authenticateApiKey(deps, apiKey);
  const input = parseInput(RotateRequest, body(), 'INVALID_REQUEST');
  const rotated = await rotateApiKeyAsHolder(deps, { apiKey, overlapMs: input.overlap, origin });
  sendJson(res, 200, {
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
}
