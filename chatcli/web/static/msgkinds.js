// Message kinds in the page (one-to-one chats): replies (a button on a
// message, the quoted line above the composer), reactions (a picker; one per
// person, shown under the message with counts and names), editing and
// deleting one's own messages, tombstones, "(edited)", and messages from a
// newer chatcli. app.js calls the four hooks exported at the end.
import { el } from "./render.js";

const EMOJIS = ["👍", "❤️", "😂", "😮", "😢", "🎉"];

let ctx = null;          // {rpc, state, render, showNotice, errorText}
let pending = null;      // {mode: "reply"|"edit", message}
let picker = null;       // the open reaction picker, if any

/** Give the module what it needs from app.js. */
export function initKinds(context) {
  ctx = context;
}

function inContactChat() {
  return ctx && ctx.state.current && ctx.state.current.kind === "contact";
}

function firstLine(text) {
  return String(text || "").split("\n")[0].slice(0, 200);
}

// ------------------------------------------------------------ the composer bar

function composerBar() {
  let bar = document.getElementById("kinds-bar");
  if (!bar) {
    bar = el("div", "kinds-bar");
    bar.id = "kinds-bar";
    bar.hidden = true;
    const composer = document.getElementById("composer");
    composer.parentNode.insertBefore(bar, composer);
  }
  return bar;
}

function showBar() {
  const bar = composerBar();
  if (!pending) {
    bar.hidden = true;
    bar.replaceChildren();
    return;
  }
  const who = pending.message.direction === "out" ? "yourself" : pending.message.from;
  const label = pending.mode === "reply"
    ? `Replying to ${who}: ${firstLine(pending.message.text)}`
    : "Editing your message";
  const text = el("span", "kinds-bar-text", label);
  text.setAttribute("role", "status");
  const cancel = el("button", "ghost kinds-cancel", "✕");
  cancel.type = "button";
  cancel.setAttribute("aria-label", pending.mode === "reply" ? "Cancel reply" : "Cancel edit");
  cancel.addEventListener("click", () => {
    if (pending && pending.mode === "edit") document.getElementById("message-text").value = "";
    pending = null;
    showBar();
  });
  bar.replaceChildren(text, cancel);
  bar.hidden = false;
}

function startReply(message) {
  pending = { mode: "reply", message };
  showBar();
  document.getElementById("message-text").focus();
}

function startEdit(message) {
  pending = { mode: "edit", message };
  const box = document.getElementById("message-text");
  box.value = message.text || "";
  showBar();
  box.focus();
}

/** Hook for the composer: the text was an edit (done here) → true. */
export async function kindsSubmit(text) {
  if (!pending || pending.mode !== "edit") return false;
  const { message } = pending;
  pending = null;
  showBar();
  await act("edit", { id: message.id, text });
  return true;
}

/** Hook for `send`: the extra params of a reply (and forget it). */
export function takeReply() {
  if (!pending || pending.mode !== "reply" || !inContactChat()) return {};
  const { message } = pending;
  pending = null;
  showBar();
  return {
    reply_to: message.id,
    quote: { id: message.id, from: message.direction === "out" ? "me" : message.from,
             excerpt: firstLine(message.text) },
  };
}

// ------------------------------------------------------------ actions

async function act(method, params) {
  const current = ctx.state.current;
  try {
    await ctx.rpc.call(method, { to: current.name, ...params });
  } catch (error) {
    ctx.showNotice(ctx.errorText(error));
  }
  await refresh();
}

/** Fetch the open conversation again and redraw it (after a reaction, edit or delete). */
async function refresh() {
  const current = ctx.state.current;
  if (!current || current.kind !== "contact") return;
  const limit = Math.max(50, ctx.state.messages.length);
  let list;
  try {
    list = await ctx.rpc.call("history", { contact: current.name, limit });
  } catch {
    return;
  }
  if (ctx.state.current !== current) return;
  const byId = new Map((list || []).map((m) => [m.id, m]));
  ctx.state.messages = ctx.state.messages.map((m) => (byId.has(m.id) ? { ...m, ...byId.get(m.id) } : m));
  ctx.render();
}

