import type { TestApp } from './app.js';
import { makeKey, uniqueEmail, type TestKey } from './keys.js';
import { openssh } from './ssh.js';

/**
 * A fresh account whose key the SSH door knows as it: confirmed by email over HTTP, then proven
 * with one `login` (an HTTP link alone proves the inbox, not the key). Its personal org is named
 * after the email's local part.
 */
export async function sshLinkedUser(t: TestApp, local = 'user'): Promise<{ email: string; key: TestKey; org: string }> {
  const email = uniqueEmail(local);
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  const proved = await openssh(t.app.sshPort, key.privateKeyPath, ['login', email]);
  if (proved.code !== 0) throw new Error(`login failed: ${proved.stderr}`);
  return { email, key, org: email.split('@')[0]! };
}
