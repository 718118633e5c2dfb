import { describe, expect, it } from 'vitest';
import { KeyDecoder, LineEditor, type Key } from '../../src/ssh/line-editor.js';
import { COMPLETIONS } from '../../src/ssh/commands/index.js';

// The editor in-process: keys in, a one-line terminal (enough VT100 to draw it) out.

/** Applies the editor's output to one terminal line: text, \r, ESC[K, ESC[nD; \r\n starts a new line. */
function terminal() {
  let lines: string[] = [''];
  let column = 0;
  return {
    write(output: string) {
      for (let i = 0; i < output.length; ) {
        const rest = output.slice(i);
        const csi = /^\x1b\[(\d*)([A-Za-z])/.exec(rest);
        if (csi) {
          if (csi[2] === 'K') lines[lines.length - 1] = lines.at(-1)!.slice(0, column);
          if (csi[2] === 'D') column -= Number(csi[1] || 1);
          if (csi[2] === 'J') lines = [''];
          i += csi[0].length;
          continue;
        }
        const char = output[i]!;
        i++;
        if (char === '\r') column = 0;
        else if (char === '\n') {
          lines.push('');
          column = 0;
        } else if (char === '\x07') continue;
        else {
          const line = lines.at(-1)!;
          lines[lines.length - 1] = line.slice(0, column).padEnd(column) + char + line.slice(column + 1);
          column++;
        }
      }
    },
    get line() {
      return lines.at(-1)!;
    },
    get column() {
      return column;
    },
    get lines() {
      return lines;
    },
  };
}

function session() {
  const editor = new LineEditor('keys> ', COMPLETIONS);
  const decoder = new KeyDecoder(false);
  const screen = terminal();
  screen.write('keys> ');
  const submitted: string[] = [];
  return {
    screen,
    submitted,
    editor,
    send(input: string) {
      for (const key of decoder.decode(input)) {
        const result = editor.press(key);
        screen.write(result.output);
        if (result.submitted !== undefined) {
          submitted.push(result.submitted);
          screen.write('keys> ');
        }
      }
    },
  };
}

const LEFT = '\x1b[D';
const RIGHT = '\x1b[C';
const UP = '\x1b[A';
const DOWN = '\x1b[B';

describe('KeyDecoder', () => {
  it('reads escape sequences whole, even split across reads, and code points whole', () => {
    const decoder = new KeyDecoder(false);
    expect(decoder.decode('a\x1b[')).toEqual([{ kind: 'char', char: 'a' }]);
    expect(decoder.decode('Db')).toEqual([{ kind: 'left' }, { kind: 'char', char: 'b' }]);
    const keys: Key[] = decoder.decode('\x1b[3~\x1bOH\x1b[4~é😀\t\r\n\x01');
    expect(keys).toEqual([
      { kind: 'delete' },
      { kind: 'home' },
      { kind: 'end' },
      { kind: 'char', char: 'é' },
      { kind: 'char', char: '😀' },
      { kind: 'tab' },
      { kind: 'enter' },
      { kind: 'ignored' }, // a pty's \n after \r is not a second Enter
      { kind: 'ctrl', letter: 'a' },
    ]);
    expect(new KeyDecoder(true).decode('\n')).toEqual([{ kind: 'enter' }]);
  });
});

describe('LineEditor', () => {
  it('inserts and deletes at the cursor; Home/End and Ctrl-A/E move it', () => {
    const s = session();
    s.send(`whami${LEFT}${LEFT}${LEFT}o`);
    expect([s.screen.line, s.screen.column]).toEqual(['keys> whoami', 9]);
    s.send('\x1b[H');
    expect(s.screen.column).toBe(6);
    s.send('\x1b[3~'); // Delete
    expect(s.screen.line).toBe('keys> hoami');
    s.send('\x05\x7f'); // Ctrl-E, Backspace
    expect([s.screen.line, s.screen.column]).toEqual(['keys> hoam', 10]);
    s.send(`\x01${RIGHT}\x0b`); // Ctrl-A, Right, Ctrl-K
    expect(s.screen.line).toBe('keys> h');
  });

  it('Ctrl-W drops the word before the cursor, Ctrl-U the whole start of the line', () => {
    const s = session();
    s.send('create --label  my-key');
    s.send('\x17');
    expect(s.screen.line).toBe('keys> create --label  ');
    s.send('\x17');
    expect(s.screen.line).toBe('keys> create ');
    s.send('\x15');
    expect([s.screen.line, s.screen.column]).toEqual(['keys> ', 6]);
  });

  it('remembers submitted lines: Up and Down walk them, and give back the line being typed', () => {
    const s = session();
    s.send('whoami\rorgs\r');
    expect(s.submitted).toEqual(['whoami', 'orgs']);
    s.send('li');
    s.send(UP);
    expect(s.screen.line).toBe('keys> orgs');
    s.send(UP);
    expect(s.screen.line).toBe('keys> whoami');
    s.send(UP);
    expect(s.screen.line).toBe('keys> whoami');
    s.send(DOWN + DOWN);
    expect(s.screen.line).toBe('keys> li');
  });

  it('Tab completes command names, then the command\'s flags; several matches are listed', () => {
    const s = session();
    s.send('cr\t');
    expect(s.screen.line).toBe('keys> create ');
    s.send('--e\t');
    expect(s.screen.line).toBe('keys> create --expires-in ');
    s.send('\x15o\t'); // "o": orgs only
    expect(s.screen.line).toBe('keys> orgs ');
    s.send('\x15l\t'); // list, login: nothing common to add, so both are shown
    expect(s.screen.lines.at(-2)).toBe('list  login');
    expect(s.screen.line).toBe('keys> l');
    s.send('\x15whoami nothing\t');
    expect(s.screen.line).toBe('keys> whoami nothing');
  });

  it('Ctrl-C drops the line, Ctrl-D on an empty line ends input, Ctrl-L redraws at the top', () => {
    const s = session();
    s.send('half a line\x03');
    expect(s.screen.lines.slice(-2)).toEqual(['keys> half a line^C', 'keys> ']);
    expect(s.editor.text).toBe('');
    s.send('abc\x0c');
    expect(s.screen.lines).toEqual(['keys> abc']);
    const editor = new LineEditor('keys> ', COMPLETIONS);
    expect(editor.press({ kind: 'ctrl', letter: 'd' }).endOfInput).toBe(true);
  });

  it('keeps editing silently when asked (a command is running), and refuses past the length limit', () => {
    const editor = new LineEditor('keys> ', COMPLETIONS, 5);
    for (const char of 'whoami') editor.press({ kind: 'char', char }, false);
    expect(editor.text).toBe('whoam');
    expect(editor.press({ kind: 'char', char: 'x' }).output).toBe('\x07');
    expect(editor.render()).toBe('\rkeys> whoam\x1b[K');
  });
});
