// A facility on the map: a dot coloured by its occupancy status (hollow when the count is unknown
// or stale), its free spaces as an HTML label, and an arrow for the way they last moved.

import { type Occupancy, type OccupancyStatus } from "../messages";
import { el } from "../ui/dom";

export type Trend = "up" | "down" | "";

const STATUS_CLASS: Record<OccupancyStatus, string> = {
  OCCUPANCY_STATUS_UNSPECIFIED: "unknown",
  OCCUPANCY_STATUS_UNKNOWN: "unknown",
  OCCUPANCY_STATUS_SPACES_AVAILABLE: "available",
  OCCUPANCY_STATUS_ALMOST_FULL: "almost-full",
  OCCUPANCY_STATUS_FULL: "full",
  OCCUPANCY_STATUS_CLOSED: "closed",
};

export function statusClass(occupancy: Occupancy): string {
  return STATUS_CLASS[occupancy.status ?? "OCCUPANCY_STATUS_UNSPECIFIED"];
}

export class FacilityMarker {
  readonly element: HTMLElement;
  private readonly free = el("span", { class: "free" });
  private readonly arrow = el("span", { class: "trend" });

  constructor(id: string) {
    this.element = el("div", { class: "facility-marker", "data-testid": `facility-${id}` }, el("span", { class: "dot" }), el("span", { class: "label" }, this.free, this.arrow));
  }

  update(name: string, occupancy: Occupancy, trend: Trend): void {
    const free = occupancy.freeSpaces ?? 0;
    this.element.dataset.status = statusClass(occupancy);
    this.element.classList.toggle("hollow", this.element.dataset.status === "unknown" || Boolean(occupancy.stale));
    this.element.title = `${name}: ${free} free of ${occupancy.capacity ?? 0}${occupancy.stale ? " (stale count)" : ""}`;
    this.free.textContent = String(free);
    this.arrow.dataset.trend = trend;
    this.arrow.title = trend === "up" ? "free spaces rising" : trend === "down" ? "free spaces falling" : "";
  }
}
