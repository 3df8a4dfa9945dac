// Signals live: ListIntersections and each one's ListPlans (for proposals held for an engineer,
// PLAN_STATE_PROPOSED), then WatchSignals for every activation, proposal, rejection, adaptive step
// and priority decision. Engineers approve or reject proposals and roll plans back from here; the
// lights on the map show who drives them and flash while a priority grant holds green.

import type { Api } from "../api";
import { idOf, int, type ListIntersectionsResponse, type ListPlansResponse, type Plan, type SignalChange, type WatchSignalsResponse } from "../messages";
import type { MapView } from "../map/view";
import { busy, el } from "../ui/dom";
import { failed } from "../ui/message";
import type { Panel } from "../ui/panel";
import { watch } from "../watch";
import { eventEntry, IntersectionRow, type IntersectionView, proposalRow } from "./rows";

interface Light extends IntersectionView {
  version: number; // the intersection's version as last applied
  proposals: Map<number, Plan>; // by plan version
  priorityUntil: number; // epoch ms until which a grant holds green (0: none)
  row: IntersectionRow;
}

const MAX_PAGES = 10;
const PLANS_PER_INTERSECTION = 20; // newest first: a waiting proposal is among the latest versions
const PARALLEL_LISTS = 4;
const MAX_EVENTS = 100;
const PRIORITY_FLASH_MS = { least: 8_000, most: 120_000 };
const REASON = "from the control-room dashboard";

export class Signals {
  private readonly lights = new Map<string, Light>();
  private readonly proposals = el("ul", { class: "rows proposals", "data-testid": "proposals" });
  private readonly proposalRows = new Map<string, HTMLLIElement>(); // by plan name, kept while waiting
  private readonly intersections = el("ul", { class: "rows intersections" });
  private readonly events = el("ul", { class: "log", "data-testid": "signal-events" });
  private readonly filter = el("input", { type: "search", placeholder: "filter intersections", "aria-label": "filter intersections" });

  constructor(
    private readonly api: Api,
    private readonly map: MapView,
    private readonly panel: Panel,
  ) {
    this.filter.addEventListener("input", () => this.renderIntersections());
    panel.body.append(
      el("h3", {}, "Proposals awaiting approval"),
      this.proposals,
      el("h3", {}, "Intersections"),
      this.filter,
      this.intersections,
      el("h3", {}, "Signal events"),
      this.events,
    );
    map.onLightClick((id) => this.select(id));
  }

  start(signal: AbortSignal): void {
    watch<WatchSignalsResponse>(
      this.api,
      {
        service: "signals",
        method: "WatchSignals",
        resync: (s) => this.resync(s),
        onMessage: (message) => message.change && this.apply(message.change, Boolean(message.snapshot)),
        onState: (state) => this.panel.feed(state),
      },
      signal,
    );
  }

  /** Intersections and their plans as they are now: what a stream (re)starting cannot tell. */
  private async resync(signal: AbortSignal): Promise<void> {
    let pageToken = "";
    for (let page = 0; page < MAX_PAGES; page++) {
      const reply = await this.api.rpc<ListIntersectionsResponse>("signals", "ListIntersections", { pageSize: 1000, pageToken }, signal);
      for (const intersection of reply.intersections ?? []) this.light(idOf(intersection.name)).intersection = intersection;
      pageToken = reply.nextPageToken ?? "";
      if (!pageToken) break;
    }
    const queue = [...this.lights.values()];
    const worker = async (): Promise<void> => {
      for (let light = queue.shift(); light && !signal.aborted; light = queue.shift()) await this.loadPlans(light, signal);
    };
    await Promise.all(Array.from({ length: PARALLEL_LISTS }, worker));
    this.render();
  }

  private async loadPlans(light: Light, signal: AbortSignal): Promise<void> {
    const request = { parent: `intersections/${light.id}`, pageSize: PLANS_PER_INTERSECTION };
    const reply = await this.api.rpc<ListPlansResponse>("signals", "ListPlans", request, signal).catch(() => null);
    if (!reply) return; // the proposals of this one stay as the stream tells them
    const plans = reply.plans ?? [];
    light.proposals = new Map(plans.filter((p) => p.state === "PLAN_STATE_PROPOSED").map((p) => [int(p.version), p]));
    light.active = plans.find((p) => p.state === "PLAN_STATE_ACTIVE") ?? light.active;
  }

  private light(id: string): Light {
    let light = this.lights.get(id);
    if (!light) {
      const fresh: Light = {
        id,
        intersection: { name: `intersections/${id}` },
        active: null,
        pending: 0,
        adaptiveStep: 0,
        version: 0,
        proposals: new Map(),
        priorityUntil: 0,
        row: new IntersectionRow(id, (b) => void busy(b, () => this.rollback(fresh))),
      };
      light = fresh;
      this.lights.set(id, light);
    }
    return light;
  }

