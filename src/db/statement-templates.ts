import { createQueryId, type Compilable, type CompiledQuery, type Kysely, type KyselyPlugin, type RootOperationNode } from 'kysely';
import type { Database } from './schema.js';

/** Stands in for one value while a template is built; replaced by the call's value each time it runs. */
class Slot {
  constructor(readonly name: string) {}
}

/**
 * Marks a kysely plugin that only watches statements and changes nothing (core/ssh-identity-cache.ts's
 * write watcher): templates keep their compiled text with it present, and it does not see their
 * statements. Its value says which statements it watches: on a db with such a plugin, a template
 * it watches is compiled on every call instead (so the watcher sees each), whatever its caller
 * asked for and whichever db first made the template.
 */
export const WATCH_ONLY = Symbol('watch-only kysely plugin');
type Watches = (statement: RootOperationNode) => boolean;
export type WatchOnlyPlugin = KyselyPlugin & { [WATCH_ONLY]: Watches };

const watchOnly = (plugin: KyselyPlugin): plugin is WatchOnlyPlugin => WATCH_ONLY in plugin;

type Template = {
  query: CompiledQuery['query'];
  sql: string;
  parameters: ReadonlyArray<Slot | { constant: unknown }>;
  /** Each watcher's verdict on this statement, asked once. */
  watchedBy: Map<Watches, boolean>;
};

/** Shapes are fixed by the code (a few per statement); past this, something generates them: compile as before. */
const MAX_TEMPLATES = 64;
const templates = new Map<string, Template>();

function watched(template: Template, plugins: readonly WatchOnlyPlugin[]): boolean {
  for (const plugin of plugins) {
    const watches = plugin[WATCH_ONLY];
    let verdict = template.watchedBy.get(watches);
    if (verdict === undefined) template.watchedBy.set(watches, (verdict = watches(template.query)));
    if (verdict) return true;
  }
  return false;
}

/**
 * A hot statement built and compiled by kysely once per shape, then run with each call's values:
 * kysely's builders and compiler cost more CPU than the round trip on the SSH door's hot path
 * (~0.1 ms per statement, profiled), and the text they produce never changes for one shape.
 *
 * `shape` names everything `build` branches on (which clauses, how many list items); `values`
 * holds everything that varies per call. `build` receives stand-ins for the values and must use
 * them only as values (not inspect them): each becomes one `$n` parameter. Both dialects compile
 * Postgres SQL, so one cache serves them. `db` is the one `build` builds on: with plugins that
 * may transform (kysely applies them while compiling: tests counting statements), it compiles
 * every time; WATCH_ONLY plugins are skipped.
 */
export function compiledFromTemplate<V extends Record<string, unknown>>(
  db: Kysely<Database>,
  shape: string,
  values: V,
  build: (slots: V) => Compilable<unknown>,
): CompiledQuery {
  const plugins = db.getExecutor().plugins;
  if (!plugins.every(watchOnly)) return build(values).compile();
  let template = templates.get(shape);
  if (!template) {
    if (templates.size >= MAX_TEMPLATES) return build(values).compile();
    const slots = Object.fromEntries(Object.keys(values).map((name) => [name, new Slot(name)])) as unknown as V;
    const compiled = build(slots).compile();
    const made: Template = {
      query: compiled.query,
      sql: compiled.sql,
      parameters: compiled.parameters.map((p) => (p instanceof Slot ? p : { constant: p })),
      watchedBy: new Map(),
    };
    templates.set(shape, made);
    template = made;
  }
  if (plugins.length > 0 && watched(template, plugins)) return build(values).compile();
  return {
    query: template.query,
    queryId: createQueryId(),
    sql: template.sql,
    parameters: template.parameters.map((p) => (p instanceof Slot ? parameterOf(values[p.name]) : p.constant)),
  };
}

/**
 * A Date as ISO text: pg would format it in local time field by field (its dateToString, 0.3% of
 * the server's CPU per SSH create); both are the same instant to Postgres.
 */
function parameterOf(value: unknown): unknown {
  return value instanceof Date ? value.toISOString() : value;
}
