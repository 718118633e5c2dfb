import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/**
 * A real terminal: tmux runs a command in a pane of a fixed size; the test types keys with
 * `send-keys` (tmux turns `Left`, `C-a`, `Tab` into the bytes a terminal sends) and reads the
 * rendered screen with `capture-pane`, so cursor movement and redraws are checked as a person
 * would see them. Each terminal has its own tmux server socket.
 */
const opened = new Set<string>();

/** Kills every terminal's tmux server still running: for afterAll, since a test that times out may never reach its own close(). */
export function closeAllTerminals(): void {
  for (const socket of opened) {
    try {
      execFileSync('tmux', ['-L', socket, 'kill-server'], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  opened.clear();
}

export function openTerminal(command: string[], size = { columns: 120, rows: 40 }) {
  const socket = `shell-auth-test-${randomBytes(4).toString('hex')}`;
  opened.add(socket);
  const tmux = (...args: string[]) => execFileSync('tmux', ['-L', socket, '-f', '/dev/null', ...args], { encoding: 'utf8' });
  tmux('new-session', '-d', '-s', 'main', '-x', String(size.columns), '-y', String(size.rows), ...command);
  tmux('set-option', '-t', 'main', 'remain-on-exit', 'on');
  const screen = () => tmux('capture-pane', '-p', '-t', 'main');
  return {
    screen,
    /** Literal text, as typed. */
    type(text: string) {
      tmux('send-keys', '-t', 'main', '-l', '--', text);
    },
    /** Named keys: `Left`, `Home`, `C-a`, `Tab`, `Enter`, `BSpace`, `Up`... */
    press(...keys: string[]) {
      tmux('send-keys', '-t', 'main', ...keys);
    },
    /** Waits until the screen shows what `check` looks for; fails with the screen if it never does. */
    async until(check: (screen: string) => boolean, what: string, timeoutMs = 30_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const now = screen();
        if (check(now)) return now;
        if (Date.now() > deadline) throw new Error(`terminal never showed ${what}:\n${now}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    /** The line the cursor is on, as shown, and the cursor's column. */
    cursorLine(): { text: string; column: number } {
      const [x, y] = tmux('display-message', '-p', '-t', 'main', '#{cursor_x} #{cursor_y}').trim().split(' ').map(Number);
      return { text: screen().split('\n')[y!] ?? '', column: x! };
    },
    /** Waits until the cursor's line reads `text` (trailing spaces aside) with the cursor at `column`. */
    async cursorAt(text: string, column: number, timeoutMs = 30_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const now = this.cursorLine();
        if (now.text.trimEnd() === text && now.column === column) return;
        if (Date.now() > deadline) throw new Error(`cursor never at column ${column} of ${JSON.stringify(text)}: ${JSON.stringify(now)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    /**
     * Waits for the program in the pane to exit; resolves with its exit status, or null when tmux
     * has marked the pane dead without one (seen under load: the pty closed, the status never came).
     */
    async exited(timeoutMs = 30_000): Promise<number | null> {
      const deadline = Date.now() + timeoutMs;
      let deadSince: number | null = null;
      for (;;) {
        const [dead, status = '', signal = ''] = tmux('display-message', '-p', '-t', 'main', '#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}')
          .trim()
          .split('|');
        if (signal !== '') throw new Error(`the program was killed by signal ${signal}:\n${screen()}`);
        if (dead === '1' && status !== '') return Number(status);
        if (dead === '1') {
          deadSince ??= Date.now();
          if (Date.now() - deadSince > 2_000) return null;
        }
        if (Date.now() > deadline) throw new Error(`the program never exited:\n${screen()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    close() {
      opened.delete(socket);
      try {
        tmux('kill-server');
      } catch {
        // already gone
      }
    },
  };
}

export type Terminal = ReturnType<typeof openTerminal>;