  private apply(change: SignalChange, snapshot: boolean): void {
    const id = idOf(change.intersection);
    const known = this.lights.has(id);
    const light = this.light(id);
    const version = int(change.version);
    if (version < light.version) return; // already applied (a snapshot after a reconnection)
    light.version = version;
    const plan = change.plan;
    switch (change.event) {
      case "plan_proposed":
        if (plan?.state === "PLAN_STATE_PROPOSED") light.proposals.set(int(plan.version), plan);
        break;
      case "plan_active": // the snapshot's active plan
      case "plan_activated":
        if (plan) {
          light.active = plan;
          light.proposals.delete(int(plan.version));
        }
        break;
      case "plan_rejected":
        if (plan) light.proposals.delete(int(plan.version));
        break;
      case "steps_applied":
        light.adaptiveStep = int(change.steps?.at(-1)?.sequence) || light.adaptiveStep;
        break;
      case "priority_decided":
        if (change.priority?.decision === "PRIORITY_DECISION_GRANTED") this.flash(light, change.priority.holdUntil);
        break;
      case "priority_ended":
        light.priorityUntil = 0;
        break;
    }
    // Adaptive steps come every second per light in a run: counted on the row, not logged.
    if (!snapshot && change.event !== "steps_applied") this.log(change);
    this.render(known ? light : undefined);
  }

  private flash(light: Light, holdUntil: string | undefined): void {
    const until = Date.parse(holdUntil ?? "") || 0;
    const now = Date.now();
    light.priorityUntil = Math.min(Math.max(until, now + PRIORITY_FLASH_MS.least), now + PRIORITY_FLASH_MS.most);
    setTimeout(() => this.render(light), light.priorityUntil - now + 50);
  }

  private log(change: SignalChange): void {
    this.events.prepend(eventEntry(change));
    while (this.events.childElementCount > MAX_EVENTS) this.events.lastElementChild?.remove();
  }

  /** Redraws one light (its row, its point, the proposals), or all of them. */
  private render(only?: Light): void {
    let reorder = !only;
    for (const light of only ? [only] : this.lights.values()) {
      reorder ||= light.pending !== light.proposals.size; // lights with waiting proposals come first
      light.pending = light.proposals.size;
      light.row.update(light);
      this.map.setLight(light.id, {
        priority: light.priorityUntil > Date.now(),
        pending: light.pending > 0,
        adaptive: light.active?.type === "PLAN_TYPE_ADAPTIVE",
      });
    }
    this.renderProposals();
    if (reorder) this.renderIntersections();
  }

  /** The waiting proposals, oldest first; a row stays the same element while its plan waits. */
  private renderProposals(): void {
    const waiting = [...this.lights.values()].flatMap((light) => [...light.proposals.values()].map((plan) => ({ light, plan })));
    waiting.sort((a, b) => (a.plan.createTime ?? "").localeCompare(b.plan.createTime ?? ""));
    const rows = new Map<string, HTMLLIElement>();
    for (const { light, plan } of waiting) {
      const name = plan.name ?? "";
      rows.set(
        name,
        this.proposalRows.get(name) ??
          proposalRow(
            light.id,
            plan,
            (b) => void busy(b, () => this.decide(light, plan, "ApprovePlan")),
            (b) => void busy(b, () => this.decide(light, plan, "RejectPlan")),
          ),
      );
    }
    this.proposalRows.clear();
    for (const [name, row] of rows) this.proposalRows.set(name, row);
    const current = [...this.proposals.children];
    const next = [...rows.values()];
    if (current.length !== next.length || current.some((row, i) => row !== next[i])) this.proposals.replaceChildren(...next);
  }

  private renderIntersections(): void {
    const term = this.filter.value.trim().toLowerCase();
    const shown = [...this.lights.values()]
      .filter((l) => !term || l.id.toLowerCase().includes(term) || (l.intersection.displayName ?? "").toLowerCase().includes(term))
      .sort((a, b) => b.pending - a.pending || a.id.localeCompare(b.id));
    this.intersections.replaceChildren(...shown.map((l) => l.row.element));
  }

  private async decide(light: Light, plan: Plan, method: "ApprovePlan" | "RejectPlan"): Promise<void> {
    try {
      const reply = await this.api.rpc<{ plan?: Plan }>("signals", method, { name: plan.name, reason: REASON });
      light.proposals.delete(int(plan.version));
      if (reply.plan?.state === "PLAN_STATE_ACTIVE") light.active = reply.plan;
      this.render(light);
    } catch (error) {
      failed(`${method === "ApprovePlan" ? "Approve" : "Reject"} plan v${int(plan.version)} at ${light.id}`, error);
    }
  }

  private async rollback(light: Light): Promise<void> {
    try {
      const reply = await this.api.rpc<{ plan?: Plan }>("signals", "RollbackPlan", { parent: `intersections/${light.id}`, reason: REASON });
      if (reply.plan) light.active = reply.plan;
      this.render(light);
    } catch (error) {
      failed(`Rollback at ${light.id}`, error);
    }
  }

  private select(id: string): void {
    const light = this.lights.get(id);
    if (!light) return;
    this.filter.value = "";
    this.renderIntersections();
    const row = light.row.element;
    row.scrollIntoView({ block: "nearest", behavior: "smooth" });
    row.classList.add("selected");
    setTimeout(() => row.classList.remove("selected"), 2000);
  }
}

