// Building message DOM safely: text only ever goes through textContent, and
// links are anchors made from the text itself (http/https only).

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"']+/gi;
const TRAILING = /[.,;:!?)\]}]+$/;

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Append `text` to `parent`, turning http(s) URLs into safe anchors. */
export function appendLinkified(parent, text) {
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    let url = match[0];
    const trailing = url.match(TRAILING);
    if (trailing) url = url.slice(0, -trailing[0].length);
    const start = match.index;
    parent.append(document.createTextNode(text.slice(last, start)));
    let parsed = null;
    try {
      parsed = new URL(url);
    } catch {
      parsed = null;
    }
    if (parsed && (parsed.protocol === "http:" || parsed.protocol === "https:")) {
      const anchor = el("a", null, url);
      anchor.href = parsed.href;
      anchor.rel = "noopener noreferrer";
      anchor.target = "_blank";
      parent.append(anchor);
    } else {
      parent.append(document.createTextNode(url));
    }
    last = start + url.length;
  }
  parent.append(document.createTextNode(text.slice(last)));
}

/** A Date from the API's timestamps (milliseconds, seconds or ISO text). */
export function toDate(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "number") return new Date(value < 1e12 ? value * 1000 : value);
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return "Today";
  if (date.toDateString() === yesterday.toDateString()) return "Yesterday";
  return date.toLocaleDateString(undefined, { weekday: "short", day: "numeric", month: "short", year: "numeric" });
}

export function timeLabel(date) {
  return date ? date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }) : "";
}

export function lastSeenLabel(contact) {
  if (contact.online === true) return "online";
  const seen = toDate(contact.last_seen);
  if (!seen) return "";
  const today = new Date().toDateString() === seen.toDateString();
  return `last seen ${today ? timeLabel(seen) : seen.toLocaleDateString()}`;
}

const STATE_MARKS = {
  queued: "…", sent: "✓", delivered: "✓✓", read: "✓✓ read", failed: "✗ failed",
};

export function stateMark(state) {
  return STATE_MARKS[state] || "";
}

/** An avatar: the initials on a colour derived from the name. */
export function avatar(name, { online = false, large = false } = {}) {
  const node = el("span", `avatar${large ? " large" : ""}${online ? " online" : ""}`);
  node.setAttribute("aria-hidden", "true");
  fillAvatar(node, name);
  return node;
}

export function fillAvatar(node, name) {
  const words = String(name || "?").trim().split(/\s+/);
  node.textContent = (words[0][0] + (words.length > 1 ? words[1][0] : "")).toUpperCase();
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  node.style.backgroundColor = `hsl(${hash % 360} 45% 42%)`;
}

const IMAGE_NAME = /\.(png|jpe?g|gif|webp)$/i;

export function isImageName(name) {
  return IMAGE_NAME.test(name || "");
}

export function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
