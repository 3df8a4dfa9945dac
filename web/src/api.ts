// The gateway's HTTP API with the operator's own token: every call carries it, so each service
// decides what this role may see and do. Refusals arrive as RFC 9457 problem documents whose
// `detail` is the service's own message, which the operator is shown.

export type Service = "parking" | "incidents" | "signals" | "optimizer" | "whatif";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
  ) {
    super(detail || title);
  }

  /** The service said no to this role (not a fault that retrying could fix). */
  get refused(): boolean {
    return this.status === 403;
  }
}

export class Api {
  /** Called once the gateway no longer knows the token (revoked, expired): the session is over. */
  onUnauthenticated: (error: ApiError) => void = () => {};

  constructor(private readonly token: string) {}

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.json<T>(path, { signal: signal ?? null });
  }

  /** A unary RPC: the request and response messages in proto3 JSON. */
  rpc<T>(service: Service, method: string, request: object = {}, signal?: AbortSignal): Promise<T> {
    return this.json<T>(`/api/v1/rpc/${service}/${method}`, {
      method: "POST",
      body: JSON.stringify(request),
      headers: { "Content-Type": "application/json" },
      signal: signal ?? null,
    });
  }

  /** Opens a server stream as Server-Sent Events; the body is read by watch.ts. */
  async stream(service: Service, method: string, request: object, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const query = new URLSearchParams({ request: JSON.stringify(request) });
    const response = await this.fetch(`/api/v1/watch/${service}/${method}?${query}`, {
      headers: { Accept: "text/event-stream" },
      signal,
    });
    if (!response.body) throw new ApiError(502, "UNAVAILABLE", "the gateway sent an empty stream");
    return response.body;
  }

  private async json<T>(path: string, init: RequestInit): Promise<T> {
    const response = await this.fetch(path, init);
    return (await response.json()) as T;
  }

  private async fetch(path: string, init: RequestInit): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set("Authorization", `Bearer ${this.token}`);
    let response: Response;
    try {
      response = await fetch(path, { ...init, headers, cache: "no-store" });
    } catch (error) {
      if (init.signal?.aborted) throw error;
      throw new ApiError(0, "UNAVAILABLE", "the gateway cannot be reached");
    }
    if (response.ok) return response;
    const error = await problem(response);
    if (error.status === 401) this.onUnauthenticated(error);
    throw error;
  }
}

async function problem(response: Response): Promise<ApiError> {
  try {
    const body = (await response.json()) as { title?: string; detail?: string };
    return new ApiError(response.status, body.title ?? response.statusText, body.detail ?? body.title ?? "");
  } catch {
    return new ApiError(response.status, response.statusText, `HTTP ${response.status} ${response.statusText}`.trim());
  }
}

/** What to tell the operator about a failed call. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) return error.detail || error.title;
  return error instanceof Error ? error.message : String(error);
}
