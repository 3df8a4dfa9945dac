// A facility's occupancy over the last hours (ParkingService.GetOccupancyHistory), drawn by hand as
// a small SVG: the mean per bucket, the min–max band around it, and the capacity.

import type { Api } from "../api";
import type { GetOccupancyHistoryResponse, OccupancyBucket } from "../messages";

const HOURS = 4;
const BUCKET_SECONDS = 300;
const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a resource
const [WIDTH, HEIGHT, LEFT, BOTTOM, TOP] = [320, 130, 36, 18, 8];

export async function loadHistory(api: Api, facility: string): Promise<GetOccupancyHistoryResponse> {
  const start = new Date(Date.now() - HOURS * 3600_000).toISOString();
  return api.rpc<GetOccupancyHistoryResponse>("parking", "GetOccupancyHistory", {
    facility,
    startTime: start,
    bucket: `${BUCKET_SECONDS}s`,
  });
}

export function historyChart(history: GetOccupancyHistoryResponse): SVGSVGElement {
  const buckets = (history.buckets ?? []).filter((b) => b.known && b.startTime);
  const capacity = history.capacity ?? 0;
  const end = Date.now();
  const start = end - HOURS * 3600_000;
  const top = Math.max(capacity, ...buckets.map((b) => b.maxOccupiedSpaces ?? 0), 1);
  const x = (time: number): number => LEFT + ((time - start) / (end - start)) * (WIDTH - LEFT - 4);
  const y = (spaces: number): number => HEIGHT - BOTTOM - (spaces / top) * (HEIGHT - BOTTOM - TOP);
  const middle = (b: OccupancyBucket): number => Date.parse(b.startTime ?? "") + (BUCKET_SECONDS * 1000) / 2;

  const svg = node("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "history", role: "img" });
  svg.append(node("title", {}, `Occupied spaces over the last ${HOURS} hours`));
  for (let hour = Math.ceil(start / 3600_000) * 3600_000; hour <= end; hour += 3600_000) {
    const at = x(hour);
    svg.append(node("line", { x1: at, x2: at, y1: TOP, y2: HEIGHT - BOTTOM, class: "grid" }));
    const label = new Date(hour).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
    svg.append(node("text", { x: at, y: HEIGHT - 4, "text-anchor": "middle" }, label));
  }
  if (capacity > 0) {
    svg.append(node("line", { x1: LEFT, x2: WIDTH - 4, y1: y(capacity), y2: y(capacity), class: "capacity" }));
    svg.append(node("text", { x: LEFT - 4, y: y(capacity) + 4, "text-anchor": "end" }, String(capacity)));
  }
  svg.append(node("text", { x: LEFT - 4, y: y(0) + 4, "text-anchor": "end" }, "0"));
  if (buckets.length === 0) {
    svg.append(node("text", { x: (WIDTH + LEFT) / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "no counts in this period"));
    return svg;
  }
  const band = [
    ...buckets.map((b) => `${x(middle(b))},${y(b.maxOccupiedSpaces ?? 0)}`),
    ...buckets.toReversed().map((b) => `${x(middle(b))},${y(b.minOccupiedSpaces ?? 0)}`),
  ];
  svg.append(node("polygon", { points: band.join(" "), class: "band" }));
  svg.append(node("polyline", { points: buckets.map((b) => `${x(middle(b))},${y(b.meanOccupiedSpaces ?? 0)}`).join(" "), class: "mean" }));
  return svg;
}

function node<K extends keyof SVGElementTagNameMap>(tag: K, attributes: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}
