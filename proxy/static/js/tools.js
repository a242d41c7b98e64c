// Prompt tools, backed by a language model on the server: Enhance beside the prompt field,
// then a panel with the parameters of the prompt (and changes asked for in words), the
// session's history, and variations that can be sent as a batch.
//
// When the server has no model configured, the tools stay hidden and one quiet line says
// what to configure. A model that fails answers 502 with `error`; that sentence is shown
// next to the tool that asked, and nothing else changes.
//
// The prompt session is a cookie the server sets on the first session request; the first
// such request is awaited before any other is made, so they all share one session.

import { api } from "./api.js";
import { labelFor, shortId } from "./format.js";

const SHARED_PARAMS = ["width", "height", "length", "steps"];

function show(element, message) {
  element.hidden = !message;
  element.textContent = message || "";
}

function valueText(value) {
  if (value == null || value === "") return "—";
  if (Array.isArray(value)) return value.map(valueText).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function button(text, testid, className = "btn btn-small") {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.dataset.testid = testid;
  element.textContent = text;
  return element;
}

/** A list entry: a checkbox named by its prompt text, and a "Use this prompt" button. */
function pickEntry(prompt, { testid, pickTestid, useTestid, useLabel, note }) {
  const item = document.createElement("li");
  item.dataset.testid = testid;
  const label = document.createElement("label");
  label.className = "pick";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.dataset.testid = pickTestid;
  const text = document.createElement("span");
  text.className = "pick-text";
  text.textContent = prompt;
  label.append(box, text);
  item.append(label);
  if (note) {
    const hint = document.createElement("p");
    hint.className = "hint pick-note";
    hint.textContent = note;
    item.append(hint);
  }
  const use = button("Use this prompt", useTestid, "btn btn-small btn-quiet");
  use.setAttribute("aria-label", useLabel);
  item.append(use);
  return item;
}

export class PromptTools {
  constructor(panel, { form, offLine, onBatch = () => {}, onStatus = () => {} }) {
    this.panel = panel;
    this.form = form;
    this.offLine = offLine;
    this.onBatch = onBatch;
    this.onStatus = onStatus;
    this.configured = false;
    this.parameters = {};
    this.history = [];
    this.result = null;
    this.variations = [];
    this.undo = null;
    this.enhanceUi = null;
    this.busyButtons = new Set();

    const q = (id) => panel.querySelector(`[data-testid=${id}]`);
    this.el = {
      model: q("tools-model"),
      initialize: q("tools-initialize"),
      paramsError: q("tools-params-error"),
      parameters: q("tools-parameters"),
      updateForm: q("tools-update-form"),
      request: q("tools-request"),
      requestHint: q("tools-request-hint"),
      update: q("tools-update"),
      updateError: q("tools-update-error"),
      result: q("tools-result"),
      resultPrompt: q("tools-result-prompt"),
      changes: q("tools-changes"),
      useResult: q("tools-use-result"),
      historyRefresh: q("history-refresh"),
      historyError: q("history-error"),
      historyEmpty: q("history-empty"),
      history: q("tools-history"),
      count: q("variations-count"),
      generate: q("variations-generate"),
      variationsError: q("variations-error"),
      variations: q("variations-list"),
      sendBox: q("variations-send-box"),
      send: q("variations-send"),
      sendHint: q("variations-send-hint"),
      sendError: q("variations-send-error"),
      status: q("variations-status"),
    };
    const el = this.el;

    el.initialize.addEventListener("click", () => this.initialize());
    el.updateForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.update();
    });
    el.request.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        el.updateForm.requestSubmit();
      }
    });
    el.useResult.addEventListener("click", () => {
      if (this.result) this.usePrompt(this.result.prompt, "The rewritten prompt is in the form.");
    });
    el.historyRefresh.addEventListener("click", () => this.loadHistory());
    el.history.addEventListener("change", () => this.sync());
    el.history.addEventListener("click", (event) => {
      const use = event.target.closest("[data-testid=history-use]");
      if (!use) return;
      const index = Number(use.closest("li").dataset.index);
      const entry = this.history[index];
      if (entry) this.usePrompt(entry.prompt, `Prompt ${index + 1} of the history is in the form.`);
    });
    el.generate.addEventListener("click", () => this.generateVariations());
    el.variations.addEventListener("change", () => this.sync());
    el.variations.addEventListener("click", (event) => {
      const use = event.target.closest("[data-testid=variation-use]");
      if (!use) return;
      const index = Number(use.closest("li").dataset.index);
      if (this.variations[index] != null) {
        this.usePrompt(this.variations[index], `Variation ${index + 1} is in the form.`);
      }
    });
    el.send.addEventListener("click", () => this.sendBatch());
  }

  /** Ask the server whether a model is configured; show the tools, or the line that says why not. */
  async start() {
    let status;
    try {
      status = await api.toolsStatus();
    } catch (err) {
      status = { configured: false, message: `Prompt tools are unavailable: ${err.message}` };
    }
    this.configured = Boolean(status && status.configured);
    if (!this.configured) {
      this.panel.hidden = true;
      this.showOff(status?.message || "Prompt tools are off: no language model is configured.");
      document.documentElement.dataset.tools = "off";
      this.onStatus(false);
      return;
    }
    this.offLine.hidden = true;
    this.el.model.textContent = status.message || "";
    // The first session request sets the session cookie; the second one then shares it.
    await this.loadHistory();
    await this.loadParameters();
    this.panel.hidden = false;
    this.attachEnhance();
    document.documentElement.dataset.tools = "on";
    this.onStatus(true);
  }

  /** One quiet line: the message's first sentence; the rest (how to set it up) folded. */
  showOff(message) {
    const split = /^(.+?[.!?])\s+(\S[\s\S]*)$/.exec(message);
    if (!split) {
      this.offLine.textContent = message;
    } else {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = split[1];
      const rest = document.createElement("p");
      rest.textContent = split[2];
      details.append(summary, rest);
      this.offLine.replaceChildren(details);
    }
    this.offLine.hidden = false;
  }

  // -- busy buttons ------------------------------------------------------------------------

  async busy(control, text, work) {
    const label = control.textContent;
    this.busyButtons.add(control);
    control.disabled = true;
    control.setAttribute("aria-busy", "true");
    control.textContent = text;
    try {
      return await work();
    } finally {
      this.busyButtons.delete(control);
      control.removeAttribute("aria-busy");
      control.textContent = label;
      control.disabled = false;
      this.sync();
    }
  }

  /** Enable what can be used now (and keep busy buttons disabled). */
  sync() {
    const el = this.el;
    const initialized = Object.keys(this.parameters).length > 0;
    el.update.disabled = this.busyButtons.has(el.update) || !initialized;
    el.requestHint.hidden = initialized;

    const pickedHistory = this.picked(el.history).length;
    el.generate.disabled = this.busyButtons.has(el.generate) || pickedHistory === 0;

    const pickedVariations = this.picked(el.variations).length;
    el.sendBox.hidden = this.variations.length === 0;
    el.sendHint.hidden = this.variations.length === 0;
    el.send.disabled = this.busyButtons.has(el.send) || pickedVariations === 0;
    if (!this.busyButtons.has(el.send)) {
      el.send.textContent = pickedVariations ? `Send as batch (${pickedVariations})` : "Send as batch";
    }
  }

  picked(list) {
    return [...list.querySelectorAll("li")]
      .filter((item) => item.querySelector("input[type=checkbox]")?.checked)
      .map((item) => Number(item.dataset.index));
  }

  usePrompt(text, note) {
    if (this.form.setPrompt(text, note)) {
      const input = this.form.promptEntry().input;
      input.scrollIntoView({ behavior: "smooth", block: "center" });
      input.focus({ preventScroll: true });
    }
  }

  // -- enhance -----------------------------------------------------------------------------

  /** Put the Enhance row under the prompt field (again after every rebuild of the form). */
  attachEnhance() {
    if (!this.configured) return;
    const entry = this.form.promptEntry();
    if (!entry || entry.wrap.querySelector(".enhance-row")) return;
    const row = document.createElement("div");
    row.className = "enhance-row";
    const enhance = button("Enhance", "enhance");
    enhance.title = "Rewrite the prompt into a detailed video prompt with the language model";
    const undo = button("Undo", "enhance-undo", "btn btn-small btn-quiet");
    undo.setAttribute("aria-label", "Undo the enhancement");
    undo.hidden = true;
    const note = document.createElement("span");
    note.className = "hint enhance-note";
    note.dataset.testid = "enhance-status";
    note.setAttribute("role", "status");
    note.setAttribute("aria-live", "polite");
    row.append(enhance, undo, note);
    const error = document.createElement("p");
    error.className = "tool-error";
    error.dataset.testid = "enhance-error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    entry.input.after(row, error);
    enhance.addEventListener("click", () => this.enhance());
    undo.addEventListener("click", () => this.undoEnhance());
    this.enhanceUi = { enhance, undo, note, error };
    this.undo = null;
  }

  async enhance() {
    const ui = this.enhanceUi;
    const rough = this.form.getPrompt().trim();
    show(ui.error, null);
    if (!rough) {
      show(ui.error, "Write a rough idea in the prompt first.");
      return;
    }
    ui.note.textContent = "";
    try {
      const data = await this.busy(ui.enhance, "Enhancing…", () => api.enhance(rough));
      const before = this.form.getPrompt();
      this.form.setPrompt(data.enhanced_prompt);
      this.undo = { before };
      ui.undo.hidden = false;
      ui.note.textContent = "Prompt enhanced.";
    } catch (err) {
      show(ui.error, `Could not enhance the prompt: ${err.message}`);
    }
  }

  undoEnhance() {
    const ui = this.enhanceUi;
    if (!this.undo) return;
    this.form.setPrompt(this.undo.before);
    this.undo = null;
    ui.undo.hidden = true;
    ui.note.textContent = "The prompt is back as it was.";
    this.form.promptEntry()?.input.focus();
  }

  // -- parameters and update ---------------------------------------------------------------

  async loadParameters() {
    try {
      this.parameters = (await api.parameters()) || {};
    } catch {
      this.parameters = {};
    }
    this.renderParameters();
  }

  renderParameters() {
    const list = this.el.parameters;
    const entries = Object.entries(this.parameters);
    list.replaceChildren(
      ...entries.map(([key, value]) => {
        const row = document.createElement("div");
        row.dataset.testid = "tools-param";
        row.dataset.key = key;
        const term = document.createElement("dt");
        term.textContent = labelFor(key);
        const detail = document.createElement("dd");
        detail.textContent = valueText(value);
        row.append(term, detail);
        return row;
      }),
    );
    list.hidden = entries.length === 0;
    this.sync();
  }

  async initialize() {
    const el = this.el;
    show(el.paramsError, null);
    const prompt = this.form.getPrompt().trim();
    if (!prompt) {
      show(el.paramsError, "Write a prompt in the form first.");
      return;
    }
    try {
      const state = await this.busy(el.initialize, "Extracting…", () => api.initialize(prompt));
      this.parameters = state.parameters || {};
      this.showResult(null);
      this.renderParameters();
      await this.loadHistory();
      el.request.focus();
    } catch (err) {
      show(el.paramsError, `Could not extract the parameters: ${err.message}`);
    }
  }

  async update() {
    const el = this.el;
    show(el.updateError, null);
    const wanted = el.request.value.trim();
    if (!wanted) {
      show(el.updateError, "Say what to change first.");
      return;
    }
    try {
      const state = await this.busy(el.update, "Rewriting…", () => api.update(wanted));
      this.parameters = state.parameters || {};
      this.renderParameters();
      this.showResult(state);
      el.request.value = "";
      await this.loadHistory();
    } catch (err) {
      show(el.updateError, `Could not rewrite the prompt: ${err.message}`);
    }
  }

  showResult(state) {
    const el = this.el;
    this.result = state;
    el.result.hidden = !state;
    if (!state) return;
    el.resultPrompt.textContent = state.prompt;
    const changes = state.changes && state.changes.length ? state.changes : ["(no changes listed)"];
    el.changes.replaceChildren(
      ...changes.map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }),
    );
  }

  // -- history -----------------------------------------------------------------------------

  async loadHistory() {
    const el = this.el;
    try {
      const data = await api.history();
      this.history = data.history || [];
      show(el.historyError, null);
    } catch (err) {
      show(el.historyError, `Could not load the history: ${err.message}`);
    }
    this.renderHistory();
  }

  renderHistory() {
    const el = this.el;
    const picked = new Set(this.picked(el.history));
    el.history.replaceChildren(
      ...this.history.map((entry, index) => {
        const item = pickEntry(entry.prompt, {
          testid: "history-entry",
          pickTestid: "history-pick",
          useTestid: "history-use",
          useLabel: `Use prompt ${index + 1} of the history`,
          note: `${index + 1}. ${entry.description || ""}`,
        });
        item.dataset.index = String(index);
        item.querySelector("input").checked = picked.has(index);
        return item;
      }),
    );
    el.historyEmpty.hidden = this.history.length > 0;
    this.sync();
  }

  // -- variations --------------------------------------------------------------------------

  async generateVariations() {
    const el = this.el;
    show(el.variationsError, null);
    const indices = this.picked(el.history);
    if (!indices.length) {
      show(el.variationsError, "Tick at least one history entry.");
      return;
    }
    const raw = el.count.value.trim();
    const count = /^\d+$/.test(raw) ? Number(raw) : raw;
    try {
      const data = await this.busy(el.generate, "Generating…", () => api.variations(indices, count));
      this.variations = data.prompts || [];
      this.renderVariations();
    } catch (err) {
      show(el.variationsError, `Could not generate variations: ${err.message}`);
    }
  }

  renderVariations() {
    const el = this.el;
    el.variations.replaceChildren(
      ...this.variations.map((prompt, index) => {
        const item = pickEntry(prompt, {
          testid: "variation",
          pickTestid: "variation-pick",
          useTestid: "variation-use",
          useLabel: `Use variation ${index + 1}`,
        });
        item.dataset.index = String(index);
        return item;
      }),
    );
    show(el.sendError, null);
    el.status.textContent = "";
    this.sync();
  }

  async sendBatch() {
    const el = this.el;
    show(el.sendError, null);
    const prompts = this.picked(el.variations).map((index) => this.variations[index]);
    if (!prompts.length) return;
    const body = { prompts, ...this.form.numbers(SHARED_PARAMS) };
    try {
      const data = await this.busy(el.send, "Sending…", () => api.batchInference(body));
      el.status.textContent = `Batch ${shortId(data.batch_id)} started: ${prompts.length} video${prompts.length === 1 ? "" : "s"}.`;
      this.onBatch(data.batch_id);
    } catch (err) {
      show(el.sendError, `Could not send the batch: ${err.message}`);
    }
  }
}
