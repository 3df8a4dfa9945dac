// Keeps one server stream open for as long as the dashboard runs: reads the gateway's Server-Sent
// Events with fetch (so the token goes along), hands each message on, and after the service ends
// the stream (its lifetime, a restart) or the connection dies, connects again after a backoff.
// A refusal is final: the panel then says the feed is not available to this role.

import { type Api, ApiError, describe, type Service } from "./api";
import { SseParser } from "./sse";
import { sleep } from "./timing";

export type WatchState =
  | { kind: "connecting" }
  | { kind: "live" }
  | { kind: "retrying"; detail: string }
  | { kind: "refused"; detail: string };

export interface WatchSpec<T> {
  service: Service;
  method: string;
  request?: object;
  /** Runs before every (re)connection, e.g. a List, so that nothing changed in a gap is missed. */
  resync?: (signal: AbortSignal) => Promise<void>;
  onMessage: (message: T) => void;
  onState: (state: WatchState) => void;
}

// The gateway pings every 15 s: three missed pings mean a dead connection, not a quiet city.
const SILENCE_MS = 45_000;
const MAX_BACKOFF_MS = 30_000;
// gRPC codes in an `error` event after which connecting again cannot help.
const FINAL_CODES = new Set(["PERMISSION_DENIED", "UNAUTHENTICATED", "UNIMPLEMENTED"]);

interface Ending {
  delivered: boolean; // whether any message came through (then the next try starts without delay)
  code: string;
  detail: string;
}

export function watch<T>(api: Api, spec: WatchSpec<T>, signal: AbortSignal): void {
  void keepWatching(api, spec, signal);
}

async function keepWatching<T>(api: Api, spec: WatchSpec<T>, signal: AbortSignal): Promise<void> {
  let failures = 0;
  while (!signal.aborted) {
    spec.onState({ kind: "connecting" });
    let ending: Ending;
    try {
      await spec.resync?.(signal);
      ending = await readStream(api, spec, signal);
    } catch (error) {
      if (signal.aborted) return;
      if (isFinal(error)) {
        spec.onState({ kind: "refused", detail: describe(error) });
        return;
      }
      ending = { delivered: false, code: "", detail: describe(error) };
    }
    if (FINAL_CODES.has(ending.code)) {
      spec.onState({ kind: "refused", detail: ending.detail });
      return;
    }
    failures = ending.delivered ? 0 : failures + 1;
    spec.onState({ kind: "retrying", detail: ending.detail });
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** failures);
    await sleep(backoff * (0.75 + Math.random() / 2), signal); // jitter: not every client at once
  }
}

/** Refused by the service or gateway for this role, or not offered at all. */
function isFinal(error: unknown): boolean {
  return error instanceof ApiError && [401, 403, 404, 405, 501].includes(error.status);
}

async function readStream<T>(api: Api, spec: WatchSpec<T>, signal: AbortSignal): Promise<Ending> {
  const connection = new AbortController();
  const stop = (): void => connection.abort();
  signal.addEventListener("abort", stop, { once: true });
  let silence = setTimeout(stop, SILENCE_MS);
  let delivered = false;
  try {
    const body = await api.stream(spec.service, spec.method, spec.request ?? {}, connection.signal);
    spec.onState({ kind: "live" });
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { delivered, code: "", detail: "the gateway closed the stream" };
      clearTimeout(silence);
      silence = setTimeout(stop, SILENCE_MS);
      for (const event of parser.push(decoder.decode(value, { stream: true }))) {
        if (event.event === "error") return { delivered, ...streamError(event.data) };
        if (event.event === "message") {
          deliver(spec, event.data);
          delivered = true;
        }
      }
    }
  } catch (error) {
    if (signal.aborted || error instanceof ApiError) throw error;
    const detail = connection.signal.aborted ? "the stream fell silent" : describe(error);
    return { delivered, code: "", detail };
  } finally {
    clearTimeout(silence);
    signal.removeEventListener("abort", stop);
    connection.abort();
  }
}

function streamError(data: string): { code: string; detail: string } {
  try {
    const parsed = JSON.parse(data) as { status?: string; detail?: string };
    return { code: parsed.status ?? "", detail: parsed.detail || parsed.status || "the stream ended" };
  } catch {
    return { code: "", detail: data };
  }
}

function deliver<T>(spec: WatchSpec<T>, data: string): void {
  try {
    spec.onMessage(JSON.parse(data) as T);
  } catch (error) {
    // One message the page cannot show must not tear down the stream for all the others.
    console.error(`${spec.service}/${spec.method}: message not applied`, error);
  }
}
