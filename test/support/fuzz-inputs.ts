import { crc32 } from 'node:zlib';
import fc from 'fast-check';

/**
 * Input generators for test/command/fuzz.test.ts: valid-looking values (real emails, real keys, labels,
 * org names) mixed with everything a client could send instead — wrong types, arbitrary JSON,
 * control characters, lone surrogates, NUL, huge strings, prototype-pollution keys.
 */

type Arb<T> = fc.Arbitrary<T>;

const chr = (code: number) => String.fromCharCode(code);

/** A UTF-16 code unit no well-formed string holds alone. */
export const loneSurrogate: Arb<string> = fc.integer({ min: 0xd800, max: 0xdfff }).map(chr);

export const controlChar: Arb<string> = fc.oneof(
  fc.integer({ min: 0, max: 0x1f }).map(chr),
  fc.constantFrom('\u007f', '\u0085', '\u2028', '\u2029', '\ufeff', '\u200b', '\u202e'),
);

/** One character chosen to hurt: controls, surrogates, quotes, escapes, look-alikes, astral. */
export const weirdChar: Arb<string> = fc.oneof(
  controlChar,
  loneSurrogate,
  fc.constantFrom('\u0000', '"', "'", '\\', '%', '<', '>', '&', ';', '=', '+', '@', ' ', '\u00a0', '\u{1f600}', 'İ', 'ß', '\u212a', 'ﬀ', '\u0301'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
);

/** A string of `length` code units built by repeating `seed`. */
function repeatTo(seed: string, length: number): string {
  return seed.repeat(Math.ceil(length / Math.max(1, seed.length))).slice(0, length);
}

export const hugeString: Arb<string> = fc
  .tuple(fc.string({ unit: 'binary', minLength: 1, maxLength: 3 }), fc.integer({ min: 200, max: 20_000 }))
  .map(([seed, length]) => repeatTo(seed, length));

export const nastyString: Arb<string> = fc.oneof(
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 3 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }), weight: 2 },
  { arbitrary: fc.string({ unit: weirdChar, maxLength: 12 }), weight: 3 },
  { arbitrary: hugeString, weight: 1 },
  {
    arbitrary: fc.constantFrom('', ' ', '\t', 'null', 'undefined', '__proto__', 'constructor', '[object Object]', '{}', '\u0000', 'NaN', 'true', "' OR 1=1 --", '%s%n', '${x}'),
    weight: 2,
  },
);

/** A valid value, or that value slightly broken: a character inserted, dropped, case flipped, padded, cut. */
export function mutated(arb: Arb<string>): Arb<string> {
  return fc.tuple(arb, fc.nat(7), fc.nat(), weirdChar).map(([s, how, at, c]) => {
    const i = s.length === 0 ? 0 : at % (s.length + 1);
    switch (how) {
      case 0:
        return s.slice(0, i) + c + s.slice(i);
      case 1:
        return s.slice(0, i) + s.slice(i + 1);
      case 2:
        return s.toUpperCase();
      case 3:
        return ` \t${s}\n `;
      case 4:
        return s.slice(0, i);
      case 5:
        return s + c.repeat(1 + (at % 5));
      case 6:
        return s.slice(0, i) + c + s.slice(i + 1);
      default:
        return s + s;
    }
  });
}

/** Values of the wrong type for a field expecting a string. */
export const wrongType: Arb<unknown> = fc.constantFrom<unknown>(null, 0, 1, -1, 1e308, 0.5, true, false, [], {}, ['x'], { $ne: null }, [null], { toString: 'x' });

export const anyJson: Arb<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 3 },
  { arbitrary: fc.object({ maxDepth: 2, maxKeys: 4 }).map((o) => JSON.parse(JSON.stringify(o)) as unknown), weight: 1 },
);

/** A field left out of the body altogether. */
export const ABSENT: unique symbol = Symbol('absent');
export type FieldValue = unknown | typeof ABSENT;

