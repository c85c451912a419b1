// chatcli in the browser: every action is a JSON-RPC call to the local
// chatcli daemon, which holds the keys and does all the cryptography.
import { Rpc } from "./rpc.js";
import { setupGroupProfile } from "./group_profile.js";
import {
  appendLinkified, avatar, dayLabel, el, fillAvatar, formatSize, isImageName,
  lastSeenLabel, stateMark, timeLabel, toDate,
} from "./render.js";
import { decorateMessage, initKinds, kindsEvent, kindsSubmit, takeReply } from "./msgkinds.js";
import { installSearch } from "./search.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const TYPING_REFRESH_MS = 3000;
const TYPING_SHOWN_MS = 6000;

const state = {
  contacts: [],          // contacts.list
  groups: [],            // groups.list
  last: new Map(),       // conversation key -> last message
  unread: new Map(),     // conversation key -> count
  current: null,         // {kind: "contact"|"group", name}
  messages: [],          // messages of the open conversation, oldest first
  hasOlder: false,
  typingTimer: null,
  typingSentAt: 0,
  theirTyping: new Map(),
  settings: {},
  pictures: new Map(),   // contact name -> blob: URL of their profile picture ("" if none)
  ownSends: 0,           // sends of this page still waiting for their answer
  subscription: null,    // the id of this connection's event subscription
};

const rpc = new Rpc({ onEvent: handleEvent, onState: connectionChanged });
initKinds({ rpc, state, render: () => renderMessages(), showNotice, errorText });

function key(kind, name) {
  return `${kind}:${name}`;
}

let noticeTimer = null;

// A problem (red, stays until the next one) or, with `info`, news that fades.
function showNotice(text, { info = false } = {}) {
  const notice = $("notice");
  clearTimeout(noticeTimer);
  notice.textContent = text;
  notice.hidden = !text;
  notice.classList.toggle("info", info);
  if (info && text) noticeTimer = setTimeout(() => showNotice(""), 10000);
}

function errorText(error) {
  return error && error.message ? error.message : String(error);
}

// ---------------------------------------------------------------- connection

async function connectionChanged(status) {
  $("connection").textContent = {
    connecting: "connecting…", open: "connected", closed: "disconnected: retrying…",
  }[status];
  if (status !== "open") return;
  state.subscription = null;  // a new connection has no subscription yet
  showNotice("");
  try {
    await rpc.call("status");
  } catch (error) {
    if (error.kind === "locked") {
      showPage("unlock");
      return;
    }
    if (error.kind === "no_identity") {
      showPage("register");
      return;
    }
    showNotice(errorText(error));
    return;
  }
  await startApp();
}

function showPage(which) {
  $("unlock-page").hidden = which !== "unlock";
  $("register-page").hidden = which !== "register";
  $("app").hidden = which !== "app";
  $("lock").hidden = which !== "app";
  $("open-profile").hidden = which !== "app";
  if (which === "unlock") $("passphrase").focus();
  if (which === "register") $("register-name").focus();
}

async function subscribe() {
  if (state.subscription !== null) {
    const old = state.subscription;
    state.subscription = null;
    await rpc.call("unsubscribe", { subscription: old }).catch(() => {});
  }
  const answer = await rpc.call("subscribe", {});
  state.subscription = answer.subscription;
}

async function startApp() {
  showPage("app");
  try {
    await subscribe();
  } catch (error) {
    showNotice(errorText(error));
  }
  await refreshConversations();
  if (state.current) await openConversation(state.current.kind, state.current.name);
}

$("unlock-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("passphrase");
  $("unlock-error").textContent = "";
  try {
    await rpc.call("unlock", { passphrase: input.value });
    input.value = "";
    await startApp();
  } catch (error) {
    $("unlock-error").textContent = errorText(error);
    input.select();
  }
});

// ------------------------------------------------------------- registration

// A rough hint only: length and variety. The daemon refuses fewer than 8 characters.
function strength(passphrase) {
  if (!passphrase) return null;
  if (passphrase.length < 8) return { level: "weak", text: "Too short: at least 8 characters." };
  let classes = 0;
  for (const pattern of [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/]) if (pattern.test(passphrase)) classes += 1;
  const words = passphrase.trim().split(/\s+/).length;
  const score = passphrase.length + 3 * classes + (words >= 4 ? 10 : 0);
  if (score >= 30) return { level: "strong", text: "Strong: hard to guess." };
  if (score >= 20) return { level: "fair", text: "Fair: longer is better (a few unrelated words work well)." };
  return { level: "weak", text: "Weak: easy to guess. Use a few unrelated words." };
}

