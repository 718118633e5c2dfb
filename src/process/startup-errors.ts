/**
 * Postgres refusing the connection itself (no such database, role or password) is the
 * operator's to fix, not a bug: one line saying what to do, for the service's start-up and the
 * admin CLI alike. Null for anything else.
 */
export function databaseSetupProblem(err: unknown, databaseUrl: string | null): string | null {
  // The driver's error, under whatever wrapped it (a failed migration keeps it as its cause).
  for (let depth = 0; depth < 5 && err instanceof Error && typeof (err as { code?: unknown }).code !== 'string' && err.cause !== undefined; depth++) {
    err = err.cause;
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (!databaseUrl || typeof code !== 'string') return null;
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    return null;
  }
  const server = url.host || 'the default server';
  const user = decodeURIComponent(url.username);
  // What libpq's tools need to reach the same server as the URL (their defaults differ: a Unix socket, the OS user).
  const reach = [url.hostname ? `-h ${url.hostname.replace(/^\[|\]$/g, '')}` : '', url.port ? `-p ${url.port}` : '', user ? `-U ${user}` : ''].filter(Boolean).join(' ');
  const message = (err as Error).message;
  if (code === '3D000') {
    // pg's message names the database it asked for: the URL's path, or the user name when the path is empty.
    const name = /database "(.+)" does not exist/.exec(message)?.[1] ?? decodeURIComponent(url.pathname.slice(1));
    return `DATABASE_URL: database "${name}" does not exist on ${server}: create it with \`createdb ${reach ? `${reach} ` : ''}${name}\``;
  }
  // No such role, no pg_hba.conf entry, a wrong password: the server's own words say which.
  if (code === '28000' || code === '28P01') return `DATABASE_URL: the server at ${server} refused the connection: ${message}`;
  return null;
}

/** A failure to start that is the operator's to fix: said in one line, without a stack trace. */
export class StartupError extends Error {}

/** Turns a listen error into a line naming the variable that chose the port. */
export function listenFailure(variable: string, host: string, port: number) {
  return (err: NodeJS.ErrnoException): never => {
    const where = `${host}:${port}`;
    if (err.code === 'EADDRINUSE') throw new StartupError(`${variable}=${port}: ${where} is already in use by another process`);
    if (err.code === 'EACCES') throw new StartupError(`${variable}=${port}: not allowed to listen on ${where} (ports below 1024 need privileges)`);
    if (err.code === 'EADDRNOTAVAIL') throw new StartupError(`${variable}=${port}: HOST=${host} is not an address of this machine`);
    throw err;
  };
}
