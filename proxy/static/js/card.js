// One job card: built once from the <template>, then updated in place on every change, so a
// playing video or a focused button survives the many progress events of a running job.

import { formatClock, formatDuration, secondsBetween, shortId } from "./format.js";
import { removePlayer, showPlayer } from "./player.js";

const STARTABLE = new Set(["pending", "stopped", "failed"]);
const STOPPABLE = new Set(["queued", "running"]);
const ACTIVE = STOPPABLE;

const template = document.getElementById("job-card-template");

function part(card, selector) {
  return card.querySelector(selector);
}

function setText(element, text) {
  const value = text == null ? "" : String(text);
  if (element.textContent !== value) element.textContent = value;
}

/**
 * A new card. `idPrefix` keeps element ids unique when one job is shown twice (in the job
 * list and in its batch); `testid` names the card for tests.
 */
export function createCard(job, { idPrefix = "job", testid = "job-card" } = {}) {
  const card = template.content.firstElementChild.cloneNode(true);
  card.dataset.jobId = job.id;
  card.dataset.testid = testid;
  const promptId = `${idPrefix}-prompt-${job.id}`;
  part(card, ".job-prompt").id = promptId;
  card.setAttribute("aria-labelledby", promptId);
  updateCard(card, job);
  return card;
}

function progressParts(job) {
  const stage = job.stage || (job.status === "queued" ? "waiting for a GPU" : "");
  const step = job.steps ? `step ${job.step ?? 0}/${job.steps}` : "";
  // Under a second says nothing useful (and early in a run it is only a guess).
  const eta = ACTIVE.has(job.status) && job.eta_s >= 1 ? `ETA ${formatDuration(job.eta_s)}` : "";
  const percent = `${Math.floor(Number(job.progress) || 0)}%`;
  return { stage, step, eta, percent };
}

function timeText(job) {
  const created = `created ${formatClock(job.created_at)}`;
  if (job.status === "completed") {
    const took = secondsBetween(job.started_at || job.created_at, job.finished_at);
    if (took != null) return `${created} · took ${formatDuration(took)}`;
  }
  return created;
}

export function updateCard(card, job) {
  const status = String(job.status);
  const label = shortId(job.id);
  card.dataset.status = status;

  const badge = part(card, "[data-testid=job-status]");
  badge.className = `badge badge-${status}`;
  setText(badge, status);

  const attempt = part(card, "[data-testid=job-attempt]");
  attempt.hidden = !(job.attempt > 1);
  setText(attempt, job.attempt > 1 ? `attempt ${job.attempt}` : "");
  attempt.title = (job.attempts || [])
    .map((a) => `#${a.number}: ${a.status}${a.error ? ` (${a.error})` : ""}`)
    .join("\n");

  // A batch job's label: its scene name, or "prompt 2 of 3".
  const tag = part(card, "[data-testid=job-label]");
  tag.hidden = !job.label;
  setText(tag, job.label || "");

  setText(part(card, ".job-model"), job.model_id || job.workflow || "");
  const time = part(card, ".job-time");
  time.dateTime = job.created_at || "";
  time.title = job.created_at || "";
  setText(time, timeText(job));

  setText(part(card, "[data-testid=job-prompt]"), job.prompt || "(no prompt)");
  const params = job.params || {};
  setText(part(card, "[data-testid=job-seed]"), job.seed ?? params.seed ?? "random");
  setText(part(card, ".meta-size"), params.width && params.height ? `${params.width}×${params.height}` : "—");
  setText(part(card, ".meta-frames"), params.length ? `${params.length}${params.fps ? ` @ ${params.fps} fps` : ""}` : "—");
  setText(part(card, ".meta-steps"), params.steps ?? "—");

  const progress = Math.max(0, Math.min(100, Number(job.progress) || 0));
  const box = part(card, "[data-testid=job-progress-box]");
  const showBar = ACTIVE.has(status) || ((status === "stopped" || status === "failed") && progress > 0);
  box.hidden = !showBar;
  box.classList.toggle("is-halted", !ACTIVE.has(status));
  const bar = part(card, "[data-testid=job-progress]");
  const rounded = String(Math.round(progress * 10) / 10);
  if (bar.getAttribute("aria-valuenow") !== rounded) bar.setAttribute("aria-valuenow", rounded);
  const texts = progressParts(job);
  bar.setAttribute("aria-valuetext", [texts.percent, texts.stage, texts.step, texts.eta].filter(Boolean).join(", "));
  bar.setAttribute("aria-label", `Progress of job ${label}`);
  part(card, ".bar-fill").style.transform = `scaleX(${progress / 100})`;
  setText(part(card, "[data-testid=job-stage]"), texts.stage);
  setText(part(card, "[data-testid=job-step]"), texts.step);
  setText(part(card, "[data-testid=job-eta]"), texts.eta);
  setText(part(card, "[data-testid=job-percent]"), texts.percent);

  const message = part(card, "[data-testid=job-message]");
  // While running, the progress line already says what the message says ("Sampling (step 4/8)").
  const echoesStage =
    status === "running" && texts.stage && String(job.message || "").toLowerCase().startsWith(texts.stage.toLowerCase());
  const showMessage = job.message && job.message !== job.error && status !== "completed" && !echoesStage;
  message.hidden = !showMessage;
  setText(message, showMessage ? job.message : "");

  const error = part(card, "[data-testid=job-error]");
  const errorText = status === "failed" ? job.error || "The job failed." : job.error || "";
  error.hidden = !errorText || status === "completed";
  setText(error, errorText);

  const media = part(card, ".job-media");
  if (status === "completed" && job.video_url) showPlayer(media, job);
  else if (!media.hidden || media.firstChild) removePlayer(media);

  const start = part(card, "[data-testid=job-start]");
  start.hidden = !STARTABLE.has(status);
  setText(start, status === "pending" ? "Start" : "Run again");
  start.setAttribute("aria-label", `${status === "pending" ? "Start" : "Run again"} job ${label}`);
  const stop = part(card, "[data-testid=job-stop]");
  stop.hidden = !STOPPABLE.has(status);
  stop.setAttribute("aria-label", `Stop job ${label}`);
  part(card, "[data-testid=job-delete]").setAttribute("aria-label", `Delete job ${label}`);
  part(card, "[data-testid=job-reuse]").setAttribute("aria-label", `Reuse the settings of job ${label}`);
}

/** Disable the card's buttons while one of its requests is in flight. */
export function setBusy(card, busy) {
  card.classList.toggle("is-busy", busy);
  for (const button of card.querySelectorAll("[data-action]")) button.disabled = busy;
}

export function showActionError(card, message) {
  const element = part(card, "[data-testid=job-action-error]");
  element.hidden = !message;
  setText(element, message || "");
}
