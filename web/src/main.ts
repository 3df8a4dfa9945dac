// Entry point: sign in, then run the dashboard.

import "./style.css";
import { startDashboard } from "./app";
import { signIn } from "./login";

function find<T extends HTMLElement>(testid: string): T {
  const found = document.querySelector<T>(`[data-testid="${testid}"]`);
  if (!found) throw new Error(`index.html lacks [data-testid="${testid}"]`);
  return found;
}

const session = await signIn(find<HTMLFormElement>("login-form"), find<HTMLInputElement>("token-input"));
await startDashboard(session, {
  whoami: find("whoami"),
  logout: find<HTMLButtonElement>("logout"),
  twin: find("twin"),
  main: find("dashboard"),
  map: find("map"),
  aside: find("panels"),
});
