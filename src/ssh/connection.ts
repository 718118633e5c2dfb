import type { Logger } from 'pino';
import type { AuthContext, Connection } from 'ssh2';
import { recordKeySeen, type CoreDeps, type PublicKey } from '../core/index.js';
import type { SshLimits } from '../config.js';
import type { Admitted } from './admission.js';
import { decideAuthentication, type AuthPolicy } from './authentication.js';
import { handleSession } from './session.js';

export type ConnectionSetting = {
  deps: CoreDeps;
  log: Logger;
  limits: SshLimits;
  auth: Omit<AuthPolicy, 'maxAttempts'>;
  sshHint: () => string;
};

/**
 * One client connection: authentication (the key that signed is fixed as who the connection
 * is), then up to `maxSessionsPerConnection` sessions, and an idle timeout while none is open.
 */
export function handleConnection(client: Connection, admitted: Admitted, setting: ConnectionSetting): void {
  const { deps, log, limits } = setting;
  const { ip } = admitted;
  client.on('error', (err) => log.debug({ err: err.message, ip }, 'ssh connection error'));
  let attempts = 0;
  let signedKey: PublicKey | null = null;
  const policy: AuthPolicy = { ...setting.auth, maxAttempts: limits.maxAuthAttempts };

  client.on('authentication', (ctx: AuthContext) => {
    const publickey = ctx.method === 'publickey' ? ctx : null;
    const decision = decideAuthentication(
      {
        method: ctx.method,
        username: ctx.username,
        keyBlob: publickey?.key.data,
        signature: publickey?.signature,
        signedData: publickey?.blob,
        hashAlgo: publickey?.hashAlgo,
      },
      ++attempts,
      policy,
    );
    switch (decision.answer) {
      case 'hang-up':
        ctx.reject();
        client.end();
        return;
      case 'reject':
        return ctx.reject(['publickey']);
      case 'key-ok':
        return ctx.accept();
      case 'accept':
        signedKey = decision.key;
        return ctx.accept();
    }
  });

  client.on('ready', () => {
    admitted.authenticated();
    const key = signedKey;
    if (!key) {
      client.end(); // ssh2 only gets here after an accept, which always sets the key
      return;
    }
    const connection = new AbortController();
    client.once('close', () => connection.abort());
    client.once('end', () => connection.abort());
    void recordKeySeen(deps, key);

    let openSessions = 0;
    let idleTimer: NodeJS.Timeout | undefined;
    const armIdle = () => {
      clearTimeout(idleTimer);
      if (openSessions === 0) idleTimer = setTimeout(() => client.end(), limits.idleTimeoutMs);
    };
    client.once('close', () => clearTimeout(idleTimer));
    armIdle();

    const origin = { channel: 'ssh' as const, ip };
    client.on('session', (accept, reject) => {
      if (openSessions >= limits.maxSessionsPerConnection) return reject();
      openSessions++;
      clearTimeout(idleTimer);
      const session = { deps, log, key, origin, sshHint: setting.sshHint(), connectionGone: connection.signal };
      handleSession(accept(), session, () => {
        openSessions--;
        armIdle();
      });
    });
  });
}
