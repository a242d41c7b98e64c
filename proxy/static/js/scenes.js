// The "New scene video" form: named scenes in order (hook, problem, solution, cta by
// default), optional settings every scene shares, and Generate scenes, which creates a scene
// session and starts one job per scene. With the prompt tools on, the descriptions can be
// drafted from a brief.

import { ApiError, api } from "./api.js";
import { labelFor, shortId } from "./format.js";

const DEFAULT_SCENES = ["hook", "problem", "solution", "cta"];
const MAX_SCENES = 16;
// The settings every scene of a generation shares on this form; their ranges and steps come
// from the workflow's declaration (setParameters), never typed here.
const SHARED = ["width", "height", "length", "steps"];
// The workflow scenes are generated with (the server's default).
export const SCENES_WORKFLOW = "fastwan_t2v";
// scenes.2.description, or scenes.list[SceneIn].2.description from request validation.
const SCENE_FIELD = /^scenes\.(?:[^.]+\.)?(\d+)\.(scenario|description)$/;

function show(element, message) {
  element.hidden = !message;
  element.textContent = message || "";
}

export class ScenesForm {
  constructor(form, { onStarted = () => {} }) {
    this.form = form;
    this.onStarted = onStarted;
    const q = (id) => form.querySelector(`[data-testid=${id}]`);
    this.rowsEl = q("scene-rows");
    this.addButton = q("scene-add");
    this.paramsEl = q("scene-params");
    this.errorEl = q("scenes-error");
    this.statusEl = q("scenes-status");
    this.submitButton = q("scenes-generate");
    this.draftBox = q("scene-draft-box");
    this.brief = q("scene-brief");
    this.draftButton = q("scene-draft");
    this.draftError = q("scene-draft-error");
    this.serial = 0;
    this.shared = new Map();

    for (const name of SHARED) this.paramsEl.append(this.sharedField(name));
    for (const name of DEFAULT_SCENES) this.addRow(name);

    this.addButton.addEventListener("click", () => {
      const row = this.addRow("");
      row.querySelector("[data-testid=scene-name]").focus();
    });
    this.rowsEl.addEventListener("click", (event) => {
      const remove = event.target.closest("[data-testid=scene-remove]");
      if (!remove || this.rows().length <= 1) return;
      const row = remove.closest("[data-testid=scene-row]");
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      this.renumber();
      next?.querySelector("[data-testid=scene-name]")?.focus();
    });
    form.addEventListener("input", (event) => {
      const wrap = event.target.closest(".has-error");
      if (wrap) this.clearFieldError(wrap);
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.draftButton.addEventListener("click", () => this.draft());
  }

  /** Show the "draft from a brief" box when the prompt tools are on. */
  setDrafting(on) {
    this.draftBox.hidden = !on;
  }

  rows() {
    return [...this.rowsEl.querySelectorAll("[data-testid=scene-row]")];
  }

  /** Ranges, steps and help from the workflow's parameter declarations (GET /api/models). */
  setParameters(parameters) {
    for (const param of parameters || []) {
      const field = this.shared.get(param.name);
      if (!field) continue;
      const { input } = field;
      if (param.min != null) input.min = String(param.min);
      if (param.max != null && Number.isSafeInteger(Number(param.max))) input.max = String(param.max);
      input.step = String(param.multiple_of || (param.four_k_plus_1 ? 4 : 1));
      if (param.description) input.title = param.description;
      if (param.default != null) input.placeholder = `default ${param.default}`;
    }
  }

  sharedField(name) {
    const id = `scene-param-${name}`;
    const wrap = document.createElement("div");
    wrap.className = "field";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = labelFor(name);
    const input = document.createElement("input");
    input.type = "number";
    input.id = id;
    input.name = name;
    input.dataset.testid = id;
    input.inputMode = "numeric";
    input.placeholder = "default";
    const error = document.createElement("p");
    error.className = "field-error";
    error.id = `${id}-error`;
    error.hidden = true;
    input.setAttribute("aria-describedby", error.id);
    wrap.append(label, input, error);
    this.shared.set(name, { input, error, wrap });
    return wrap;
  }

  addRow(name = "", description = "") {
    const n = ++this.serial;
    const row = document.createElement("div");
    row.className = "scene-row";
    row.dataset.testid = "scene-row";

    const head = document.createElement("div");
    head.className = "scene-row-head";
    const number = document.createElement("span");
    number.className = "scene-number";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "btn btn-small btn-quiet";
    remove.dataset.testid = "scene-remove";
    remove.textContent = "Remove";
    head.append(number, remove);

    const nameWrap = document.createElement("div");
    nameWrap.className = "field scene-name-field";
    const nameLabel = document.createElement("label");
    nameLabel.htmlFor = `scene-name-${n}`;
    nameLabel.textContent = "Name";
    const nameInput = document.createElement("input");
    nameInput.type = "text";
    nameInput.id = `scene-name-${n}`;
    nameInput.dataset.testid = "scene-name";
    nameInput.maxLength = 40;
    nameInput.autocomplete = "off";
    nameInput.value = name;
    nameWrap.append(nameLabel, nameInput);

    const descWrap = document.createElement("div");
    descWrap.className = "field scene-description-field";
    const descLabel = document.createElement("label");
    descLabel.htmlFor = `scene-description-${n}`;
    descLabel.textContent = "Description (its video prompt)";
    const desc = document.createElement("textarea");
    desc.id = `scene-description-${n}`;
    desc.dataset.testid = "scene-description";
    desc.rows = 2;
    desc.maxLength = 4000;
    desc.value = description;
    descWrap.append(descLabel, desc);

    const error = document.createElement("p");
    error.className = "field-error";
    error.dataset.testid = "scene-error";
    error.id = `scene-error-${n}`;
    error.hidden = true;
    nameInput.setAttribute("aria-describedby", error.id);
    desc.setAttribute("aria-describedby", error.id);

    row.append(head, nameWrap, descWrap, error);
    this.rowsEl.append(row);
    this.renumber();
    return row;
  }

  /** Number the rows and name their controls after their position. */
  renumber() {
    const rows = this.rows();
    rows.forEach((row, index) => {
      const n = index + 1;
      row.querySelector(".scene-number").textContent = `Scene ${n}`;
      row.querySelector("[data-testid=scene-name]").setAttribute("aria-label", `Scene ${n} name`);
      row.querySelector("[data-testid=scene-description]").setAttribute("aria-label", `Scene ${n} description`);
      const remove = row.querySelector("[data-testid=scene-remove]");
      remove.setAttribute("aria-label", `Remove scene ${n}`);
      remove.disabled = rows.length <= 1;
    });
    this.addButton.disabled = rows.length >= MAX_SCENES;
  }

  values() {
    const problems = [];
    const scenes = this.rows().map((row, index) => {
      const scenario = row.querySelector("[data-testid=scene-name]").value.trim();
      const description = row.querySelector("[data-testid=scene-description]").value.trim();
      if (!scenario) problems.push({ index, part: "scenario", message: "give the scene a name" });
      else if (!description) problems.push({ index, part: "description", message: "describe what the scene shows" });
      return { scenario, description };
    });
    const params = {};
    for (const [name, { input }] of this.shared) {
      const raw = input.value.trim();
      if (input.validity.badInput || (raw && !/^\d+$/.test(raw))) {
        problems.push({ param: name, message: "enter a whole number" });
      } else if (raw) {
        params[name] = Number(raw);
      }
    }
    return { scenes, params, problems };
  }

  async submit() {
    this.clearErrors();
    const { scenes, params, problems } = this.values();
    if (problems.length) {
      for (const problem of problems) this.markProblem(problem);
      show(this.errorEl, "Fix the marked fields first.");
      this.focusFirstError();
      return;
    }
    this.submitButton.disabled = true;
    this.statusEl.textContent = "Creating the scene session…";
    try {
      const session = await api.createSession({ scenes, ...params });
      this.statusEl.textContent = "Starting the scenes…";
      const started = await api.generateScenes(session.session_id);
      this.statusEl.textContent = `Scenes started: ${scenes.length} videos (batch ${shortId(started.job_id)}).`;
      this.onStarted(started.job_id);
    } catch (err) {
      this.statusEl.textContent = "";
      this.showError(err);
    } finally {
      this.submitButton.disabled = false;
    }
  }

  /** A sentence from the API; a field it names is marked too. */
  showError(err) {
    show(this.errorEl, err.message);
    if (!(err instanceof ApiError)) return;
    const reported = err.fields.length ? err.fields : err.field ? [{ field: err.field, message: err.message }] : [];
    for (const { field, message } of reported) {
      const scene = SCENE_FIELD.exec(String(field));
      const bare = String(message || "").replace(/^Invalid request: /, "").replace(/^[\w.[\]]+: /, "");
      if (scene) this.markProblem({ index: Number(scene[1]), part: scene[2], message: bare });
      else if (this.shared.has(String(field))) this.markProblem({ param: String(field), message: bare });
    }
    this.focusFirstError();
  }

  markProblem({ index, part, param, message }) {
    if (param) {
      const entry = this.shared.get(param);
      show(entry.error, message);
      entry.input.setAttribute("aria-invalid", "true");
      entry.wrap.classList.add("has-error");
      return;
    }
    const row = this.rows()[index];
    if (!row) return;
    const input = row.querySelector(part === "scenario" ? "[data-testid=scene-name]" : "[data-testid=scene-description]");
    input.setAttribute("aria-invalid", "true");
    input.closest(".field").classList.add("has-error");
    row.classList.add("has-error");
    show(row.querySelector("[data-testid=scene-error]"), message);
  }

  focusFirstError() {
    this.form.querySelector("[aria-invalid=true]")?.focus();
  }

  clearFieldError(wrap) {
    wrap.classList.remove("has-error");
    for (const input of wrap.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    const error = wrap.querySelector(".field-error");
    if (error) show(error, null);
    const row = wrap.closest("[data-testid=scene-row]");
    if (row && !row.querySelector(".has-error")) {
      row.classList.remove("has-error");
      show(row.querySelector("[data-testid=scene-error]"), null);
    }
  }

  clearErrors() {
    show(this.errorEl, null);
    for (const wrap of [...this.form.querySelectorAll(".has-error")]) this.clearFieldError(wrap);
  }

  /** Ask the model for one description per named scene, for the brief. */
  async draft() {
    show(this.draftError, null);
    const brief = this.brief.value.trim();
    const names = this.rows().map((row) => row.querySelector("[data-testid=scene-name]").value.trim());
    if (!brief) {
      show(this.draftError, "Write a brief first.");
      return;
    }
    if (names.some((name) => !name)) {
      show(this.draftError, "Name every scene first.");
      return;
    }
    const label = this.draftButton.textContent;
    this.draftButton.disabled = true;
    this.draftButton.textContent = "Drafting…";
    try {
      const data = await api.draftScenes(brief, names);
      const byName = new Map((data.scenes || []).map((s) => [s.scenario.toLowerCase(), s.description]));
      for (const row of this.rows()) {
        const name = row.querySelector("[data-testid=scene-name]").value.trim().toLowerCase();
        if (byName.has(name)) row.querySelector("[data-testid=scene-description]").value = byName.get(name);
      }
      this.statusEl.textContent = "Descriptions drafted; edit them as you like, then Generate scenes.";
    } catch (err) {
      show(this.draftError, `Could not draft the scenes: ${err.message}`);
    } finally {
      this.draftButton.disabled = false;
      this.draftButton.textContent = label;
    }
  }
}
