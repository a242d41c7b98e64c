// Wiring: the form creates jobs, the list shows them, the feed keeps the list (and the
// batches) live; the prompt tools and the scenes form start batches, shown in their view.
// Nothing talks to the server before the login says the app may run (at once on a proxy
// without API keys); when a session ends, the live parts stop until the user is back.

import { api } from "./api.js";
import { Login } from "./auth.js";
import { BatchList } from "./batches.js";
import { JobFeed } from "./events.js";
import { shortId } from "./format.js";
import { JobForm } from "./form.js";
import { JobList } from "./jobs.js";
import { SCENES_WORKFLOW, ScenesForm } from "./scenes.js";
import { StatusBar } from "./status.js";
import { Tabs } from "./tabs.js";
import { PromptTools } from "./tools.js";

const dialog = document.querySelector("[data-testid=confirm-dialog]");

/** Ask before deleting something; resolves true when the user confirms. */
function confirmAction({ title, text }) {
  dialog.querySelector("[data-testid=confirm-title]").textContent = title;
  dialog.querySelector("[data-testid=confirm-text]").textContent = text;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
    dialog.showModal();
  });
}

function confirmDelete(job) {
  const active = job.status === "queued" || job.status === "running";
  return confirmAction({
    title: "Delete this job?",
    text: `Job ${shortId(job.id)} ${active ? `is ${job.status}; it will be stopped, then` : "and its video will be"} removed for good.`,
  });
}

let tools = null;
const status = new StatusBar(document);
const list = new JobList(document.querySelector(".jobs-panel"), {
  confirmDelete,
  onReuse: (job) => form.reuse(job),
});
const form = new JobForm(document.querySelector("[data-testid=job-form]"), {
  onCreated: (job) => list.upsert(job),
  onBuilt: () => tools?.attachEnhance(),
});
const batches = new BatchList(document.querySelector("[data-testid=view-batches]"), {
  countEl: document.querySelector("[data-testid=batch-count]"),
  confirm: confirmAction,
  onReuse: (job) => form.reuse(job),
});
const tabs = new Tabs(document.querySelector("[data-testid=view-tabs]"));

/** Switch to the Batches view and open the batch just started. */
function showBatch(batchId) {
  tabs.select("batches");
  return batches.reveal(batchId);
}

const scenes = new ScenesForm(document.querySelector("[data-testid=scenes-form]"), {
  onStarted: showBatch,
});
tools = new PromptTools(document.querySelector("[data-testid=prompt-tools]"), {
  form,
  offLine: document.querySelector("[data-testid=tools-unavailable]"),
  onBatch: showBatch,
  onStatus: (configured) => scenes.setDrafting(configured),
});
const feed = new JobFeed({
  onEvent: (payload) => {
    list.apply(payload);
    batches.onJobEvent(payload);
  },
  onProgress: (update) => {
    const job = list.withProgress(update);
    if (!job) return; // not shown here: the next listing brings it
    list.apply({ event: "updated", job });
    batches.onJobEvent({ event: "updated", job });
  },
  onResync: () => Promise.all([list.refresh(), batches.refresh()]),
  onState: (state) => status.setFeed(state),
});

document.querySelector("[data-testid=refresh-jobs]").addEventListener("click", () => list.refresh());
// The header's shortcut past the form (narrow screens) leads to the job list.
document.querySelector(".indicator.jump").addEventListener("click", () => tabs.select("jobs"));

let modelsLoaded = false;

async function loadModels() {
  try {
    const data = await api.models();
    form.setModels(data.models || [], data.unavailable || []);
    const shared = (data.models || []).find((m) => m.id === SCENES_WORKFLOW);
    if (shared) scenes.setParameters(shared.parameters);
    modelsLoaded = true;
  } catch (err) {
    form.showError(new Error(`Could not load workflows: ${err.message}`));
  }
}

// `<html data-ready>`: the app is built and usable (tests wait for it); never behind the login.
function markReady() {
  if (login.usable) document.documentElement.dataset.ready = "true";
}

let started = false;

/** Everything that talks to the server, the first time the app may run. */
function start() {
  started = true;
  status.start();
  feed.start();
  list.refresh();
  batches.refresh();
  tools.start();
  loadModels().then(markReady);
}

/** The same user is back after their session ended: pick up where the page was. */
function resume() {
  status.start();
  feed.start();
  list.refresh();
  batches.refresh();
  // Their first run may have met the 401 (a configured model's tools are left as they are).
  if (!tools.configured) tools.start();
  if (modelsLoaded) markReady();
  else loadModels().then(markReady);
}

/** The session ended: no more calls until someone logs in again. */
function pause() {
  feed.close();
  status.stop();
  if (dialog.open) dialog.close("cancel");
}

const login = new Login(document, {
  onIn: (_user, { resumed }) => {
    if (!started) start();
    else if (resumed) resume();
    // Someone else logged in where a session had ended: start clean, without the last
    // user's jobs and prompt session in the page.
    else window.location.reload();
  },
  onOut: pause,
  onLeaving: () => {
    pause();
    form.discardFiles();
  },
});

tabs.restore();
login.begin();
