// The parts of the services' messages (protos/almere/*/v1/*.proto) the dashboard reads, in their
// proto3 JSON form: lowerCamelCase names, enums by name, 64-bit integers as strings, timestamps as
// RFC 3339 strings, and every field at its default value left out (hence all optional).

export type Int64 = string | number;

export interface LatLng {
  latitude?: number;
  longitude?: number;
}

// --- parking ---

export type OccupancyStatus =
  | "OCCUPANCY_STATUS_UNSPECIFIED"
  | "OCCUPANCY_STATUS_UNKNOWN"
  | "OCCUPANCY_STATUS_SPACES_AVAILABLE"
  | "OCCUPANCY_STATUS_ALMOST_FULL"
  | "OCCUPANCY_STATUS_FULL"
  | "OCCUPANCY_STATUS_CLOSED";

export interface Occupancy {
  facility?: string;
  occupiedSpaces?: number;
  freeSpaces?: number;
  capacity?: number;
  status?: OccupancyStatus;
  updateTime?: string;
  version?: Int64;
  stale?: boolean;
}

export interface Facility {
  name?: string;
  displayName?: string;
  kind?: string;
  capacity?: number;
  location?: LatLng;
  occupancy?: Occupancy;
}

export interface ListFacilitiesResponse {
  facilities?: Facility[];
  nextPageToken?: string;
}

export interface WatchOccupancyResponse {
  occupancy?: Occupancy;
  snapshot?: boolean;
}

export interface OccupancyBucket {
  startTime?: string;
  minOccupiedSpaces?: number;
  maxOccupiedSpaces?: number;
  meanOccupiedSpaces?: number;
  known?: boolean;
}

export interface GetOccupancyHistoryResponse {
  buckets?: OccupancyBucket[];
  capacity?: number;
}

// --- incidents ---

export type IncidentState =
  | "INCIDENT_STATE_UNSPECIFIED"
  | "INCIDENT_STATE_REPORTED"
  | "INCIDENT_STATE_CONFIRMED"
  | "INCIDENT_STATE_ACTIVE"
  | "INCIDENT_STATE_CLEARING"
  | "INCIDENT_STATE_CLEARED"
  | "INCIDENT_STATE_CANCELLED"
  | "INCIDENT_STATE_UNVERIFIED"
  | "INCIDENT_STATE_REJECTED";

/** A partner's report (a security firm, a shop): its words, and what the police made of it. */
export interface PartnerReport {
  partner?: string;
  trustLevel?: string;
  description?: string;
  rejectionReason?: string;
  withheld?: boolean;
  withheldReason?: string;
}

export type Severity = "SEVERITY_UNSPECIFIED" | "SEVERITY_MINOR" | "SEVERITY_MODERATE" | "SEVERITY_MAJOR" | "SEVERITY_CRITICAL";

export interface Incident {
  name?: string;
  type?: string;
  severity?: Severity;
  reportingAgency?: string;
  state?: IncidentState;
  title?: string;
  location?: LatLng;
  networkLocation?: { edgeId?: string };
  impact?: { closedLanes?: number[]; fullClosure?: boolean; speedLimitKmh?: number };
  notes?: string;
  version?: Int64;
  updateTime?: string;
  partnerReport?: PartnerReport;
}

export interface ListIncidentsResponse {
  incidents?: Incident[];
  nextPageToken?: string;
}

export interface IncidentResponse {
  incident?: Incident;
  snapshot?: boolean;
}

// --- signals ---

export type PlanState =
  | "PLAN_STATE_UNSPECIFIED"
  | "PLAN_STATE_DRAFT"
  | "PLAN_STATE_PROPOSED"
  | "PLAN_STATE_SCHEDULED"
  | "PLAN_STATE_ACTIVE"
  | "PLAN_STATE_SUPERSEDED"
  | "PLAN_STATE_REJECTED";

export interface Plan {
  name?: string;
  version?: Int64;
  type?: string;
  cycleSeconds?: number;
  state?: PlanState;
  reason?: string;
  author?: string;
  createTime?: string;
}

export interface Intersection {
  name?: string;
  displayName?: string;
  proposalPolicy?: string;
}

export interface ListIntersectionsResponse {
  intersections?: Intersection[];
  nextPageToken?: string;
}

export interface ListPlansResponse {
  plans?: Plan[];
}

export interface Priority {
  priorityClass?: string;
  vehicleId?: string;
  approachEdgeId?: string;
  decision?: string;
  reason?: string;
  holdUntil?: string;
}

export interface SignalChange {
  intersection?: string;
  event?: string;
  version?: Int64;
  occurTime?: string;
  plan?: Plan;
  priority?: Priority;
  actor?: string;
  steps?: { reason?: string; sequence?: Int64 }[];
}

