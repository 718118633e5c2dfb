import { z } from 'zod';
import { AppError, type ErrorCode } from './errors.js';
import { parsePublicKeyLine, type PublicKey } from './ssh-public-key.js';
import { replaceControlChars, unsafeTextProblem } from './text.js';

/** "is required" when absent; for any other type, what was sent instead (`{"email": 123}` is not missing). */
const requiredString = () =>
  z.string({ error: (issue) => (issue.input === undefined ? 'is required' : `must be a string, not ${issue.input === null ? 'null' : typeof issue.input}`) });

/** Refuses control, bidi, invisible and blank characters and lone surrogates (see text.ts), naming the first one found. */
function refuseUnsafeText(options: { allowControls?: boolean } = {}) {
  return (text: string, ctx: z.RefinementCtx<string>): void => {
    const problem = unsafeTextProblem(text, options);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  };
}

/** A `.pub` line, parsed and normalised; a bad key fails validation with the reason. */
export const PublicKeyLineSchema = requiredString()
  .max(16_384)
  .transform((line, ctx): PublicKey => {
    const parsed = parsePublicKeyLine(line);
    if (!parsed.ok) {
      ctx.addIssue({ code: 'custom', message: parsed.reason });
      return z.NEVER;
    }
    return parsed.key;
  });

export const LabelSchema = requiredString()
  .trim()
  .min(5, 'must be at least 5 characters')
  .max(100, 'must be at most 100 characters')
  .superRefine(refuseUnsafeText());

export const OrgNameSchema = z
  .string()
  .trim()
  .min(1)
  .max(64)
  .superRefine(refuseUnsafeText())
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be letters, digits, ".", "_" or "-"');

/** An org name someone asks for: looked up, never created, so only plain text is required. */
export const OrgNameLookupSchema = z.string().trim().max(64).superRefine(refuseUnsafeText());

/**
 * The free-text note a client appends to the email (`vers login --git from <hostname>`). Control
 * characters and newlines become spaces (clients send command output); the other characters
 * text.ts refuses (bidi, invisible, blank, C1), and broken UTF-16, are refused: it goes into the email.
 */
export const NoteSchema = z
  .string()
  .max(200, 'must be at most 200 characters')
  .superRefine(refuseUnsafeText({ allowControls: true }))
  .transform((note) => replaceControlChars(note, ' ').trim())
  .transform((note) => (note === '' ? null : note));

/** Validates with zod; failure becomes the given AppError with a readable detail. */
export function parseInput<S extends z.ZodType>(schema: S, data: unknown, code: ErrorCode): z.output<S> {
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  throw new AppError(code, { detail: describeIssues(result.error) });
}

export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const field = issue.path.join('.');
      // zod's own words for a wrong type; ours (requiredString) already say it plainly.
      const message = /^Invalid input: expected \w+, received undefined$/.test(issue.message)
        ? 'is required'
        : issue.message.replace(/^Invalid input: expected (\w+), received (\w+)$/, 'must be a $1, not $2');
      return field ? `${field}: ${message}` : message;
    })
    .join('; ');
}
