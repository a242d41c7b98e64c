// The header indicators (ComfyUI backends, live-update channel) and the banners (stand-in
// backend, no backend reachable).

import { ApiError, api } from "./api.js";
import { FeedState } from "./events.js";

const FEED_TEXT = {
  [FeedState.CONNECTING]: ["connecting…", "Connecting to the live event stream"],
  [FeedState.LIVE]: ["live", "Live updates through Server-Sent Events"],
  [FeedState.RECONNECTING]: ["reconnecting…", "The event stream dropped; reconnecting"],
  [FeedState.POLLING]: ["polling", "The event stream is unavailable; refreshing every 3 s"],
  [FeedState.CLOSED]: ["offline", "Live updates are off"],
};

function setIndicator(element, state, text, title) {
  element.dataset.state = state;
  element.querySelector(".indicator-text").textContent = text;
  element.title = title;
}

export class StatusBar {
  constructor(doc, { intervalMs = 10000 } = {}) {
    this.backendEl = doc.querySelector("[data-testid=backend-status]");
    this.feedEl = doc.querySelector("[data-testid=feed-status]");
    this.standinEl = doc.querySelector("[data-testid=standin-banner]");
    this.healthEl = doc.querySelector("[data-testid=health-banner]");
    this.intervalMs = intervalMs;
    this.timer = null;
    this.run = null;
  }

  setFeed(state) {
    const [text, title] = FEED_TEXT[state] || [state, state];
    setIndicator(this.feedEl, state, text, title);
  }

  /** Health (stand-in notice) and backends now, then every `intervalMs`, until stop(). */
  start() {
    this.stop();
    const run = {};
    this.run = run;
    const tick = async () => {
      const health = this.loadHealth();
      await Promise.all([health, this.loadBackends(health)]);
      if (this.run === run) this.timer = setTimeout(tick, this.intervalMs);
    };
    tick();
  }

  stop() {
    this.run = null;
    clearTimeout(this.timer);
    this.timer = null;
  }

  async loadHealth() {
    try {
      const health = await api.health();
      const standin = Boolean(health && health.standin);
      this.standinEl.hidden = !standin;
      this.standinEl.textContent = standin
        ? health.notice || "ComfyUI is the stand-in: videos are synthetic test patterns."
        : "";
      const problem = health && health.message ? health.message : "";
      this.healthEl.hidden = !problem;
      this.healthEl.textContent = problem;
      return health;
    } catch (err) {
      this.healthEl.hidden = false;
      this.healthEl.textContent = `The proxy does not answer: ${err.message}`;
      return null;
    }
  }

  /** `health`: the promise of loadHealth(), for what a user key may see when /api/backends
   * is for admin keys only (403). */
  async loadBackends(health = Promise.resolve(null)) {
    let backends;
    try {
      backends = (await api.backends()).backends || [];
    } catch (err) {
      const known = err instanceof ApiError && err.status === 403 ? await health : null;
      if (known && Array.isArray(known.comfyui) && known.comfyui.length) {
        backends = known.comfyui;
      } else if (known && typeof known.backends_up === "number") {
        // A user key sees how many backends are up, not which (admin keys see each one).
        const up = known.backends_up;
        const total = typeof known.backends === "number" ? known.backends : null;
        const state = up === 0 ? "down" : total != null && up < total ? "degraded" : "up";
        const text = total != null ? `ComfyUI ${up}/${total} up` : `ComfyUI ${up} up`;
        setIndicator(this.backendEl, state, text, "Only admin keys see each backend");
        return;
      } else {
        setIndicator(this.backendEl, "down", "backends ?", `Could not read /api/backends: ${err.message}`);
        return;
      }
    }
    const up = backends.filter((b) => b.status === "up").length;
    const state = !backends.length || up === 0 ? "down" : up < backends.length ? "degraded" : "up";
    const busy = backends.filter((b) => b.current_job).length;
    const text = `ComfyUI ${up}/${backends.length} up${busy ? ` · ${busy} busy` : ""}`;
    const title = backends
      .map((b) => {
        const extra = [
          `websocket ${b.websocket}`,
          `queue ${b.queue_length}`,
          b.last_error ? `last error: ${b.last_error}` : "",
        ].filter(Boolean).join(", ");
        return `GPU ${b.gpu_id}: ${b.url} is ${b.status} (${extra})`;
      })
      .join("\n");
    setIndicator(this.backendEl, state, text, title || "No backend configured");
  }
}
