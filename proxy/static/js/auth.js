// Logging the web UI in. At start the page asks /api/auth/me: a proxy without API keys is open
// (no login, as before); one with keys and no session for this browser shows the login panel
// instead of the app. The key typed there goes once to /api/auth/login, which answers with an
// HttpOnly session cookie; the page keeps nothing of the key (the field is emptied, nothing is
// stored). A 401 from any later call (the session expired, the key was removed or changed)
// brings the panel back with a message. Log out ends the session and reloads the page, so
// nothing of the user who left stays in it.
//
// <html data-auth> says where the page is: checking (asking /api/auth/me), login (the panel is
// up, the app hidden), in (logged in), open (no keys configured) or unknown (/api/auth/me
// did not answer: the app runs, and a 401 from it brings the login).

import { ApiError, api, onUnauthorized } from "./api.js";

const LOGGED_OUT_KEY = "fastwan.loggedOut";

function session() {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

function show(element, message) {
  element.hidden = !message;
  element.textContent = message || "";
}

export class Login {
  /**
   * `onIn(user, {resumed})`: the app may run (user: `{name, admin}`, or null on an open
   * proxy); `resumed` when the same user logs in again after their session ended.
   * `onOut()`: the session ended; stop what talks to the server. `onLeaving()`: just before
   * logging out (the last moment calls are still let in).
   */
  constructor(doc, { onIn, onOut = () => {}, onLeaving = () => {} }) {
    this.root = doc.documentElement;
    this.panel = doc.querySelector("[data-testid=login-panel]");
    this.form = this.panel.querySelector("[data-testid=login-form]");
    this.keyEl = this.panel.querySelector("[data-testid=login-key]");
    this.submitEl = this.panel.querySelector("[data-testid=login-submit]");
    this.errorEl = this.panel.querySelector("[data-testid=login-error]");
    this.noticeEl = this.panel.querySelector("[data-testid=login-notice]");
    this.userBox = doc.querySelector("[data-testid=auth-box]");
    this.userEl = doc.querySelector("[data-testid=auth-user]");
    this.logoutEl = doc.querySelector("[data-testid=logout]");
    this.onIn = onIn;
    this.onOut = onOut;
    this.onLeaving = onLeaving;
    // Who is logged in ({name, admin}); and, while the panel is back, whose session ended.
    this.user = null;
    this.ended = null;
    this.mode = "checking";

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.keyEl.addEventListener("input", () => show(this.errorEl, ""));
    this.logoutEl.addEventListener("click", () => this.logout());
    onUnauthorized(() => this.lost());
  }

  /** Whether the app may be used now (not behind the login panel). */
  get usable() {
    return this.mode === "in" || this.mode === "open" || this.mode === "unknown";
  }

  /** Ask the server who this page is; then the app, or the login panel. */
  async begin() {
    let me;
    try {
      me = await api.me();
    } catch (err) {
      // A proxy from before API keys has no /api/auth/me: it is open.
      this.setMode(err instanceof ApiError && err.status === 404 ? "open" : "unknown");
      this.onIn(null, { resumed: false });
      return;
    }
    if (!me.auth_required) {
      this.setMode("open");
      this.onIn(null, { resumed: false });
    } else if (me.authenticated) {
      this.enter({ name: me.name, admin: Boolean(me.admin) }, false);
    } else {
      const loggedOut = session()?.getItem(LOGGED_OUT_KEY);
      session()?.removeItem(LOGGED_OUT_KEY);
      this.showPanel(loggedOut ? "You have logged out." : "", "info");
    }
  }

  setMode(mode) {
    this.mode = mode;
    this.root.dataset.auth = mode;
    this.panel.hidden = mode !== "login";
    this.userBox.hidden = mode !== "in";
    if (mode !== "in" && mode !== "open" && mode !== "unknown") delete this.root.dataset.ready;
  }

  showPanel(notice, tone = "warn") {
    show(this.noticeEl, notice);
    this.noticeEl.dataset.tone = tone;
    show(this.errorEl, "");
    this.keyEl.value = "";
    this.submitEl.disabled = false;
    this.setMode("login");
    this.keyEl.focus();
  }

  enter(user, resumed) {
    this.user = user;
    this.ended = null;
    this.userEl.replaceChildren(user.name);
    const who = `Logged in as ${user.name}${user.admin ? ", with an admin key" : ""}`;
    this.userEl.title = who;
    this.userEl.setAttribute("aria-label", who);
    if (user.admin) {
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = "admin";
      this.userEl.append(" ", role);
    }
    this.setMode("in");
    this.onIn(user, { resumed });
  }

  /** A call answered 401: the session is gone. */
  lost() {
    if (this.mode === "login" || this.mode === "leaving") return;
    const who = this.user;
    this.ended = who;
    this.user = null;
    this.showPanel(
      who
        ? `Your session as ${who.name} has ended (it expired, or its key was changed or removed). Log in again to carry on.`
        : "This proxy asks for an API key now. Log in to carry on.",
    );
    this.onOut();
  }

  async submit() {
    const key = this.keyEl.value.trim();
    if (!key) {
      show(this.errorEl, "Enter an API key.");
      this.keyEl.focus();
      return;
    }
    show(this.errorEl, "");
    this.submitEl.disabled = true;
    let user;
    try {
      user = await api.login(key);
    } catch (err) {
      const text =
        err instanceof ApiError && err.status === 401
          ? `${err.message}: check the key and try again.`
          : `Could not log in: ${err.message}`;
      show(this.errorEl, text);
      this.submitEl.disabled = false;
      this.keyEl.select();
      return;
    }
    // The key is the cookie's business from here on.
    this.keyEl.value = "";
    const resumed = Boolean(this.ended && this.ended.name === user.name);
    show(this.noticeEl, "");
    this.enter({ name: user.name, admin: Boolean(user.admin) }, resumed);
  }

  async logout() {
    if (this.mode !== "in") return;
    this.logoutEl.disabled = true;
    this.onLeaving();
    this.mode = "leaving";
    try {
      await api.logout();
    } catch {
      // Already ended (401), or the server is down: the reload below shows which.
    }
    session()?.setItem(LOGGED_OUT_KEY, "1");
    window.location.reload();
  }
}
