// Small pure helpers for showing numbers, times and names.

export function shortId(id) {
  return String(id).slice(0, 8);
}

/** "45 s", "3 min 05 s", "1 h 02 min". */
export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

/**
 * A sortable number for the proxy's ISO timestamps, to the microsecond (Date keeps only
 * milliseconds, and two updates of one job can land within the same millisecond).
 */
export function timeKey(iso) {
  if (!iso) return 0;
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return 0;
  const fraction = /\.(\d+)/.exec(iso);
  const micros = fraction ? Number(fraction[1].padEnd(6, "0").slice(3, 6)) : 0;
  return ms * 1000 + micros;
}

export function formatClock(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (sameDay) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export function secondsBetween(startIso, endIso) {
  if (!startIso || !endIso) return null;
  const seconds = (Date.parse(endIso) - Date.parse(startIso)) / 1000;
  return Number.isFinite(seconds) ? seconds : null;
}

export function formatBytes(bytes) {
  if (bytes == null || !Number.isFinite(bytes)) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

const LABELS = {
  cfg: "CFG scale",
  fps: "FPS",
  lora_strength: "LoRA strength",
  length: "Length (frames)",
  width: "Width (px)",
  height: "Height (px)",
};

/** `negative_prompt` → "Negative prompt". */
export function labelFor(name) {
  if (LABELS[name]) return LABELS[name];
  const words = String(name).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}
