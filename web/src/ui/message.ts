// The one place the operator is told what went wrong, above all a service's refusal, in the
// service's own words (the problem document's `detail`). The latest message stays until dismissed
// or replaced.

import { describe } from "../api";
import { clock } from "./format";

function part<T extends HTMLElement>(selector: string): T {
  const found = document.querySelector<T>(selector);
  if (!found) throw new Error(`index.html lacks ${selector}`);
  return found;
}

const bar = part<HTMLElement>(".message");
const text = part<HTMLElement>('[data-testid="message"]');
const time = part<HTMLTimeElement>(".message time");
part<HTMLButtonElement>(".message .close").addEventListener("click", clear);

export function say(message: string, kind: "error" | "info" = "error"): void {
  const now = new Date().toISOString();
  time.dateTime = now;
  time.textContent = clock(now);
  text.textContent = message;
  bar.dataset.kind = kind;
  bar.hidden = false;
}

/** An action the service refused or that failed: what was tried, then why. */
export function failed(action: string, error: unknown): void {
  say(`${action}: ${describe(error)}`);
}

export function clear(): void {
  text.textContent = "";
  bar.hidden = true;
}
