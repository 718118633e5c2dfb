/**
 * One example of each character class stored text must refuse and terminals must never see raw,
 * with the code point the refusal names. Used by the text-hygiene and public-key tests.
 */
export type UnsafeChar = { what: string; char: string; codePoint: string; isC0: boolean };

const entries: Array<[what: string, char: string, isC0?: boolean]> = [
  ['C0 control ESC', '\u001b', true],
  ['C0 control NUL', '\u0000', true],
  ['DEL', '\u007f', true],
  ['C1 control CSI', '\u009b'],
  ['C1 control NEL', '\u0085'],
  ['bidi embedding LRE', '\u202a'],
  ['bidi override RLO', '\u202e'],
  ['bidi isolate RLI', '\u2067'],
  ['bidi isolate PDI', '\u2069'],
  ['left-to-right mark', '\u200e'],
  ['right-to-left mark', '\u200f'],
  ['Arabic letter mark', '\u061c'],
  ['zero-width space', '\u200b'],
  ['zero-width non-joiner', '\u200c'],
  ['zero-width joiner', '\u200d'],
  ['word joiner', '\u2060'],
  ['zero-width no-break space (BOM)', '\ufeff'],
  ['lone high surrogate', '\ud83d'],
  ['lone low surrogate', '\ude00'],
];

export const UNSAFE_CHARS: UnsafeChar[] = entries.map(([what, char, isC0]) => ({
  what,
  char,
  codePoint: `U+${char.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`,
  isC0: isC0 ?? false,
}));

/** How the terminal output shows it: `\u202e`. */
export function escaped(char: string): string {
  return `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

/** Any raw character of the classes above (a newline is allowed: output is made of lines). */
export const RAW_UNSAFE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export const REFUSAL = 'must not contain invisible or control characters';
