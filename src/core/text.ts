/**
 * Text hygiene, in one place: what a stored human string (label, org name, note, key comment)
 * may hold, and how text that reaches a terminal is made harmless.
 *
 * Beyond what Postgres (no NUL) and JSON columns (no broken UTF-16) need, a string shown to
 * other people must not be able to steer a terminal or hide what it says: no control
 * characters (C0, DEL, C1: escape sequences), no bidi overrides, isolates or marks (text that
 * reads differently from what it is, "Trojan Source"), no zero-width characters (two labels
 * that look the same and are not).
 */

/** Character classes, as regex ranges (for use inside `[...]`). */
const C0_AND_DEL = '\\u0000-\\u001f\\u007f';
const C1 = '\\u0080-\\u009f';
/** Embeddings and overrides (LRE RLE PDF LRO RLO), isolates (LRI RLI FSI PDI), marks (LRM RLM ALM). */
const BIDI = '\\u202a-\\u202e\\u2066-\\u2069\\u200e\\u200f\\u061c';
/** ZWSP ZWNJ ZWJ (and the LRM/RLM marks), WORD JOINER, ZERO WIDTH NO-BREAK SPACE (BOM). */
const ZERO_WIDTH = '\\u200b-\\u200f\\u2060\\ufeff';
const LONE_SURROGATE_SOURCE = '[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]';

const CONTROL_CHARS = new RegExp(`[${C0_AND_DEL}]+`, 'g'); // runs, so a CRLF becomes one replacement
const LONE_SURROGATE = new RegExp(LONE_SURROGATE_SOURCE, 'g');
/** Everything refused in stored text except C0/DEL (which a note turns into spaces). */
const INVISIBLE = new RegExp(`[${C1}${BIDI}${ZERO_WIDTH}]|${LONE_SURROGATE_SOURCE}`);
/** Every character that must never reach a terminal as is. */
const UNSAFE = new RegExp(`[${C0_AND_DEL}${C1}${BIDI}${ZERO_WIDTH}]|${LONE_SURROGATE_SOURCE}`);
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'g');

/** The refusal, without the field name (the caller's path or prefix names it). */
export const UNSAFE_TEXT_MESSAGE = 'must not contain invisible or control characters';

export function hasControlChars(text: string): boolean {
  return text.search(CONTROL_CHARS) !== -1;
}

export function hasLoneSurrogate(text: string): boolean {
  return text.search(LONE_SURROGATE) !== -1;
}

/**
 * The first character stored text must not hold, as a UTF-16 code unit (every refused character
 * is a single unit), or null when the text is clean. With `allowControls`, C0 controls and DEL
 * are let through (for text that replaces them itself).
 */
export function firstUnsafeChar(text: string, options: { allowControls?: boolean } = {}): number | null {
  const match = (options.allowControls ? INVISIBLE : UNSAFE).exec(text);
  return match ? match[0].charCodeAt(0) : null;
}

/** `U+202E`. */
export function codePointName(unit: number): string {
  return `U+${unit.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** `must not contain invisible or control characters (U+202E)`, or null when the text is clean. */
export function unsafeTextProblem(text: string, options: { allowControls?: boolean } = {}): string | null {
  const unit = firstUnsafeChar(text, options);
  return unit === null ? null : `${UNSAFE_TEXT_MESSAGE} (${codePointName(unit)})`;
}

/** Text a person typed: well-formed Unicode, no control, bidi or zero-width characters. */
export function isPlainText(text: string): boolean {
  return firstUnsafeChar(text) === null;
}

export function replaceControlChars(text: string, replacement: string): string {
  return text.replace(CONTROL_CHARS, replacement);
}

export function replaceLoneSurrogates(text: string): string {
  return text.replace(LONE_SURROGATE, '\uFFFD');
}

/**
 * Shows every character refused above as a visible `\uXXXX` escape (lowercase hex, like JSON),
 * so text stored before these rules, or from anywhere else, cannot move the cursor, recolour the
 * screen or reorder what a terminal displays. Everything else is left as is.
 */
export function escapeUnsafeChars(text: string): string {
  return text.replace(UNSAFE_ALL, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
