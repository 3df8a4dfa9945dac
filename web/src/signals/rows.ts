// How signal plans, intersections and signal events read in the side bar.

import { idOf, int, type Intersection, type Plan, type SignalChange, words } from "../messages";
import { button, el } from "../ui/dom";
import { clock } from "../ui/format";

/** "v7 static, 90 s cycle" */
function planSummary(plan: Plan | null): string {
  if (!plan) return "no active plan known";
  const cycle = plan.cycleSeconds ? `, ${Math.round(plan.cycleSeconds)} s cycle` : "";
  return `v${int(plan.version)} ${words(plan.type, "PLAN_TYPE_")}${cycle}`;
}

/** The id a proposal row is known by in data-testid: "<intersection id>-<plan version>". */
function proposalId(intersectionId: string, plan: Plan): string {
  return `${intersectionId}-${int(plan.version)}`;
}

export function proposalRow(
  intersectionId: string,
  plan: Plan,
  onApprove: (button: HTMLButtonElement) => void,
  onReject: (button: HTMLButtonElement) => void,
): HTMLLIElement {
  const id = proposalId(intersectionId, plan);
  return el(
    "li",
    { class: "proposal-row", "data-testid": `proposal-${id}`, "data-plan": plan.name },
    el("div", { class: "title" }, `${intersectionId}: plan ${planSummary(plan)}`),
    el("div", { class: "meta" }, [plan.author && `proposed by ${plan.author}`, clock(plan.createTime), plan.reason].filter(Boolean).join(" · ")),
    el("div", { class: "actions" }, button("Approve", `proposal-${id}-approve`, onApprove), button("Reject", `proposal-${id}-reject`, onReject)),
  );
}

export interface IntersectionView {
  id: string;
  intersection: Intersection;
  active: Plan | null;
  pending: number;
  adaptiveStep: number;
}

/** An intersection's row, kept and updated in place: adaptive steps change it every second in a
 * run, and a button rebuilt under the pointer would swallow the click. */
export class IntersectionRow {
  readonly element: HTMLLIElement;
  private readonly title = el("div", { class: "title" });
  private readonly meta = el("div", { class: "meta" });

  constructor(id: string, onRollback: (button: HTMLButtonElement) => void) {
    this.element = el(
      "li",
      { class: "intersection-row", "data-testid": `intersection-${id}` },
      this.title,
      this.meta,
      el("div", { class: "actions" }, button("Rollback", `intersection-${id}-rollback`, onRollback)),
    );
  }

  update(view: IntersectionView): void {
    const { id, intersection, active } = view;
    this.title.textContent = intersection.displayName && intersection.displayName !== id ? `${intersection.displayName} (${id})` : id;
    const notes = [
      view.adaptiveStep ? `adaptive step #${view.adaptiveStep}` : "",
      view.pending ? `${view.pending} proposal${view.pending > 1 ? "s" : ""} waiting` : "",
      intersection.proposalPolicy === "PROPOSAL_POLICY_AUTO_APPLY" ? "proposals auto-applied" : "",
    ].filter(Boolean);
    this.meta.textContent = [`plan ${planSummary(active)}`, ...notes].join(" · ");
  }
}

/** A line of the signal event log, e.g. "14:03:21 J12 priority granted: emergency amb-7 on E3". */
export function eventEntry(change: SignalChange): HTMLLIElement {
  const where = idOf(change.intersection);
  const time = clock(change.occurTime);
  const priority = change.priority;
  let text: string;
  if (priority && change.event?.startsWith("priority_")) {
    const decision = change.event === "priority_ended" ? "ended" : words(priority.decision, "PRIORITY_DECISION_");
    const who = `${words(priority.priorityClass, "PRIORITY_CLASS_")} ${priority.vehicleId ?? ""}`.trim();
    text = `priority ${decision}: ${who}${priority.approachEdgeId ? ` on ${priority.approachEdgeId}` : ""}${priority.reason ? ` (${priority.reason})` : ""}`;
  } else {
    const plan = change.plan ? ` ${planSummary(change.plan)}` : "";
    text = `${(change.event ?? "change").replaceAll("_", " ")}${plan}${change.actor ? ` by ${change.actor}` : ""}`;
  }
  const granted = priority?.decision === "PRIORITY_DECISION_GRANTED" && change.event === "priority_decided";
  return el("li", { class: granted ? "granted" : undefined }, el("span", { class: "time" }, time), ` ${where} `, text);
}