export interface WatchSignalsResponse {
  change?: SignalChange;
  snapshot?: boolean;
}

// --- optimizer ---

export interface EdgeState {
  edgeId?: string;
  travelTimeSeconds?: number;
  freeFlowSeconds?: number;
  closed?: boolean;
}

export interface GetNetworkStateResponse {
  edges?: EdgeState[];
}

export interface GetStatusResponse {
  vehicles?: number;
  lastReportTime?: string;
  lastSimTimeSeconds?: number;
}

export interface Strategy {
  incidentRerouting?: boolean;
  congestionRerouting?: boolean;
  parkingGuidance?: boolean;
  equippedShare?: number;
  decisionIntervalSeconds?: number;
  minGainSeconds?: number;
  minRelativeGain?: number;
  rerouteHoldSeconds?: number;
  reserveSpaces?: number;
}

export interface StrategyResponse {
  strategy?: Strategy;
}

export interface Decision {
  lever?: string;
  routeAdvice?: { vehicleId?: string };
  parkingGuidance?: { vehicleId?: string; parkingAreaId?: string };
  reason?: string;
  trigger?: Record<string, string>;
  decideTime?: string;
  simTimeSeconds?: number;
  expectedSeconds?: number;
}

export interface WatchDecisionsResponse {
  decision?: Decision;
}

// --- gateway ---

export interface WhoAmI {
  caller: string;
  role: string;
}

export interface Report {
  name: string;
  url: string;
  updated?: string;
}

export interface ReportsResponse {
  reports?: Report[];
}

// --- helpers ---

/** A 64-bit integer (a string in proto3 JSON) as a number; missing is 0. */
export function int(value: Int64 | undefined): number {
  return Number(value ?? 0);
}

/** The id after the collection: "facilities/p1" → "p1", "intersections/J1" → "J1". */
export function idOf(name: string | undefined): string {
  const value = name ?? "";
  return value.slice(value.indexOf("/") + 1);
}

/** An enum value as words: ("INCIDENT_STATE_CLEARING", "INCIDENT_STATE_") → "clearing". */
export function words(value: string | undefined, prefix: string): string {
  if (!value || value.endsWith("_UNSPECIFIED")) return "—";
  return (value.startsWith(prefix) ? value.slice(prefix.length) : value).toLowerCase().replaceAll("_", " ");
}

// --- what-if runs (almere.whatif.v1) ---

export type StartSource = "START_SOURCE_UNSPECIFIED" | "START_SOURCE_TWIN_STATE" | "START_SOURCE_LIVE_PICTURE";

export type SignalControl = "SIGNAL_CONTROL_UNSPECIFIED" | "SIGNAL_CONTROL_FIXED" | "SIGNAL_CONTROL_ADAPTIVE";

export type WhatIfState = "STATE_UNSPECIFIED" | "STATE_RUNNING" | "STATE_SUCCEEDED" | "STATE_FAILED";

export interface Closure {
  incident?: string;
  edgeId?: string;
  closedLanes?: number[];
  fullClosure?: boolean;
  speedLimitKmh?: number;
  expectedEndSeconds?: number;
}

export interface ResponsePlan {
  planId?: string;
  title?: string;
  closures?: Closure[];
  signals?: { sumoTlsIds?: string[]; control?: SignalControl }[];
  strategy?: Strategy;
  /** A FieldMask in proto3 JSON: the paths in lowerCamelCase, comma-separated. */
  strategyMask?: string;
}

export interface KpiSummary {
  mean?: number;
  min?: number;
  max?: number;
  stddev?: number;
  perSeed?: number[];
}

export interface PlanResult {
  planId?: string;
  startSource?: StartSource;
  kpis?: Record<string, KpiSummary>;
  rank?: number;
  score?: number;
  runSeconds?: number;
}

export interface WhatIf {
  name?: string;
  title?: string;
  state?: WhatIfState;
  startSources?: StartSource[];
  horizonMinutes?: number;
  seeds?: number;
  plans?: ResponsePlan[];
  createTime?: string;
  finishTime?: string;
  creator?: string;
  runsTotal?: number;
  runsDone?: number;
  results?: PlanResult[];
  reportPath?: string;
  error?: string;
  adoptedPlanId?: string;
  adoptedBy?: string;
}

export interface WhatIfResponse {
  whatIf?: WhatIf;
}

export interface ListWhatIfsResponse {
  whatIfs?: WhatIf[];
  nextPageToken?: string;
}

export interface AdoptPlanResponse {
  whatIf?: WhatIf;
  changes?: string[];
}
