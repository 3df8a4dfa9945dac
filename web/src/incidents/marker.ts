// An incident on the map: a diamond coloured by severity with a letter for its type.

import { type Incident, words } from "../messages";
import { el } from "../ui/dom";
import { typeLetter } from "./labels";

export function incidentMarker(id: string): HTMLElement {
  // MapLibre positions a marker with its own transform: the diamond's rotation goes on a child.
  return el("div", { class: "incident-marker", "data-testid": `incident-marker-${id}` }, el("span", { class: "diamond" }, el("span", {})));
}

export function updateIncidentMarker(element: HTMLElement, incident: Incident): void {
  element.dataset.severity = words(incident.severity, "SEVERITY_");
  element.dataset.state = words(incident.state, "INCIDENT_STATE_");
  element.title = `${incident.title ?? ""} (${words(incident.type, "INCIDENT_TYPE_")}, ${words(incident.state, "INCIDENT_STATE_")})`;
  const letter = element.querySelector(".diamond > span");
  if (letter) letter.textContent = typeLetter(incident);
}
