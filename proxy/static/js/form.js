// The "New video" form, built from the parameter declarations that /api/models returns
// (types, defaults, ranges, choices, advanced). The API is the one judge of what is valid: the
// form sends what was typed and shows a 422 next to the field it names.

import { ApiError, api, bigInt } from "./api.js";
import { labelFor, shortId } from "./format.js";

const FILE_TYPES = new Set(["image", "video"]);
// Seed-000 field names the API may name in an error → the workflow's own parameter names.
const FIELD_ALIASES = { num_inference_steps: "steps", num_frames: "length", guidance_scale: "cfg" };
const WORKFLOW_KEY = "fastwan.workflow";
const DRAFT_KEY = "fastwan.draft.";

/** Workflows the form can drive: the native API takes no file uploads yet. */
export function usableModels(models) {
  return models.filter((m) => !(m.parameters || []).some((p) => FILE_TYPES.has(p.type)));
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

function rangeHint(param) {
  const parts = [];
  if (param.min != null && param.max != null && Number.isSafeInteger(Number(param.max))) {
    parts.push(`${param.min}–${param.max}`);
  } else if (param.min != null && param.max != null) {
    parts.push(`${param.min} or more`);
  }
  if (param.multiple_of) parts.push(`multiple of ${param.multiple_of}`);
  if (param.four_k_plus_1) parts.push("4k+1");
  return parts.join(", ");
}

function floatStep(param) {
  const span = Number(param.max ?? 10) - Number(param.min ?? 0);
  return span <= 5 ? "0.05" : "0.1";
}

export class JobForm {
  constructor(form, { onCreated, onBuilt = () => {} }) {
    this.form = form;
    this.onCreated = onCreated;
    this.onBuilt = onBuilt;
    this.select = form.querySelector("[data-testid=workflow-select]");
    this.description = form.querySelector("[data-testid=workflow-description]");
    this.readiness = form.querySelector("[data-testid=workflow-readiness]");
    this.basic = form.querySelector("[data-testid=form-params]");
    this.advanced = form.querySelector("[data-testid=advanced-params]");
    this.advancedBox = this.advanced.querySelector(".params-advanced");
    this.errorEl = form.querySelector("[data-testid=form-error]");
    this.statusEl = form.querySelector("[data-testid=form-status]");
    this.buttons = [...form.querySelectorAll("button[type=submit]")];
    this.models = [];
    this.model = null;
    this.inputs = new Map();

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit(event.submitter?.value !== "pending");
    });
    this.select.addEventListener("change", () => {
      storage()?.setItem(WORKFLOW_KEY, this.select.value);
      this.build(this.select.value);
    });
    form.querySelector("[data-testid=reset-form]").addEventListener("click", () => {
      if (this.model) storage()?.removeItem(DRAFT_KEY + this.model.id);
      this.build(this.select.value);
      this.setStatus("");
    });
    form.addEventListener("input", (event) => {
      const name = event.target.name;
      if (this.inputs.has(name)) {
        this.clearFieldError(name);
        this.saveDraft();
      }
    });
  }

  setModels(models, unavailable = []) {
    this.models = usableModels(models);
    this.select.replaceChildren(
      ...this.models.map((m) => {
        const option = document.createElement("option");
        option.value = m.id;
        option.textContent = m.name || m.id;
        return option;
      }),
    );
    if (!this.models.length) {
      const broken = unavailable.map((u) => u.id).join(", ");
      this.showError(
        new Error(`No workflow can be used from this page${broken ? ` (unavailable: ${broken})` : ""}.`),
      );
      for (const button of this.buttons) button.disabled = true;
      return;
    }
    const remembered = storage()?.getItem(WORKFLOW_KEY);
    const chosen = this.models.some((m) => m.id === remembered) ? remembered : this.models[0].id;
    this.select.value = chosen;
    this.build(chosen);
  }

  build(modelId, values = null) {
    this.model = this.models.find((m) => m.id === modelId) || null;
    this.inputs.clear();
    this.basic.replaceChildren();
    this.advancedBox.replaceChildren();
    this.clearErrors();
    if (!this.model) return;
    this.description.textContent = this.model.description || "";
    const ready = this.model.ready;
    this.readiness.hidden = ready !== false;
    this.readiness.textContent =
      ready === false ? `ComfyUI is missing model files: ${(this.model.missing || []).join(", ")}` : "";

    const grid = document.createElement("div");
    grid.className = "param-grid";
    const advancedGrid = document.createElement("div");
    advancedGrid.className = "param-grid";
    for (const param of this.model.parameters || []) {
      if (FILE_TYPES.has(param.type)) continue;
      const field = this.field(param);
      const wide = param.type === "string";
      if (param.advanced) (wide ? this.advancedBox : advancedGrid).append(field);
      else (wide ? this.basic : grid).append(field);
    }
    this.basic.append(grid);
    this.advancedBox.append(advancedGrid);
    this.advanced.hidden = !this.advancedBox.querySelector(".field");
    this.fill(values ?? this.loadDraft() ?? {});
    this.onBuilt(this);
  }

  /** The prompt field ({param, input, error, wrap}), or null if the workflow has none. */
  promptEntry() {
    return this.inputs.get("prompt") || null;
  }

  getPrompt() {
    return this.promptEntry()?.input.value ?? "";
  }

  /** Put `text` in the prompt field (kept in the draft), and say so in the form status. */
  setPrompt(text, note = "") {
    const entry = this.promptEntry();
    if (!entry) return false;
    entry.input.value = text;
    this.clearFieldError("prompt");
    this.saveDraft();
    if (note) this.setStatus(note);
    return true;
  }

  /** Whole numbers typed in the named fields (empty or not a number: left out). */
  numbers(names) {
    const values = {};
    for (const name of names) {
      const raw = this.inputs.get(name)?.input.value.trim() ?? "";
      if (/^\d+$/.test(raw) && Number.isSafeInteger(Number(raw))) values[name] = Number(raw);
    }
    return values;
  }

  field(param) {
    const id = `param-${param.name}`;
    const wrap = document.createElement("div");
    wrap.className = `field field-${param.type}`;
    wrap.dataset.field = param.name;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = labelFor(param.name);
    // The mark sits outside the label so the accessible name stays "Prompt"; the input's
    // `required` attribute is what assistive technology announces.
    let head = label;
    if (param.required) {
      const mark = document.createElement("span");
      mark.className = "required";
      mark.textContent = "*";
      mark.setAttribute("aria-hidden", "true");
      head = document.createElement("div");
      head.className = "label-row";
      head.append(label, mark);
    }

    let input;
    if (param.type === "string") {
      input = document.createElement("textarea");
      input.rows = param.name === "prompt" ? 4 : 2;
      if (param.max_length) input.maxLength = param.max_length;
      if (param.name === "prompt") input.placeholder = "A red fox trots through fresh snow at dawn, low camera, soft light";
    } else if (param.type === "choice") {
      input = document.createElement("select");
      for (const choice of param.choices || []) {
        const option = document.createElement("option");
        option.value = String(choice);
        option.textContent = String(choice);
        input.append(option);
      }
    } else if (param.type === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
      wrap.classList.add("field-check");
    } else if (param.type === "int" && param.max != null && !Number.isSafeInteger(Number(param.max))) {
      // Seeds reach 2^64-1, past what a number input (a double) holds exactly.
      input = document.createElement("input");
      input.type = "text";
      input.inputMode = "numeric";
      input.autocomplete = "off";
      input.spellcheck = false;
    } else {
      input = document.createElement("input");
      input.type = "number";
      if (param.min != null) input.min = String(param.min);
      if (param.max != null) input.max = String(param.max);
      if (param.type === "int") {
        // Lengths are 4k+1: stepping by 4 from min 1 gives 1, 5, 9, ...
        input.step = String(param.multiple_of || (param.four_k_plus_1 ? 4 : 1));
        input.inputMode = "numeric";
      } else {
        input.step = floatStep(param);
        input.inputMode = "decimal";
      }
    }
    input.id = id;
    input.name = param.name;
    input.dataset.testid = id;
    if (param.required) input.required = true;
    if (param.random) input.placeholder = "random";

    const hintId = `${id}-hint`;
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.id = hintId;
    const range = rangeHint(param);
    const fragments = [];
    if (range) {
      const strong = document.createElement("span");
      strong.className = "hint-range";
      strong.dataset.testid = `${id}-range`;
      strong.textContent = range;
      fragments.push(strong, document.createTextNode(". "));
    }
    fragments.push(document.createTextNode(param.description || ""));
    hint.append(...fragments);

    const errorId = `${id}-error`;
    const error = document.createElement("p");
    error.className = "field-error";
    error.id = errorId;
    error.dataset.testid = `field-error-${param.name}`;
    error.hidden = true;
    input.setAttribute("aria-describedby", `${hintId} ${errorId}`);

    if (param.type === "bool") wrap.append(input, head, hint, error);
    else wrap.append(head, input, hint, error);
    this.inputs.set(param.name, { param, input, error, wrap });
    return wrap;
  }

  /** Defaults, overlaid with `values` (a draft or a job's params). */
  fill(values) {
    for (const [name, { param, input }] of this.inputs) {
      const value = name in values ? values[name] : param.default;
      if (param.type === "bool") input.checked = Boolean(value);
      else input.value = value == null ? "" : String(value);
    }
  }

  /** Put a job's settings back into the form (seed included, so it can be reproduced). */
  reuse(job) {
    const id = this.models.some((m) => m.id === job.model_id) ? job.model_id : this.select.value;
    this.select.value = id;
    this.build(id, { ...(job.params || {}), prompt: job.prompt ?? job.params?.prompt });
    this.saveDraft();
    this.setStatus(`Settings of job ${shortId(job.id)} loaded; change anything and press Create.`);
    this.form.scrollIntoView({ behavior: "smooth", block: "start" });
    this.inputs.get("prompt")?.input.focus({ preventScroll: true });
  }

  values() {
    const values = {};
    const problems = [];
    for (const [name, { param, input }] of this.inputs) {
      if (param.type === "bool") {
        values[name] = input.checked;
        continue;
      }
      if (input.validity && input.validity.badInput) {
        problems.push({ field: name, message: "enter a number" });
        continue;
      }
      const raw = input.value.trim();
      if (raw === "" && param.type !== "string") continue;
      if (param.type === "int") {
        if (/^\d+$/.test(raw) && !Number.isSafeInteger(Number(raw))) values[name] = bigInt(raw);
        else values[name] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
      } else if (param.type === "float") {
        values[name] = Number.isFinite(Number(raw)) ? Number(raw) : raw;
      } else {
        values[name] = param.type === "string" ? input.value : raw;
      }
    }
    return { values, problems };
  }

  async submit(start) {
    if (!this.model) return;
    this.clearErrors();
    const { values, problems } = this.values();
    if (problems.length) {
      this.showError(new ApiError(422, `${problems[0].field}: ${problems[0].message}`, { field: problems[0].field, fields: problems }));
      return;
    }
    const { prompt = "", ...params } = values;
    const body = { model_id: this.model.id, prompt, params, start };
    for (const button of this.buttons) button.disabled = true;
    this.setStatus(start ? "Creating…" : "Creating (not started)…");
    try {
      const job = await api.createJob(body);
      this.onCreated(job);
      this.setStatus(`Created job ${shortId(job.id)} (${job.status}).`);
    } catch (err) {
      this.setStatus("");
      this.showError(err);
    } finally {
      for (const button of this.buttons) button.disabled = false;
    }
  }

  fieldFor(name) {
    if (!name) return null;
    const bare = String(name).replace(/^params\./, "").split(".")[0];
    return this.inputs.get(FIELD_ALIASES[bare] || bare) || null;
  }

  showError(err) {
    const message = err && err.message ? err.message : String(err);
    this.errorEl.textContent =
      err instanceof ApiError && err.status === 422 ? message : `${message}${err?.status ? ` (HTTP ${err.status})` : ""}`;
    this.errorEl.hidden = false;
    if (!(err instanceof ApiError)) return;
    const reported = err.fields.length ? err.fields : err.field ? [{ field: err.field, message }] : [];
    let first = null;
    for (const { field, message: text } of reported) {
      const entry = this.fieldFor(field);
      if (!entry) continue;
      const bare = String(text || message).replace(new RegExp(`^(params\\.)?${entry.param.name}: `), "");
      entry.error.textContent = bare;
      entry.error.hidden = false;
      entry.input.setAttribute("aria-invalid", "true");
      entry.wrap.classList.add("has-error");
      first = first || entry;
    }
    if (first) {
      if (first.param.advanced) this.advanced.open = true;
      first.input.focus();
    }
  }

  clearFieldError(name) {
    const entry = this.inputs.get(name);
    if (!entry || entry.error.hidden) return;
    entry.error.hidden = true;
    entry.error.textContent = "";
    entry.input.removeAttribute("aria-invalid");
    entry.wrap.classList.remove("has-error");
  }

  clearErrors() {
    this.errorEl.hidden = true;
    this.errorEl.textContent = "";
    for (const name of this.inputs.keys()) this.clearFieldError(name);
  }

  setStatus(text) {
    this.statusEl.textContent = text;
  }

  saveDraft() {
    if (!this.model) return;
    const draft = {};
    for (const [name, { param, input }] of this.inputs) {
      draft[name] = param.type === "bool" ? input.checked : input.value;
    }
    storage()?.setItem(DRAFT_KEY + this.model.id, JSON.stringify(draft));
  }

  loadDraft() {
    if (!this.model) return null;
    try {
      const text = storage()?.getItem(DRAFT_KEY + this.model.id);
      return text ? JSON.parse(text) : null;
    } catch {
      return null;
    }
  }
}
