import { describe, expect, it } from 'vitest';
import { interruptionOf, LazyAbort } from '../../src/ssh/lazy-abort.js';

describe('LazyAbort: a "client gone" flag whose AbortSignal is made only when asked for', () => {
  it('aborts once, with its reason, and tells each watcher once', () => {
    const gone = new LazyAbort();
    const heard: string[] = [];
    gone.onAbort(() => heard.push('a'));
    gone.onAbort(() => heard.push('b'));
    expect(gone.aborted).toBe(false);
    const reason = new Error('the SSH client went away');
    gone.abort(reason);
    gone.abort(new Error('later'));
    expect(gone.aborted).toBe(true);
    expect(heard).toEqual(['a', 'b']);
    // A signal asked for after the abort is already aborted, with the first reason.
    expect(gone.signal.aborted).toBe(true);
    expect(gone.signal.reason).toBe(reason);
    // Watching an aborted one: told at once.
    gone.onAbort(() => heard.push('late'));
    expect(heard).toEqual(['a', 'b', 'late']);
  });

  it('a signal made before the abort follows it; with no reason, the reason is an AbortError', () => {
    const gone = new LazyAbort();
    const signal = gone.signal;
    expect(gone.signal).toBe(signal);
    let fired = 0;
    signal.addEventListener('abort', () => fired++);
    gone.abort();
    expect(signal.aborted).toBe(true);
    expect(fired).toBe(1);
    expect((signal.reason as Error).name).toBe('AbortError');
  });

  it('a removed watcher is not told (a channel that closed unwatches its connection)', () => {
    const connection = new LazyAbort();
    const heard: number[] = [];
    const unwatch = [1, 2, 3].map((n) => connection.onAbort(() => heard.push(n)));
    unwatch[0]!();
    unwatch[2]!();
    unwatch[2]!();
    connection.abort();
    expect(heard).toEqual([2]);
  });

  it('the same function watching twice is told twice, and one removal removes one', () => {
    const gone = new LazyAbort();
    let heard = 0;
    const listener = () => heard++;
    const first = gone.onAbort(listener);
    gone.onAbort(listener);
    first();
    gone.abort();
    expect(heard).toBe(1);
  });

  it('interruptionOf reads an AbortSignal as it is now', () => {
    const controller = new AbortController();
    const interruption = interruptionOf(controller.signal);
    expect(interruption.aborted).toBe(false);
    controller.abort();
    expect(interruption.aborted).toBe(true);
    expect(interruption.signal).toBe(controller.signal);
  });
});
