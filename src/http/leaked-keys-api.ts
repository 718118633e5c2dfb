import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { AppError, MAX_LEAK_MATCHES, parseInput, reportLeakedKeys, revokeKeyAsHolder } from '../core/index.js';
import { bearerKeyOf, readBody, readJson, sendJson } from './io.js';
import type { Route, RouteContext } from './route.js';
import { signatureHolds, type SecretScanningKeys } from './secret-scanning-keys.js';

/** The key presented once: as `Authorization: Bearer KEY` or as the body `{"api_key": KEY}`. */
const PresentedKey = z
  .object({
    bearer: z.string().optional(),
    body: z
      .object(
        { api_key: z.string({ error: (issue) => `must be a string, not ${issue.input === null ? 'null' : typeof issue.input}` }).optional() },
        { error: 'the body must be a JSON object: {"api_key": KEY}' },
      )
      .optional(),
  })
  .refine((k) => k.bearer === undefined || k.body?.api_key === undefined, {
    message: 'send the key once: as Authorization: Bearer KEY or as {"api_key": KEY}, not both',
  });

/**
 * POST /api/api-keys/revoke: whoever holds a key may kill it. Anything but a live key gets the
 * very 401 `/api/whoami` gives, so the endpoint tells nothing about keys.
 */
export async function revokeAsHolder({ deps, req, res, origin }: RouteContext): Promise<void> {
  const body = hasBody(req) ? await readJson(req) : undefined;
  const presented = parseInput(PresentedKey, { bearer: bearerOf(req), body }, 'INVALID_REQUEST');
  const apiKey = presented.bearer ?? presented.body?.api_key;
  if (apiKey === undefined) throw new AppError('INVALID_API_KEY');
  const { api_key_id } = await revokeKeyAsHolder(deps, apiKey, origin);
  sendJson(res, 200, { success: true, revoked: true, api_key_id });
}

/** The Bearer token, as `/api/whoami` reads it; no header: undefined (the key may be in the body); any other header: the 401. */
function bearerOf(req: IncomingMessage): string | undefined {
  if (req.headers.authorization === undefined) return undefined;
  const key = bearerKeyOf(req);
  if (key === null) throw new AppError('INVALID_API_KEY');
  return key;
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}

/**
 * A report may hold many matches (GitHub batches them): its own limit, above the 16 KB of the
 * other JSON routes, and read only once the signing key is known.
 */
export const LEAK_REPORT_BODY_LIMIT = 512 * 1024;

/** GitHub's match: https://docs.github.com/en/code-security/secret-scanning (partner program). */
const LeakReport = z
  .array(
    z.object({
      token: z.string(),
      type: z.string(),
      // "may be empty"; null or absent are taken the same way.
      url: z.string().nullish(),
      source: z.string().nullish(),
    }),
  )
  .max(MAX_LEAK_MATCHES, `at most ${MAX_LEAK_MATCHES} matches per report`);

/** POST /api/secret-scanning/github, present only with SECRET_SCANNING_KEYS_FILE. */
export function secretScanningRoute(keys: SecretScanningKeys): Route {
  return { handler: (ctx) => receiveGithubReport(ctx, keys), json: false, budget: 'signed' };
}

async function receiveGithubReport({ deps, req, res, origin }: RouteContext, keys: SecretScanningKeys): Promise<void> {
  const identifier = req.headers['github-public-key-identifier'];
  const signature = req.headers['github-public-key-signature'];
  if (typeof identifier !== 'string' || identifier === '' || typeof signature !== 'string' || signature === '') {
    throw new AppError('LEAK_REPORT_UNSIGNED');
  }
  const key = await keys.keyFor(identifier);
  if (!key) throw new AppError('LEAK_REPORT_KEY_UNKNOWN');
  const raw = await readBody(req, LEAK_REPORT_BODY_LIMIT).catch((err: unknown) => {
    if (!(err instanceof AppError && err.code === 'BODY_TOO_LARGE')) throw err;
    res.setHeader('connection', 'close'); // the rest of the body is not worth reading
    throw new AppError('LEAK_REPORT_TOO_LARGE');
  });
  // The bytes as they came: GitHub signs them, and any re-serialisation would change them.
  if (!signatureHolds(key, raw, signature)) throw new AppError('LEAK_REPORT_SIGNATURE_INVALID');
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new AppError('LEAK_REPORT_INVALID', { detail: 'the body is not JSON' });
  }
  const matches = parseInput(LeakReport, json, 'LEAK_REPORT_INVALID').map((m) => ({
    token: m.token,
    type: m.type,
    url: m.url ?? null,
    source: m.source ?? null,
  }));
  const labels = await reportLeakedKeys(deps, {
    matches,
    reportSha256: createHash('sha256').update(raw).digest('hex'),
    keyIdentifier: identifier,
    origin,
  });
  // GitHub's false-positive feedback format.
  sendJson(
    res,
    200,
    matches.map((m, i) => ({ token_raw: m.token, token_type: m.type, label: labels[i] })),
  );
}
