// What-if runs (almere.whatif.v1.WhatIfService): the recent ones with their progress, a button that
// starts one from now with three default plans, and, once one has its answer, its plans ranked per
// start source with each KPI's mean and the seeds' range, the report and an "Adopt" per plan.
// Engineers create and adopt; other roles may read, and the service's refusals are shown.

import { type Api, ApiError, describe } from "../api";
import type {
  AdoptPlanResponse,
  ListIncidentsResponse,
  ListWhatIfsResponse,
  PlanResult,
  ResponsePlan,
  StartSource,
  WhatIf,
  WhatIfResponse,
} from "../messages";
import { busy, button, el } from "../ui/dom";
import { day } from "../ui/format";
import { failed, say } from "../ui/message";
import type { Panel } from "../ui/panel";
import { every } from "../timing";

const REFRESH_MS = 30_000; // the list while nothing runs
const POLL_MS = 2_000; // while a what-if runs
const LISTED = 10;
const HORIZON_MINUTES = 60;
const SEEDS = 3;
const SOURCES: StartSource[] = ["START_SOURCE_TWIN_STATE"];

// The KPIs the table shows (docs/whatif.md), with their labels.
const KPIS: [string, string][] = [
  ["network_delay_h", "delay h"],
  ["through_travel_time_s", "through s"],
  ["visitor_door_to_door_s", "visitors s"],
  ["incident_queue_veh", "queue veh"],
  ["emergency_access_s", "emergency s"],
  ["arrived", "arrived"],
];

const STATES: Record<string, string> = {
  STATE_RUNNING: "running",
  STATE_SUCCEEDED: "done",
  STATE_FAILED: "failed",
};

/** The three default plans; "close and detour" only with an active incident on a network edge. */
export function defaultPlans(incident: { name?: string; edgeId?: string } | null): ResponsePlan[] {
  const plans: ResponsePlan[] = [{ planId: "do-nothing", title: "Do nothing" }];
  if (incident?.edgeId) {
    plans.push({
      planId: "close-and-detour",
      title: `Close ${incident.edgeId} and detour`,
      closures: [{ incident: incident.name, edgeId: incident.edgeId, fullClosure: true }],
      strategy: { incidentRerouting: true },
      strategyMask: "incidentRerouting",
    });
  }
  plans.push({
    planId: "adaptive-and-guidance",
    title: "Adaptive lights, parking guidance and congestion rerouting",
    signals: [{ control: "SIGNAL_CONTROL_ADAPTIVE" }],
    strategy: { parkingGuidance: true, congestionRerouting: true },
    strategyMask: "parkingGuidance,congestionRerouting",
  });
  return plans;
}

function sourceLabel(source: StartSource | undefined): string {
  return (source ?? "START_SOURCE_UNSPECIFIED").replace("START_SOURCE_", "").toLowerCase().replace("_", " ");
}

function number(value: number | undefined): string {
  const v = value ?? 0;
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1);
}

/** The report's page under the gateway's /reports/ (the service names its report.md). */
export function reportUrl(path: string): string {
  const page = path.replace(/\.md$/, ".html");
  return page.startsWith("/") ? page : `/reports/${page.split("/").map(encodeURIComponent).join("/")}`;
}

