/** What text may hold before it reaches Postgres (no NUL) or JSON columns (no broken UTF-16). */

const CONTROL_CHARS = /[\u0000-\u001f\u007f]+/g; // runs, so a CRLF becomes one replacement
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function hasControlChars(text: string): boolean {
  return text.search(CONTROL_CHARS) !== -1;
}

export function hasLoneSurrogate(text: string): boolean {
  return text.search(LONE_SURROGATE) !== -1;
}

/** Text a person typed: well-formed Unicode, no control characters. */
export function isPlainText(text: string): boolean {
  return !hasControlChars(text) && !hasLoneSurrogate(text);
}

export function replaceControlChars(text: string, replacement: string): string {
  return text.replace(CONTROL_CHARS, replacement);
}

export function replaceLoneSurrogates(text: string): string {
  return text.replace(LONE_SURROGATE, '\uFFFD');
}