function closePicker() {
  if (picker) picker.remove();
  picker = null;
}

function openPicker(anchor, message) {
  closePicker();
  picker = el("div", "reaction-picker");
  picker.dataset.for = message.id;
  picker.setAttribute("role", "menu");
  picker.setAttribute("aria-label", "Pick a reaction");
  const mine = (message.reactions || []).find((r) => r.from === "me");
  for (const emoji of EMOJIS) {
    const button = el("button", "ghost", emoji);
    button.type = "button";
    button.setAttribute("role", "menuitem");
    button.setAttribute("aria-label", `React ${emoji}`);
    button.addEventListener("click", () => {
      closePicker();
      act("react", { id: message.id, emoji });
    });
    picker.append(button);
  }
  if (mine) {
    const remove = el("button", "ghost", "Remove");
    remove.type = "button";
    remove.setAttribute("role", "menuitem");
    remove.addEventListener("click", () => {
      closePicker();
      act("react", { id: message.id, remove: true });
    });
    picker.append(remove);
  }
  anchor.after(picker);
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closePicker();
});

// ------------------------------------------------------------ rendering

function toolButton(label, text, onClick) {
  const button = el("button", "ghost kinds-tool", text);
  button.type = "button";
  button.setAttribute("aria-label", label);
  button.title = label;
  button.addEventListener("click", onClick);
  return button;
}

function reactionsNode(reactions) {
  const grouped = new Map();
  for (const r of reactions) {
    if (!grouped.has(r.emoji)) grouped.set(r.emoji, []);
    grouped.get(r.emoji).push(r.from);
  }
  const row = el("div", "reactions");
  for (const [emoji, who] of grouped) {
    const chip = el("span", "reaction", `${emoji} ${who.length}`);
    chip.title = who.join(", ");
    chip.setAttribute("aria-label", `${emoji} ${who.length}: ${who.join(", ")}`);
    row.append(chip);
  }
  return row;
}

/** Hook for messageNode: add the quote, tombstone, "(edited)", reactions and tools. */
export function decorateMessage(item, message) {
  const quote = message.reply_to || message.quote;
  if (quote) {
    const block = el("div", "quote", `${quote.from}: ${quote.excerpt}`);
    const text = item.querySelector(".text");
    item.insertBefore(block, text || item.querySelector(".meta"));
  }
  if (message.deleted) {
    item.classList.add("tombstone");
    const text = item.querySelector(".text");
    if (text) text.textContent = "message deleted";
  }
  if (message.unsupported) item.classList.add("unsupported");
  if (message.edited && !message.deleted) {
    const meta = item.querySelector(".meta");
    if (meta) meta.prepend(el("span", "edited", "(edited) "));
  }
  if (message.reactions && message.reactions.length) {
    item.insertBefore(reactionsNode(message.reactions), item.querySelector(".meta"));
  }
  const real = message.id && !String(message.id).startsWith("pending-");
  if (!inContactChat() || !real || message.deleted || message.unsupported) return item;
  const tools = el("div", "kinds-tools");
  tools.append(toolButton("Reply", "↩", () => startReply(message)));
  tools.append(toolButton("React", "☺", (event) => openPicker(event.currentTarget.parentNode, message)));
  if (message.direction === "out") {
    tools.append(toolButton("Edit", "✎", () => startEdit(message)));
    tools.append(toolButton("Delete for everyone", "✕", () => {
      if (window.confirm("Delete this message for everyone?")) act("delete", { id: message.id });
    }));
  }
  item.append(tools);
  // A redraw (an event, a receipt) while the picker is open keeps it open.
  if (picker && picker.dataset.for === message.id) tools.after(picker);
  return item;
}

/** Hook for handleEvent: a contact's reaction, edit or delete. */
export function kindsEvent(event) {
  const current = ctx && ctx.state.current;
  if (!current || event.group || current.kind !== "contact" || current.name !== event.from) {
    return undefined;
  }
  return refresh();
}