$("register-passphrase").addEventListener("input", () => {
  const hint = strength($("register-passphrase").value);
  const node = $("register-strength");
  node.className = `small strength${hint ? ` ${hint.level}` : ""}`;
  node.textContent = hint ? hint.text : "";
});

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = $("register-error");
  error.textContent = "";
  const passphrase = $("register-passphrase").value;
  if (passphrase !== $("register-repeat").value) {
    error.textContent = "The two passphrases differ.";
    return;
  }
  const params = {
    name: $("register-name").value.trim(),
    relay: $("register-relay").value.trim(),
    passphrase,
  };
  const token = $("register-token").value.trim();
  if (token) params.token = token;
  $("register-submit").disabled = true;
  try {
    await rpc.call("account.create", params);
    $("register-form").reset();
    $("register-strength").textContent = "";
    await startApp();
  } catch (failure) {
    error.textContent = errorText(failure);
  } finally {
    $("register-submit").disabled = false;
  }
});

$("lock").addEventListener("click", async () => {
  try {
    await rpc.call("lock");
    state.current = null;
    showPage("unlock");
  } catch (error) {
    showNotice(errorText(error));
  }
});

// ------------------------------------------------------------- conversations

async function refreshConversations() {
  try {
    const [contacts, groups] = await Promise.all([
      rpc.call("contacts.list", {}),
      rpc.call("groups.list", {}).catch(() => []),
    ]);
    state.contacts = contacts || [];
    state.groups = (groups || []).filter((g) => g.status !== "left" && g.status !== "removed");
  } catch (error) {
    showNotice(errorText(error));
    return;
  }
  renderConversations();
  await Promise.all(conversations().map(loadLastMessage));
  renderConversations();
}

function conversations() {
  return [
    ...state.contacts.filter((c) => !c.blocked).map((c) => ({ kind: "contact", name: c.name, contact: c })),
    ...state.groups.map((g) => ({ kind: "group", name: g.name, group: g })),
  ];
}

async function loadLastMessage(conversation) {
  try {
    const list = conversation.kind === "group"
      ? await rpc.call("groups.history", { group: conversation.name, limit: 1 })
      : await rpc.call("history", { contact: conversation.name, limit: 1 });
    if (list && list.length) state.last.set(key(conversation.kind, conversation.name), list[list.length - 1]);
  } catch {
    // A conversation whose history cannot be read still shows, without a preview.
  }
}

function renderConversations() {
  const query = $("search").value.trim().toLowerCase();
  const list = $("conversations");
  list.replaceChildren();
  const items = conversations()
    .filter((c) => !query || c.name.toLowerCase().includes(query))
    .sort((a, b) => lastTime(b) - lastTime(a) || a.name.localeCompare(b.name));
  for (const conversation of items) {
    const k = key(conversation.kind, conversation.name);
    const contact = conversation.contact;
    const button = el("button", "conversation");
    button.type = "button";
    if (state.current && key(state.current.kind, state.current.name) === k) {
      button.setAttribute("aria-current", "true");
    }
    const face = avatar(conversation.name, { online: Boolean(contact && contact.online) });
    if (contact) showPicture(face, contact.name);
    button.append(face);
    const name = el("span", "name", conversation.kind === "group" ? `${conversation.name} (group)` : conversation.name);
    const last = state.last.get(k);
    const meta = el("span", "meta", last ? timeLabel(toDate(last.sent_at || last.received_at)) : "");
    const preview = contact && contact.key_changed
      ? el("span", "last warning", "⚠ key changed: check the safety number")
      : el("span", "last", last ? previewText(last) : contact ? lastSeenLabel(contact) : "");
    const unread = state.unread.get(k) || 0;
    const badge = unread ? el("span", "badge", unread) : el("span");
    if (unread) badge.setAttribute("aria-label", `${unread} unread`);
    button.append(name, meta, preview, badge);
    button.addEventListener("click", () => openConversation(conversation.kind, conversation.name));
    const item = el("li");
    item.append(button);
    list.append(item);
  }
  $("no-conversations").hidden = conversations().length > 0;
}

function lastTime(conversation) {
  const last = state.last.get(key(conversation.kind, conversation.name));
  const date = last ? toDate(last.sent_at || last.received_at) : null;
  return date ? date.getTime() : 0;
}

