import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, type SshLimits } from '../../src/config/config.js';
import type { CoreDeps } from '../../src/core/index.js';
import { loadOrCreateHostKey } from '../../src/ssh/host-key.js';
import { createSshServer } from '../../src/ssh/server.js';

/**
 * An SSH door of its own on the given core, with the default limits overridden by `limits`, for
 * the duration of `body`. `close` (idempotent) lets a test shut the server down itself.
 */
export async function withSshServer(
  deps: CoreDeps,
  limits: Partial<SshLimits>,
  body: (port: number, close: () => Promise<void>) => Promise<void>,
): Promise<void> {
  const server = createSshServer(deps, {
    hostKey: loadOrCreateHostKey(fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-door-'))),
    sshUser: 'keys',
    sshHint: () => 'ssh keys@test',
    log: deps.log,
    limits: { ...loadConfig({}).ssh, ...limits },
  });
  const { port } = await server.listen(0, '127.0.0.1');
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await server.close();
  };
  try {
    await body(port, close);
  } finally {
    await close();
  }
}
