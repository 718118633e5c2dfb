import { execFileSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import ssh2 from 'ssh2';
import type { Service } from './service.js';

export function keygen(file: string) {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', path.basename(file), '-f', file]);
}

/** A legitimate OpenSSH client from 127.0.0.1: `ssh -o BatchMode=yes … keys@127.0.0.1 whoami`. */
export function legitSshArgs(service: Service, keyFile: string): string[] {
  return ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(service.sshPort), '-i', keyFile, 'keys@127.0.0.1', 'whoami'];
}

export function sshConnect(port: number, config: Omit<ssh2.ConnectConfig, 'sock'>, localAddress?: string): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.once('ready', () => resolve(client));
    client.on('error', reject);
    // A server at a connection cap closes before its banner: ssh2 then reports only 'close'.
    client.once('close', () => reject(new Error('closed by the server before authentication')));
    const sock = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      sock.setNoDelay(true);
      client.connect({ ...config, sock });
    });
    sock.on('error', reject);
    sock.once('close', () => reject(new Error('closed by the server before authentication')));
  });
}