function previewText(message) {
  const prefix = message.direction === "out" ? "You: " : "";
  if (message.text) return prefix + message.text.split("\n")[0];
  if (message.attachment) return `${prefix}[file] ${message.attachment.name}`;
  return prefix;
}

$("search").addEventListener("input", renderConversations);

// Profile pictures: the daemon fetches a contact's profile (encrypted on their
// relay) and hands the picture over as base64; it is shown from a blob: URL.
function pictureUrl(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes]));
}

function setPicture(node, url) {
  if (!url) return;
  node.textContent = "";
  node.style.backgroundImage = `url("${url}")`;
}

async function loadPicture(name) {
  if (state.pictures.has(name)) return state.pictures.get(name);
  state.pictures.set(name, "");
  try {
    const profile = await rpc.call("profile.get", { contact: name, avatar: true });
    if (profile && profile.avatar) state.pictures.set(name, pictureUrl(profile.avatar));
  } catch {
    // No profile shared (or its relay is unreachable): the initials stay.
    state.pictures.delete(name);
  }
  return state.pictures.get(name) || "";
}

function showPicture(node, name) {
  const known = state.pictures.get(name);
  if (known !== undefined) {
    setPicture(node, known);
    return;
  }
  loadPicture(name).then((url) => {
    if (url) renderConversations();
    if (url && state.current && state.current.name === name) setPicture($("chat-avatar"), url);
  });
}

// ------------------------------------------------------------------ chat view

function currentContact() {
  if (!state.current || state.current.kind !== "contact") return null;
  return state.contacts.find((c) => c.name === state.current.name) || null;
}

async function openConversation(kind, name) {
  state.current = { kind, name };
  state.unread.delete(key(kind, name));
  $("app").classList.add("chat-open");
  $("chat-empty").hidden = true;
  $("chat-pane").hidden = false;
  $("chat-name").textContent = name;
  fillAvatar($("chat-avatar"), name);
  $("chat-avatar").style.backgroundImage = "";
  if (kind === "contact") showPicture($("chat-avatar"), name);
  $("open-members").hidden = kind !== "group";
  $("open-group-settings").hidden = kind !== "group";
  $("open-verify").hidden = kind !== "contact";
  updateChatHeader();
  if (kind === "group") groupProfile.showHeader(name);
  renderConversations();
  state.messages = [];
  $("message-list").replaceChildren();
  await loadHistory(false);
  $("message-text").focus();
}

function updateChatHeader() {
  const contact = currentContact();
  const changed = Boolean(contact && contact.key_changed);
  // A group's line under its name is its profile's (group_profile.js).
  if (!state.current || state.current.kind !== "group") {
    $("chat-presence").textContent = contact ? lastSeenLabel(contact) : "";
  }
  $("key-banner").hidden = !changed;
  $("message-text").disabled = changed;
  $("message-text").placeholder = changed ? "Sending is blocked until you decide about the new key" : "Message";
  $("send").disabled = changed;
  $("attach").disabled = changed;
}

async function loadHistory(older) {
  const current = state.current;
  if (!current) return;
  const params = { limit: PAGE };
  // `before` is a time (ms since the epoch): the page of messages sent before the oldest shown.
  const oldest = state.messages.find((m) => typeof m.sent_at === "number");
  if (older && oldest) params.before = oldest.sent_at;
  let list;
  try {
    list = current.kind === "group"
      ? await rpc.call("groups.history", { group: current.name, ...params })
      : await rpc.call("history", { contact: current.name, ...params });
  } catch (error) {
    showNotice(errorText(error));
    return;
  }
  if (state.current !== current) return;
  list = list || [];
  const box = $("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  const known = new Set(state.messages.map((m) => m.id));
  const fresh = list.filter((m) => !known.has(m.id));
  state.messages = older ? [...fresh, ...state.messages] : [...state.messages, ...fresh];
  state.hasOlder = list.length === PAGE;
  // An older page only adds its own nodes: a long conversation does not redraw everything.
  if (older) prependMessages(fresh);
  else renderMessages();
  if (older) box.scrollTop = box.scrollHeight - fromBottom;
  else box.scrollTop = box.scrollHeight;
  markRead();
}

$("older").addEventListener("click", () => loadHistory(true));
installSearch({
  rpc, open: openConversation,
  loadOlder: async () => state.hasOlder && (await loadHistory(true), true),
});
$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop === 0 && state.hasOlder) loadHistory(true);
});

function renderMessages() {
  const list = $("message-list");
  list.replaceChildren(messageNodes(state.messages).nodes);
  $("older").hidden = !state.hasOlder;
}

