// What browser tests wait on: window.__dashboard, kept current as data arrives.

interface DashboardStatus {
  ready: boolean;
  facilities: number;
  incidents: number;
}

declare global {
  interface Window {
    __dashboard: DashboardStatus;
  }
}

window.__dashboard = { ready: false, facilities: 0, incidents: 0 };

export function report(change: Partial<DashboardStatus>): void {
  Object.assign(window.__dashboard, change);
}
