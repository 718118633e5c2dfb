/**
 * "Has the client gone?" as a flag, with an AbortSignal made only for a caller that needs one.
 * Nearly every connection and exec only reads the flag (a `create` checks it once, before showing
 * the key); an AbortController per connection and per exec, with an EventTarget listener linking
 * them, was ~1.4% of the server's CPU per create (profiled at c=8).
 */
export type Interruption = {
  readonly aborted: boolean;
  /** An AbortSignal that follows this one (made on first use), for APIs that take a signal. */
  readonly signal: AbortSignal;
};

/** An AbortSignal as an Interruption (the shell's per-line signal, tests). */
export function interruptionOf(signal: AbortSignal): Interruption {
  return {
    signal,
    get aborted() {
      return signal.aborted;
    },
  };
}

/** What a connection shows of its LazyAbort: read and watched, aborted only by the connection. */
export type AbortWatch = Interruption & Pick<LazyAbort, 'onAbort'>;

export class LazyAbort implements Interruption {
  private controller: AbortController | undefined;
  private listeners: Set<() => void> | undefined;
  private done = false;
  private reason: unknown;

  get aborted(): boolean {
    return this.done;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.done) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  /** Without a reason, the signal's reason is the usual AbortError, as AbortController's. */
  abort(reason?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.reason = reason;
    this.controller?.abort(reason);
    const listeners = this.listeners;
    this.listeners = undefined;
    for (const listener of listeners ?? []) listener();
  }

  /**
   * Calls `listener` once, when aborted (at once if it already is). Returns what removes it: a
   * long connection runs many channels, and each one's listener must go with it.
   */
  onAbort(listener: () => void): () => void {
    if (this.done) {
      listener();
      return () => {};
    }
    // Each call adds its own entry, even for the same function.
    const entry = () => listener();
    (this.listeners ??= new Set()).add(entry);
    return () => this.listeners?.delete(entry);
  }
}
