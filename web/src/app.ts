// The control-room screen once signed in: the map with the network, and the panels, each fed by
// its own services with the operator's token. Each panel stands alone: a role refused one feed
// still sees the others.

import { Decisions } from "./optimizer/decisions";
import { Incidents } from "./incidents/incidents";
import { type Session, signOut } from "./login";
import { loadNetwork } from "./map/network";
import { MapView } from "./map/view";
import { StrategyForm } from "./optimizer/strategy";
import { Traffic } from "./optimizer/traffic";
import { Parking } from "./parking/parking";
import { Reports } from "./reports";
import { Signals } from "./signals/signals";
import { report } from "./status";
import { sleep } from "./timing";
import { failed, say } from "./ui/message";
import { Panel } from "./ui/panel";
import { WhatIfs } from "./whatif/whatif";

const MAP_WAIT_MS = 15_000;

export interface Page {
  whoami: HTMLElement;
  logout: HTMLButtonElement;
  twin: HTMLElement;
  main: HTMLElement;
  map: HTMLElement;
  aside: HTMLElement;
}

export async function startDashboard({ api, who }: Session, page: Page): Promise<void> {
  const session = new AbortController();
  const signal = session.signal;
  api.onUnauthenticated = (error) => {
    session.abort();
    signOut(`Your session ended: ${error.detail || error.title}`);
  };
  page.whoami.textContent = `${who.caller} · ${who.role}`;
  page.logout.hidden = false;
  page.logout.addEventListener("click", () => signOut());
  page.main.hidden = false; // before the map is made: it takes its container's size

  const map = MapView.open(page.map);
  if (!map.available) say("This browser cannot draw the map (it has no WebGL); the panels work without it.", "info");
  const network = await loadNetwork(api, signal).catch((error: unknown) => {
    failed("Load the road network", error);
    return null;
  });
  map.showNetwork(network);
  // A map that never loads (a broken worker or WebGL) must not hold the panels back.
  const loaded = await Promise.race([map.shown.then(() => true), sleep(MAP_WAIT_MS, signal).then(() => false)]);
  if (!loaded) say("The map did not load; the panels work without it.", "info");

  const panel = (title: string, testid: string): Panel => new Panel(page.aside, title, testid);
  const incidents = new Incidents(api, map, network, panel("Incidents", "incidents"));
  const signals = new Signals(api, map, panel("Signals", "signals"));
  const strategy = new StrategyForm(api, panel("Optimizer strategy", "strategy"));
  const decisions = new Decisions(api, panel("Optimizer decisions", "decisions"));
  const parking = new Parking(api, map, panel("Parking", "parking"));
  const reports = new Reports(api, panel("Simulation reports", "reports"));
  const whatIfs = new WhatIfs(api, panel("What if", "whatif"));

  new Traffic(api, map, network, page.twin).start(signal);
  signals.start(signal);
  strategy.start(signal);
  decisions.start(signal);
  reports.start(signal);
  whatIfs.begin(signal);
  await Promise.all([parking.start(signal), incidents.start(signal)]);
  report({ ready: true });
}
