// How times and numbers read on the control-room screen (local time, 24 h).

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });

/** An RFC 3339 time as the local clock time ("14:03:27"); "" when missing. */
export function clock(time: string | undefined): string {
  if (!time) return "";
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? "" : clockFormat.format(date);
}

/** An RFC 3339 time with its day ("12 Mar, 14:03"); "" when missing. */
export function day(time: string | undefined): string {
  if (!time) return "";
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? "" : dayFormat.format(date);
}

/** Seconds of simulated time as h:mm:ss. */
export function simClock(seconds: number): string {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}
