// Waiting and polling that stop with the session (its AbortSignal).

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Runs `task` now and then `intervalMs` after each run ends (never two at once), until aborted. */
export function every(intervalMs: number, signal: AbortSignal, task: () => Promise<void>): void {
  void (async () => {
    while (!signal.aborted) {
      try {
        await task();
      } catch (error) {
        if (!signal.aborted) console.warn("poll failed", error);
      }
      await sleep(intervalMs, signal);
    }
  })();
}