/** A body field: mostly the valid-looking value, sometimes any JSON, a wrong type, or absent. */
export function field(valid: Arb<unknown>, absentWeight = 1): Arb<FieldValue> {
  return fc.oneof(
    { arbitrary: valid, weight: 16 },
    { arbitrary: anyJson, weight: 1 },
    { arbitrary: wrongType, weight: 1 },
    { arbitrary: fc.constant<FieldValue>(ABSENT), weight: absentWeight },
  );
}

const extraKey: Arb<string> = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'success', 'email', 'ssh_public_key', 'label', 'org_name', 'body'),
  nastyString,
);

/**
 * A JSON object's text from ordered entries, written by hand so that `__proto__` stays an own
 * key and a repeated key reaches the server (JSON.parse keeps the last).
 */
export function objectText(entries: Array<[string, unknown]>): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`;
}

/** The entries of a request object: the given fields (some absent), plus up to three stray ones. */
export function requestEntries(fields: Record<string, Arb<FieldValue>>): Arb<Array<[string, unknown]>> {
  return fc
    .tuple(fc.record(fields), fc.array(fc.tuple(extraKey, anyJson), { maxLength: 3 }), fc.boolean())
    .map(([record, extra, extraFirst]) => {
      const own = Object.entries(record).filter(([, v]) => v !== ABSENT) as Array<[string, unknown]>;
      return extraFirst ? [...extra, ...own] : [...own, ...extra];
    });
}

/** A whole JSON endpoint body as bytes: mostly a request object, else any JSON, broken JSON, raw bytes, huge. */
export function jsonBody(entries: Arb<Array<[string, unknown]>>): Arb<Buffer> {
  const text = entries.map(objectText);
  const encoded = (t: Arb<string>) =>
    fc
      .tuple(t, fc.oneof({ arbitrary: fc.constant<BufferEncoding | 'bom'>('utf8'), weight: 16 }, fc.constantFrom<BufferEncoding | 'bom'>('latin1', 'utf16le', 'bom')))
      .map(([s, enc]) => (enc === 'bom' ? Buffer.from(`\ufeff${s}`, 'utf8') : Buffer.from(s, enc)));
  return fc.oneof(
    { arbitrary: encoded(text), weight: 30 },
    { arbitrary: encoded(anyJson.map((v) => JSON.stringify(v))), weight: 3 },
    {
      // Broken JSON: the request cut short, or one character changed.
      arbitrary: encoded(fc.tuple(text, fc.nat(), weirdChar, fc.boolean()).map(([s, at, c, cut]) => {
        const i = at % (s.length + 1);
        return cut ? s.slice(0, i) : s.slice(0, i) + c + s.slice(i + 1);
      })),
      weight: 2,
    },
    { arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)), weight: 2 },
    {
      // Around and beyond the 16 KB limit.
      arbitrary: fc
        .tuple(entries, fc.integer({ min: 16 * 1024 - 200, max: 40 * 1024 }))
        .map(([e, size]) => {
          const base = objectText(e);
          const pad = Math.max(0, size - base.length - 12);
          return Buffer.from(objectText([...e, ['pad', 'x'.repeat(pad)]]), 'utf8');
        }),
      weight: 1,
    },
    { arbitrary: fc.constant(Buffer.alloc(0)), weight: 1 },
    {
      // Deep nesting, within and beyond the size limit.
      arbitrary: fc
        .tuple(fc.integer({ min: 50, max: 3000 }), fc.boolean())
        .map(([n, arrays]) => Buffer.from(arrays ? '['.repeat(n) + ']'.repeat(n) : `${'{"email":'.repeat(n)}1${'}'.repeat(n)}`)),
      weight: 1,
    },
  );
}

/** Characters Node's HTTP client lets into a header value. */
const headerChar: Arb<string> = fc.oneof(
  { arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map(chr), weight: 8 },
  { arbitrary: fc.integer({ min: 0x80, max: 0xff }).map(chr), weight: 1 },
  { arbitrary: fc.constant('\t'), weight: 1 },
);
export const headerString: Arb<string> = fc.string({ unit: headerChar, maxLength: 120 });

/** Keeps only what a header value may hold (the client refuses the rest before sending). */
export function headerSafe(s: string): string {
  return s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?');
}

export const jsonContentType: Arb<string | undefined> = fc.oneof(
  { arbitrary: fc.constant('application/json'), weight: 20 },
  {
    arbitrary: fc.constantFrom('application/json; charset=utf-8', 'Application/JSON', 'application/json ; charset=latin1', 'application/json;', 'application/json;;;x=y'),
    weight: 3,
  },
  {
    arbitrary: fc.constantFrom(
      undefined,
      '',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=xyz',
      'application/jsonp',
      'application/json-patch+json',
      'text/json',
      '*/*',
    ),
    weight: 2,
  },
  { arbitrary: headerString, weight: 1 },
);

export const formContentType: Arb<string | undefined> = fc.oneof(
  { arbitrary: fc.constant('application/x-www-form-urlencoded'), weight: 10 },
  { arbitrary: fc.constantFrom('application/x-www-form-urlencoded; charset=utf-8', 'APPLICATION/X-WWW-FORM-URLENCODED'), weight: 2 },
  { arbitrary: fc.constantFrom(undefined, '', 'application/json', 'text/plain', 'multipart/form-data; boundary=xyz'), weight: 2 },
  { arbitrary: headerString, weight: 1 },
);

/** Percent-encodes the UTF-8 bytes of any string (a lone surrogate becomes U+FFFD), unlike encodeURIComponent, which throws. */
export function percentEncode(s: string): string {
  return [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9_.~-]/.test(chr(b)) ? chr(b) : `%${b.toString(16).padStart(2, '0').toUpperCase()}`)).join('');
}

/** Raw characters Node's HTTP client lets into a request path (0x21-0xff). */
export const rawQueryString: Arb<string> = fc.string({
  unit: fc.oneof({ arbitrary: fc.integer({ min: 0x21, max: 0x7e }).map(chr), weight: 99 }, { arbitrary: fc.integer({ min: 0x80, max: 0xff }).map(chr), weight: 1 }),
  maxLength: 80,
});

// ---- Domain values ----

export function emailArb(pool: string[]): Arb<string> {
  const known = fc.constantFrom(...pool);
  return fc.oneof(
    { arbitrary: known, weight: 6 },
    { arbitrary: known.map((e) => ` ${e.toUpperCase()}\t`), weight: 1 },
    // Aliases: base+tag@ shares the base inbox and needs a verified base account.
    { arbitrary: fc.tuple(known, fc.stringMatching(/^[a-z0-9]{1,6}$/)).map(([e, tag]) => e.replace('@', `+${tag}@`)), weight: 2 },
    // New inboxes (each may get a mail): kept rare.
    { arbitrary: fc.emailAddress(), weight: 1 },
    { arbitrary: mutated(known), weight: 3 },
    { arbitrary: nastyString, weight: 1 },
  );
}

const PUBLIC_KEY_TYPES = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ssh-rsa',
  'ssh-dss',
  'sk-ssh-ed25519@openssh.com',
  'ssh-ed25519-cert-v01@openssh.com',
  '',
];

function wireString(bytes: Uint8Array | Buffer, lie: number): Buffer {
  const length = Buffer.alloc(4);
  const lengths = [bytes.length, bytes.length + 1, Math.max(0, bytes.length - 1), 0xffffffff, 0];
  length.writeUInt32BE(lengths[lie % lengths.length]! >>> 0);
  return Buffer.concat([length, bytes]);
}

/** A `.pub` line around a hand-made blob: right or wrong type, plausible or random fields, honest or lying lengths. */
export const craftedKeyLine: Arb<string> = fc
  .tuple(
    fc.constantFrom(...PUBLIC_KEY_TYPES),
    fc.constantFrom(...PUBLIC_KEY_TYPES),
    fc.array(
      fc.oneof(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 65, maxLength: 65 }).map((b) => Uint8Array.from([0x04, ...b.slice(1)])),
        fc.constant(Buffer.from('nistp256')),
        fc.uint8Array({ maxLength: 300 }),
      ),
      { maxLength: 3 },
    ),
    fc.nat(9),
    fc.oneof(fc.constant(''), nastyString),
  )
  .map(([declared, inner, fields, lie, comment]) => {
    const blob = Buffer.concat([wireString(Buffer.from(inner, 'latin1'), lie < 8 ? 0 : lie), ...fields.map((f, i) => wireString(f, lie < 7 ? 0 : lie + i))]);
    return `${declared} ${blob.toString('base64')}${comment ? ` ${comment}` : ''}`;
  });

/** Real public key lines, re-dressed: other comments, spacing, line breaks, a type that lies, a blob that is cut. */
export function keyLineArb(lines: string[]): Arb<string> {
  const real = fc.constantFrom(...lines);
  const variant = fc.tuple(real, fc.nat(8), nastyString).map(([line, how, junk]) => {
    const [type = '', blob = ''] = line.split(' ');
    switch (how) {
      case 0:
        return `${type} ${blob}`;
      case 1:
        return `${type} ${blob} ${junk}`;
      case 2:
        return `  ${type}\t\t${blob}   comment  \n`;
      case 3:
        return `${type} ${blob}\n${type} ${blob}`;
      case 4:
        return `${type === 'ssh-ed25519' ? 'ssh-rsa' : 'ssh-ed25519'} ${blob}`;
      case 5:
        return `${type} ${blob.slice(0, -4)}`;
      case 6:
        return `${type} ${blob}=`;
      case 7:
        return `${type}-cert-v01@openssh.com ${blob}`;
      default:
        return `${type} ${blob.replace(/[A-Za-z]/, (c) => (c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase()))}`;
    }
  });
  return fc.oneof(
    { arbitrary: real, weight: 10 },
    { arbitrary: variant, weight: 4 },
    { arbitrary: craftedKeyLine, weight: 2 },
    { arbitrary: mutated(real), weight: 2 },
    { arbitrary: fc.base64String({ maxLength: 120 }).map((b) => `ssh-ed25519 ${b}`), weight: 1 },
    { arbitrary: nastyString, weight: 1 },
  );
}

export const labelArb: Arb<string> = fc.oneof(
  { arbitrary: fc.constantFrom('fuzz-label', 'vers-cli-host', 'pi-v-install', 'abcde', '  padded-label  ', '<script>alert(1)</script>'), weight: 6 },
  { arbitrary: fc.string({ maxLength: 4 }), weight: 1 },
  { arbitrary: fc.string({ unit: 'grapheme', minLength: 5, maxLength: 30 }), weight: 2 },
  { arbitrary: fc.integer({ min: 95, max: 300 }).map((n) => repeatTo('label-', n)), weight: 1 },
  { arbitrary: mutated(fc.constant('fuzz-label')), weight: 2 },
  { arbitrary: nastyString, weight: 2 },
);

export function orgNameArb(known: string[]): Arb<string | null> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(...known), weight: 5 },
    { arbitrary: fc.constantFrom<string | null>('', null, 'no-such-org-fuzz', 'acme-corp', ' '), weight: 2 },
    { arbitrary: mutated(fc.constantFrom(...known)), weight: 2 },
    { arbitrary: fc.integer({ min: 60, max: 200 }).map((n) => repeatTo('org', n)), weight: 1 },
    { arbitrary: nastyString, weight: 2 },
  );
}

export const noteArb: Arb<string | null> = fc.oneof(
  { arbitrary: fc.constantFrom<string | null>('vers login --git from fuzzhost', null, '', '<script>alert(1)</script>', '"><img src=x onerror=alert(1)>'), weight: 4 },
  { arbitrary: fc.integer({ min: 190, max: 260 }).map((n) => repeatTo('note ', n)), weight: 1 },
  { arbitrary: nastyString, weight: 3 },
);

export const durationArb: Arb<string> = fc.oneof(
  fc.constantFrom('30d', '12h', '2w', '0', '1m', '59s', '60s', '5d4h', '36500d', '36501d', '99999999999999999999d', '-1d', '1e3d', ' 30D ', '1y', 'forever', ''),
  fc.tuple(fc.nat(100_000), fc.constantFrom('s', 'm', 'h', 'd', 'w')).map(([n, u]) => `${n}${u}`),
  nastyString,
);

/** API keys in every state a platform might send: real, revoked, forged with a valid checksum, cut, recased. */
export function apiKeyArb(real: string, revoked: string): Arb<string> {
  const hex = (bytes: number) => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString('hex'));
  const withChecksum = (body: string) => body + crc32(body).toString(16).padStart(8, '0');
  return fc.oneof(
    { arbitrary: fc.constant(real), weight: 4 },
    { arbitrary: fc.constant(revoked), weight: 1 },
    { arbitrary: fc.tuple(fc.uuid(), hex(28)).map(([id, secret]) => withChecksum(id + secret)), weight: 2 },
    // The real key's id with another secret: reaches the database, fails the hash.
    { arbitrary: hex(28).map((secret) => withChecksum(real.slice(0, 36) + secret)), weight: 2 },
    { arbitrary: mutated(fc.constant(real)).map(headerSafe), weight: 3 },
    { arbitrary: fc.constantFrom(real.toUpperCase(), real.slice(0, 99), `${real}0`, real.slice(36), real.slice(0, 36)), weight: 1 },
    { arbitrary: headerString, weight: 2 },
  );
}

// ---- SSH command lines ----

const COMMAND_NAMES = ['create', 'list', 'revoke', 'rotate', 'audit', 'orgs', 'whoami', 'login', 'help'];
const FLAGS = ['--label', '--org', '--expires-in', '--json', '--help', '-h', '--', '-', '--bogus', '-l', '--label=', '--json=yes', '--no-json', '---label', '--LABEL', '-hj', '--perm', '--overlap', '--since', '--limit'];
const SEPARATORS = [' ', ' ', ' ', ' ', '  ', '\t', '\n', '\r\n', '\u00a0', '\u3000', '\u2028', '\v', '\f'];

/** Quotes a word the way a user might: raw, '...', "...", or every character escaped. */
function quoteWord(word: string, style: number): string {
  if (style < 3) return word;
  if (style < 6) return `'${word.replaceAll("'", "'\\''")}'`;
  if (style < 9) return `"${word.replace(/["\\]/g, '\\$&')}"`;
  return word.split('').map((c) => `\\${c}`).join('');
}

