// A section of the side bar: a title, the state of its live feed, and a body. When the services
// refuse this role its data, the body gives way to "not available to your role".

import type { WatchState } from "../watch";
import { el } from "./dom";

const LABELS: Record<WatchState["kind"], string> = {
  connecting: "connecting…",
  live: "live",
  retrying: "reconnecting…",
  refused: "not available",
};

export class Panel {
  readonly body: HTMLElement;
  private readonly badge: HTMLElement;
  private readonly notice: HTMLElement;

  constructor(parent: HTMLElement, title: string, testid: string) {
    this.badge = el("span", { class: "feed", "data-state": "connecting" });
    this.notice = el("p", { class: "notice", "data-testid": `${testid}-notice` });
    this.notice.hidden = true;
    this.body = el("div", { class: "panel-body" });
    parent.append(el("section", { class: "panel", "data-testid": `panel-${testid}` }, el("h2", {}, title, this.badge), this.notice, this.body));
  }

  /** Shows how the panel's live feed is doing; a refusal replaces the body. */
  feed(state: WatchState): void {
    this.badge.dataset.state = state.kind;
    this.badge.textContent = LABELS[state.kind];
    this.badge.title = "detail" in state ? state.detail : "";
    if (state.kind === "refused") this.refuse(state.detail);
  }

  refuse(detail: string): void {
    this.notice.textContent = `Not available to your role (${detail}).`;
    this.notice.hidden = false;
    this.body.hidden = true;
    this.badge.dataset.state = "refused";
    this.badge.textContent = LABELS.refused;
  }
}
