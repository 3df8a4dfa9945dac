// A Server-Sent Events parser (the WHATWG "event stream" format), fed text as it arrives.
// EventSource cannot send an Authorization header, so the stream is read with fetch and parsed here.

export interface SseEvent {
  event: string;
  data: string;
}

const MAX_LINE = 1 << 20;

export class SseParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];

  /** Takes the next piece of the stream and returns the events it completed. */
  push(text: string): SseEvent[] {
    this.buffer += text;
    // The gateway's events are a few KB; a line this long is a broken stream, not one to hold.
    if (this.buffer.length > MAX_LINE) throw new Error(`an event stream line passed ${MAX_LINE} characters`);
    const events: SseEvent[] = [];
    for (;;) {
      const end = this.buffer.search(/[\r\n]/);
      if (end < 0) break;
      // A CR at the very end may be the first half of a CRLF split across pieces: wait for more.
      if (this.buffer[end] === "\r" && end === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(this.buffer.startsWith("\r\n", end) ? end + 2 : end + 1);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  private line(line: string): SseEvent | null {
    if (line === "") {
      const event = this.data.length ? { event: this.event || "message", data: this.data.join("\n") } : null;
      this.event = "";
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) return null; // a comment: the gateway's keep-alive ping
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    return null; // id and retry: reconnection is watch.ts's own
  }
}
