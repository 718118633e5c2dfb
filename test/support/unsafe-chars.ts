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
  // Invisible by Unicode property (format Cf, default-ignorable), each a case found passing before.
  ['soft hyphen', '\u00ad'],
  ['Mongolian vowel separator', '\u180e'],
  ['function application', '\u2061'],
  ['invisible plus', '\u2064'],
  ['interlinear annotation anchor', '\ufff9'],
  ['language tag', '\u{e0001}'],
  ['tag latin capital A', '\u{e0041}'],
  ['musical symbol begin beam', '\u{1d173}'],
  ['variation selector-16', '\ufe0f'],
  ['variation selector-17', '\u{e0100}'],
  ['Hangul filler', '\u3164'],
  ['Hangul choseong filler', '\u115f'],
  ['Hangul halfwidth filler', '\uffa0'],
  ['combining grapheme joiner', '\u034f'],
  ['Khmer vowel inherent AQ', '\u17b4'],
  // Blank but not a space.
  ['Braille pattern blank', '\u2800'],
  ['no-break space', '\u00a0'],
  ['ideographic space', '\u3000'],
  ['line separator', '\u2028'],
  // Private use and noncharacters.
  ['private use', '\ue000'],
  ['private use, plane 15', '\u{f0000}'],
  ['noncharacter', '\ufdd0'],
];

export const UNSAFE_CHARS: UnsafeChar[] = entries.map(([what, char, isC0]) => ({
  what,
  char,
  codePoint: `U+${(char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`,
  isC0: isC0 ?? false,
}));

/** How the terminal output shows it: `\u202e`; an astral character as its two UTF-16 units, like JSON. */
export function escaped(char: string): string {
  return [...Array(char.length).keys()].map((i) => `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`).join('');
}

/** Any raw character of the classes above (a newline and a space are allowed: output is made of lines). */
export const RAW_UNSAFE =
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2800]|\p{Cf}|\p{Default_Ignorable_Code_Point}|\p{Co}|\p{Noncharacter_Code_Point}|\p{Cs}|(?![\n ])\p{White_Space}/u;

export const REFUSAL = 'must not contain invisible or control characters';
