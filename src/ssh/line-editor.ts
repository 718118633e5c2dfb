/**
 * The `keys> ` prompt's line editor, for a person at a terminal (a pty): cursor movement,
 * readline's control keys, this session's history, Tab completion. Pure: keys go in, the bytes
 * to write back come out; the shell owns the channel. One line, redrawn whole after each change
 * (`\r`, prompt, text, clear to the end, cursor back): simple, and right on any VT100-like
 * terminal as long as the line fits its width.
 */

export type Key =
  | { kind: 'char'; char: string }
  | { kind: 'enter' | 'backspace' | 'delete' | 'left' | 'right' | 'home' | 'end' | 'up' | 'down' | 'tab' }
  | { kind: 'ctrl'; letter: string }
  | { kind: 'ignored' };

/**
 * Splits terminal input into keys. Escape sequences may arrive split across reads: the decoder
 * keeps an unfinished one for the next chunk (and drops one that grows absurdly long).
 */
export class KeyDecoder {
  private pending = '';

  /** `lineFeedIsEnter` false on a pty: terminals send \r for Enter, and a \n after it is not a second one. */
  constructor(private readonly lineFeedIsEnter = true) {}

  decode(text: string): Key[] {
    const keys: Key[] = [];
    let input = this.pending + text;
    this.pending = '';
    while (input.length > 0) {
      const char = input[0]!;
      if (char === '\x1b') {
        const match = /^\x1b(?:\[([0-9;]*)([A-Za-z~])|O([A-Za-z]))/.exec(input);
        if (!match) {
          // An unfinished sequence waits for more; a lone ESC or junk is dropped.
          if (/^\x1b(\[[0-9;]*|O)?$/.test(input) && input.length < 16) this.pending = input;
          else keys.push({ kind: 'ignored' });
          input = this.pending ? '' : input.slice(1);
          continue;
        }
        keys.push(keyOfSequence(match[1] ?? '', match[2] ?? match[3] ?? ''));
        input = input.slice(match[0].length);
        continue;
      }
      const point = String.fromCodePoint(input.codePointAt(0)!);
      input = input.slice(point.length);
      keys.push(point === '\n' && !this.lineFeedIsEnter ? { kind: 'ignored' } : keyOfChar(point));
    }
    return keys;
  }
}

function keyOfSequence(params: string, final: string): Key {
  switch (final) {
    case 'A':
      return { kind: 'up' };
    case 'B':
      return { kind: 'down' };
    case 'C':
      return { kind: 'right' };
    case 'D':
      return { kind: 'left' };
    case 'H':
      return { kind: 'home' };
    case 'F':
      return { kind: 'end' };
    case '~':
      if (params === '1' || params === '7') return { kind: 'home' };
      if (params === '4' || params === '8') return { kind: 'end' };
      if (params === '3') return { kind: 'delete' };
      return { kind: 'ignored' };
    default:
      return { kind: 'ignored' };
  }
}

function keyOfChar(char: string): Key {
  if (char === '\r' || char === '\n') return { kind: 'enter' };
  if (char === '\x7f' || char === '\b') return { kind: 'backspace' };
  if (char === '\t') return { kind: 'tab' };
  const code = char.codePointAt(0)!;
  if (code < 0x20) return { kind: 'ctrl', letter: String.fromCharCode(code + 0x40).toLowerCase() };
  if (code >= 0x80 && code < 0xa0) return { kind: 'ignored' };
  return { kind: 'char', char };
}

/**
 * What Tab can complete: command names, each command's flags, and (optionally) the values of an
 * argument: `previous` is the word before the one being typed (`--org`), `command` the line's first.
 */
export type Completions = {
  commands: string[];
  flagsOf(command: string): string[];
  valuesOf?(command: string, previous: string): string[];
};

/** What Tab would complete at the end of `before` (the line up to the cursor), and the word typed so far. */
export type CompletionSlot =
  | { kind: 'command'; word: string }
  | { kind: 'flag'; command: string; word: string }
  | { kind: 'value'; command: string; previous: string; word: string };

export function completionSlot(before: string): CompletionSlot {
  const word = before.slice(before.lastIndexOf(' ') + 1);
  const words = before.trimStart().split(/ +/);
  if (words.length <= 1) return { kind: 'command', word };
  const command = words[0]!;
  if (word.startsWith('-')) return { kind: 'flag', command, word };
  return { kind: 'value', command, previous: words.at(-2)!, word };
}

export type EditResult = {
  /** Bytes for the terminal (already with \r\n line ends). */
  output: string;
  /** Enter was pressed: this line is done. */
  submitted?: string;
  /** Ctrl-D on an empty line. */
  endOfInput?: boolean;
  /** Ctrl-C: the line was dropped. */
  interrupted?: boolean;
};

const MAX_HISTORY = 100;

export class LineEditor {
  private chars: string[] = [];
  private cursor = 0;
  private readonly history: string[] = [];
  /** Where Up/Down are in the history; history.length is the line being typed. */
  private browsing = 0;
  private draft: string[] = [];

  constructor(
    private readonly prompt: string,
    private readonly completions: Completions,
    private readonly maxLength = 4096,
  ) {}

  get text(): string {
    return this.chars.join('');
  }

  /** The line up to the cursor: what Tab completes. */
  get beforeCursor(): string {
    return this.chars.slice(0, this.cursor).join('');
  }

  /** The prompt and the line as typed so far, cursor in place (after output, or Ctrl-L). */
  render(): string {
    const back = this.chars.length - this.cursor;
    return `\r${this.prompt}${this.text}\x1b[K${back > 0 ? `\x1b[${back}D` : ''}`;
  }

  /** One key. `echo` false: no pty, or a command is running: edit silently. */
  press(key: Key, echo = true): EditResult {
    const result = this.apply(key);
    return echo ? result : { ...result, output: '' };
  }

  private apply(key: Key): EditResult {
    switch (key.kind) {
      case 'char':
        if (this.chars.length >= this.maxLength) return { output: '\x07' };
        this.chars.splice(this.cursor, 0, key.char);
        this.cursor++;
        // Typing at the end needs only the character itself.
        return { output: this.cursor === this.chars.length ? key.char : this.render() };
      case 'enter': {
        const line = this.text;
        this.remember(line);
        this.reset();
        return { output: '\r\n', submitted: line };
      }
      case 'backspace':
        if (this.cursor === 0) return { output: '' };
        this.chars.splice(--this.cursor, 1);
        return { output: this.render() };
      case 'delete':
        if (this.cursor === this.chars.length) return { output: '' };
        this.chars.splice(this.cursor, 1);
        return { output: this.render() };
      case 'left':
        return this.moveTo(this.cursor - 1);
      case 'right':
        return this.moveTo(this.cursor + 1);
      case 'home':
        return this.moveTo(0);
      case 'end':
        return this.moveTo(this.chars.length);
      case 'up':
        return this.browse(-1);
      case 'down':
        return this.browse(1);
      case 'tab':
        return this.complete();
      case 'ctrl':
        return this.control(key.letter);
      case 'ignored':
        return { output: '' };
    }
  }

  private control(letter: string): EditResult {
    switch (letter) {
      case 'a':
        return this.moveTo(0);
      case 'e':
        return this.moveTo(this.chars.length);
      case 'b':
        return this.moveTo(this.cursor - 1);
      case 'f':
        return this.moveTo(this.cursor + 1);
      case 'k':
        this.chars.splice(this.cursor);
        return { output: this.render() };
      case 'u':
        this.chars.splice(0, this.cursor);
        this.cursor = 0;
        return { output: this.render() };
      case 'w': {
        let start = this.cursor;
        while (start > 0 && this.chars[start - 1] === ' ') start--;
        while (start > 0 && this.chars[start - 1] !== ' ') start--;
        this.chars.splice(start, this.cursor - start);
        this.cursor = start;
        return { output: this.render() };
      }
      case 'l':
        return { output: `\x1b[H\x1b[2J${this.render()}` };
      case 'c':
        this.reset();
        return { output: `^C\r\n${this.prompt}`, interrupted: true };
      case 'd':
        if (this.chars.length === 0) return { output: '\r\n', endOfInput: true };
        return this.apply({ kind: 'delete' });
      case 'p':
        return this.browse(-1);
      case 'n':
        return this.browse(1);
      default:
        return { output: '' };
    }
  }

  private moveTo(position: number): EditResult {
    const target = Math.max(0, Math.min(this.chars.length, position));
    if (target === this.cursor) return { output: '' };
    this.cursor = target;
    return { output: this.render() };
  }

  private browse(step: number): EditResult {
    const target = this.browsing + step;
    if (target < 0 || target > this.history.length) return { output: '' };
    if (this.browsing === this.history.length) this.draft = [...this.chars];
    this.browsing = target;
    this.chars = target === this.history.length ? [...this.draft] : Array.from(this.history[target]!);
    this.cursor = this.chars.length;
    return { output: this.render() };
  }

  private complete(): EditResult {
    const slot = completionSlot(this.beforeCursor);
    const { word } = slot;
    const candidates =
      slot.kind === 'command'
        ? this.completions.commands
        : slot.kind === 'flag'
          ? this.completions.flagsOf(slot.command)
          : (this.completions.valuesOf?.(slot.command, slot.previous) ?? []);
    const matches = candidates.filter((c) => c.startsWith(word));
    if (matches.length === 0) return { output: '\x07' };
    const common = commonPrefix(matches);
    const addition = common.slice(word.length) + (matches.length === 1 ? ' ' : '');
    if (addition) {
      this.chars.splice(this.cursor, 0, ...Array.from(addition));
      this.cursor += Array.from(addition).length;
      return { output: this.render() };
    }
    // Nothing more to add: show the choices under the line, then the line again.
    return { output: `\r\n${matches.join('  ')}\r\n${this.render()}` };
  }

  private remember(line: string): void {
    if (line.trim() !== '' && this.history.at(-1) !== line) {
      this.history.push(line);
      if (this.history.length > MAX_HISTORY) this.history.shift();
    }
  }

  private reset(): void {
    this.chars = [];
    this.cursor = 0;
    this.browsing = this.history.length;
    this.draft = [];
  }
}

function commonPrefix(words: string[]): string {
  let prefix = words[0] ?? '';
  for (const word of words) while (!word.startsWith(prefix)) prefix = prefix.slice(0, -1);
  return prefix;
}