// Nodes for messages (oldest first) with their day separators, and the last day.
function messageNodes(messages) {
  const nodes = document.createDocumentFragment();
  let lastDay = "";
  for (const message of messages) {
    const date = toDate(message.sent_at || message.received_at) || new Date();
    const day = date.toDateString();
    if (day !== lastDay) {
      const separator = el("li", "day", dayLabel(date));
      separator.dataset.day = day;
      nodes.append(separator);
      lastDay = day;
    }
    nodes.append(messageNode(message, date));
  }
  return { nodes, lastDay };
}

function prependMessages(messages) {
  const list = $("message-list");
  const { nodes, lastDay } = messageNodes(messages);
  // The day the shown messages start with may be the last of the older page: one separator.
  const first = list.firstElementChild;
  if (first && first.dataset.day === lastDay) first.remove();
  list.prepend(nodes);
  $("older").hidden = !state.hasOlder;
}

function messageNode(message, date) {
  const out = message.direction === "out";
  const item = el("li", `bubble ${out ? "out" : "in"}`);
  item.dataset.id = message.id;
  if (!out && state.current && state.current.kind === "group" && message.from) {
    item.append(el("div", "from", message.from));
  }
  if (message.attachment) item.append(attachmentNode(message));
  else if (!message.text) item.append(el("span", "file muted", "a file"));
  if (message.text) {
    const text = el("p", "text");
    appendLinkified(text, message.text);
    item.append(text);
  }
  const meta = el("div", "meta", timeLabel(date));
  if (out) {
    const mark = el("span", `state state-${message.state || "sent"}`, ` ${stateMark(message.state || "sent")}`);
    mark.setAttribute("aria-label", message.state || "sent");
    meta.append(mark);
  }
  item.append(meta);
  return decorateMessage(item, message);
}

function attachmentNode(message) {
  const attachment = message.attachment;
  const box = el("div", "attachment");
  const local = message.localPreview;
  const href = attachment.path ? `/files?path=${encodeURIComponent(attachment.path)}` : null;
  if (local || (href && isImageName(attachment.name))) {
    const img = el("img", "preview");
    img.src = local || href;
    img.alt = attachment.name;
    box.append(img);
  }
  if (href) {
    const link = el("a", "file", `${attachment.name} (${formatSize(attachment.size)})`);
    link.href = href;
    link.download = attachment.name;
    box.append(link);
  } else {
    const size = Number.isFinite(attachment.size) ? ` (${formatSize(attachment.size)})` : "";
    box.append(el("span", "file", `${attachment.name}${attachment.error ? `: ${attachment.error}` : size}`));
  }
  return box;
}

function markRead() {
  const current = state.current;
  if (!current || current.kind !== "contact" || document.hidden) return;
  const ids = state.messages.filter((m) => m.direction === "in" && !m.readSent).map((m) => m.id);
  if (!ids.length) return;
  for (const message of state.messages) if (message.direction === "in") message.readSent = true;
  rpc.call("read", { contact: current.name, ids }).catch(() => {});
}

document.addEventListener("visibilitychange", markRead);

$("back").addEventListener("click", () => {
  $("app").classList.remove("chat-open");
  state.current = null;
  $("chat-pane").hidden = true;
  $("chat-empty").hidden = false;
  renderConversations();
});

// ------------------------------------------------------------------- sending

const textarea = $("message-text");

textarea.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

textarea.addEventListener("input", () => {
  textarea.style.height = "auto";
  textarea.style.height = `${Math.min(textarea.scrollHeight, 160)}px`;
  const current = state.current;
  if (!current || current.kind !== "contact") return;
  const now = Date.now();
  if (now - state.typingSentAt > TYPING_REFRESH_MS) {
    state.typingSentAt = now;
    rpc.call("typing", { to: current.name, active: true }).catch(() => {});
  }
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(() => stopTyping(), TYPING_REFRESH_MS + 1000);
});

// With `queue`, the daemon only queues the signal: the message about to be
// sent carries it in the same delivery, instead of a delivery of its own first.
function stopTyping({ queue = false } = {}) {
  const current = state.current;
  clearTimeout(state.typingTimer);
  if (!current || current.kind !== "contact" || !state.typingSentAt) return Promise.resolve();
  state.typingSentAt = 0;
  return rpc.call("typing", { to: current.name, active: false, queue }).catch(() => {});
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = textarea.value.replace(/\s+$/, "");
  if (!text || !state.current) return;
  textarea.value = "";
  textarea.style.height = "auto";
  await stopTyping({ queue: true });
  if (await kindsSubmit(text)) return;
  await send({ text });
});

