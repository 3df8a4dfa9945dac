// The optimizer's decisions as they are taken (WatchDecisions): lever, the vehicle, why, and the
// data that triggered it; newest first, the latest few only.

import { type Decision, type WatchDecisionsResponse, words } from "../messages";
import type { Api } from "../api";
import { el } from "../ui/dom";
import { clock, simClock } from "../ui/format";
import type { Panel } from "../ui/panel";
import { watch } from "../watch";

const MAX_ROWS = 100;

export class Decisions {
  private readonly list = el("ol", { class: "log decisions", "data-testid": "decisions" });

  constructor(
    private readonly api: Api,
    private readonly panel: Panel,
  ) {
    panel.body.append(this.list);
  }

  start(signal: AbortSignal): void {
    watch<WatchDecisionsResponse>(
      this.api,
      {
        service: "optimizer",
        method: "WatchDecisions",
        onMessage: (message) => message.decision && this.add(message.decision),
        onState: (state) => this.panel.feed(state),
      },
      signal,
    );
  }

  private add(decision: Decision): void {
    this.list.prepend(decisionRow(decision));
    while (this.list.childElementCount > MAX_ROWS) this.list.lastElementChild?.remove();
  }
}

function decisionRow(decision: Decision): HTMLLIElement {
  const vehicle = decision.routeAdvice?.vehicleId ?? decision.parkingGuidance?.vehicleId;
  const facility = decision.parkingGuidance?.parkingAreaId;
  const trigger = Object.entries(decision.trigger ?? {}).map(([key, value]) => `${key}=${value}`).join(", ");
  const when = [clock(decision.decideTime), decision.simTimeSeconds ? `sim ${simClock(decision.simTimeSeconds)}` : ""].filter(Boolean).join(" · ");
  const expected = decision.expectedSeconds ? `${Math.round(decision.expectedSeconds)} s ${decision.parkingGuidance ? "door to door" : "saved"}` : "";
  return el(
    "li",
    { "data-lever": words(decision.lever, "LEVER_") },
    el("div", { class: "title" }, el("span", { class: "lever" }, words(decision.lever, "LEVER_")), vehicle ? ` · ${vehicle}` : "", facility ? ` → ${facility}` : ""),
    el("div", { class: "meta" }, [when, decision.reason, expected].filter(Boolean).join(" · ")),
    trigger ? el("div", { class: "trigger" }, `trigger: ${trigger}`) : null,
  );
}
