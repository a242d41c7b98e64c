// The "New video" form, built from the parameter declarations that /api/models returns
// (types, defaults, ranges, choices, advanced). The API is the one judge of what is valid: the
// form sends what was typed and shows a 422 next to the field it names.
//
// An input file (the image of image-to-video, the video of video-to-video) is uploaded as soon
// as it is picked (POST /api/uploads): the server's verdict (its type, size and frame count,
// or why it is refused) shows next to the field before Create, Create itself is quick and
// sends only the upload's id, and creating again with other settings sends no bytes again.

import { ApiError, api, bigInt } from "./api.js";
import { formatBytes, labelFor, shortId } from "./format.js";

const FILE_TYPES = new Set(["image", "video"]);
// Only steers the picker; the server decides by the file's bytes.
const ACCEPT = {
  image: "image/jpeg,image/png,image/webp,.jpg,.jpeg,.png,.webp",
  video: "video/mp4,video/quicktime,video/webm,video/x-msvideo,.mp4,.m4v,.mov,.webm,.avi",
};
const ACCEPT_TEXT = { image: "JPEG, PNG or WebP", video: "MP4, MOV, WebM or AVI" };
// Seed-000 field names the API may name in an error → the workflow's own parameter names.
const FIELD_ALIASES = { num_inference_steps: "steps", num_frames: "length", guidance_scale: "cfg" };
const WORKFLOW_KEY = "fastwan.workflow";
const DRAFT_KEY = "fastwan.draft.";

function takesFiles(model) {
  return (model.parameters || []).some((p) => FILE_TYPES.has(p.type));
}

/**
 * A picked input file: its local preview URL and its upload, started at once. `onChange` is
 * called on every change of state (uploading → ready | failed; stale: the server lost it,
 * and the next Create uploads it again).
 */
class FileChoice {
  constructor(kind, file, onChange) {
    this.kind = kind;
    this.file = file;
    this.onChange = onChange;
    this.url = URL.createObjectURL(file);
    this.upload = null;
    this.error = null;
    this.dropped = false;
    this.start();
  }

  start() {
    this.state = "uploading";
    this.progress = 0;
    this.error = null;
    this.controller = new AbortController();
    const onProgress = (fraction) => {
      // Whole percents: no redraw for every network packet.
      const rounded = Math.floor(fraction * 100);
      if (rounded === this.progress) return;
      this.progress = rounded;
      this.onChange(this);
    };
    this.done = api
      .upload(this.kind, this.file, { signal: this.controller.signal, onProgress })
      .then((upload) => {
        if (this.dropped) {
          // Finished just as it was replaced: nothing refers to it any more.
          api.deleteUpload(upload.id).catch(() => {});
          return;
        }
        this.upload = upload;
        this.state = "ready";
      })
      .catch((err) => {
        if (this.dropped) return;
        this.error = err;
        this.state = "failed";
      })
      .finally(() => {
        if (!this.dropped) this.onChange(this);
      });
    this.onChange(this);
  }

  /** The server no longer has the upload (a create call said so): upload again on Create. */
  markStale() {
    if (this.state !== "ready") return;
    this.upload = null;
    this.state = "stale";
    this.onChange(this);
  }

  /** Replaced or removed: stop the upload, free the preview, delete the server's copy. */
  drop({ keepalive = false } = {}) {
    this.dropped = true;
    this.controller.abort();
    URL.revokeObjectURL(this.url);
    // Jobs made from it keep their own copy, so the upload can always go.
    if (this.upload) api.deleteUpload(this.upload.id, { keepalive }).catch(() => {});
    this.upload = null;
  }
}

/** "PNG · 640×360 · 1.2 MB", "MP4 · 96×64 · 14 frames at 12 fps · 40 KB". */
function uploadFacts(upload) {
  const parts = [upload.format || upload.kind];
  if (upload.width && upload.height) parts.push(`${upload.width}×${upload.height}`);
  if (upload.frames) parts.push(`${upload.frames} frames${upload.fps ? ` at ${upload.fps} fps` : ""}`);
  else if (upload.fps) parts.push(`${upload.fps} fps`);
  parts.push(formatBytes(upload.size_bytes));
  return parts.filter(Boolean).join(" · ");
}

