// Finished simulation runs' reports (GET /api/v1/reports): each a link that opens the run's KPI
// table and plots in a new tab, refreshed now and then as runs finish.

import { type Api, ApiError, describe } from "./api";
import type { ReportsResponse } from "./messages";
import { el } from "./ui/dom";
import { day } from "./ui/format";
import type { Panel } from "./ui/panel";
import { every } from "./timing";

const REFRESH_MS = 60_000;

export class Reports {
  private readonly list = el("ul", { class: "rows reports", "data-testid": "reports" });

  constructor(
    private readonly api: Api,
    private readonly panel: Panel,
  ) {
    panel.body.append(this.list);
  }

  start(signal: AbortSignal): void {
    const stop = new AbortController();
    signal.addEventListener("abort", () => stop.abort(), { once: true });
    every(REFRESH_MS, stop.signal, async () => {
      try {
        const reply = await this.api.get<ReportsResponse>("/api/v1/reports", stop.signal);
        this.show(reply);
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
  }

  private show(reply: ReportsResponse): void {
    const reports = [...(reply.reports ?? [])].sort((a, b) => (b.updated ?? "").localeCompare(a.updated ?? ""));
    this.list.replaceChildren(
      ...reports.map((report) =>
        el(
          "li",
          {},
          el("a", { href: report.url, target: "_blank", rel: "noopener", "data-testid": `report-${report.name}` }, report.name),
          report.updated ? el("span", { class: "meta" }, ` ${day(report.updated)}`) : null,
        ),
      ),
    );
  }
}
