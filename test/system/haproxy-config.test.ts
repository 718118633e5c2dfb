import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// The README's HAProxy configuration, as written, checked by HAProxy itself (`haproxy -c`) with
// warnings made fatal (-dW): an operator who copies it gets no "missing timeouts".

const README = fs.readFileSync(path.resolve(import.meta.dirname, '..', '..', 'README.md'), 'utf8');

function which(name: string): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/usr/local/sbin']) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not there
    }
  }
  return null;
}

const HAPROXY = which('haproxy');
const OPENSSL = which('openssl');
if (!HAPROXY || !OPENSSL) {
  console.warn(`haproxy-config.test.ts: SKIPPING: no ${HAPROXY ? 'openssl' : 'haproxy'} binary (.ci/run installs Debian's haproxy)`);
}

/** The one fenced `haproxy` block of the README, exactly as written. */
function readmeHaproxyConfig(): string {
  const blocks = [...README.matchAll(/```haproxy\n([\s\S]*?)```/g)].map((m) => m[1]!);
  expect(blocks).toHaveLength(1);
  return blocks[0]!;
}

function check(config: string, dir: string): { status: number | null; output: string } {
  const file = path.join(dir, `haproxy-${Math.random().toString(36).slice(2)}.cfg`);
  fs.writeFileSync(file, config);
  const result = spawnSync(HAPROXY!, ['-c', '-dW', '-f', file], { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe.runIf(HAPROXY !== null && OPENSSL !== null)('the README\'s HAProxy configuration', () => {
  it('passes `haproxy -c` with warnings fatal; the certificate path is the only thing left to the operator', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-haproxy-cfg-'));
    const config = readmeHaproxyConfig();

    // As written, on a machine without the operator's certificate: that is the only complaint.
    const asWritten = check(config, dir);
    const complaints = asWritten.output.split('\n').filter((line) => /\[(ALERT|WARNING)\]/.test(line) && !/Error\(s\) found|Fatal errors found/.test(line));
    expect(complaints.length, asWritten.output).toBe(1);
    expect(complaints[0]).toContain("unable to stat SSL certificate from file '/etc/haproxy/auth.example.com.pem'");

    // With a certificate at that path (made here), the whole file is valid and warns about nothing.
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    const made = spawnSync(OPENSSL!, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=auth.example.com', '-days', '2', '-keyout', key, '-out', cert], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const bundle = path.join(dir, 'auth.example.com.pem');
    fs.writeFileSync(bundle, fs.readFileSync(cert, 'utf8') + fs.readFileSync(key, 'utf8'));
    const checked = check(config.replace('/etc/haproxy/auth.example.com.pem', bundle), dir);
    expect(checked.output).not.toMatch(/WARNING|ALERT/);
    expect(checked.output).toContain('Configuration file is valid');
    expect(checked.status).toBe(0);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
