// The job list: the jobs this page knows, kept in step with the server, rendered newest first.
//
// Two sources feed it: events (one job at a time, from SSE) and full listings (page load,
// resync after a reconnect, polling). A listing reflects the server at some moment during its
// request, so it must not undo an event that arrived meanwhile: every change bumps a version
// counter, and a listing only overrides (or removes) jobs that no event touched after the
// listing was requested, unless its copy is newer.

import { ApiError, api } from "./api.js";
import { createCard, setBusy, showActionError, updateCard } from "./card.js";
import { shortId, timeKey } from "./format.js";
import { removePlayer } from "./player.js";

const PAGE = 50;

function isNewer(candidate, current) {
  return timeKey(candidate.updated_at) >= timeKey(current.updated_at);
}

export class JobList {
  constructor(root, { onReuse, confirmDelete }) {
    this.root = root;
    this.listEl = root.querySelector("[data-testid=job-list]");
    this.emptyEl = root.querySelector("[data-testid=jobs-empty]");
    this.countEl = root.querySelector("[data-testid=job-count]");
    this.errorEl = root.querySelector("[data-testid=list-error]");
    this.moreEl = root.querySelector("[data-testid=more-jobs]");
    this.onReuse = onReuse;
    this.confirmDelete = confirmDelete;
    this.jobs = new Map();
    this.cards = new Map();
    this.touched = new Map();
    this.deleted = new Map();
    this.version = 0;
    this.limit = PAGE;
    this.total = null;
    this.loaded = false;
    this.refreshing = null;
    this.refreshAgain = false;

    this.listEl.addEventListener("click", (event) => this.onClick(event));
    this.moreEl.addEventListener("click", () => {
      this.limit += PAGE;
      this.refresh();
    });
  }

  /** Fetch the newest jobs and reconcile; concurrent calls collapse into one more fetch. */
  refresh() {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        const since = this.version;
        try {
          const page = await api.jobs({ limit: this.limit });
          this.reconcile(page.jobs || [], since);
          this.total = typeof page.total === "number" ? page.total : null;
          this.loaded = true;
          this.showListError(null);
        } catch (err) {
          this.showListError(`Could not load jobs: ${err.message}`);
        }
        this.render();
      } while (this.refreshAgain);
      this.refreshing = null;
    })();
    return this.refreshing;
  }

  reconcile(listed, since) {
    const seen = new Set();
    for (const job of listed) {
      seen.add(job.id);
      if ((this.deleted.get(job.id) ?? -1) > since) continue;
      const current = this.jobs.get(job.id);
      if (!current || (this.touched.get(job.id) ?? 0) <= since || isNewer(job, current)) {
        this.jobs.set(job.id, job);
      }
    }
    for (const id of [...this.jobs.keys()]) {
      if (!seen.has(id) && (this.touched.get(id) ?? 0) <= since) this.jobs.delete(id);
    }
  }

  /** One change: `{event: created|updated|deleted|snapshot, job}`. */
  apply({ event, job }) {
    if (!job || !job.id) return;
    this.version += 1;
    if (event === "deleted") {
      this.deleted.set(job.id, this.version);
      if (this.jobs.delete(job.id) && this.total != null) this.total -= 1;
    } else {
      if (this.deleted.has(job.id)) return;
      const current = this.jobs.get(job.id);
      if (current && !isNewer(job, current)) return;
      if (!current && this.total != null) this.total += 1;
      this.jobs.set(job.id, job);
      this.touched.set(job.id, this.version);
    }
    this.render();
  }

  /** The known job with a progress event's fields, or null when the job is not known. */
  withProgress(update) {
    const current = this.jobs.get(update.id);
    return current ? { ...current, ...update } : null;
  }

  upsert(job) {
    this.apply({ event: "updated", job });
  }

  remove(id) {
    const job = this.jobs.get(id) || { id };
    this.apply({ event: "deleted", job });
  }

  sorted() {
    return [...this.jobs.values()].sort(
      (a, b) => timeKey(b.created_at) - timeKey(a.created_at) || String(b.id).localeCompare(String(a.id)),
    );
  }

  render() {
    const ordered = this.sorted();
    const wanted = new Set(ordered.map((job) => job.id));
    for (const [id, card] of this.cards) {
      if (!wanted.has(id)) {
        removePlayer(card.querySelector(".job-media"));
        card.remove();
        this.cards.delete(id);
      }
    }
    // Move a card only when it is out of place: moving a <video> pauses it.
    let anchor = this.listEl.firstElementChild;
    for (const job of ordered) {
      let card = this.cards.get(job.id);
      if (card) {
        if (card.dataset.renderedAt !== job.updated_at || card.dataset.status !== job.status) {
          updateCard(card, job);
        }
      } else {
        card = createCard(job);
        this.cards.set(job.id, card);
      }
      card.dataset.renderedAt = job.updated_at;
      if (card !== anchor) this.listEl.insertBefore(card, anchor);
      else anchor = anchor.nextElementSibling;
    }

    const shown = ordered.length;
    this.emptyEl.hidden = !(this.loaded && shown === 0);
    const total = this.total != null ? Math.max(this.total, shown) : shown;
    this.countEl.textContent = shown ? (total > shown ? `${shown} of ${total}` : String(shown)) : "";
    this.moreEl.hidden = !(total > shown);
  }

  showListError(message) {
    this.errorEl.hidden = !message;
    this.errorEl.textContent = message || "";
  }

  async onClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const card = button.closest("[data-job-id]");
    const job = card && this.jobs.get(card.dataset.jobId);
    if (!job) return;
    const action = button.dataset.action;
    if (action === "reuse") {
      this.onReuse(job);
      return;
    }
    if (action === "delete" && !(await this.confirmDelete(job))) return;
    setBusy(card, true);
    showActionError(card, null);
    try {
      if (action === "start") this.upsert(await api.startJob(job.id));
      else if (action === "stop") this.upsert(await api.stopJob(job.id));
      else if (action === "delete") {
        await api.deleteJob(job.id);
        this.remove(job.id);
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        this.remove(job.id);
        return;
      }
      showActionError(card, `Could not ${action} job ${shortId(job.id)}: ${err.message}`);
    } finally {
      setBusy(card, false);
    }
  }
}
