// The Batches view: every batch (seed-004 prompt batches and seed-003 scene generations),
// newest first, with its counts and overall status; expanded, its jobs as job cards in
// prompt order, the zip of its finished videos, and for scenes a Regenerate per scene and
// the joined video.
//
// Live: job events carry `batch_id`. A card is updated from the event at once; the batch's
// summary is read again at most once a second per batch (the first event at once, the last
// one always), never on a timer. A summary only replaces one read after it was requested.

import { ApiError, api, urls } from "./api.js";
import { createCard, setBusy, showActionError, updateCard } from "./card.js";
import { formatClock, shortId, timeKey } from "./format.js";
import { removePlayer } from "./player.js";

const PAGE = 20;
const SUMMARY_EVERY_MS = 1000;

function show(element, message) {
  element.hidden = !message;
  element.textContent = message || "";
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** running until every job has finished; then completed, failed (all) or partial. */
export function overallStatus(summary) {
  if (!summary.finished) return "running";
  if (summary.completed === summary.total) return "completed";
  if (summary.failed === summary.total) return "failed";
  return "partial";
}

/** A short stable key for a set of jobs and their states (names one joined video). */
function finalKey(items, jobs) {
  const text = items.map((item) => `${item.job_id}:${jobs.get(item.job_id)?.status ?? "gone"}`).join(",");
  let hash = 5381;
  for (let i = 0; i < text.length; i += 1) hash = ((hash * 33) ^ text.charCodeAt(i)) >>> 0;
  return hash.toString(36);
}

/** Run `work(key)` now, then at most once per `ms` while more calls come in. */
class Throttle {
  constructor(ms) {
    this.ms = ms;
    this.timers = new Map();
    this.dirty = new Set();
  }

  run(key, work) {
    if (this.timers.has(key)) {
      this.dirty.add(key);
      return;
    }
    work();
    const tick = () => {
      if (this.dirty.delete(key)) {
        work();
        this.timers.set(key, setTimeout(tick, this.ms));
      } else {
        this.timers.delete(key);
      }
    };
    this.timers.set(key, setTimeout(tick, this.ms));
  }
}

export class BatchList {
  constructor(root, { countEl, confirm, onReuse }) {
    this.root = root;
    this.countEl = countEl;
    this.confirm = confirm;
    this.onReuse = onReuse;
    this.listEl = root.querySelector("[data-testid=batch-list]");
    this.emptyEl = root.querySelector("[data-testid=batches-empty]");
    this.errorEl = root.querySelector("[data-testid=batches-error]");
    this.moreEl = root.querySelector("[data-testid=more-batches]");
    this.template = document.getElementById("batch-template");

    this.summaries = new Map(); // batch id → summary (GET /api/batches shape)
    this.readAt = new Map(); // batch id → sequence number of the request its summary came from
    this.items = new Map(); // batch id → [{index, prompt, label, job_id}]
    this.jobs = new Map(); // job id → newest job view seen
    this.sessions = new Map(); // batch id → {current, note} for scene batches
    this.rows = new Map();
    this.expanded = new Set();
    this.regenerating = new Set();
    this.seq = 0;
    this.limit = PAGE;
    this.total = null;
    this.loaded = false;
    this.inflight = new Map();
    this.throttle = new Throttle(SUMMARY_EVERY_MS);

    this.listEl.addEventListener("click", (event) => this.onClick(event));
    this.moreEl.addEventListener("click", () => {
      this.limit += PAGE;
      this.refresh();
    });
    root.querySelector("[data-testid=refresh-batches]").addEventListener("click", () => this.refresh());
  }

  /** One request per key at a time; calls meanwhile collapse into one more run. */
  collapse(key, work) {
    const running = this.inflight.get(key);
    if (running) {
      running.again = true;
      return running.promise;
    }
    const entry = { again: false, promise: null };
    entry.promise = (async () => {
      try {
        do {
          entry.again = false;
          await work();
        } while (entry.again);
      } finally {
        this.inflight.delete(key);
      }
    })();
    this.inflight.set(key, entry);
    return entry.promise;
  }

  // -- reading -----------------------------------------------------------------------------

  /** The newest batches, and the details of the expanded ones. */
  refresh() {
    return this.collapse("list", async () => {
      const started = ++this.seq;
      try {
        const page = await api.batches({ limit: this.limit });
        const seen = new Set();
        for (const summary of page.batches || []) {
          seen.add(summary.id);
          this.setSummary(summary, started);
        }
        for (const id of [...this.summaries.keys()]) {
          if (!seen.has(id) && (this.readAt.get(id) ?? 0) < started) this.forget(id);
        }
        this.total = typeof page.total === "number" ? page.total : null;
        this.loaded = true;
        show(this.errorEl, null);
      } catch (err) {
        show(this.errorEl, `Could not load batches: ${err.message}`);
      }
      this.render();
      await Promise.all([...this.expanded].map((id) => this.refreshBatch(id)));
    });
  }

  /** One batch with its items (and, for an expanded scene batch, whether it can regenerate). */
  refreshBatch(id) {
    return this.collapse(`batch:${id}`, async () => {
      const started = ++this.seq;
      try {
        const { items, ...summary } = await api.batch(id);
        if (!this.summaries.has(id) && this.total != null) this.total += 1;
        this.setSummary(summary, started);
        for (const item of items || []) if (item.job) this.mergeJob(item.job);
        this.items.set(id, (items || []).map(({ job, ...item }) => item));
        if (summary.kind === "scenes" && this.expanded.has(id) && !this.sessions.has(id)) {
          await this.checkSession(id, summary.session_id);
        }
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          this.forget(id);
        } else {
          const row = this.rows.get(id);
          if (row) show(row.querySelector("[data-testid=batch-error]"), `Could not load the batch: ${err.message}`);
        }
      }
      this.render();
    });
  }

  /** Regenerate goes to the session's current generation; an older one cannot regenerate. */
  async checkSession(id, sessionId) {
    if (!sessionId) {
      this.sessions.set(id, { current: false, note: "This generation has no scene session; it cannot regenerate." });
      return;
    }
    try {
      const session = await api.session(sessionId);
      const current = session.job_id === id;
      this.sessions.set(id, {
        current,
        note: current ? "" : "Its session has a newer generation; regenerate scenes there.",
      });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        this.sessions.set(id, { current: false, note: "Its scene session is gone; it cannot regenerate." });
      }
    }
  }

  setSummary(summary, started) {
    if ((this.readAt.get(summary.id) ?? -1) > started) return;
    this.readAt.set(summary.id, started);
    this.summaries.set(summary.id, summary);
  }

  mergeJob(job) {
    const current = this.jobs.get(job.id);
    if (current && timeKey(job.updated_at) < timeKey(current.updated_at)) return false;
    this.jobs.set(job.id, job);
    return true;
  }

  forget(id) {
    if (this.summaries.delete(id) && this.total != null) this.total = Math.max(0, this.total - 1);
    this.items.delete(id);
    this.sessions.delete(id);
    this.expanded.delete(id);
    const row = this.rows.get(id);
    if (row) {
      this.clearBody(row);
      row.remove();
      this.rows.delete(id);
    }
  }

  /** A job event (from the SSE stream): update its card now, its batch's summary soon. */
  onJobEvent({ event, job }) {
    if (!job || !job.batch_id) return;
    const id = job.batch_id;
    if (event !== "deleted" && this.mergeJob(job)) this.updateJobCards(job.id);
    if (this.summaries.has(id)) this.throttle.run(id, () => this.refreshBatch(id));
    else this.throttle.run("", () => this.refresh());
  }

  /** Show a batch just made here: list it, expand it, scroll to it. */
  async reveal(id) {
    await this.refresh();
    if (!this.summaries.has(id)) await this.refreshBatch(id);
    if (!this.expanded.has(id)) await this.toggle(id);
    this.rows.get(id)?.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  async toggle(id) {
    if (this.expanded.has(id)) {
      this.expanded.delete(id);
      const row = this.rows.get(id);
      if (row) this.clearBody(row);
      this.render();
      return;
    }
    this.expanded.add(id);
    this.render();
    await this.refreshBatch(id);
  }

  // -- rendering ---------------------------------------------------------------------------

  sorted() {
    return [...this.summaries.values()].sort(
      (a, b) => timeKey(b.created_at) - timeKey(a.created_at) || String(b.id).localeCompare(String(a.id)),
    );
  }

  render() {
    const ordered = this.sorted();
    let anchor = this.listEl.firstElementChild;
    for (const summary of ordered) {
      let row = this.rows.get(summary.id);
      if (!row) {
        row = this.createRow(summary);
        this.rows.set(summary.id, row);
      }
      this.updateRow(row, summary);
      if (row !== anchor) this.listEl.insertBefore(row, anchor);
      else anchor = anchor.nextElementSibling;
    }
    const shown = ordered.length;
    this.emptyEl.hidden = !(this.loaded && shown === 0);
    const total = this.total != null ? Math.max(this.total, shown) : shown;
    this.countEl.textContent = shown ? String(total) : "";
    this.moreEl.hidden = !(total > shown);
  }

  createRow(summary) {
    const row = this.template.content.firstElementChild.cloneNode(true);
    row.dataset.batchId = summary.id;
    const body = row.querySelector("[data-testid=batch-body]");
    body.id = `batch-body-${summary.id}`;
    const toggle = row.querySelector(".batch-toggle");
    toggle.setAttribute("aria-controls", body.id);
    return row;
  }

  updateRow(row, summary) {
    const id = summary.id;
    const status = overallStatus(summary);
    const scenes = summary.kind === "scenes";
    const items = this.items.get(id);
    row.dataset.status = status;
    row.dataset.kind = scenes ? "scenes" : "batch";

    row.querySelector("[data-testid=batch-kind]").textContent = scenes ? "Scenes" : "Batch";
    const title = row.querySelector("[data-testid=batch-title]");
    title.textContent =
      scenes && items ? items.map((item) => item.label).join(" → ") : plural(summary.total, scenes ? "scene" : "prompt");
    const toggle = row.querySelector(".batch-toggle");
    toggle.title = `Batch ${id}`;
    const expanded = this.expanded.has(id);
    toggle.setAttribute("aria-expanded", String(expanded));

    const badge = row.querySelector("[data-testid=batch-status]");
    badge.className = `badge badge-${status}`;
    badge.textContent = status;

    const done = summary.completed + summary.failed;
    let percent = summary.total ? (100 * done) / summary.total : 0;
    if (items && items.length) {
      // Running jobs count with their own progress, so the bar moves between completions.
      const parts = items.map((item) => {
        const job = this.jobs.get(item.job_id);
        if (!job || ["completed", "failed", "stopped"].includes(job.status)) return 100;
        return Math.max(0, Math.min(100, Number(job.progress) || 0));
      });
      percent = Math.max(percent, parts.reduce((a, b) => a + b, 0) / parts.length);
    }
    const bar = row.querySelector("[data-testid=batch-progress]");
    bar.setAttribute("aria-valuenow", String(Math.round(percent)));
    bar.setAttribute("aria-label", `Progress of batch ${shortId(id)}`);
    bar.querySelector(".bar-fill").style.transform = `scaleX(${percent / 100})`;

    const counts = [`${summary.completed}/${summary.total} completed`];
    if (summary.failed) counts.push(`${summary.failed} failed`);
    if (summary.active) counts.push(`${summary.active} active`);
    row.querySelector("[data-testid=batch-counts]").textContent = counts.join(" · ");
    const time = row.querySelector(".batch-time");
    time.dateTime = summary.created_at || "";
    time.textContent = formatClock(summary.created_at);

    const body = row.querySelector("[data-testid=batch-body]");
    body.hidden = !expanded;
    const zip = row.querySelector("[data-testid=batch-zip]");
    zip.hidden = !(summary.completed > 0);
    zip.href = urls.batchZip(id);
    zip.download = `batch_${shortId(id)}.zip`;
    zip.setAttribute("aria-label", `Download the finished videos of batch ${shortId(id)} as a zip`);
    row.querySelector("[data-testid=batch-delete]").setAttribute("aria-label", `Delete batch ${shortId(id)}`);
    if (expanded) this.renderBody(row, summary, items);
  }

  renderBody(row, summary, items) {
    const id = summary.id;
    const scenes = summary.kind === "scenes";
    row.querySelector("[data-testid=batch-loading]").hidden = Boolean(items);
    if (!items) return;

    const session = this.sessions.get(id);
    show(row.querySelector("[data-testid=batch-note]"), session?.note || "");

    // The joined video: offered once no scene is still generating; a player for an older
    // set of scenes is dropped.
    const key = finalKey(items, this.jobs);
    const finalBox = row.querySelector("[data-testid=batch-final-box]");
    const player = finalBox.querySelector("video");
    if (player && player.dataset.key !== key) removePlayer(finalBox);
    const finalButton = row.querySelector("[data-testid=batch-final]");
    const canJoin = scenes && summary.finished && summary.completed > 0;
    finalButton.hidden = !canJoin || Boolean(finalBox.querySelector("video"));
    finalButton.textContent =
      summary.completed === summary.total
        ? "Play joined video"
        : `Play joined video (${summary.completed} of ${summary.total} scenes)`;

    const container = row.querySelector("[data-testid=batch-jobs]");
    const slots = [...container.children];
    items.forEach((item, index) => {
      let slot = slots[index];
      if (!slot || slot.dataset.label !== String(item.label ?? "")) {
        slot = scenes ? this.sceneSlot(id, item, index) : this.itemSlot(item);
        if (slots[index]) {
          this.clearSlot(slots[index]);
          slots[index].replaceWith(slot);
        } else {
          container.append(slot);
        }
        slots[index] = slot;
      }
      if (scenes) {
        const regenerate = slot.querySelector("[data-testid=scene-regenerate]");
        const busy = this.regenerating.has(`${id}:${item.label}`);
        regenerate.disabled = busy || !session?.current;
        regenerate.textContent = busy ? "Regenerating…" : "Regenerate";
      }
      this.fillSlot(slot, item);
    });
    for (const extra of slots.slice(items.length)) {
      this.clearSlot(extra);
      extra.remove();
    }
  }

  itemSlot(item) {
    const slot = document.createElement("div");
    slot.className = "batch-item";
    slot.dataset.label = String(item.label ?? "");
    return slot;
  }

  sceneSlot(batchId, item, index) {
    const slot = document.createElement("section");
    slot.className = "scene";
    slot.dataset.testid = "scene";
    slot.dataset.label = String(item.label ?? "");
    slot.dataset.scenario = String(item.label ?? "");
    const headingId = `scene-${batchId}-${index}`;
    slot.setAttribute("aria-labelledby", headingId);
    const head = document.createElement("div");
    head.className = "scene-head";
    const number = document.createElement("span");
    number.className = "scene-number";
    number.textContent = String(index + 1);
    number.setAttribute("aria-hidden", "true");
    const name = document.createElement("h3");
    name.className = "scene-name";
    name.id = headingId;
    name.dataset.testid = "scene-title";
    name.textContent = item.label ?? `scene ${index + 1}`;
    const regenerate = document.createElement("button");
    regenerate.type = "button";
    regenerate.className = "btn btn-small";
    regenerate.dataset.action = "regenerate";
    regenerate.dataset.testid = "scene-regenerate";
    regenerate.textContent = "Regenerate";
    regenerate.setAttribute("aria-label", `Regenerate scene ${item.label}`);
    head.append(number, name, regenerate);
    const error = document.createElement("p");
    error.className = "job-action-error";
    error.dataset.testid = "scene-error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    slot.append(head, error);
    return slot;
  }

  /** The item's job card (a new one when a scene was regenerated into a new job). */
  fillSlot(slot, item) {
    const job = this.jobs.get(item.job_id);
    let card = slot.querySelector("[data-job-id]");
    if (card && card.dataset.jobId !== item.job_id) {
      removePlayer(card.querySelector(".job-media"));
      card.remove();
      card = null;
    }
    const missing = slot.querySelector("[data-testid=batch-job-missing]");
    if (!job) {
      if (!missing) {
        const note = document.createElement("p");
        note.className = "empty";
        note.dataset.testid = "batch-job-missing";
        note.textContent = "This job was deleted.";
        slot.append(note);
      }
      return;
    }
    missing?.remove();
    if (!card) {
      card = createCard(job, { idPrefix: "batch", testid: "batch-job" });
      // Jobs leave a batch only with it: Delete batch is the way.
      card.querySelector("[data-testid=job-delete]").hidden = true;
      card.dataset.renderedAt = job.updated_at;
      slot.append(card);
    } else if (card.dataset.renderedAt !== job.updated_at || card.dataset.status !== job.status) {
      updateCard(card, job);
      card.dataset.renderedAt = job.updated_at;
    }
  }

  updateJobCards(jobId) {
    const job = this.jobs.get(jobId);
    if (!job) return;
    for (const card of this.listEl.querySelectorAll(`[data-job-id="${CSS.escape(jobId)}"]`)) {
      if (card.dataset.renderedAt === job.updated_at && card.dataset.status === job.status) continue;
      updateCard(card, job);
      card.dataset.renderedAt = job.updated_at;
    }
  }

  clearSlot(slot) {
    for (const media of slot.querySelectorAll(".job-media")) removePlayer(media);
  }

  /** Drop the jobs and players of a collapsed (or removed) batch. */
  clearBody(row) {
    const container = row.querySelector("[data-testid=batch-jobs]");
    for (const slot of [...container.children]) this.clearSlot(slot);
    container.replaceChildren();
    removePlayer(row.querySelector("[data-testid=batch-final-box]"));
    show(row.querySelector("[data-testid=batch-error]"), null);
  }

  // -- actions -----------------------------------------------------------------------------

  async onClick(event) {
    const row = event.target.closest("[data-testid=batch]");
    if (!row) return;
    const id = row.dataset.batchId;
    if (event.target.closest(".batch-toggle")) {
      this.toggle(id);
      return;
    }
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const action = button.dataset.action;
    if (action === "final") this.playFinal(id, row);
    else if (action === "delete-batch") this.deleteBatch(id, row);
    else if (action === "regenerate") this.regenerate(id, button.closest("[data-scenario]"));
    else if (action === "reuse" || action === "start" || action === "stop") this.jobAction(id, button, action);
  }

  async jobAction(batchId, button, action) {
    const card = button.closest("[data-job-id]");
    const job = card && this.jobs.get(card.dataset.jobId);
    if (!job) return;
    if (action === "reuse") {
      this.onReuse(job);
      return;
    }
    setBusy(card, true);
    showActionError(card, null);
    try {
      const changed = await (action === "start" ? api.startJob(job.id) : api.stopJob(job.id));
      if (this.mergeJob(changed)) this.updateJobCards(changed.id);
      this.refreshBatch(batchId);
    } catch (err) {
      showActionError(card, `Could not ${action} job ${shortId(job.id)}: ${err.message}`);
    } finally {
      setBusy(card, false);
    }
  }

  async regenerate(batchId, slot) {
    const summary = this.summaries.get(batchId);
    if (!slot || !summary) return;
    const scenario = slot.dataset.scenario;
    const key = `${batchId}:${scenario}`;
    const error = slot.querySelector("[data-testid=scene-error]");
    show(error, null);
    this.regenerating.add(key);
    this.render();
    try {
      await api.regenerateScene(summary.session_id, scenario);
    } catch (err) {
      show(error, `Could not regenerate ${scenario}: ${err.message}`);
    } finally {
      this.regenerating.delete(key);
    }
    await this.refreshBatch(batchId);
  }

  playFinal(id, row) {
    const items = this.items.get(id);
    if (!items) return;
    const key = finalKey(items, this.jobs);
    const box = row.querySelector("[data-testid=batch-final-box]");
    const error = row.querySelector("[data-testid=batch-error]");
    show(error, null);
    removePlayer(box);
    const src = `${urls.finalVideo(id)}?v=${key}`;
    const video = document.createElement("video");
    video.controls = true;
    video.preload = "metadata";
    video.playsInline = true;
    video.dataset.key = key;
    video.dataset.testid = "batch-final-video";
    video.setAttribute("aria-label", `The scenes of batch ${shortId(id)} joined into one video`);
    video.addEventListener("error", () => this.explainFinal(src, error));
    video.src = src;
    const footer = document.createElement("div");
    footer.className = "player-footer";
    const link = document.createElement("a");
    link.className = "btn btn-small";
    link.href = src;
    link.download = `scenes_${shortId(id)}.mp4`;
    link.dataset.testid = "batch-final-download";
    link.textContent = "Download joined MP4";
    footer.append(link);
    box.append(video, footer);
    box.hidden = false;
    this.render();
    video.focus();
  }

  /** Why the joined video did not load: the server's sentence (409 while scenes run). */
  async explainFinal(src, error) {
    let message = "This browser cannot play the joined video here; download it instead.";
    try {
      const response = await fetch(src, { headers: { Range: "bytes=0-0", Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        message = `Could not join the scenes: ${body?.error || `HTTP ${response.status}`}`;
      }
    } catch {
      message = "Could not load the joined video: the server does not answer.";
    }
    show(error, message);
  }

  async deleteBatch(id, row) {
    const summary = this.summaries.get(id);
    if (!summary) return;
    const confirmed = await this.confirm({
      title: "Delete this batch?",
      text: `Batch ${shortId(id)} and its ${plural(summary.total, "job")} (running ones are stopped first), with their videos, will be removed for good.`,
    });
    if (!confirmed) return;
    const error = row.querySelector("[data-testid=batch-error]");
    try {
      await api.deleteBatch(id);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        show(error, `Could not delete batch ${shortId(id)}: ${err.message}`);
        return;
      }
    }
    this.forget(id);
    this.render();
  }
}
