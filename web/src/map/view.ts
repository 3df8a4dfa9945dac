// The map: MapLibre with nothing fetched from anywhere. No tiles, fonts, glyphs or sprites: the
// background is a plain colour, the network is drawn from the gateway's GeoJSON, and every label is
// HTML (markers, popups), so the page works on a control-room network without internet.

import {
  type ExpressionSpecification,
  type LngLatLike,
  Map as MapLibre,
  Marker,
  NavigationControl,
  Popup,
  ScaleControl,
  setWorkerUrl,
  type StyleSpecification,
} from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
// The worker is emitted as an asset of the build (served from /dashboard/assets/), not looked up
// beside maplibre's own module, which bundling moves.
import workerUrl from "maplibre-gl/dist/maplibre-gl-worker.mjs?url";
import type { FeatureCollection } from "geojson";
import type { LatLng } from "../messages";
import type { RoadNetwork } from "./network";

setWorkerUrl(workerUrl);

const ALMERE_CENTRE: LngLatLike = [5.2147, 52.3702]; // until the network says where the city is
const LANES = "lanes";
const LIGHTS = "lights";

/** Per-lane state the layers colour by (MapLibre feature state, keyed by lane id). */
export interface LaneState {
  ratio?: number; // travel time / free-flow time; 0: free flow (or not known)
  closed?: boolean; // closed in the optimizer's model
  incident?: number; // 0 none, 1 closed by a reported/confirmed incident, 2 by an active one
}

/** Per-light state (keyed by traffic-light id = intersection id). */
export interface LightState {
  priority?: boolean; // a priority grant holds green now
  adaptive?: boolean; // driven by the optimizer's adaptive control
  pending?: boolean; // a proposal waits for an engineer
}

const STYLE: StyleSpecification = {
  version: 8,
  sources: {},
  layers: [{ id: "background", type: "background", paint: { "background-color": "#0e141c" } }],
};

const CLOSED_COLOUR = "#a00000"; // dark red, still visible on the dark background
const NO_MODEL_COLOUR = "#5d6d80"; // no travel times known (optimizer absent or refused)
const FREE_FLOW_COLOUR = "#2f9e44";

function laneColour(freeFlow: string): ExpressionSpecification {
  const ratio: ExpressionSpecification = ["to-number", ["coalesce", ["feature-state", "ratio"], 0]];
  return [
    "case",
    ["boolean", ["feature-state", "closed"], false],
    CLOSED_COLOUR,
    ["<", ratio, 1],
    freeFlow,
    ["interpolate", ["linear"], ratio, 1, FREE_FLOW_COLOUR, 1.5, "#e3c620", 2.5, "#f08c1a", 4, "#e02020"],
  ];
}

export class MapView {
  /** Resolves once the map has loaded and showNetwork's layers are on it (without a map: once called). */
  readonly shown: Promise<void>;
  private showNetworkNow: (network: RoadNetwork | null) => void = () => {};
  private readonly hover: Popup;

  private constructor(private readonly map: MapLibre | null) {
    this.hover = new Popup({ closeButton: false, closeOnClick: false, className: "hover", offset: 8 });
    const loaded = map ? new Promise<void>((resolve) => map.once("load", () => resolve())) : Promise.resolve();
    const network = new Promise<RoadNetwork | null>((resolve) => (this.showNetworkNow = resolve));
    this.shown = Promise.all([loaded, network]).then(([, net]) => this.addNetwork(net));
  }

  /** A map in `container`, or a stand-in without one when the browser has no WebGL. */
  static open(container: HTMLElement): MapView {
    if (!hasWebGL()) return new MapView(null);
    const map = new MapLibre({ container, style: STYLE, center: ALMERE_CENTRE, zoom: 13, attributionControl: false });
    map.addControl(new NavigationControl({ showCompass: true }), "top-left");
    map.addControl(new ScaleControl({ unit: "metric" }), "bottom-left");
    return new MapView(map);
  }

  get available(): boolean {
    return this.map !== null;
  }

  /** Draws the network (or nothing, when it could not be loaded) once the map has loaded. */
  showNetwork(network: RoadNetwork | null): void {
    this.showNetworkNow(network);
  }

  setLane(id: string, state: LaneState): void {
    this.map?.setFeatureState({ source: LANES, id }, state);
  }

  setLight(id: string, state: LightState): void {
    this.map?.setFeatureState({ source: LIGHTS, id }, state);
  }

  /** Whether travel times are known: then lanes the model does not list are drawn as free flow. */
  setTrafficKnown(known: boolean): void {
    this.map?.setPaintProperty(LANES, "line-color", laneColour(known ? FREE_FLOW_COLOUR : NO_MODEL_COLOUR));
  }

