// How incidents read: their lifecycle, and the transitions an operator can ask for.

import type { Incident, IncidentState } from "../messages";

export const TERMINAL: ReadonlySet<IncidentState | undefined> = new Set([
  "INCIDENT_STATE_CLEARED",
  "INCIDENT_STATE_CANCELLED",
  "INCIDENT_STATE_REJECTED",
]);

/** The states still affecting (or about to affect) traffic, as ListIncidents filters them; a partner's
 * report waiting for the police (UNVERIFIED) is listed to public safety only (the service decides). */
export const OPEN_STATES: IncidentState[] = [
  "INCIDENT_STATE_UNVERIFIED",
  "INCIDENT_STATE_REPORTED",
  "INCIDENT_STATE_CONFIRMED",
  "INCIDENT_STATE_ACTIVE",
  "INCIDENT_STATE_CLEARING",
];

export interface Action {
  key: string; // in the button's data-testid: incident-<id>-<key>
  label: string;
  to: IncidentState;
  after: IncidentState; // the state this action is the natural next step from
}

// REPORTED -> CONFIRMED -> ACTIVE -> CLEARING -> CLEARED (incidents.proto). Every button is offered
// in every open state: the service decides what this role may do, and its refusal is shown.
const LIFECYCLE: Action[] = [
  { key: "confirm", label: "Confirm", to: "INCIDENT_STATE_CONFIRMED", after: "INCIDENT_STATE_REPORTED" },
  { key: "activate", label: "Activate", to: "INCIDENT_STATE_ACTIVE", after: "INCIDENT_STATE_CONFIRMED" },
  { key: "clearing", label: "Clearing", to: "INCIDENT_STATE_CLEARING", after: "INCIDENT_STATE_ACTIVE" },
  { key: "clear", label: "Clear", to: "INCIDENT_STATE_CLEARED", after: "INCIDENT_STATE_CLEARING" },
];

// A partner's report waits for the police: they verify it (then it is an incident like any other),
// or reject it (the partner reads why).
const VERIFICATION: Action[] = [
  { key: "verify", label: "Verify", to: "INCIDENT_STATE_CONFIRMED", after: "INCIDENT_STATE_UNVERIFIED" },
  { key: "activate", label: "Activate", to: "INCIDENT_STATE_ACTIVE", after: "INCIDENT_STATE_UNVERIFIED" },
  { key: "reject", label: "Reject", to: "INCIDENT_STATE_REJECTED", after: "INCIDENT_STATE_UNVERIFIED" },
];

/** The buttons an incident in this state offers. */
export function actionsFor(state: IncidentState | undefined): Action[] {
  return state === "INCIDENT_STATE_UNVERIFIED" ? VERIFICATION : LIFECYCLE;
}

const SEVERITY_RANK: Record<string, number> = { SEVERITY_CRITICAL: 4, SEVERITY_MAJOR: 3, SEVERITY_MODERATE: 2, SEVERITY_MINOR: 1 };

export function severityRank(incident: Incident): number {
  return SEVERITY_RANK[incident.severity ?? ""] ?? 0;
}

/** Whether the incident affects traffic now (its closures are drawn strongest). */
export function affectsTraffic(incident: Incident): boolean {
  return incident.state === "INCIDENT_STATE_ACTIVE" || incident.state === "INCIDENT_STATE_CLEARING";
}

// One letter per type inside the marker (full words in its tooltip): no icon font to fetch.
const TYPE_LETTER: Record<string, string> = {
  INCIDENT_TYPE_COLLISION: "C",
  INCIDENT_TYPE_BREAKDOWN: "B",
  INCIDENT_TYPE_HAZARD: "H",
  INCIDENT_TYPE_ROAD_WORKS: "W",
  INCIDENT_TYPE_POLICE_ACTION: "P",
  INCIDENT_TYPE_FIRE: "F",
  INCIDENT_TYPE_MEDICAL: "M",
  INCIDENT_TYPE_DEMONSTRATION: "D",
  INCIDENT_TYPE_PLANNED_EVENT: "E",
  INCIDENT_TYPE_WEATHER: "S",
};

export function typeLetter(incident: Incident): string {
  return TYPE_LETTER[incident.type ?? ""] ?? "!";
}
