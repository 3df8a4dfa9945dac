// Parking facilities live: ListFacilities for where they are and what they are called, then
// WatchOccupancy for every count as it changes. Each facility is a marker on the map and a row in
// the side bar; clicking either opens its details with the history of the last hours.

import { type Api, describe } from "../api";
import { type Facility, idOf, int, type ListFacilitiesResponse, type Occupancy, type WatchOccupancyResponse, words } from "../messages";
import type { MapView } from "../map/view";
import { report } from "../status";
import { el } from "../ui/dom";
import { clock } from "../ui/format";
import type { Panel } from "../ui/panel";
import { watch } from "../watch";
import { historyChart, loadHistory } from "./history";
import { FacilityMarker, statusClass, type Trend } from "./marker";

interface Entry {
  facility: Facility;
  occupancy: Occupancy;
  trend: Trend;
  marker: FacilityMarker;
  row: HTMLElement;
}

const MAX_PAGES = 20;
const RELIST_AFTER_MS = 10_000; // at most this often when counts arrive for a facility not yet listed

export class Parking {
  private readonly entries = new Map<string, Entry>();
  private readonly list = el("ul", { class: "rows facilities" });
  private readonly summary = el("p", { class: "summary" });
  private details: { id: string; body: HTMLElement } | null = null;
  private lastListed = 0;

  constructor(
    private readonly api: Api,
    private readonly map: MapView,
    private readonly panel: Panel,
  ) {
    panel.body.append(this.summary, this.list);
  }

  /**
   * Watches occupancy, listing the facilities before each (re)connection so that those created in
   * a gap are placed too; resolves once the first list is on the map (or was refused).
   */
  start(signal: AbortSignal): Promise<void> {
    return new Promise((listed) => {
      watch<WatchOccupancyResponse>(
        this.api,
        {
          service: "parking",
          method: "WatchOccupancy",
          resync: (s) => this.listAll(s).finally(listed),
          onMessage: (message) => message.occupancy && this.apply(message.occupancy, signal),
          onState: (state) => {
            this.panel.feed(state);
            if (state.kind === "refused") listed();
          },
        },
        signal,
      );
    });
  }

  private async listAll(signal: AbortSignal): Promise<void> {
    this.lastListed = Date.now();
    let pageToken = "";
    for (let page = 0; page < MAX_PAGES; page++) {
      const reply = await this.api.rpc<ListFacilitiesResponse>("parking", "ListFacilities", { pageSize: 1000, pageToken }, signal);
      for (const facility of reply.facilities ?? []) this.upsert(facility);
      pageToken = reply.nextPageToken ?? "";
      if (!pageToken) break;
    }
    this.render();
  }

  private upsert(facility: Facility): void {
    const id = idOf(facility.name);
    const known = this.entries.get(id);
    if (known) {
      known.facility = facility;
      if (facility.occupancy) this.setOccupancy(known, facility.occupancy);
      return;
    }
    const marker = new FacilityMarker(id);
    const entry: Entry = { facility, occupancy: facility.occupancy ?? {}, trend: "", marker, row: el("li") };
    entry.row.addEventListener("click", () => this.open(id));
    marker.element.addEventListener("click", (event) => {
      event.stopPropagation(); // the map's own click would close the popup it opens
      this.open(id);
    });
    if (facility.location) this.map.marker(marker.element, facility.location);
    this.entries.set(id, entry);
    this.draw(entry);
  }

  private apply(occupancy: Occupancy, signal: AbortSignal): void {
    const entry = this.entries.get(idOf(occupancy.facility));
    if (!entry) {
      // A facility created after the list: list again (not for every count of it).
      if (Date.now() - this.lastListed > RELIST_AFTER_MS) this.listAll(signal).catch(() => {});
      return;
    }
    this.setOccupancy(entry, occupancy);
    this.summarise();
  }

  private setOccupancy(entry: Entry, occupancy: Occupancy): void {
    // Versions only grow: an older count (a List answered before a change the watch has sent) is dropped.
    if (int(occupancy.version) < int(entry.occupancy.version)) return;
    const before = entry.occupancy.freeSpaces ?? 0;
    const after = occupancy.freeSpaces ?? 0;
    if (entry.occupancy.version !== undefined && after !== before) entry.trend = after > before ? "up" : "down";
    entry.occupancy = occupancy;
    this.draw(entry);
  }

  private draw(entry: Entry): void {
    const name = nameOf(entry);
    entry.marker.update(name, entry.occupancy, entry.trend);
    const { freeSpaces = 0, capacity = entry.facility.capacity ?? 0 } = entry.occupancy;
    entry.row.replaceChildren(
      el("span", { class: `status-dot ${statusClass(entry.occupancy)}${entry.occupancy.stale ? " hollow" : ""}` }),
      el("span", { class: "name" }, name),
      el("span", { class: "figure" }, `${freeSpaces} / ${capacity}`),
    );
    if (this.details?.id === idOf(entry.facility.name)) this.fillDetails(entry, this.details.body);
  }

  /** The rows in name order (they only move when a list brings new facilities). */
  private render(): void {
    const sorted = [...this.entries.values()].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
    this.list.replaceChildren(...sorted.map((e) => e.row));
    this.summarise();
  }

  /** The summary line and the test hook's count. */
  private summarise(): void {
    const entries = [...this.entries.values()];
    const free = entries.reduce((sum, e) => sum + (e.occupancy.freeSpaces ?? 0), 0);
    const full = entries.filter((e) => e.occupancy.status === "OCCUPANCY_STATUS_FULL").length;
    this.summary.textContent = `${entries.length} facilities · ${free} free spaces · ${full} full`;
    report({ facilities: entries.length });
  }

  private open(id: string): void {
    const entry = this.entries.get(id);
    if (!entry?.facility.location) return;
    const body = el("div", { class: "facility-details" });
    const chart = el("div", { class: "chart" }, "loading history…");
    this.details = { id, body };
    this.fillDetails(entry, body);
    this.map.flyTo(entry.facility.location);
    this.map.popup(entry.facility.location, el("div", {}, body, chart), () => {
      if (this.details?.body === body) this.details = null;
    });
    loadHistory(this.api, entry.facility.name ?? "")
      .then((history) => chart.replaceChildren(historyChart(history)))
      .catch((error: unknown) => chart.replaceChildren(`history not available: ${describe(error)}`));
  }

  private fillDetails(entry: Entry, body: HTMLElement): void {
    const { occupancy, facility } = entry;
    body.replaceChildren(
      el("h3", {}, nameOf(entry)),
      el("p", { class: "figure" }, `${occupancy.freeSpaces ?? 0} free of ${occupancy.capacity ?? facility.capacity ?? 0}`),
      el("p", {}, `${words(occupancy.status, "OCCUPANCY_STATUS_")} · ${words(facility.kind, "FACILITY_KIND_")}`),
      occupancy.updateTime ? el("p", { class: "meta" }, `last change ${clock(occupancy.updateTime)}`) : "",
    );
    if (occupancy.stale) body.append(el("p", { class: "warning" }, "stale: the last count is older than the facility's limit"));
  }
}

function nameOf(entry: Entry): string {
  return entry.facility.displayName || idOf(entry.facility.name);
}
