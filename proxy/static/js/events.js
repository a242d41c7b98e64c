// Live job changes: Server-Sent Events from /api/events, with a polling fallback.
//
// The browser's EventSource reconnects by itself after a dropped connection (and sends
// Last-Event-ID, so the server replays what was missed). It gives up only when the server
// answers with something other than an event stream; then we reopen it with backoff. While
// errors persist, the list is polled every few seconds; polling stops as soon as the stream is
// back. Every (re)open asks for a resync, because a fresh stream only snapshots active jobs.

import { parseJson } from "./api.js";

export const FeedState = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  POLLING: "polling",
  CLOSED: "closed",
});

export class JobFeed {
  constructor({
    url = "/api/events",
    onEvent,
    onProgress = () => {},
    onResync,
    onState = () => {},
    pollMs = 3000,
    failuresBeforePolling = 3,
    openTimeoutMs = 10000,
    maxBackoffMs = 30000,
  }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onProgress = onProgress;
    this.onResync = onResync;
    this.onState = onState;
    this.pollMs = pollMs;
    this.failuresBeforePolling = failuresBeforePolling;
    this.openTimeoutMs = openTimeoutMs;
    this.maxBackoffMs = maxBackoffMs;
    this.source = null;
    this.failures = 0;
    this.polling = false;
    this.pollTimer = null;
    this.reopenTimer = null;
    this.openTimer = null;
    this.closed = false;
    this.state = null;
  }

  start() {
    this.closed = false;
    this.open();
  }

  close() {
    this.closed = true;
    this.stopPolling();
    clearTimeout(this.reopenTimer);
    clearTimeout(this.openTimer);
    if (this.source) this.source.close();
    this.source = null;
    this.setState(FeedState.CLOSED);
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }

  open() {
    if (this.closed) return;
    if (this.source) this.source.close();
    if (!this.polling) this.setState(this.failures ? FeedState.RECONNECTING : FeedState.CONNECTING);
    const source = new EventSource(this.url);
    this.source = source;
    // A stream that neither opens nor fails (a buffering reverse proxy) counts as failing.
    clearTimeout(this.openTimer);
    this.openTimer = setTimeout(() => {
      if (this.source === source && source.readyState !== EventSource.OPEN) this.startPolling();
    }, this.openTimeoutMs);

    source.addEventListener("open", () => {
      if (this.source !== source) return;
      clearTimeout(this.openTimer);
      this.failures = 0;
      this.stopPolling();
      this.setState(FeedState.LIVE);
      this.onResync();
    });
    // Each event name's data, parsed; an unreadable one is logged and skipped.
    const listen = (name, handle) =>
      source.addEventListener(name, (message) => {
        if (this.source !== source) return;
        let data;
        try {
          data = parseJson(message.data);
        } catch (err) {
          console.warn(`unreadable ${name} event`, err, message.data);
          return;
        }
        if (data) handle(data);
      });
    listen("job", (payload) => payload.job && this.onEvent(payload));
    // A running job's progress: only the fields that move (id, status, progress, stage,
    // step, steps, eta_s, message, updated_at), merged into the job already known.
    listen("progress", (update) => update.id && this.onProgress(update));
    source.addEventListener("error", () => {
      if (this.source !== source || this.closed) return;
      this.failures += 1;
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (not a dropped connection): poll meanwhile, and try
        // the stream again later.
        this.startPolling();
        const delay = Math.min(this.maxBackoffMs, 1000 * 2 ** Math.min(this.failures - 1, 5));
        clearTimeout(this.reopenTimer);
        this.reopenTimer = setTimeout(() => this.open(), delay);
      } else if (this.failures >= this.failuresBeforePolling) {
        this.startPolling();
      } else if (!this.polling) {
        this.setState(FeedState.RECONNECTING);
      }
    });
  }

  startPolling() {
    if (this.closed) return;
    this.setState(FeedState.POLLING);
    if (this.polling) return;
    this.polling = true;
    const tick = async () => {
      if (!this.polling) return;
      try {
        await this.onResync();
      } finally {
        if (this.polling) this.pollTimer = setTimeout(tick, this.pollMs);
      }
    };
    tick();
  }

  stopPolling() {
    this.polling = false;
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }
}
