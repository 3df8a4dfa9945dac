// The city's road network as the gateway serves it (GET /api/v1/network: the SUMO network in
// WGS84): its lanes, its traffic lights, and which lanes make up each edge.

import type { Feature as GeoFeature, FeatureCollection, Geometry, LineString, Point, Position } from "geojson";
import type { Api } from "../api";
import type { Incident } from "../messages";

export interface LaneProperties {
  kind: "lane";
  id: string; // "<edge>_<index>", as SUMO names lanes
  edge: string;
  index: number;
  speed: number; // m/s
}

export interface LightProperties {
  kind: "light";
  id: string; // the traffic light's id, which is the signal service's intersection id
  junction: string;
}

type Feature = GeoFeature<Geometry, LaneProperties | LightProperties>;

export class RoadNetwork {
  readonly lanes: FeatureCollection<LineString, LaneProperties>;
  readonly lights: FeatureCollection<Point, LightProperties>;
  /** [west, south, east, north], or null for an empty network. */
  readonly bounds: [number, number, number, number] | null;
  private readonly lanesByEdge = new Map<string, string[]>();

  constructor(collection: FeatureCollection) {
    const features = collection.features as Feature[];
    this.lanes = { type: "FeatureCollection", features: features.filter(isLane) };
    this.lights = { type: "FeatureCollection", features: features.filter(isLight) };
    for (const lane of this.lanes.features) {
      const { edge, id } = lane.properties;
      this.lanesByEdge.set(edge, [...(this.lanesByEdge.get(edge) ?? []), id]);
    }
    this.bounds = extent(this.lanes.features.flatMap((f) => f.geometry.coordinates).concat(this.lights.features.map((f) => f.geometry.coordinates)));
  }

  lanesOf(edge: string): string[] {
    return this.lanesByEdge.get(edge) ?? [];
  }

  /** The lanes an incident closes: the whole edge on a full closure, else its closed lane indices. */
  lanesClosedBy(incident: Incident): string[] {
    const edge = incident.networkLocation?.edgeId;
    if (!edge) return [];
    if (incident.impact?.fullClosure) return this.lanesOf(edge);
    const known = new Set(this.lanesOf(edge));
    return (incident.impact?.closedLanes ?? []).map((index) => `${edge}_${index}`).filter((id) => known.has(id));
  }
}

export async function loadNetwork(api: Api, signal: AbortSignal): Promise<RoadNetwork> {
  return new RoadNetwork(await api.get<FeatureCollection>("/api/v1/network", signal));
}

function isLane(feature: Feature): feature is GeoFeature<LineString, LaneProperties> {
  return feature.properties.kind === "lane" && feature.geometry.type === "LineString";
}

function isLight(feature: Feature): feature is GeoFeature<Point, LightProperties> {
  return feature.properties.kind === "light" && feature.geometry.type === "Point";
}

function extent(points: Position[]): [number, number, number, number] | null {
  if (points.length === 0) return null;
  let [west, south, east, north] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [lon = 0, lat = 0] of points) {
    west = Math.min(west, lon);
    east = Math.max(east, lon);
    south = Math.min(south, lat);
    north = Math.max(north, lat);
  }
  return [west, south, east, north];
}