async function send({ text, file, localPreview, attachment }) {
  const current = state.current;
  const pending = {
    id: `pending-${Date.now()}-${Math.random()}`, direction: "out", text: text || "",
    sent_at: Date.now(), state: "queued", attachment, localPreview,
  };
  state.messages.push(pending);
  renderMessages();
  $("messages").scrollTop = $("messages").scrollHeight;
  const params = { to: current.name, text: text || "" };
  if (file) params.file = file;
  const reply = takeReply();
  if (reply.reply_to) {
    params.reply_to = reply.reply_to;
    pending.quote = reply.quote;
  }
  state.ownSends += 1;
  try {
    const result = await rpc.call("send", params);
    pending.id = result.id;
    pending.state = result.stored ? "sent" : "queued";
  } catch (error) {
    pending.state = "failed";
    showNotice(errorText(error));
    if (error.kind === "key_changed") await refreshContact(current.name);
  } finally {
    state.ownSends -= 1;
  }
  state.last.set(key(current.kind, current.name), pending);
  if (state.current === current) renderMessages();
  renderConversations();
}

// Attachments: the file is uploaded to the local server (with progress), then
// the daemon encrypts and sends it like `chatcli send --file`.
function upload(file) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/upload?name=${encodeURIComponent(file.name)}`);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) $("upload-progress").value = (100 * event.loaded) / event.total;
    });
    request.addEventListener("load", () => {
      if (request.status === 200) resolve(JSON.parse(request.responseText));
      else reject(new Error(request.responseText.trim() || `upload failed (${request.status})`));
    });
    request.addEventListener("error", () => reject(new Error("upload failed")));
    request.send(file);
  });
}

async function sendFile(file) {
  if (!state.current || $("send").disabled) return;
  $("upload").hidden = false;
  $("upload-label").textContent = `Uploading ${file.name}`;
  $("upload-progress").value = 0;
  try {
    const uploaded = await upload(file);
    const localPreview = file.type.startsWith("image/") ? URL.createObjectURL(file) : undefined;
    const caption = textarea.value.trim();
    textarea.value = "";
    await send({
      text: caption, file: uploaded.path, localPreview,
      attachment: { name: file.name, size: file.size },
    });
  } catch (error) {
    showNotice(errorText(error));
  } finally {
    $("upload").hidden = true;
  }
}

$("attach").addEventListener("change", async () => {
  const file = $("attach").files[0];
  $("attach").value = "";
  if (file) await sendFile(file);
});

let dragDepth = 0;
const chat = $("chat");
chat.addEventListener("dragenter", (event) => {
  if (!state.current || !event.dataTransfer.types.includes("Files")) return;
  dragDepth += 1;
  $("drop-zone").hidden = false;
});
chat.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) $("drop-zone").hidden = true;
});
chat.addEventListener("dragover", (event) => event.preventDefault());
chat.addEventListener("drop", async (event) => {
  event.preventDefault();
  dragDepth = 0;
  $("drop-zone").hidden = true;
  const file = event.dataTransfer.files[0];
  if (file) await sendFile(file);
});

// -------------------------------------------------------------------- events

function handleEvent(event) {
  switch (event.type) {
    case "message": return onMessage(event);
    case "receipt": return onReceipt(event);
    case "typing": return onTyping(event);
    case "presence": return onPresence(event);
    case "key_change": return refreshContact(event.contact || event.from);
    case "contact": return refreshContact(event.contact);
    case "profile": return onProfile(event);
    case "sent": return onSent(event);
    case "notice": return onNotice(event);
    case "error": return onStreamError(event);
    case "reaction": case "edit": case "delete": return kindsEvent(event);
    default: return undefined;
  }
}

function onMessage(event) {
  const out = event.direction === "out";
  const kind = event.group ? "group" : "contact";
  const name = event.group || (out ? event.to : event.from);
  const message = { direction: out ? "out" : "in", state: out ? "sent" : "received", ...event };
  const k = key(kind, name);
  state.last.set(k, message);
  state.theirTyping.delete(name);
  const current = state.current;
  if (current && key(current.kind, current.name) === k) {
    if (!state.messages.some((m) => m.id === message.id)) {
      state.messages.push(message);
      renderMessages();
      $("messages").scrollTop = $("messages").scrollHeight;
      markRead();
    }
    renderTyping();
  } else if (!out) {
    state.unread.set(k, (state.unread.get(k) || 0) + 1);
  }
  if (!conversations().some((c) => key(c.kind, c.name) === k)) refreshConversations();
  else renderConversations();
}

// A message sent through the daemon by another front end (a terminal, another
// tab), or by this page: the page's own are already shown, under the same id.
function onSent(event) {
  if (state.ownSends > 0) {
    setTimeout(() => onSent(event), 200);
    return;
  }
  const kind = event.group ? "group" : "contact";
  const name = event.group || event.to;
  const k = key(kind, name);
  const last = state.last.get(k);
  if (last && last.id === event.id) return;
  if (state.messages.some((m) => m.id === event.id)) return;
  const message = {
    id: event.id, direction: "out", to: event.to, group: event.group || null,
    text: event.text || (event.file ? `[file] ${event.file}` : ""),
    sent_at: event.sent_at, state: event.stored ? "sent" : "queued",
  };
  state.last.set(k, message);
  const current = state.current;
  if (current && key(current.kind, current.name) === k) {
    state.messages.push(message);
    renderMessages();
    $("messages").scrollTop = $("messages").scrollHeight;
  }
  renderConversations();
}

function onStreamError(event) {
  showNotice(event.message || "the event stream stopped");
  // Subscribe again after a pause (what was missed is in the history).
  setTimeout(() => {
    state.subscription = null;  // that one is gone
    subscribe().then(() => showNotice("")).catch(() => {});
    if (state.current) loadHistory(false);
  }, 1000);
}

function onReceipt(event) {
  const ids = new Set(event.ids || (event.id ? [event.id] : []));
  const newState = event.state || event.kind || event.receipt;
  let changed = false;
  for (const message of state.messages) {
    if (ids.has(message.id) && message.state !== "read") {
      message.state = newState;
      changed = true;
    }
  }
  if (changed) renderMessages();
}

function onTyping(event) {
  const name = event.from || event.contact;
  if (event.active) state.theirTyping.set(name, Date.now());
  else state.theirTyping.delete(name);
  renderTyping();
  setTimeout(renderTyping, TYPING_SHOWN_MS + 100);
}

function renderTyping() {
  const current = state.current;
  const since = current ? state.theirTyping.get(current.name) : undefined;
  const active = since !== undefined && Date.now() - since < TYPING_SHOWN_MS;
  $("typing").textContent = active ? `${current.name} is typing…` : "";
}

function onPresence(event) {
  const contact = state.contacts.find((c) => c.name === event.contact);
  if (!contact) return;
  contact.online = event.online;
  if (event.last_seen !== undefined) contact.last_seen = event.last_seen;
  renderConversations();
  updateChatHeader();
}

// A contact shared a new profile: fetch it again, so a new picture shows at once.
async function onProfile(event) {
  const name = event.contact;
  const old = state.pictures.get(name);
  state.pictures.delete(name);
  const url = await loadPicture(name);
  if (old) URL.revokeObjectURL(old);
  renderConversations();
  const current = state.current;
  if (current && current.kind === "contact" && current.name === name) {
    const head = $("chat-avatar");
    fillAvatar(head, name);
    head.style.backgroundImage = "";
    setPicture(head, url);
  }
}

function onNotice(event) {
  showNotice(event.text || event.message || "", { info: !event.warning });
  // A group's profile or admins may have changed.
  if (state.current && state.current.kind === "group") groupProfile.showHeader(state.current.name);
  if (event.contact) refreshContact(event.contact);
  refreshConversations();
}

async function refreshContact(name) {
  try {
    state.contacts = await rpc.call("contacts.list", { offline: true });
  } catch {
    return;
  }
  if (state.current && state.current.name === name) updateChatHeader();
  renderConversations();
}

// ------------------------------------------------------------------- dialogs

function qrImage(img, text) {
  img.src = `/qr.svg?text=${encodeURIComponent(text)}`;
  img.hidden = false;
}

$("new-invite").addEventListener("click", async () => {
  try {
    const invite = await rpc.call("invites.create", {});
    $("invite-link").value = invite.link;
    qrImage($("invite-qr"), invite.link);
    $("invite-dialog").showModal();
  } catch (error) {
    showNotice(errorText(error));
  }
});

$("invite-copy").addEventListener("click", async () => {
  $("invite-link").select();
  try {
    await navigator.clipboard.writeText($("invite-link").value);
  } catch {
    // Selecting the text is the fallback: the user copies it with the keyboard.
  }
});

$("accept-invite").addEventListener("click", () => {
  $("accept-error").textContent = "";
  $("accept-form").reset();
  $("accept-dialog").showModal();
});

$("accept-form").addEventListener("submit", async (event) => {
  if (event.submitter && event.submitter.value !== "accept") return;
  event.preventDefault();
  const params = { link: $("accept-link").value.trim() };
  const name = $("accept-name").value.trim();
  if (name) params.name = name;
  try {
    const result = await rpc.call("invites.accept", params);
    $("accept-dialog").close();
    await refreshConversations();
    await openConversation("contact", result.name);
  } catch (error) {
    $("accept-error").textContent = errorText(error);
  }
});

async function openVerify(decision) {
  const contact = state.current && state.current.name;
  if (!contact) return;
  const params = { contact };
  if (decision) params[decision] = true;
  $("verify-error").textContent = "";
  try {
    const result = await rpc.call("contacts.verify", params);
    const number = $("verify-number");
    number.replaceChildren();
    const digits = String(result.safety_number || "");
    for (let i = 0; i < digits.length; i += 5) number.append(el("span", null, digits.slice(i, i + 5)));
    qrImage($("verify-qr"), digits);
    $("verify-warning").hidden = !result.key_changed;
    $("verify-reject").hidden = !result.key_changed;
    $("verify-confirm").textContent = result.key_changed ? "Accept the new key" : "Mark verified";
    $("verify-state").textContent = result.verified ? "✓ Verified" : "Not verified yet";
    if (!$("verify-dialog").open) $("verify-dialog").showModal();
    if (decision) await refreshContact(contact);
  } catch (error) {
    if ($("verify-dialog").open) $("verify-error").textContent = errorText(error);
    else showNotice(errorText(error));
  }
}

$("open-verify").addEventListener("click", () => openVerify(null));
$("banner-verify").addEventListener("click", () => openVerify(null));
$("verify-confirm").addEventListener("click", () => openVerify("confirm"));
$("verify-reject").addEventListener("click", () => openVerify("reject"));

// Profile: the picture is checked to be an image and scaled down to 256 px here.
let avatarBlob = null;

$("open-profile").addEventListener("click", async () => {
  $("profile-error").textContent = "";
  avatarBlob = null;
  try {
    const [profile, settings, presence] = await Promise.all([
      rpc.call("profile.get", { avatar: true }),
      rpc.call("settings.get", {}),
      rpc.call("presence.get", {}).catch(() => null),
    ]);
    state.settings = settings || {};
    $("profile-name").value = (profile && profile.display_name) || "";
    $("profile-status").value = (profile && profile.status) || "";
    const hidden = presence && typeof presence.hidden === "boolean" ? presence.hidden : state.settings.presence_hidden;
    $("profile-presence").checked = !hidden;
    $("profile-receipts").checked = state.settings.read_receipts !== false;
    fillAvatar($("profile-avatar"), $("profile-name").value || state.settings.name || "?");
    $("profile-avatar").style.backgroundImage = "";
    if (profile && profile.avatar) setPicture($("profile-avatar"), pictureUrl(profile.avatar));
    await showDevices();
    $("profile-dialog").showModal();
  } catch (error) {
    showNotice(errorText(error));
  }
});

// Devices of this identity (its signed device list); another one can be removed.
async function showDevices() {
  const list = $("device-list");
  list.textContent = "";
  const devices = await rpc.call("devices.list", {});
  for (const device of devices) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = device.this_device ? `${device.name} (this device)` : device.name;
    item.append(name);
    if (!device.this_device) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove the device ${device.name}`);
      remove.addEventListener("click", async () => {
        if (!confirm(`Remove the device ${device.name}? It will no longer send or receive.`)) return;
        try {
          await rpc.call("devices.remove", { name: device.name });
          await showDevices();
        } catch (error) {
          $("profile-error").textContent = errorText(error);
        }
      });
      item.append(remove);
    }
    list.append(item);
  }
}

