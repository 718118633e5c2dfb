import fs from 'node:fs';
import path from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import { Kysely } from 'kysely';
import type { DatabaseTarget, OpenDatabase } from './types.js';
import { pgliteNotifications } from './notifications.js';
import type { Database } from './schema.js';

export async function openPglite(target: Extract<DatabaseTarget, { kind: 'pglite' }>): Promise<OpenDatabase> {
  // Loaded only here: on Postgres the embedded database's code would cost memory for nothing.
  const [{ PGlite }, { PGliteDialect }] = await Promise.all([import('@electric-sql/pglite'), import('kysely-pglite-dialect')]);
  let releaseLock = () => {};
  let client: PGlite;
  if (target.dataDir === null) {
    // From a copy, PGlite skips initdb: about a quarter of the time to a first query.
    client = target.copyOf ? new PGlite({ loadDataDir: target.copyOf }) : new PGlite();
  } else {
    const dir = path.join(target.dataDir, 'pglite');
    fs.mkdirSync(dir, { recursive: true });
    releaseLock = acquireDirectoryLock(path.join(target.dataDir, 'pglite.lock'));
    client = new PGlite(dir);
  }
  const db = new Kysely<Database>({ dialect: new PGliteDialect(client) });
  return {
    db,
    kind: 'pglite',
    listen: (channel, log) => pgliteNotifications(client, channel, log),
    close: async () => {
      await db.destroy();
      releaseLock();
    },
  };
}

export class DataDirLockedError extends Error {}

/**
 * PGlite is a single-process database: two processes on one directory corrupt it. A pid file
 * turns that into a clear error instead.
 */
function acquireDirectoryLock(lockPath: string): () => void {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      fs.writeFileSync(lockPath, String(process.pid), { flag: 'wx' });
      return () => fs.rmSync(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = NaN;
    try {
      holder = Number(fs.readFileSync(lockPath, 'utf8').trim());
    } catch {
      continue; // released meanwhile: try again
    }
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
      throw new DataDirLockedError(
        `the embedded database in ${path.dirname(lockPath)} is in use by process ${holder}; ` +
          'stop it first, or run against a shared Postgres with DATABASE_URL',
      );
    }
    // Left behind by a process that is gone. Renaming is atomic, so of two processes clearing
    // the same stale lock only one succeeds; both then race fairly on the exclusive create.
    const aside = `${lockPath}.stale-${process.pid}`;
    try {
      fs.renameSync(lockPath, aside);
      fs.rmSync(aside, { force: true });
    } catch {
      // someone else cleared it
    }
  }
  throw new DataDirLockedError(`could not lock ${lockPath}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
