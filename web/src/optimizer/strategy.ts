// The optimizer's strategy (GetStrategy), and changing it (SetStrategy with an update mask of the
// fields the operator changed). Engineers may change it; for anyone else the service refuses, and
// the refusal is shown. Refreshed while nobody is editing, since another engineer may change it.

import { type Api, ApiError } from "../api";
import type { Strategy, StrategyResponse } from "../messages";
import { busy, button, el } from "../ui/dom";
import { failed, say } from "../ui/message";
import type { Panel } from "../ui/panel";
import { every } from "../timing";

const REFRESH_MS = 15_000;

type Field = keyof Strategy;

interface Control {
  field: Field;
  label: string;
  kind: "lever" | "number";
  min?: number;
  max?: number;
  step?: number;
}

const CONTROLS: Control[] = [
  { field: "incidentRerouting", label: "Incident rerouting", kind: "lever" },
  { field: "congestionRerouting", label: "Congestion rerouting", kind: "lever" },
  { field: "parkingGuidance", label: "Parking guidance", kind: "lever" },
  { field: "equippedShare", label: "Equipped share (0–1)", kind: "number", min: 0, max: 1, step: 0.05 },
  { field: "decisionIntervalSeconds", label: "Decision interval (s)", kind: "number", min: 5, max: 600, step: 1 },
  { field: "minGainSeconds", label: "Least gain to reroute (s)", kind: "number", min: 0, step: 1 },
  { field: "minRelativeGain", label: "Least relative gain (0–1)", kind: "number", min: 0, max: 1, step: 0.01 },
  { field: "rerouteHoldSeconds", label: "Hold after reroute (s)", kind: "number", min: 0, step: 1 },
  { field: "reserveSpaces", label: "Reserve spaces per facility", kind: "number", min: 0, step: 1 },
];

export class StrategyForm {
  private readonly inputs = new Map<Field, HTMLInputElement>();
  private loaded: Strategy = {};
  private dirty = false;

  constructor(
    private readonly api: Api,
    private readonly panel: Panel,
  ) {
    const form = el("form", { class: "strategy", "data-testid": "strategy" });
    for (const control of CONTROLS) {
      const input = el("input", {
        type: control.kind === "lever" ? "checkbox" : "number",
        name: control.field,
        "data-testid": `strategy-${control.field}`,
        min: control.min?.toString(),
        max: control.max?.toString(),
        step: control.step?.toString(),
      });
      input.addEventListener("input", () => (this.dirty = true));
      this.inputs.set(control.field, input);
      const lever = control.kind === "lever";
      form.append(el("label", { class: lever ? "toggle" : "number" }, lever ? input : null, control.label, lever ? null : input));
    }
    const save = el("button", { type: "submit", "data-testid": "strategy-save" }, "Apply strategy");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void busy(save, () => this.save());
    });
    form.append(el("div", { class: "actions" }, save, button("Discard changes", "strategy-reset", () => this.show(this.loaded))));
    panel.body.append(form);
  }

  start(signal: AbortSignal): void {
    const stop = new AbortController(); // refused: this role does not read the strategy at all
    signal.addEventListener("abort", () => stop.abort(), { once: true });
    every(REFRESH_MS, stop.signal, async () => {
      if (this.dirty) return;
      try {
        const reply = await this.api.rpc<StrategyResponse>("optimizer", "GetStrategy", {}, stop.signal);
        this.show(reply.strategy ?? {});
        this.panel.feed({ kind: "live" });
      } catch (error) {
        if (error instanceof ApiError && error.refused) {
          this.panel.refuse(error.detail);
          stop.abort();
        } else if (error instanceof ApiError) {
          this.panel.feed({ kind: "retrying", detail: error.detail });
        }
      }
    });
  }

  private show(strategy: Strategy): void {
    this.loaded = strategy;
    this.dirty = false;
    for (const control of CONTROLS) {
      const input = this.inputs.get(control.field);
      const current = value(strategy, control);
      if (input && typeof current === "boolean") input.checked = current;
      else if (input) input.value = String(current);
    }
  }

  private read(): Strategy {
    const strategy: Record<string, boolean | number> = {};
    for (const [field, input] of this.inputs) strategy[field] = input.type === "checkbox" ? input.checked : Number(input.value);
    return strategy as Strategy;
  }

  private async save(): Promise<void> {
    const strategy = this.read();
    const changed = CONTROLS.filter((c) => value(strategy, c) !== value(this.loaded, c)).map((c) => c.field);
    if (changed.length === 0) {
      say("The strategy is unchanged.", "info");
      return;
    }
    try {
      // A FieldMask in proto3 JSON: the paths in lowerCamelCase, comma-separated.
      const reply = await this.api.rpc<StrategyResponse>("optimizer", "SetStrategy", { strategy, updateMask: changed.join(",") });
      this.show(reply.strategy ?? strategy);
      say(`Strategy changed: ${changed.join(", ")}.`, "info");
    } catch (error) {
      failed("Change the strategy", error);
    }
  }
}

/** A field's value with what proto3 JSON leaves out filled in: a lever off, a number 0. */
function value(strategy: Strategy, control: Control): boolean | number {
  return strategy[control.field] ?? (control.kind === "lever" ? false : 0);
}