/**
 * A message for next to a field: without the "Invalid request: " and field name the server's
 * sentence starts with ("Invalid request: file: the file is text…" → "the file is text…").
 * `names`: the field's own name and any the server may use for it (an upload's is "file").
 */
function fieldMessage(text, names) {
  const escaped = names.map((n) => String(n).replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`^(Invalid request: )?(params\\.)?(${escaped.join("|")}): `);
  return String(text).replace(pattern, "");
}

function uploadMessage(err, name) {
  return fieldMessage(err && err.message ? err.message : String(err), [name, "file", "body"]);
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
    // The fields the form-wide error is about.
    this.errorFields = new Set();
    // Picked files by parameter name. Kept across rebuilds (switching workflow and back keeps
    // the image), never in drafts: a File cannot be stored, and its upload is not kept.
    this.files = new Map();

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
      for (const name of [...this.files.keys()]) this.dropFile(name);
      this.build(this.select.value);
      this.setStatus("");
    });
    // A reload loses the picked files, so their uploads would only take space on the server.
    // Not when the page goes into the back-forward cache: it comes back with them.
    window.addEventListener("pagehide", (event) => {
      if (event.persisted) return;
      for (const choice of this.files.values()) choice.drop({ keepalive: true });
    });
    form.addEventListener("input", (event) => {
      const name = event.target.name;
      if (this.inputs.has(name)) {
        this.clearFieldError(name);
        this.saveDraft();
      }
    });
    // Workflows come and go while the server runs (its workflows folder is hot reloaded): the
    // list is asked for again when the picker is about to be used and when the page comes
    // back into view, so a new workflow shows with its fields without reloading the page.
    this.loaded = false;
    this.refreshing = null;
    for (const type of ["focus", "pointerdown"]) {
      this.select.addEventListener(type, () => this.refreshModels());
    }
    window.addEventListener("focus", () => this.refreshModels());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.refreshModels();
    });
  }

  setModels(models, unavailable = []) {
    const wasEmpty = this.loaded && !this.models.length;
    this.loaded = true;
    this.models = models;
    this.renderOptions();
    if (!this.models.length) {
      const broken = unavailable.map((u) => u.id).join(", ");
      this.showError(
        new Error(`No workflow can be used from this page${broken ? ` (unavailable: ${broken})` : ""}.`),
      );
      for (const button of this.buttons) button.disabled = true;
      return;
    }
    if (wasEmpty) {
      this.hideFormError();
      for (const button of this.buttons) button.disabled = false;
    }
    const remembered = storage()?.getItem(WORKFLOW_KEY);
    // First visit: a workflow that needs only a prompt (the list is alphabetical, so the
    // first one may well want an image).
    const fallback = this.models.find((m) => !takesFiles(m)) || this.models[0];
    const chosen = this.models.some((m) => m.id === remembered) ? remembered : fallback.id;
    this.select.value = chosen;
    this.build(chosen);
  }

  renderOptions() {
    this.select.replaceChildren(
      ...this.models.map((m) => {
        const option = document.createElement("option");
        option.value = m.id;
        option.textContent = m.name || m.id;
        return option;
      }),
    );
  }

  /** Ask the server for the workflows again (once at a time; a failure keeps the list shown). */
  refreshModels() {
    if (!this.loaded || this.refreshing) return this.refreshing;
    this.refreshing = api
      .models()
      .then((data) => this.updateModels(data.models || [], data.unavailable || []))
      .catch(() => {})
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  /**
   * A fresh list of workflows: the picker follows it, and the form is built again only when
   * its own workflow changed (with what was typed kept) or went away.
   */
  updateModels(models, unavailable = []) {
    if (!models.length || !this.models.length || !this.model) {
      this.setModels(models, unavailable);
      return;
    }
    const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
    const labels = (list) => list.map((m) => [m.id, m.name]);
    const current = models.find((m) => m.id === this.model.id) || null;
    const listChanged = !same(labels(models), labels(this.models));
    const modelChanged = !same(current, this.model);
    if (!listChanged && !modelChanged) return;
    const typed = this.currentValues();
    this.models = models;
    if (listChanged) this.renderOptions();
    if (!current) {
      this.setModels(models, unavailable); // its workflow is gone: choose as on a first visit
      return;
    }
    this.select.value = current.id;
    if (!modelChanged) {
      this.model = current;
      return;
    }
    const focused = this.form.contains(document.activeElement) ? document.activeElement.name : null;
    this.build(current.id, typed);
    if (focused && this.inputs.has(focused)) this.inputs.get(focused).input.focus();
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
      const isFile = FILE_TYPES.has(param.type);
      const field = isFile ? this.fileField(param) : this.field(param);
      const wide = isFile || param.type === "string";
      if (param.advanced) (wide ? this.advancedBox : advancedGrid).append(field);
      else (wide ? this.basic : grid).append(field);
    }
    this.basic.append(grid);
    this.advancedBox.append(advancedGrid);
    this.advanced.hidden = !this.advancedBox.querySelector(".field");
    this.fill(values ?? this.loadDraft() ?? {});
    for (const [name, { param }] of this.inputs) if (FILE_TYPES.has(param.type)) this.renderFile(name);
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

  /** A file parameter: a file input (or a dropped file), its preview, and the upload's state. */
  fileField(param) {
    const id = `param-${param.name}`;
    const wrap = document.createElement("div");
    wrap.className = `field field-file field-${param.type}`;
    wrap.dataset.field = param.name;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = labelFor(param.name);
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

    const input = document.createElement("input");
    input.type = "file";
    input.id = id;
    input.name = param.name;
    input.accept = ACCEPT[param.type];
    input.className = "file-input";
    input.dataset.testid = `file-input-${param.name}`;
    if (param.required) input.required = true;
    input.addEventListener("change", () => {
      // Some browsers empty the input when the picker is cancelled: keep the file chosen.
      if (input.files && input.files[0]) this.pickFile(param, input.files[0]);
      else this.renderFile(param.name);
    });

    const clear = document.createElement("button");
    clear.type = "button";
    clear.className = "btn btn-small btn-quiet";
    clear.dataset.testid = "file-clear";
    clear.textContent = "Remove";
    clear.setAttribute("aria-label", `Remove the ${param.type}`);
    clear.hidden = true;
    clear.addEventListener("click", () => {
      this.dropFile(param.name);
      this.clearFieldError(param.name);
      this.renderFile(param.name);
      input.focus();
    });
    const row = document.createElement("div");
    row.className = "file-row";
    row.append(input, clear);

    const preview = document.createElement("div");
    preview.className = "file-preview";
    preview.dataset.testid = "file-preview";
    preview.hidden = true;

    // The line is announced when the upload's state changes; the bar's steps are not.
    const info = document.createElement("p");
    info.className = "file-info";
    info.id = `${id}-info`;
    info.dataset.testid = "file-info";
    info.setAttribute("aria-live", "polite");
    info.hidden = true;
    const progress = document.createElement("progress");
    progress.className = "file-progress";
    progress.max = 100;
    progress.value = 0;
    progress.dataset.testid = "file-progress";
    progress.setAttribute("aria-label", `Upload of the ${param.type}`);
    progress.hidden = true;

    const hint = document.createElement("p");
    hint.className = "hint";
    hint.id = `${id}-hint`;
    hint.textContent = `${param.description || `${ACCEPT_TEXT[param.type]}.`} Or drop the file on this field.`;

    const error = document.createElement("p");
    error.className = "field-error";
    error.id = `${id}-error`;
    error.dataset.testid = `field-error-${param.name}`;
    error.hidden = true;
    input.setAttribute("aria-describedby", `${info.id} ${hint.id} ${error.id}`);

    // Dropping a file anywhere on the field picks it, like the file input does.
    wrap.addEventListener("dragover", (event) => {
      if (!event.dataTransfer || ![...event.dataTransfer.types].includes("Files")) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      wrap.classList.add("is-dragover");
    });
    wrap.addEventListener("dragleave", (event) => {
      if (!wrap.contains(event.relatedTarget)) wrap.classList.remove("is-dragover");
    });
    wrap.addEventListener("drop", (event) => {
      wrap.classList.remove("is-dragover");
      const file = event.dataTransfer?.files?.[0];
      if (!file) return;
      event.preventDefault();
      this.clearFieldError(param.name);
      this.pickFile(param, file);
    });

    wrap.append(head, row, preview, info, progress, hint, error);
    this.inputs.set(param.name, { param, input, error, wrap, preview, info, progress, clear });
    return wrap;
  }

  /** The file chosen for a parameter (null if none, or one of another kind). */
  fileFor(param) {
    const choice = this.files.get(param.name);
    return choice && choice.kind === param.type ? choice : null;
  }

  pickFile(param, file) {
    // The form-wide error was about the file just replaced ("an image file is required").
    if (this.errorFields.has(param.name)) this.hideFormError();
    this.dropFile(param.name);
    // The choice reports its first state from its constructor, so it names itself.
    const choice = new FileChoice(param.type, file, (changed) => {
      if (this.files.get(param.name) === changed) this.renderFile(param.name);
    });
    this.files.set(param.name, choice);
    this.renderFile(param.name);
  }

  dropFile(name) {
    const choice = this.files.get(name);
    if (!choice) return;
    this.files.delete(name);
    choice.drop();
  }

  /** Forget every picked file and delete its upload (before logging out: after, it cannot). */
  discardFiles() {
    for (const name of [...this.files.keys()]) this.dropFile(name);
  }

  /** Show a file field as its choice stands: preview, upload state, the server's refusal. */
  renderFile(name) {
    const entry = this.inputs.get(name);
    if (!entry || !entry.preview) return;
    const { param, input, preview, info, progress, clear } = entry;
    const choice = this.fileFor(param);
    clear.hidden = !choice;
    progress.hidden = !choice || choice.state !== "uploading";
    if (!choice) {
      if (input.value) input.value = "";
      preview.replaceChildren();
      preview.hidden = true;
      info.hidden = true;
      info.textContent = "";
      delete info.dataset.state;
      return;
    }
    // A rebuilt field (another workflow and back) gets its file back, so it shows the name.
    if (input.files?.[0] !== choice.file) {
      try {
        const transfer = new DataTransfer();
        transfer.items.add(choice.file);
        input.files = transfer.files;
      } catch {
        // Older browsers cannot set files; the preview still shows which one is chosen.
      }
    }
    this.showPreview(preview, choice);

    info.hidden = false;
    info.dataset.state = choice.state;
    progress.value = choice.progress;
    let text;
    if (choice.state === "uploading") {
      text = `Uploading ${choice.file.name} (${formatBytes(choice.file.size)})…`;
    } else if (choice.state === "ready") {
      text = `Checked by the server: ${uploadFacts(choice.upload)}`;
    } else if (choice.state === "stale") {
      text = `${choice.file.name} will be uploaded again on Create.`;
    } else {
      text = `${choice.file.name} was not accepted.`;
      this.setFieldError(entry, uploadMessage(choice.error, name));
    }
    // Unchanged text is not set again, so the live region does not repeat itself.
    if (info.textContent !== text) info.textContent = text;
  }

  showPreview(box, choice) {
    const current = box.firstElementChild;
    if (current && current.dataset.src === choice.url) return;
    let media;
    if (choice.kind === "image") {
      media = document.createElement("img");
      media.alt = `Preview of ${choice.file.name}`;
      media.decoding = "async";
    } else {
      media = document.createElement("video");
      media.muted = true;
      media.loop = true;
      media.controls = true;
      media.playsInline = true;
      media.preload = "metadata";
      media.setAttribute("aria-label", `Preview of ${choice.file.name}`);
    }
    media.dataset.src = choice.url;
    // The server, not the browser, decides what is accepted (Chrome plays no AVI, and a
    // broken file may still show): a preview that cannot load just says so.
    const note = document.createElement("p");
    note.className = "hint file-preview-note";
    note.hidden = true;
    media.addEventListener("error", () => {
      media.hidden = true;
      note.textContent = "This browser cannot show a preview of this file.";
      note.hidden = false;
    });
    media.src = choice.url;
    box.replaceChildren(media, note);
    box.hidden = false;
  }

  /** Defaults, overlaid with `values` (a draft or a job's params). */
  fill(values) {
    for (const [name, { param, input }] of this.inputs) {
      // A file input takes no value, and a job's params name its file by the server's name.
      if (FILE_TYPES.has(param.type)) continue;
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
    // The job's input file cannot be fetched back, so say what Create would use instead.
    const files = (this.model?.parameters || []).filter((p) => FILE_TYPES.has(p.type));
    const missing = files.filter((p) => !this.fileFor(p)).map((p) => `choose the ${p.type}`);
    const kept = files.filter((p) => this.fileFor(p)).map((p) => `the ${p.type} chosen here stays`);
    const fileNote = files.length ? ` Input files are not part of the settings: ${[...kept, ...missing].join(", ")}.` : "";
    this.setStatus(`Settings of job ${shortId(job.id)} loaded; change anything and press Create.${fileNote}`);
    this.form.scrollIntoView({ behavior: "smooth", block: "start" });
    this.inputs.get("prompt")?.input.focus({ preventScroll: true });
  }

  values() {
    const values = {};
    const problems = [];
    for (const [name, { param, input }] of this.inputs) {
      if (FILE_TYPES.has(param.type)) continue;
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
    const used = [];
    try {
      for (const param of this.model.parameters || []) {
        if (!FILE_TYPES.has(param.type)) continue;
        // None chosen: the server says whether the workflow needs one.
        const id = await this.uploadedId(param);
        if (id === false) return;
        if (id) {
          body[param.name] = id;
          used.push(param);
        }
      }
      this.setStatus(start ? "Creating…" : "Creating (not started)…");
      const job = await api.createJob(body);
      this.onCreated(job);
      this.setStatus(`Created job ${shortId(job.id)} (${job.status}).`);
    } catch (err) {
      this.setStatus("");
      // An upload the server no longer has (deleted, or another data folder) goes again next time.
      const stale = used.find((p) => err instanceof ApiError && err.status === 422 && this.fieldFor(err.field)?.param === p);
      if (stale) this.fileFor(stale)?.markStale();
      this.showError(err);
    } finally {
      for (const button of this.buttons) button.disabled = false;
    }
  }

  /**
   * The upload id of a file parameter's file, once its upload is done: null when no file is
   * chosen, false when the create must not go ahead (the upload failed, or the file changed
   * while waiting; the field says why).
   */
  async uploadedId(param) {
    const choice = this.fileFor(param);
    if (!choice) return null;
    if (choice.state === "stale") choice.start();
    if (choice.state === "uploading") {
      this.setStatus(`Waiting for the ${param.type} to finish uploading…`);
      await choice.done;
    }
    if (this.fileFor(param) !== choice) {
      this.setStatus(`The ${param.type} changed; press Create again.`);
      return false;
    }
    if (choice.state !== "ready") {
      this.setStatus("");
      const status = choice.error instanceof ApiError ? choice.error.status : 0;
      const text = uploadMessage(choice.error, param.name);
      this.showError(new ApiError(status || 422, `${param.name}: ${text}`, { field: param.name }));
      return false;
    }
    return choice.upload.id;
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
    this.errorFields.clear();
    if (!(err instanceof ApiError)) return;
    const reported = err.fields.length ? err.fields : err.field ? [{ field: err.field, message }] : [];
    let first = null;
    for (const { field, message: text } of reported) {
      const entry = this.fieldFor(field);
      if (!entry) continue;
      this.setFieldError(entry, fieldMessage(text || message, [entry.param.name, field]));
      this.errorFields.add(entry.param.name);
      first = first || entry;
    }
    if (first) {
      if (first.param.advanced) this.advanced.open = true;
      first.input.focus();
    }
  }

  setFieldError(entry, text) {
    entry.error.textContent = text;
    entry.error.hidden = false;
    entry.input.setAttribute("aria-invalid", "true");
    entry.wrap.classList.add("has-error");
  }

  clearFieldError(name) {
    const entry = this.inputs.get(name);
    if (!entry || entry.error.hidden) return;
    entry.error.hidden = true;
    entry.error.textContent = "";
    entry.input.removeAttribute("aria-invalid");
    entry.wrap.classList.remove("has-error");
  }

  hideFormError() {
    this.errorEl.hidden = true;
    this.errorEl.textContent = "";
    this.errorFields.clear();
  }

  clearErrors() {
    this.hideFormError();
    for (const name of this.inputs.keys()) this.clearFieldError(name);
  }

  setStatus(text) {
    this.statusEl.textContent = text;
  }

  /** What the fields hold now, as typed (files aside): a draft, or a rebuild's values. */
  currentValues() {
    const values = {};
    for (const [name, { param, input }] of this.inputs) {
      if (FILE_TYPES.has(param.type)) continue;
      values[name] = param.type === "bool" ? input.checked : input.value;
    }
    return values;
  }

  saveDraft() {
    if (!this.model) return;
    storage()?.setItem(DRAFT_KEY + this.model.id, JSON.stringify(this.currentValues()));
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
