// One incident in the side bar: what, where in its lifecycle, who reported it, how serious, the
// responders' notes when the service shows them to this role, and the lifecycle actions.

import { idOf, type Incident, type IncidentState, words } from "../messages";
import { button, el } from "../ui/dom";
import { day } from "../ui/format";
import { actionsFor, TERMINAL, typeLetter } from "./labels";

export function incidentRow(
  incident: Incident,
  onAction: (to: IncidentState, label: string, button: HTMLButtonElement) => void,
  onSelect: () => void,
): HTMLLIElement {
  const id = idOf(incident.name);
  const severity = words(incident.severity, "SEVERITY_");
  const row = el(
    "li",
    { class: "incident-row", "data-testid": `incident-${id}`, "data-state": words(incident.state, "INCIDENT_STATE_") },
    el(
      "div",
      { class: "title" },
      el("span", { class: "incident-badge", "data-severity": severity }, typeLetter(incident)),
      el("span", {}, incident.title || id),
    ),
    el(
      "div",
      { class: "meta" },
      el("span", { class: "state", "data-testid": `incident-state-${id}` }, words(incident.state, "INCIDENT_STATE_")),
      ` · ${words(incident.type, "INCIDENT_TYPE_")} · ${severity} · reported by ${words(incident.reportingAgency, "AGENCY_")}`,
      incident.updateTime ? ` · ${day(incident.updateTime)}` : "",
    ),
    incident.notes ? el("div", { class: "notes", "data-testid": `incident-notes-${id}` }, incident.notes) : null,
    partnerLine(incident, id),
  );
  if (!TERMINAL.has(incident.state)) {
    const actions = actionsFor(incident.state).map((action) => {
      const node = button(action.label, `incident-${id}-${action.key}`, (b) => onAction(action.to, action.label, b));
      if (action.after === incident.state) node.classList.add("next");
      return node;
    });
    row.append(el("div", { class: "actions" }, ...actions));
  }
  row.addEventListener("click", (event) => {
    if (!(event.target instanceof HTMLButtonElement)) onSelect();
  });
  return row;
}

/** A partner's report: whose, in its words (when its agreement shares them with this role), and why
 * the police rejected it. */
function partnerLine(incident: Incident, id: string): HTMLElement | null {
  const report = incident.partnerReport;
  if (!report) return null;
  const parts = report.withheld
    ? [`a partner's report (${report.withheldReason ?? "withheld"})`]
    : [`${report.partner ?? "a partner"}${report.trustLevel ? `, ${words(report.trustLevel, "TRUST_LEVEL_")}` : ""}`];
  if (report.description) parts.push(`“${report.description}”`);
  if (report.rejectionReason) parts.push(`rejected: ${report.rejectionReason}`);
  return el("div", { class: "notes", "data-testid": `incident-partner-${id}` }, parts.join(" · "));
}