  /** Puts an HTML marker on the map; null without a map. */
  marker(element: HTMLElement, at: LatLng): Marker | null {
    if (!this.map) return null;
    return new Marker({ element }).setLngLat(lngLat(at)).addTo(this.map);
  }

  popup(at: LatLng, content: HTMLElement, onClose: () => void): Popup | null {
    if (!this.map) return null;
    const popup = new Popup({ maxWidth: "360px", offset: 14 }).setLngLat(lngLat(at)).setDOMContent(content);
    popup.on("close", onClose);
    return popup.addTo(this.map);
  }

  flyTo(at: LatLng): void {
    this.map?.easeTo({ center: lngLat(at), zoom: Math.max(this.map.getZoom(), 15) });
  }

  onLightClick(handler: (id: string) => void): void {
    this.map?.on("click", LIGHTS, (event) => {
      const id = event.features?.[0]?.properties["id"];
      if (typeof id === "string") handler(id);
    });
  }

  private addNetwork(network: RoadNetwork | null): void {
    const map = this.map;
    if (!map) return;
    const empty: FeatureCollection = { type: "FeatureCollection", features: [] };
    map.addSource(LANES, { type: "geojson", data: network?.lanes ?? empty, promoteId: "id" });
    map.addSource(LIGHTS, { type: "geojson", data: network?.lights ?? empty, promoteId: "id" });
    // Lanes widen with the zoom; the glow is the lane's width plus `extra` pixels.
    const width = (extra: number): ExpressionSpecification => ["interpolate", ["exponential", 1.6], ["zoom"], 12, 0.8 + extra, 15, 2.5 + extra, 18, 7 + extra];
    map.addLayer({
      // A wide magenta glow under the lanes an incident closes, so the lane colour stays readable.
      id: "incident-lanes",
      type: "line",
      source: LANES,
      layout: { "line-cap": "round" },
      paint: {
        "line-color": "#ff2bd6",
        "line-width": width(7),
        "line-opacity": ["match", ["to-number", ["coalesce", ["feature-state", "incident"], 0]], 2, 0.9, 1, 0.4, 0],
        "line-blur": 1,
      },
    });
    map.addLayer({
      id: LANES,
      type: "line",
      source: LANES,
      layout: { "line-cap": "round", "line-join": "round" },
      paint: { "line-color": laneColour(NO_MODEL_COLOUR), "line-width": width(0) },
    });
    map.addLayer({
      id: LIGHTS,
      type: "circle",
      source: LIGHTS,
      paint: {
        "circle-color": [
          "case",
          ["boolean", ["feature-state", "priority"], false], "#00e5ff",
          ["boolean", ["feature-state", "pending"], false], "#ffb300",
          ["boolean", ["feature-state", "adaptive"], false], "#b388ff",
          "#e8edf2",
        ],
        "circle-radius": [
          "interpolate", ["linear"], ["zoom"],
          12, ["case", ["boolean", ["feature-state", "priority"], false], 6, 2.5],
          17, ["case", ["boolean", ["feature-state", "priority"], false], 14, 6],
        ],
        "circle-stroke-color": "#0e141c",
        "circle-stroke-width": 1.5,
      },
    });
    this.hoverInfo(LANES, (p) => {
      const state = map.getFeatureState({ source: LANES, id: String(p["id"]) }) as LaneState;
      const traffic = state.closed ? "closed" : state.ratio ? `travel time ×${state.ratio.toFixed(1)}` : "";
      return [`lane ${p["id"]}`, `${Math.round(Number(p["speed"]) * 3.6)} km/h`, traffic].filter(Boolean).join(" · ");
    });
    this.hoverInfo(LIGHTS, (p) => `traffic light ${p["id"]}`);
    if (network?.bounds) map.fitBounds(network.bounds, { padding: 40, duration: 0 });
  }

  private hoverInfo(layer: string, text: (properties: Record<string, unknown>) => string): void {
    const map = this.map;
    if (!map) return;
    map.on("mousemove", layer, (event) => {
      const feature = event.features?.[0];
      if (!feature) return;
      map.getCanvas().style.cursor = layer === LIGHTS ? "pointer" : "";
      this.hover.setLngLat(event.lngLat).setText(text(feature.properties)).addTo(map);
    });
    map.on("mouseleave", layer, () => {
      map.getCanvas().style.cursor = "";
      this.hover.remove();
    });
  }
}

export function lngLat(at: LatLng): [number, number] {
  return [at.longitude ?? 0, at.latitude ?? 0];
}

/** Whether a map can be drawn at all (a headless or locked-down browser may lack WebGL). */
function hasWebGL(): boolean {
  const canvas = document.createElement("canvas");
  return Boolean(canvas.getContext("webgl2") ?? canvas.getContext("webgl"));
}
