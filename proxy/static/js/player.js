// The in-browser player and download link of a finished job.
//
// The proxy serves the MP4 with HTTP Range, so the browser seeks without downloading the
// whole file. The URL carries the attempt number: running a job again replaces its video at
// the same path, and the player must not show the cached old one.

import { formatBytes, formatDuration, shortId } from "./format.js";

function videoOutput(job) {
  const outputs = Array.isArray(job.outputs) ? job.outputs : [];
  return outputs.find((o) => String(o.content_type || "").startsWith("video/")) || outputs[0] || null;
}

function durationText(seconds) {
  return seconds < 60 ? `${seconds.toFixed(1)} s` : formatDuration(seconds);
}

function sourceOf(job) {
  // The page's own origin, whatever address the answer's absolute URL names (a reverse proxy
  // not listed in TRUSTED_PROXIES makes that an inside address).
  const path = new URL(job.video_url, window.location.href).pathname;
  return `${path}?attempt=${encodeURIComponent(job.attempt ?? 0)}`;
}

/** Show the player for a completed job (kept as is if it already plays this attempt). */
export function showPlayer(container, job) {
  const src = sourceOf(job);
  const current = container.querySelector("video");
  if (current && current.dataset.src === src) return;
  removePlayer(container);

  const output = videoOutput(job);
  const video = document.createElement("video");
  video.controls = true;
  video.preload = "metadata";
  video.playsInline = true;
  video.loop = true;
  video.dataset.src = src;
  video.dataset.testid = "job-video";
  video.setAttribute("aria-label", `Video of job ${shortId(job.id)}`);
  const width = Number(output?.width ?? job.params?.width);
  const height = Number(output?.height ?? job.params?.height);
  if (width > 0 && height > 0) video.style.aspectRatio = `${width} / ${height}`;

  const fallback = document.createElement("p");
  fallback.className = "player-error";
  fallback.dataset.testid = "job-video-error";
  fallback.hidden = true;
  video.addEventListener("error", () => {
    fallback.textContent = "This browser cannot play the video here; download it instead.";
    fallback.hidden = false;
  });
  video.src = src;

  const footer = document.createElement("div");
  footer.className = "player-footer";
  const link = document.createElement("a");
  link.className = "btn btn-small";
  link.href = src;
  link.download = output?.filename || `fastwan-${shortId(job.id)}.mp4`;
  link.dataset.testid = "job-download";
  link.textContent = "Download MP4";
  link.setAttribute("aria-label", `Download the video of job ${shortId(job.id)}`);
  const facts = document.createElement("span");
  facts.className = "player-facts";
  facts.textContent = [
    output?.width && output?.height ? `${output.width}×${output.height}` : "",
    output?.duration_s ? durationText(output.duration_s) : "",
    output?.fps ? `${Math.round(output.fps)} fps` : "",
    formatBytes(output?.size_bytes),
  ].filter(Boolean).join(" · ");
  footer.append(link, facts);

  container.append(video, fallback, footer);
  container.hidden = false;
}

/** Stop and drop the player (its decoder and connection are released). */
export function removePlayer(container) {
  const video = container.querySelector("video");
  if (video) {
    video.pause();
    video.removeAttribute("src");
    video.load();
  }
  container.replaceChildren();
  container.hidden = true;
}
