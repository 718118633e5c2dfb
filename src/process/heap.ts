import v8 from 'node:v8';
import { PerformanceObserver } from 'node:perf_hooks';

/** What a heap setting came to: ours, node's command line's, or V8's own. */
export type HeapSetting = 'set' | 'command line' | 'V8 default';
type Decided = Exclude<HeapSetting, 'set'>;

/** What this process's settings did to V8, for the start-up log: a value we set, or who decided. */
export type HeapSettings = {
  allocationSitePretenuring?: 'off' | 'command line';
  heapGrowingPercent?: number | Decided;
  maxSemiSpaceMb?: number | Decided;
};
const applied: HeapSettings = {};
export const heapSettings = (): HeapSettings => ({ ...applied });

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
export function applyHeapGrowingPercent(percent: number, execArgv: readonly string[] = process.execArgv): HeapSetting {
  if (onCommandLine(/^--heap[-_]growing[-_]percent\b/, execArgv)) return (applied.heapGrowingPercent = 'command line');
  if (percent === 0) return (applied.heapGrowingPercent = 'V8 default');
  v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
  applied.heapGrowingPercent = percent;
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
export function turnOffPretenuring(execArgv: readonly string[] = process.execArgv): Exclude<HeapSetting, 'V8 default'> {
  if (onCommandLine(/^--(no-)?allocation[-_]site[-_]pretenuring\b/, execArgv)) return (applied.allocationSitePretenuring = 'command line');
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
  applied.allocationSitePretenuring = 'off';
  return 'set';
}

const MiB = 1024 * 1024;
/** V8's own `--semi-space-growth-factor`: each growth doubles the semi-spaces. */
const V8_GROWTH_FACTOR = 2;

/** Each of the young generation's two semi-spaces' size now, in MB (a power of two). */
export function semiSpaceMb(): number {
  const newSpace = v8.getHeapSpaceStatistics().find((space) => space.space_name === 'new_space');
  return newSpace ? newSpace.space_size / 2 / MiB : 0;
}

/**
 * V8 grows the young generation's two semi-spaces, doubling them, up to 16 MB each under any
 * sustained load: 32 MB of the service's RSS. Its own cap (`--max-semi-space-size`) is read only
 * when the process starts, from the command line; `--semi-space-growth-factor` is read each time
 * V8 grows them. So the service steers that factor: held at 1 (no growth) from the first line,
 * before its modules load (loading them alone would grow the semi-spaces to 16 MB), then, once
 * the cap is known, after each collection 2 while twice their size stays within the cap and 1
 * past it. V8 still shrinks them when allocation slows; they grow again under the next load.
 * Collections are observed between turns of the event loop, so a single synchronous stretch of
 * work that keeps more than the cap alive could grow them once past it.
 *
 * Returns the function that sets the cap (in MB, a power of two, as semi-spaces are; 0: V8's own
 * from then on). A `--max-semi-space-size` or `--semi-space-growth-factor` on node's command line
 * wins, and nothing is held.
 */
export function holdSemiSpaces(execArgv: readonly string[] = process.execArgv): (maxMb: number) => HeapSetting {
  if (onCommandLine(/^--(max[-_]semi[-_]space[-_]size|semi[-_]space[-_]growth[-_]factor)\b/, execArgv)) {
    return () => (applied.maxSemiSpaceMb = 'command line');
  }
  let factor = 0;
  const growBy = (next: number) => {
    if (next === factor) return;
    factor = next;
    v8.setFlagsFromString(`--semi-space-growth-factor=${next}`);
  };
  growBy(1);
  let capMb = 0;
  const steer = () => growBy(semiSpaceMb() * 2 <= capMb ? V8_GROWTH_FACTOR : 1);
  // Every collection, young or full: either may have grown or shrunk them.
  const observer = new PerformanceObserver(steer);
  return (maxMb) => {
    capMb = maxMb;
    if (maxMb === 0) {
      observer.disconnect();
      growBy(V8_GROWTH_FACTOR);
      return (applied.maxSemiSpaceMb = 'V8 default');
    }
    observer.observe({ entryTypes: ['gc'] });
    steer();
    applied.maxSemiSpaceMb = maxMb;
    return 'set';
  };
}
