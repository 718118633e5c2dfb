import v8 from 'node:v8';

/** Whether node's command line sets this V8 flag (V8 takes `-` and `_` alike): then it wins. */
const onCommandLine = (flag: RegExp, execArgv: readonly string[]) => execArgv.some((arg) => flag.test(arg));

/**
 * After a full collection V8 lets the old generation grow to a multiple of what survived it
 * before collecting again. For a heap as small as ours (20-35 MB live) its own choice is a large
 * multiple, so under load the old generation swells to 60-70 MB of mostly garbage, and RSS peaks
 * at 160-200 MB. `HEAP_GROWING_PERCENT` (25) makes it 1.25 times: peak ~125 MB in most runs of
 * the same load (160-165 MB in a few, when one full collection was slow: README "Memory"), and no
 * more CPU per SSH create in the perf rig's runs.
 *
 * Set at start-up, not on the command line, so that every way of starting the service (`npm
 * start`, `node dist/src/main.js`, a cluster's workers) gets it. V8 reads this flag each time it
 * sets the next limit, so setting it after start-up takes effect (test/system/heap-growth.test.ts
 * checks that it does). A `--heap-growing-percent` on node's command line wins. NODE_OPTIONS
 * cannot carry one: node refuses to start with it there ("not allowed in NODE_OPTIONS", exit 9).
 */
export function applyHeapGrowingPercent(percent: number, execArgv: readonly string[] = process.execArgv): 'set' | 'command line' | 'V8 default' {
  if (onCommandLine(/^--heap[-_]growing[-_]percent\b/, execArgv)) return 'command line';
  if (percent === 0) return 'V8 default';
  v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
  return 'set';
}

/**
 * V8 "pretenures" an allocation site (allocates its objects straight in the old generation)
 * once most objects from it have survived young collections. Under SSH load that happens to
 * objects every connection makes: born old, they outlive their connection until a full
 * collection, and until then they keep everything young they point to alive too, copied and
 * then promoted by each young collection. Measured on a bare ssh2 server under the perf rig's
 * load: 1.7 MB survive each young collection with pretenuring, 0.3 MB without. So the service
 * turns it off in every process, first thing at start-up: set then, after V8 has started, it
 * takes effect (test/system/heap-growth.test.ts checks that it does). An
 * `--allocation-site-pretenuring` (or its `--no-` form) on node's command line wins.
 */
export function turnOffPretenuring(execArgv: readonly string[] = process.execArgv): 'set' | 'command line' {
  if (onCommandLine(/^--(no-)?allocation[-_]site[-_]pretenuring\b/, execArgv)) return 'command line';
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
  return 'set';
}
