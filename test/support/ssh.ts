import { spawn } from 'node:child_process';
import fs from 'node:fs';
import ssh2, { type ClientChannel, type ConnectConfig } from 'ssh2';

export type RunResult = { code: number | null; stdout: string; stderr: string };

const OPENSSH_OPTIONS = [
  '-F', '/dev/null',
  '-o', 'BatchMode=yes',
  '-o', 'IdentitiesOnly=yes',
  '-o', 'StrictHostKeyChecking=no',
  '-o', 'UserKnownHostsFile=/dev/null',
  '-o', 'LogLevel=ERROR',
  '-o', 'ConnectTimeout=10',
];

/** The real OpenSSH client: `ssh -p PORT -i KEY USER@127.0.0.1 ARGS...`. */
export function openssh(
  port: number,
  keyPath: string,
  args: string[],
  options: { user?: string; tty?: boolean; input?: string | ((write: (s: string) => void) => Promise<void>); extra?: string[]; onStderr?: (chunk: string) => void } = {},
): Promise<RunResult> & { kill(): void } {
  // ssh takes the first value it sees for an option: the test's own options go first.
  const argv = [...(options.extra ?? []), ...OPENSSH_OPTIONS, '-p', String(port), '-i', keyPath];
  if (options.tty) argv.push('-tt');
  argv.push(`${options.user ?? 'keys'}@127.0.0.1`, ...args);
  const child = spawn('ssh', argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => {
    stderr += d;
    options.onStderr?.(String(d));
  });
  const done = new Promise<RunResult>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  if (typeof options.input === 'string') child.stdin.end(options.input);
  else if (options.input) void options.input((s) => child.stdin.write(s));
  else if (!options.tty) child.stdin.end();
  return Object.assign(done, { kill: () => child.kill('SIGKILL') });
}

/** An ssh2 client running one command; resolves with its output and exit code. */
export function ssh2Exec(
  port: number,
  auth: Partial<ConnectConfig>,
  command: string,
  options: { pty?: boolean; onChannel?: (channel: ClientChannel, client: ssh2.Client) => void } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let stdout = '';
    let stderr = '';
    client.on('error', (err: Error & { level?: string }) => {
      if (err.level === 'agent') return; // a failing agent key: the client moves on to the next one
      reject(err);
    });
    client.on('ready', () => {
      client.exec(command, options.pty ? { pty: { term: 'xterm', rows: 24, cols: 80 } } : {}, (err, channel) => {
        if (err) return reject(err);
        let code: number | null = null;
        channel.on('exit', (c: number | null) => (code = c));
        channel.on('data', (d: Buffer) => (stdout += d));
        channel.stderr.on('data', (d: Buffer) => (stderr += d));
        channel.on('close', () => {
          client.end();
          resolve({ code, stdout, stderr });
        });
        options.onChannel?.(channel, client);
      });
    });
    client.connect({ host: '127.0.0.1', port, username: 'keys', readyTimeout: 10_000, ...auth });
  });
}

export function privateKeyOf(path: string): Buffer {
  return fs.readFileSync(path);
}

/**
 * An ssh-agent stand-in that holds two identities: `offered` (whose signature it returns from
 * `signWith`) and optionally a real key. Lets a test play the client that offers one key and
 * signs with another.
 */
export class TrickAgent extends ssh2.BaseAgent {
  constructor(
    private readonly identities: Array<{ publicKey: ReturnType<typeof ssh2.utils.parseKey>; signer: ReturnType<typeof ssh2.utils.parseKey> | null }>,
  ) {
    super();
  }

  override getIdentities(cb: (err: Error | undefined, keys?: any[]) => void): void {
    cb(undefined, this.identities.map((i) => i.publicKey));
  }

  override sign(pubKey: any, data: Buffer, options: any, cb?: any): void {
    const callback = typeof options === 'function' ? options : cb;
    const blob: Buffer = pubKey.getPublicSSH();
    const identity = this.identities.find((i) => (i.publicKey as any).getPublicSSH().equals(blob));
    if (!identity?.signer) return callback(new Error('this agent cannot sign with that key'));
    callback(undefined, (identity.signer as any).sign(data, options?.hash));
  }
}

export function parsedKey(pathOrText: string): ReturnType<typeof ssh2.utils.parseKey> {
  const text = fs.existsSync(pathOrText) ? fs.readFileSync(pathOrText) : pathOrText;
  const parsed = ssh2.utils.parseKey(text);
  if (parsed instanceof Error) throw parsed;
  return parsed;
}

/** An authenticated ssh2 connection the test keeps open across several commands. */
export async function connectClient(port: number, privateKeyPath: string): Promise<ssh2.Client> {
  const client = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    client.on('ready', () => resolve()).on('error', reject);
    client.connect({ host: '127.0.0.1', port, username: 'keys', privateKey: privateKeyOf(privateKeyPath) });
  });
  return client;
}

/** Runs one command on an open connection; resolves with its stdout. */
export function execOn(client: ssh2.Client, command: string): Promise<string> {
  return new Promise<string>((resolve, reject) =>
    client.exec(command, (err, channel) => {
      if (err) return reject(err);
      let data = '';
      channel.stderr.resume();
      channel.on('data', (d: Buffer) => (data += d)).on('close', () => resolve(data));
    }),
  );
}
