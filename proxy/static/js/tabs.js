// The Jobs / Batches views: an ARIA tablist (arrow keys, Home and End move between tabs),
// remembered across visits.

const VIEW_KEY = "fastwan.view";

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

export class Tabs {
  constructor(tablist, { onChange = () => {} } = {}) {
    this.tablist = tablist;
    this.onChange = onChange;
    this.tabs = [...tablist.querySelectorAll("[role=tab]")];
    this.current = null;

    tablist.addEventListener("click", (event) => {
      const tab = event.target.closest("[role=tab]");
      if (tab) this.select(tab.dataset.view);
    });
    tablist.addEventListener("keydown", (event) => {
      const index = this.tabs.indexOf(event.target.closest("[role=tab]"));
      if (index < 0) return;
      const last = this.tabs.length - 1;
      const next = {
        ArrowRight: index === last ? 0 : index + 1,
        ArrowLeft: index === 0 ? last : index - 1,
        Home: 0,
        End: last,
      }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      this.select(this.tabs[next].dataset.view, { focus: true });
    });
  }

  /** Show the view remembered from the last visit (or the first one). */
  restore() {
    const remembered = storage()?.getItem(VIEW_KEY);
    const known = this.tabs.some((tab) => tab.dataset.view === remembered);
    this.select(known ? remembered : this.tabs[0].dataset.view);
  }

  select(view, { focus = false } = {}) {
    for (const tab of this.tabs) {
      const selected = tab.dataset.view === view;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      const panel = document.getElementById(tab.getAttribute("aria-controls"));
      if (panel) panel.hidden = !selected;
      if (selected && focus) tab.focus();
    }
    if (view === this.current) return;
    this.current = view;
    storage()?.setItem(VIEW_KEY, view);
    this.onChange(view);
  }
}