$("profile-avatar-file").addEventListener("change", async () => {
  const file = $("profile-avatar-file").files[0];
  $("profile-error").textContent = "";
  if (!file) return;
  try {
    avatarBlob = await resizedImage(file, 256);
    const preview = $("profile-avatar");
    preview.textContent = "";
    preview.style.backgroundImage = `url("${URL.createObjectURL(avatarBlob)}")`;
  } catch {
    avatarBlob = null;
    $("profile-error").textContent = "That file is not an image this browser can read.";
  }
});

async function resizedImage(file, size) {
  if (!file.type.startsWith("image/")) throw new Error("not an image");
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, size / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("not an image"))), "image/jpeg", 0.85);
  });
}

$("profile-form").addEventListener("submit", async (event) => {
  if (event.submitter && event.submitter.value !== "save") return;
  event.preventDefault();
  try {
    const params = { display_name: $("profile-name").value.trim(), status: $("profile-status").value };
    if (avatarBlob) {
      const uploaded = await upload(new File([avatarBlob], "avatar.jpg", { type: "image/jpeg" }));
      params.avatar = uploaded.path;
    }
    await rpc.call("profile.set", params);
    await rpc.call("presence.set", { mode: $("profile-presence").checked ? "show" : "hide" });
    await rpc.call("settings.set", { read_receipts: $("profile-receipts").checked });
    $("profile-dialog").close();
  } catch (error) {
    $("profile-error").textContent = errorText(error);
  }
});

