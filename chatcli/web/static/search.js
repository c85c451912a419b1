// Message search in the sidebar: the daemon's `search` method (its in-memory
// index of the local history); a result opens its conversation at the message.
import { el, timeLabel, toDate } from "./render.js";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 250;
const LIMIT = 50;
const OLDER_PAGES = 40;   // pages of history loaded at most to reach an old message

/** The snippet with its matching words in <mark> (text only, never HTML). */
export function highlighted(snippet, highlights) {
  const node = el("span", "search-snippet");
  let last = 0;
  for (const [start, end] of highlights || []) {
    if (start < last || end > snippet.length) continue;
    node.append(document.createTextNode(snippet.slice(last, start)));
    node.append(el("mark", null, snippet.slice(start, end)));
    last = end;
  }
  node.append(document.createTextNode(snippet.slice(last)));
  return node;
}

/**
 * Wire the search box. `rpc`: the page's JSON-RPC client; `open(kind, name)`:
 * opens a conversation; `loadOlder()`: loads the previous page of the open
 * conversation and answers whether there may be more.
 */
export function installSearch({ rpc, open, loadOlder }) {
  const input = $("message-search");
  const panel = $("search-panel");
  const list = $("search-results");
  const status = $("search-status");
  let timer = null;
  let asked = 0;

  function close() {
    input.value = "";
    panel.hidden = true;
    list.replaceChildren();
  }

  async function run() {
    const text = input.value.trim();
    if (!text) {
      close();
      return;
    }
    const mine = ++asked;
    panel.hidden = false;
    status.textContent = "Searching…";
    let hits;
    try {
      hits = await rpc.call("search", { text, limit: LIMIT });
    } catch (error) {
      if (mine !== asked) return;
      list.replaceChildren();
      status.textContent = error.kind === "usage_error" ? "Type a word to search for." : error.message;
      return;
    }
    if (mine !== asked) return;  // a newer query is on its way
    status.textContent = hits.length
      ? `${hits.length === LIMIT ? "The newest " : ""}${hits.length} message${hits.length === 1 ? "" : "s"}`
      : "No message matches.";
    list.replaceChildren(...hits.map(resultNode));
  }

  function resultNode(hit) {
    const button = el("button", "search-hit");
    button.type = "button";
    button.dataset.id = hit.id;
    const where = hit.group ? `${hit.group} (group)` : hit.conversation;
    const date = toDate(hit.sent_at);
    button.append(
      el("span", "name", where),
      el("span", "meta", date ? `${date.toLocaleDateString()} ${timeLabel(date)}` : ""),
    );
    // Who wrote it, when the conversation's name does not say so already.
    const from = hit.from === "me" ? "You" : hit.group ? hit.from : "";
    if (from) button.append(el("span", "from", from));
    button.append(highlighted(hit.snippet, hit.highlights));
    button.addEventListener("click", () => jump(hit));
    const item = el("li");
    item.append(button);
    return item;
  }

  async function jump(hit) {
    await open(hit.group ? "group" : "contact", hit.conversation);
    let node = null;
    for (let page = 0; page <= OLDER_PAGES; page += 1) {
      node = document.querySelector(`#message-list li[data-id="${CSS.escape(hit.id)}"]`);
      if (node || !(await loadOlder())) break;
    }
    if (!node) return;
    node.scrollIntoView({ block: "center" });
    node.classList.add("search-found");
    setTimeout(() => node.classList.remove("search-found"), 2500);
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(run, DEBOUNCE_MS);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      clearTimeout(timer);
      run();
    } else if (event.key === "Escape") {
      close();
    }
  });
  $("search-close").addEventListener("click", close);
}
