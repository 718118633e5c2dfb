/**
 * Text hygiene, in one place: what a stored human string (label, org name, note, key comment)
 * may hold, and how text that reaches a terminal is made harmless.
 *
 * Beyond what Postgres (no NUL) and JSON columns (no broken UTF-16) need, a string shown to
 * other people must not be able to steer a terminal or hide what it says: no control
 * characters (C0, DEL, C1: escape sequences), no bidi overrides, isolates or marks (text that
 * reads differently from what it is, "Trojan Source"), nothing invisible or blank (two labels
 * that look the same and are not; text hidden in an email). Refused by Unicode property, not by
 * a list, so characters of the same kind added later are refused too.
 */

/** Character classes, as regex sources for a `u` regex (each matches one code point). */
const C0_AND_DEL = '[\\u0000-\\u001f\\u007f]';
const C1 = '[\\u0080-\\u009f]';
/**
 * Format characters (bidi controls, zero-width characters, soft hyphen, invisible operators,
 * interlinear annotation, tags) and every default-ignorable code point (variation selectors,
 * combining grapheme joiner, Hangul fillers): drawn as nothing, or not drawn at all.
 */
const INVISIBLE_FORMAT = '\\p{Cf}|\\p{Default_Ignorable_Code_Point}';
/** Private use (each font draws it its own way, or not at all) and noncharacters (never text). */
const PRIVATE_AND_NONCHARACTER = '\\p{Co}|\\p{Noncharacter_Code_Point}';
/**
 * Blank but not a plain space: NBSP, ideographic and other sized spaces, line and paragraph
 * separators (the C0 ones are controls above), and BRAILLE PATTERN BLANK, which is neither.
 */
const BLANK = '(?![\\u0000-\\u0020])\\p{White_Space}|\\u2800';
/** In a `u` regex a surrogate pair is one code point: this matches only lone halves. */
const LONE_SURROGATE_CODE_POINT = '\\p{Cs}';
const LONE_SURROGATE_SOURCE = '[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]';
const REFUSED_BESIDES_C0 = [C1, INVISIBLE_FORMAT, PRIVATE_AND_NONCHARACTER, BLANK, LONE_SURROGATE_CODE_POINT].join('|');

const CONTROL_CHARS = /[\u0000-\u001f\u007f]+/g; // runs, so a CRLF becomes one replacement
const LONE_SURROGATE = new RegExp(LONE_SURROGATE_SOURCE, 'g');
/** Everything refused in stored text except C0/DEL (which a note turns into spaces). */
const INVISIBLE = new RegExp(REFUSED_BESIDES_C0, 'u');
/** Every character that must never reach a terminal as is. */
const UNSAFE = new RegExp(`${C0_AND_DEL}|${REFUSED_BESIDES_C0}`, 'u');
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'gu');

/** The refusal, without the field name (the caller's path or prefix names it). */
export const UNSAFE_TEXT_MESSAGE = 'must not contain invisible or control characters';

export function hasControlChars(text: string): boolean {
  return text.search(CONTROL_CHARS) !== -1;
}

export function hasLoneSurrogate(text: string): boolean {
  return text.search(LONE_SURROGATE) !== -1;
}

/**
 * The first character stored text must not hold, as a code point (a lone surrogate as its own
 * value), or null when the text is clean. With `allowControls`, C0 controls and DEL are let
 * through (for text that replaces them itself).
 */
export function firstUnsafeChar(text: string, options: { allowControls?: boolean } = {}): number | null {
  const match = (options.allowControls ? INVISIBLE : UNSAFE).exec(text);
  return match ? (match[0].codePointAt(0) ?? null) : null;
}

/** `U+202E`, `U+E0041`. */
export function codePointName(codePoint: number): string {
  return `U+${codePoint.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** `must not contain invisible or control characters (U+202E)`, or null when the text is clean. */
export function unsafeTextProblem(text: string, options: { allowControls?: boolean } = {}): string | null {
  const codePoint = firstUnsafeChar(text, options);
  return codePoint === null ? null : `${UNSAFE_TEXT_MESSAGE} (${codePointName(codePoint)})`;
}

/** Text a person typed: well-formed Unicode, no control, bidi, invisible or blank characters. */
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
 * Shows every character refused above as a visible `\uXXXX` escape (lowercase hex, like JSON:
 * one per UTF-16 unit, so a tag character is `\udb40\udc41`), so text stored before these rules,
 * or from anywhere else, cannot move the cursor, recolour the screen, reorder or hide what a
 * terminal displays. Everything else is left as is.
 */
export function escapeUnsafeChars(text: string): string {
  return text.replace(UNSAFE_ALL, (char) => {
    let shown = '';
    for (let i = 0; i < char.length; i++) shown += `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`;
    return shown;
  });
}

/** A local part (quoted or not) and its `@`, when a domain follows. */
const EMAIL_LOCAL_PART = /(?:"[^"\r\n]*"|[^\s<>()[\]\\,;:@"]+)@(?=[^\s<>()[\]\\,;:@"])/g;

/**
 * Text from elsewhere (an SMTP server's refusal names the recipient) with every email address's
 * local part masked, for logs and stored errors: `550 5.1.1 <***@example.com>: Recipient address
 * rejected`. The domain stays: which mail system refused is what an operator needs.
 */
export function maskEmailAddresses(text: string): string {
  return text.replace(EMAIL_LOCAL_PART, '***@');
}