export type LineContext = { emails: string[]; orgs: string[]; keyIds: string[] };

export function commandLineArb(ctx: LineContext): Arb<string> {
  const keyId = fc.oneof(
    { arbitrary: fc.constantFrom(...ctx.keyIds), weight: 2 },
    { arbitrary: fc.uuid(), weight: 2 },
    { arbitrary: fc.constantFrom(...ctx.keyIds).map((id) => id.toUpperCase()), weight: 1 },
    { arbitrary: mutated(fc.constantFrom(...ctx.keyIds)), weight: 1 },
    { arbitrary: nastyString, weight: 1 },
  );
  const org = orgNameArb(ctx.orgs).map((o) => o ?? 'null');
  const email = emailArb(ctx.emails);
  const value = fc.oneof(labelArb, org, durationArb, email, keyId, nastyString);
  const flagged = (flag: string, v: Arb<string>): Arb<string[]> =>
    fc.oneof({ arbitrary: v.map((x) => [flag, x]), weight: 5 }, { arbitrary: v.map((x) => [`${flag}=${x}`]), weight: 1 });
  /** `a` with probability `present` in 12, else nothing. */
  const opt = (a: Arb<string[]>, present = 6): Arb<string[]> =>
    fc.oneof({ arbitrary: a, weight: present }, { arbitrary: fc.constant<string[]>([]), weight: 12 - present });
  const json = opt(fc.constant(['--json']));
  const help = opt(fc.constantFrom(['--help'], ['-h']), 1);

  // Each command with the arguments it takes, so most lines get past the parser.
  const perCommand: Record<string, Arb<string[]>> = {
    create: fc
      .tuple(opt(flagged('--label', labelArb), 11), opt(flagged('--org', org)), opt(flagged('--expires-in', durationArb)), opt(flagged('--perm', fc.oneof(fc.constantFrom('clusters:view', 'clusters:create', 'clusters:view,clusters:create'), nastyString)), 3), json, help)
      .map((p) => p.flat()),
    rotate: fc.tuple(opt(keyId.map((k) => [k]), 11), opt(flagged('--overlap', durationArb)), json, help).map((p) => p.flat()),
    audit: fc.tuple(opt(flagged('--org', org)), opt(flagged('--since', durationArb)), opt(flagged('--limit', fc.oneof(fc.constantFrom('1', '50', '500', '501', '0', '-1'), nastyString))), json, help).map((p) => p.flat()),
    list: fc.tuple(opt(flagged('--org', org)), json, help).map((p) => p.flat()),
    revoke: fc.tuple(opt(keyId.map((k) => [k]), 11), json, help).map((p) => p.flat()),
    orgs: fc.tuple(json, help).map((p) => p.flat()),
    whoami: fc.tuple(json, help).map((p) => p.flat()),
    login: fc.tuple(opt(email.map((e) => [e]), 11), help).map((p) => p.flat()),
    help: opt(fc.oneof(fc.constantFrom(...COMMAND_NAMES), nastyString).map((c) => [c])),
  };
  // Anything in any order: unknown flags, flags of other commands, stray values.
  const noise: Arb<string[]> = fc.oneof(
    { arbitrary: fc.tuple(fc.constantFrom('--label', '--org', '--expires-in'), value).map(([f, v]) => [f, v]), weight: 4 },
    { arbitrary: fc.constantFrom(...FLAGS).map((f) => [f]), weight: 3 },
    { arbitrary: value.map((v) => [v]), weight: 3 },
  );
  const oddCommand = fc.oneof(fc.constantFrom('', 'CREATE', 'creat', 'exit', '--help', '-h', 'org', 'keys', 'help help', 'login\u0000'), nastyString);

  const words: Arb<string[]> = fc.oneof(
    ...Object.entries(perCommand).map(([name, args]) => ({
      arbitrary: fc.tuple(args, opt(noise, 1)).map(([a, extra]) => [name, ...a, ...extra]),
      weight: name === 'create' ? 4 : 2,
    })),
    { arbitrary: fc.tuple(fc.constantFrom(...COMMAND_NAMES), fc.array(noise, { maxLength: 4 })).map(([c, n]) => [c, ...n.flat()]), weight: 3 },
    { arbitrary: fc.tuple(oddCommand, fc.array(noise, { maxLength: 2 })).map(([c, n]) => [c, ...n.flat()]), weight: 1 },
  );
  const structured = fc
    .tuple(
      words,
      fc.array(fc.tuple(fc.nat(9), fc.constantFrom(...SEPARATORS)), { minLength: 12, maxLength: 12 }),
      fc.oneof({ arbitrary: fc.constant(''), weight: 20 }, { arbitrary: fc.constantFrom('"', "'", '\\', ' "open', " 'open", '\\\\'), weight: 1 }),
    )
    .map(([ws, styles, tail]) =>
      ws
        .map((w, i) => {
          const [style, sep] = styles[i % styles.length]!;
          return (i === 0 ? '' : sep) + quoteWord(w, style);
        })
        .join('') + tail,
    );
  return fc.oneof(
    { arbitrary: structured, weight: 30 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 200 }), weight: 1 },
    { arbitrary: fc.string({ unit: weirdChar, maxLength: 40 }), weight: 1 },
    { arbitrary: mutated(structured), weight: 2 },
  );
}
