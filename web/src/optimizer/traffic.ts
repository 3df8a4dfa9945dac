// The optimizer's live network model on the map: GetNetworkState every 2 s colours each lane by
// its edge's travel-time ratio (edges not listed run at free flow) and closed edges dark red;
// GetStatus tells whether a digital twin is feeding it, which the header shows. A role the
// optimizer refuses simply keeps the plain network.

import { ApiError, type Api } from "../api";
import type { GetNetworkStateResponse, GetStatusResponse } from "../messages";
import type { RoadNetwork } from "../map/network";
import type { LaneState, MapView } from "../map/view";
import { simClock } from "../ui/format";
import { every } from "../timing";

const POLL_MS = 2_000;
const TWIN_QUIET_MS = 60_000; // a twin that has not reported for this long has stopped

export class Traffic {
  private drawn = new Map<string, LaneState>(); // lanes coloured differently from free flow
  private known = false;

  constructor(
    private readonly api: Api,
    private readonly map: MapView,
    private readonly network: RoadNetwork | null,
    private readonly badge: HTMLElement,
  ) {}

  start(signal: AbortSignal): void {
    const stop = new AbortController(); // a refusal ends the polling: the role will not change
    signal.addEventListener("abort", () => stop.abort(), { once: true });
    every(POLL_MS, stop.signal, async () => {
      try {
        const [state, status] = await Promise.all([
          this.api.rpc<GetNetworkStateResponse>("optimizer", "GetNetworkState", {}, stop.signal),
          this.api.rpc<GetStatusResponse>("optimizer", "GetStatus", {}, stop.signal).catch(() => null),
        ]);
        this.draw(state);
        this.showTwin(state, status);
      } catch (error) {
        if (error instanceof ApiError && error.refused) stop.abort();
        this.forget();
      }
    });
  }

  private draw(state: GetNetworkStateResponse): void {
    if (!this.known) this.map.setTrafficKnown((this.known = true));
    const next = new Map<string, LaneState>();
    for (const edge of state.edges ?? []) {
      const free = edge.freeFlowSeconds ?? 0;
      const ratio = free > 0 ? (edge.travelTimeSeconds ?? 0) / free : 0;
      const lane: LaneState = { ratio: Math.round(ratio * 100) / 100, closed: Boolean(edge.closed) };
      for (const id of this.network?.lanesOf(edge.edgeId ?? "") ?? []) next.set(id, lane);
    }
    for (const id of this.drawn.keys()) if (!next.has(id)) this.map.setLane(id, { ratio: 0, closed: false });
    for (const [id, lane] of next) {
      const before = this.drawn.get(id);
      if (!before || before.ratio !== lane.ratio || before.closed !== lane.closed) this.map.setLane(id, lane);
    }
    this.drawn = next;
  }

  /** The model is out of reach: back to the plain network rather than colours going stale. */
  private forget(): void {
    if (!this.known) return;
    this.draw({});
    this.map.setTrafficKnown((this.known = false));
    this.badge.hidden = true;
  }

  private showTwin(state: GetNetworkStateResponse, status: GetStatusResponse | null): void {
    const edges = state.edges ?? [];
    const closed = edges.filter((e) => e.closed).length;
    const reported = Date.parse(status?.lastReportTime ?? "") || 0;
    const twin = (status?.lastSimTimeSeconds ?? 0) > 0 && Date.now() - reported < TWIN_QUIET_MS;
    this.badge.hidden = !twin && edges.length === 0;
    this.badge.dataset.twin = String(twin);
    const parts = [
      twin ? `Twin running · sim ${simClock(status?.lastSimTimeSeconds ?? 0)} · ${status?.vehicles ?? 0} equipped vehicles` : "Live traffic model",
      `${edges.length - closed} slowed edges`,
      closed ? `${closed} closed` : "",
    ];
    this.badge.textContent = parts.filter(Boolean).join(" · ");
  }
}
