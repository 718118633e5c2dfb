import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CoreDeps, RequestOrigin } from '../core/index.js';

/** What the HTTP door tells its users about the other door. */
export type HttpDoorSettings = {
  /** How users reach the SSH door: `ssh -p 2222 keys@host`. */
  sshHint: string;
  /** What GET /readyz reports; the service as a whole knows (listeners, draining). */
  readiness(): Promise<Readiness>;
};

/** Ready to take traffic, and each check's state (short words, nothing secret). */
export type Readiness = { ready: boolean; checks: Record<string, string> };

export type RouteContext = {
  deps: CoreDeps;
  door: HttpDoorSettings;
  req: IncomingMessage;
  res: ServerResponse;
  /** The request's URL, parsed when asked for (most routes need only the path). */
  url(): URL;
  /** Parsed JSON body, for JSON routes. */
  body: unknown;
  origin: RequestOrigin & { channel: 'http' };
};

/**
 * The per-address lookup budget: `each` request counts; `refusals` counts only the answers that
 * tell something about accounts (the contract's 409 and 403s), and is refused once spent;
 * `failures` counts only failed authentications, and once spent answers them 429; a valid key is
 * always answered (a platform checking its users' keys from one address must not be locked out by
 * some of them being revoked), and costs no budget write; `signed` counts failed signatures the
 * same way, and an address over budget is refused before its body is read (a signed report is
 * worth reading only from a sender that signs).
 */
export type RouteBudget = 'each' | 'refusals' | 'failures' | 'signed';

export type Route = {
  handler: (ctx: RouteContext) => Promise<void>;
  json: boolean;
  page?: boolean;
  budget?: RouteBudget;
};
