// Incidents live: ListIncidents (the open ones), then WatchIncidents for every change. Each open
// incident is a marker, the lanes it closes glow on the map, and the side bar lists them all with
// their lifecycle actions (TransitionIncident, with the operator's own token).

import type { Api } from "../api";
import { idOf, type Incident, type IncidentResponse, type IncidentState, int, type ListIncidentsResponse } from "../messages";
import type { Marker } from "maplibre-gl";
import type { RoadNetwork } from "../map/network";
import { lngLat, type MapView } from "../map/view";
import { report } from "../status";
import { busy, el } from "../ui/dom";
import { failed } from "../ui/message";
import type { Panel } from "../ui/panel";
import { watch } from "../watch";
import { affectsTraffic, OPEN_STATES, severityRank, TERMINAL } from "./labels";
import { incidentMarker, updateIncidentMarker } from "./marker";
import { incidentRow } from "./row";

interface Entry {
  incident: Incident;
  row: HTMLLIElement;
  marker: { element: HTMLElement; handle: Marker | null } | null;
}

const MAX_PAGES = 10;
const MAX_FINISHED_ROWS = 50; // cleared and cancelled ones stay listed for a while, newest first

export class Incidents {
  private readonly entries = new Map<string, Entry>();
  private readonly list = el("ul", { class: "rows incidents", "data-testid": "incidents" });
  private glowing = new Map<string, number>(); // lane id → how strongly an incident closes it

  constructor(
    private readonly api: Api,
    private readonly map: MapView,
    private readonly network: RoadNetwork | null,
    private readonly panel: Panel,
  ) {
    panel.body.append(this.list);
  }

  /**
   * Watches incidents, listing the open ones before each (re)connection; resolves once the first
   * list is shown (or was refused).
   */
  start(signal: AbortSignal): Promise<void> {
    return new Promise((listed) => {
      watch<IncidentResponse>(
        this.api,
        {
          service: "incidents",
          method: "WatchIncidents",
          resync: (s) => this.listOpen(s).finally(listed),
          onMessage: (message) => {
            if (message.incident) this.apply([message.incident]);
          },
          onState: (state) => {
            this.panel.feed(state);
            if (state.kind === "refused") listed();
          },
        },
        signal,
      );
    });
  }

  private async listOpen(signal: AbortSignal): Promise<void> {
    const listed: Incident[] = [];
    let pageToken = "";
    for (let page = 0; page < MAX_PAGES; page++) {
      const request = { pageSize: 1000, pageToken, states: OPEN_STATES };
      const reply = await this.api.rpc<ListIncidentsResponse>("incidents", "ListIncidents", request, signal);
      listed.push(...(reply.incidents ?? []));
      pageToken = reply.nextPageToken ?? "";
      if (!pageToken) break;
    }
    this.apply(listed);
    // Shown as open but no longer listed as open: it ended while the stream was down.
    const names = new Set(listed.map((i) => i.name));
    const ended = [...this.entries.values()].filter((e) => !TERMINAL.has(e.incident.state) && !names.has(e.incident.name));
    for (const entry of ended) {
      const reply = await this.api
        .rpc<IncidentResponse>("incidents", "GetIncident", { name: entry.incident.name }, signal)
        .catch(() => ({ incident: { ...entry.incident, state: "INCIDENT_STATE_CLEARED" as const } }));
      if (reply.incident) this.apply([reply.incident]);
    }
  }

  private apply(incidents: Incident[]): void {
    for (const incident of incidents) {
      const id = idOf(incident.name);
      const known = this.entries.get(id);
      // Versions only grow: an older copy (a List answered before a change the watch has sent) is dropped.
      if (known && int(incident.version) < int(known.incident.version)) continue;
      const entry: Entry = known ?? { incident, row: el("li"), marker: null };
      entry.incident = incident;
      this.draw(id, entry);
      this.entries.set(id, entry);
    }
    this.render();
  }

  private draw(id: string, entry: Entry): void {
    const { incident } = entry;
    const row = incidentRow(incident, (to, label, b) => void busy(b, () => this.transition(incident, to, label)), () => this.select(id));
    entry.row.replaceWith(row);
    entry.row = row;
    const onMap = !TERMINAL.has(incident.state) && incident.location;
    if (onMap && !entry.marker) {
      const element = incidentMarker(id);
      element.addEventListener("click", (event) => {
        event.stopPropagation();
        this.select(id);
      });
      entry.marker = { element, handle: this.map.marker(element, incident.location ?? {}) };
    }
    if (!onMap && entry.marker) {
      entry.marker.handle?.remove();
      entry.marker = null;
    }
    if (entry.marker && incident.location) {
      entry.marker.handle?.setLngLat(lngLat(incident.location));
      updateIncidentMarker(entry.marker.element, incident);
    }
  }

  /** Rows in order (open first, the most severe first, then the newest), closures and counts. */
  private render(): void {
    const entries = [...this.entries.values()];
    const open = entries.filter((e) => !TERMINAL.has(e.incident.state));
    const finished = entries.filter((e) => TERMINAL.has(e.incident.state));
    open.sort((a, b) => severityRank(b.incident) - severityRank(a.incident) || newest(a, b));
    finished.sort(newest);
    for (const entry of finished.slice(MAX_FINISHED_ROWS)) this.entries.delete(idOf(entry.incident.name));
    this.list.replaceChildren(...open.map((e) => e.row), ...finished.slice(0, MAX_FINISHED_ROWS).map((e) => e.row));
    this.glow(open.map((e) => e.incident));
    report({ incidents: this.entries.size });
  }

  /** Lights up the lanes open incidents close (strongest where they affect traffic now). */
  private glow(open: Incident[]): void {
    if (!this.network) return;
    const next = new Map<string, number>();
    for (const incident of open) {
      const level = affectsTraffic(incident) ? 2 : 1;
      for (const lane of this.network.lanesClosedBy(incident)) next.set(lane, Math.max(level, next.get(lane) ?? 0));
    }
    for (const lane of this.glowing.keys()) if (!next.has(lane)) this.map.setLane(lane, { incident: 0 });
    for (const [lane, level] of next) if (this.glowing.get(lane) !== level) this.map.setLane(lane, { incident: level });
    this.glowing = next;
  }

  private async transition(incident: Incident, state: IncidentState, label: string): Promise<void> {
    try {
      const reply = await this.api.rpc<IncidentResponse>("incidents", "TransitionIncident", {
        name: incident.name,
        state,
        reason: "from the control-room dashboard",
      });
      if (reply.incident) this.apply([reply.incident]);
    } catch (error) {
      failed(`${label} “${incident.title || idOf(incident.name)}”`, error);
    }
  }

  private select(id: string): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    entry.row.scrollIntoView({ block: "nearest", behavior: "smooth" });
    entry.row.classList.add("selected");
    setTimeout(() => entry.row.classList.remove("selected"), 2000);
    if (entry.incident.location && !TERMINAL.has(entry.incident.state)) this.map.flyTo(entry.incident.location);
  }
}

function newest(a: Entry, b: Entry): number {
  return (b.incident.updateTime ?? "").localeCompare(a.incident.updateTime ?? "");
}