$("new-group").addEventListener("click", () => {
  $("group-form").reset();
  $("group-error").textContent = "";
  const box = $("group-candidates");
  box.replaceChildren();
  for (const contact of state.contacts.filter((c) => !c.blocked)) {
    const label = el("label");
    const check = el("input");
    check.type = "checkbox";
    check.value = contact.name;
    label.append(check, document.createTextNode(contact.name));
    box.append(label);
  }
  if (!state.contacts.length) box.append(el("p", "muted", "Add contacts first."));
  $("group-dialog").showModal();
});

$("group-form").addEventListener("submit", async (event) => {
  if (event.submitter && event.submitter.value !== "create") return;
  event.preventDefault();
  const name = $("group-name").value.trim();
  const members = [...$("group-candidates").querySelectorAll("input:checked")].map((c) => c.value);
  try {
    await rpc.call("groups.create", { name, members });
    $("group-dialog").close();
    await refreshConversations();
    await openConversation("group", name);
  } catch (error) {
    $("group-error").textContent = errorText(error);
  }
});

async function showMembers() {
  const group = state.current && state.current.name;
  $("members-error").textContent = "";
  let members;
  try {
    const answer = await rpc.call("groups.members", { group });
    members = Array.isArray(answer) ? answer : (answer && answer.members) || [];
  } catch (error) {
    showNotice(errorText(error));
    return;
  }
  const info = state.groups.find((g) => g.name === group) || {};
  const list = $("members-list");
  list.replaceChildren();
  for (const member of members || []) {
    const item = el("li");
    const label = member.me ? `${member.name} (you)` : member.contact || `${member.name} (not a contact)`;
    const role = member.role && member.role !== "member" ? ` · ${member.role}` : (member.admin ? " · admin" : "");
    item.append(el("span", null, `${label}${role}${member.verified ? " · ✓ verified" : ""}`));
    if (info.is_admin && !member.me) {
      const remove = el("button", null, "Remove");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove ${member.name}`);
      remove.addEventListener("click", async () => {
        try {
          await rpc.call("groups.remove", { group, member: member.contact || member.name });
          await showMembers();
        } catch (error) {
          $("members-error").textContent = errorText(error);
        }
      });
      item.append(remove);
    }
    list.append(item);
  }
  const names = new Set((members || []).map((m) => m.contact));
  const select = $("members-add");
  select.replaceChildren();
  for (const contact of state.contacts.filter((c) => !names.has(c.name) && !c.blocked)) {
    const option = el("option", null, contact.name);
    option.value = contact.name;
    select.append(option);
  }
  $("members-add-button").disabled = !select.options.length || !info.is_admin;
  if (!$("members-dialog").open) $("members-dialog").showModal();
}

$("open-members").addEventListener("click", showMembers);
$("members-add-button").addEventListener("click", async () => {
  try {
    await rpc.call("groups.add", { group: state.current.name, contact: $("members-add").value });
    await showMembers();
  } catch (error) {
    $("members-error").textContent = errorText(error);
  }
});
$("group-leave").addEventListener("click", async () => {
  try {
    await rpc.call("groups.leave", { group: state.current.name });
    $("members-dialog").close();
    $("back").click();
    await refreshConversations();
  } catch (error) {
    $("members-error").textContent = errorText(error);
  }
});

const groupProfile = setupGroupProfile({
  rpc, $, upload, resizedImage, errorText, pictureUrl, setPicture,
  currentGroup: () => (state.current && state.current.kind === "group" ? state.current.name : null),
});

rpc.connect();