function idOf(whatIf: WhatIf): string {
  return (whatIf.name ?? "").replace(/^whatIfs\//, "");
}

export class WhatIfs {
  private readonly list = el("ul", { class: "rows whatifs", "data-testid": "whatifs" });
  private readonly detail = el("div", { class: "whatif-detail", "data-testid": "whatif-detail" });
  private readonly start = button("Run a what-if from now", "whatif-start", (node) => void busy(node, () => this.create()));
  private selected = "";
  private whatIfs: WhatIf[] = [];
  private changes: string[] = [];
  // The session's signal, and the poller that follows running what-ifs (one at a time).
  private session: AbortSignal | null = null;
  private poll = new AbortController();
  private polling = false;

  constructor(
    private readonly api: Api,
    private readonly panel: Panel,
  ) {
    panel.body.append(el("div", { class: "actions" }, this.start), this.list, this.detail);
  }

  begin(signal: AbortSignal): void {
    const stop = new AbortController(); // refused: this role does not read what-ifs at all
    signal.addEventListener("abort", () => stop.abort(), { once: true });
    every(REFRESH_MS, stop.signal, async () => {
      try {
        await this.refresh(stop.signal);
        this.panel.feed({ kind: "live" });
      } catch (error) {
        if (error instanceof ApiError && error.refused) {
          this.panel.refuse(error.detail);
          stop.abort();
        } else {
          this.panel.feed({ kind: "retrying", detail: describe(error) });
        }
      }
    });
    this.stopWith(stop.signal);
  }

  private stopWith(signal: AbortSignal): void {
    this.session = signal;
    signal.addEventListener("abort", () => this.poll.abort(), { once: true });
  }

  private async refresh(signal: AbortSignal): Promise<void> {
    const reply = await this.api.rpc<ListWhatIfsResponse>("whatif", "ListWhatIfs", { pageSize: LISTED }, signal);
    this.whatIfs = reply.whatIfs ?? [];
    if (!this.selected && this.whatIfs[0]) this.selected = this.whatIfs[0].name ?? "";
    this.show();
    if (this.whatIfs.some((w) => w.state === "STATE_RUNNING")) this.follow();
  }

  /** Polls while any listed what-if runs (one poller at a time). */
  private follow(): void {
    if (!this.poll.signal.aborted && this.polling) return;
    if (!this.session || this.session.aborted) return;
    this.poll = new AbortController();
    const poll = this.poll;
    this.session.addEventListener("abort", () => poll.abort(), { once: true });
    this.polling = true;
    every(POLL_MS, poll.signal, async () => {
      const running = this.whatIfs.filter((w) => w.state === "STATE_RUNNING");
      if (running.length === 0) {
        this.polling = false;
        poll.abort();
        return;
      }
      for (const whatIf of running) {
        const reply = await this.api.rpc<WhatIfResponse>("whatif", "GetWhatIf", { name: whatIf.name }, poll.signal);
        if (reply.whatIf) this.replace(reply.whatIf);
      }
      this.show();
    });
  }

  private replace(whatIf: WhatIf): void {
    const index = this.whatIfs.findIndex((w) => w.name === whatIf.name);
    if (index >= 0) this.whatIfs[index] = whatIf;
    else this.whatIfs.unshift(whatIf);
  }

  private async create(): Promise<void> {
    try {
      const listed = await this.api.rpc<ListIncidentsResponse>("incidents", "ListIncidents", { states: ["INCIDENT_STATE_ACTIVE"] });
      const incident = (listed.incidents ?? []).find((i) => i.networkLocation?.edgeId);
      if (!incident) say("No active incident on a network edge: the what-if runs without “close and detour”.", "info");
      const whatIf: WhatIf = {
        title: incident ? `Response to ${incident.title || incident.name}` : "From now",
        horizonMinutes: HORIZON_MINUTES,
        seeds: SEEDS,
        startSources: SOURCES,
        plans: defaultPlans(incident ? { name: incident.name, edgeId: incident.networkLocation?.edgeId } : null),
      };
      const reply = await this.api.rpc<WhatIfResponse>("whatif", "CreateWhatIf", { whatIf });
      if (reply.whatIf) {
        this.replace(reply.whatIf);
        this.selected = reply.whatIf.name ?? "";
        this.changes = [];
      }
      this.show();
      this.follow();
    } catch (error) {
      failed("Start a what-if", error);
    }
  }

  private async adopt(whatIf: WhatIf, planId: string): Promise<void> {
    try {
      const reply = await this.api.rpc<AdoptPlanResponse>("whatif", "AdoptPlan", { name: whatIf.name, planId });
      if (reply.whatIf) this.replace(reply.whatIf);
      this.changes = reply.changes ?? [];
      say(`Adopted ${planId}: ${this.changes.length} change(s).`, "info");
      this.show();
    } catch (error) {
      failed(`Adopt ${planId}`, error);
    }
  }

  private show(): void {
    this.list.replaceChildren(
      ...this.whatIfs.map((whatIf) => {
        const id = idOf(whatIf);
        const state = STATES[whatIf.state ?? ""] ?? "unknown";
        const row = el(
          "li",
          { class: whatIf.name === this.selected ? "selected" : undefined, "data-testid": `whatif-${id}`, "data-state": state },
          el("span", {}, whatIf.title || id),
          el("span", { class: "meta", "data-testid": `whatif-${id}-progress` }, ` ${state} ${whatIf.runsDone ?? 0}/${whatIf.runsTotal ?? 0}`),
          whatIf.createTime ? el("span", { class: "meta" }, ` · ${day(whatIf.createTime)}`) : null,
        );
        row.addEventListener("click", () => {
          this.selected = whatIf.name ?? "";
          this.changes = [];
          this.show();
        });
        return row;
      }),
    );
    const chosen = this.whatIfs.find((w) => w.name === this.selected);
    this.detail.replaceChildren(...(chosen ? this.details(chosen) : []));
  }

  private details(whatIf: WhatIf): Node[] {
    const parts: Node[] = [];
    if (whatIf.state === "STATE_FAILED") parts.push(el("p", { class: "notice", "data-testid": "whatif-error" }, `Failed: ${whatIf.error ?? ""}`));
    if (whatIf.state === "STATE_RUNNING") {
      parts.push(el("p", { class: "meta" }, `Running: ${whatIf.runsDone ?? 0} of ${whatIf.runsTotal ?? 0} runs done…`));
    }
    if (whatIf.reportPath) {
      parts.push(el("p", {}, el("a", { href: reportUrl(whatIf.reportPath), target: "_blank", rel: "noopener", "data-testid": "whatif-report" }, "Report")));
    }
    const sources = [...new Set((whatIf.results ?? []).map((r) => r.startSource ?? "START_SOURCE_UNSPECIFIED"))];
    for (const source of sources) {
      const results = (whatIf.results ?? []).filter((r) => (r.startSource ?? "START_SOURCE_UNSPECIFIED") === source);
      parts.push(el("h3", {}, `From ${sourceLabel(source)}`), this.table(whatIf, source, results));
    }
    if (whatIf.adoptedPlanId) {
      parts.push(el("p", { class: "meta", "data-testid": "whatif-adopted" }, `Adopted: ${whatIf.adoptedPlanId}${whatIf.adoptedBy ? ` by ${whatIf.adoptedBy}` : ""}`));
    }
    if (this.changes.length > 0) {
      parts.push(el("ul", { class: "changes", "data-testid": "whatif-changes" }, ...this.changes.map((change) => el("li", {}, change))));
    }
    return parts;
  }

  private table(whatIf: WhatIf, source: StartSource, results: PlanResult[]): HTMLTableElement {
    const ranked = [...results].sort((a, b) => (a.rank ?? 0) - (b.rank ?? 0));
    const shown = KPIS.filter(([kpi]) => ranked.some((r) => r.kpis?.[kpi]));
    const head = el("tr", {}, el("th", {}, "#"), el("th", {}, "plan"), el("th", {}, "score"), ...shown.map(([, label]) => el("th", {}, label)), el("th", {}));
    const rows = ranked.map((result) => {
      const planId = result.planId ?? "";
      const cells = shown.map(([kpi]) => {
        const summary = result.kpis?.[kpi];
        return el("td", { title: summary?.perSeed?.map(number).join(", ") }, summary ? `${number(summary.mean)} (${number(summary.min)}–${number(summary.max)})` : "");
      });
      const adopt = button("Adopt", `whatif-adopt-${planId}`, (node) => void busy(node, () => this.adopt(whatIf, planId)));
      return el("tr", { "data-testid": `whatif-plan-${sourceLabel(source).replace(" ", "-")}-${planId}` }, el("td", {}, String(result.rank ?? "")), el("td", {}, planId), el("td", {}, number(result.score)), ...cells, el("td", {}, adopt));
    });
    return el("table", { class: "whatif-table" }, el("thead", {}, head), el("tbody", {}, ...rows));
  }
}
