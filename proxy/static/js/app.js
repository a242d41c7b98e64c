// Wiring: the form creates jobs, the list shows them, the feed keeps the list live.

import { api } from "./api.js";
import { JobFeed } from "./events.js";
import { shortId } from "./format.js";
import { JobForm } from "./form.js";
import { JobList } from "./jobs.js";
import { StatusBar } from "./status.js";

const dialog = document.querySelector("[data-testid=confirm-dialog]");

/** Ask before deleting; resolves true when the user confirms. */
function confirmDelete(job) {
  const active = job.status === "queued" || job.status === "running";
  dialog.querySelector("[data-testid=confirm-text]").textContent =
    `Job ${shortId(job.id)} ${active ? `is ${job.status}; it will be stopped, then` : "and its video will be"} removed for good.`;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
    dialog.showModal();
  });
}

const status = new StatusBar(document);
const list = new JobList(document.querySelector(".jobs-panel"), {
  confirmDelete,
  onReuse: (job) => form.reuse(job),
});
const form = new JobForm(document.querySelector("[data-testid=job-form]"), {
  onCreated: (job) => list.upsert(job),
});
const feed = new JobFeed({
  onEvent: (payload) => list.apply(payload),
  onResync: () => list.refresh(),
  onState: (state) => status.setFeed(state),
});

document.querySelector("[data-testid=refresh-jobs]").addEventListener("click", () => list.refresh());

async function loadModels() {
  try {
    const data = await api.models();
    form.setModels(data.models || [], data.unavailable || []);
  } catch (err) {
    form.showError(new Error(`Could not load workflows: ${err.message}`));
  }
}

status.start();
feed.start();
list.refresh();
// Marks the form as built (tests wait for it).
loadModels().then(() => {
  document.documentElement.dataset.ready = "true";
});
