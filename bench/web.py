"""The web front end's numbers (issue 12), in real browsers on real daemons.

One relay process, two identities (alice and bob, each a CHATCLI_HOME made
with ``chatcli init`` and introduced with ``invite`` / ``accept``), each with
a ``chatcli daemon --web 0`` process serving the page, and Debian's chromium
driven by Playwright with one browser context per person, logged in through
the one-time link of ``chatcli web --no-browser``. Three figures:

- ``latency``: a message typed in alice's page (``fill`` then Enter) until its
  text node is in bob's page. alice's page stamps the Enter keydown, bob's
  page a MutationObserver callback (the node is in the DOM) and the next
  animation frame after it (painted), both as ``performance.timeOrigin +
  performance.now()``. The two pages are separate renderer processes, so each
  page's clock is first compared with this process's ``time.time()`` (the
  exchange with the smallest round trip of 15) and the stamps are corrected by
  the difference: the shared reference. One message at a time, ``--messages``
  of them after ``--warmup``; ``--type-pause`` seconds between filling the box
  and Enter, as a person types for a while after the first keystroke (whose
  "typing" signal is then delivered already). Also reported: Enter to the
  daemon's answer to ``send`` in alice's page (the relay stored it).
- ``first_load``: navigation start (``performance.timeOrigin``) to the
  conversation list rendered (a ``.conversation`` button in the DOM) and to
  the list complete (every entry shows its last message's time), from a
  logged-in session: ``cold`` in a new browser context each time (a new
  renderer process, the session cookie copied in), ``warm`` as reloads of one
  tab. The daemon sends the page with ``Cache-Control: no-store``, so the
  browser never serves it from its cache in either case.
- ``long_conversation``: ``--history`` messages written into alice's history
  with bob through the client's own store (``Store.write`` and
  ``models.Message``, each text sealed by the store's ``Sealer`` under its
  row, as ``enqueue_text`` and the inbox do; half outgoing, half incoming),
  in one transaction while the daemon runs: through the daemons' ``send`` it
  would take far too long (``--sent`` messages are sent that way too, and
  timed, for comparison). Then, in a fresh load of alice's page, the time from
  clicking the conversation to its first page of messages painted, and
  ``--pages`` scrolls to the top (each loads an older page: ``history
  {before}``), with the time of each page, the longest main-thread task
  (PerformanceObserver ``longtask``: tasks over 50 ms) and the longest gap
  between animation frames while scrolling; the messages shown are checked
  to be in order, without gaps and without a day separator twice.

Usage (from the repository root)::

    python -m bench.web [--messages 40] [--type-pause 0.5] [--history 10000]
                        [--sent 200] [--pages 20] [--cold 5] [--warm 10]
                        [--output web.json]

One JSON document on stdout. Needs /usr/bin/chromium and Playwright.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    RelayProcess,
    chatcli_command,
    child_env,
    latency_summary,
    machine_info,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
PASSPHRASE = "bench web passphrase"  # noqa: S105 (a throw-away identity of the benchmark)
TIMEOUT_MS = 30_000
PAGE_SIZE = 50  # app.js's PAGE: messages per history page
TARGET_LATENCY_P50_MS = 150.0
TARGET_FIRST_LOAD_MS = 300.0

# Page-side instruments (no inline script: the page's policy does not apply to
# scripts Playwright evaluates through the DevTools protocol).
CLOCK_JS = "() => performance.timeOrigin + performance.now()"

WATCH_JS = """(prefix) => {
  window.__seen = {};
  const seen = window.__seen;
  const look = () => {
    for (const node of document.querySelectorAll('#message-list .bubble.in .text')) {
      const text = node.textContent;
      if (text.startsWith(prefix) && !(text in seen)) {
        const t = performance.timeOrigin + performance.now();
        seen[text] = { dom: t, paint: null };
        requestAnimationFrame(() => {
          seen[text].paint = performance.timeOrigin + performance.now();
        });
      }
    }
  };
  new MutationObserver(look).observe(document.getElementById('message-list'),
                                     { childList: true, subtree: true });
}"""

STAMP_ENTER_JS = """(prefix) => {
  window.__entered = {};
  window.__stored = {};
  const stored = window.__stored;
  new MutationObserver(() => {
    for (const node of document.querySelectorAll('#message-list .bubble.out')) {
      const text = node.querySelector('.text');
      const mark = node.querySelector('.state');
      if (text && mark && text.textContent.startsWith(prefix) && !(text.textContent in stored)
          && mark.getAttribute('aria-label') !== 'queued') {
        stored[text.textContent] = performance.timeOrigin + performance.now();
      }
    }
  }).observe(document.getElementById('message-list'), { childList: true, subtree: true });
  document.getElementById('message-text').addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      window.__entered[event.target.value] = performance.timeOrigin + performance.now();
    }
  }, { capture: true });
}"""

# Runs before the page's own scripts on every navigation of a context.
LOAD_PROBE_JS = """(() => {
  window.__load = { list: null, complete: null };
  const check = () => {
    const items = document.querySelectorAll('#conversations .conversation');
    if (!items.length) return;
    const now = performance.now();
    if (window.__load.list === null) window.__load.list = now;
    if (window.__load.complete === null
        && [...items].every((b) => b.querySelector('.meta')
                                   && b.querySelector('.meta').textContent)) {
      window.__load.complete = now;
    }
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true,
                                                 characterData: true });
  window.__longtasks = [];
  try {
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        window.__longtasks.push({ start: entry.startTime, duration: entry.duration });
      }
    }).observe({ type: 'longtask', buffered: true });
  } catch (error) {
    window.__longtasks = null;
  }
})();"""

FRAMES_JS = """() => {
  window.__frames = { last: performance.now(), maxGap: 0, running: true };
  const tick = (t) => {
    const f = window.__frames;
    if (!f.running) return;
    f.maxGap = Math.max(f.maxGap, t - f.last);
    f.last = t;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""

OPEN_JS = """async (name) => {
  const count = () => document.querySelectorAll('#message-list .bubble').length;
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const button = [...document.querySelectorAll('#conversations .conversation')]
    .find((b) => b.querySelector('.name').textContent === name);
  const t0 = performance.now();
  button.click();
  while (count() === 0) await new Promise((resolve) => setTimeout(resolve, 1));
  const shown = performance.now();
  await frame();
  return { ms: performance.now() - t0, dom_ms: shown - t0, messages: count() };
}"""

SCROLL_JS = """async ({ pages, pageSize }) => {
  const box = document.getElementById('messages');
  const count = () => document.querySelectorAll('#message-list .bubble').length;
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const times = [];
  for (let i = 0; i < pages; i++) {
    const before = count();
    const older = !document.getElementById('older').hidden;
    if (!older) break;
    const t0 = performance.now();
    box.scrollTop = 0;
    const deadline = t0 + 30000;
    while (count() < before + 1 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await frame();
    times.push({ ms: performance.now() - t0, added: count() - before });
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  window.__frames.running = false;
  return { pages: times, shown: count(), maxFrameGap: window.__frames.maxGap,
           hasOlder: !document.getElementById('older').hidden };
}"""


# ------------------------------------------------------------ people, daemons


@dataclass
class Person:
    """One identity: a CHATCLI_HOME, its daemon serving the page, a browser context."""

    name: str
    home: Path
    daemon: subprocess.Popen[str] | None = None
    context: Any = None
    page: Any = None
    base_url: str = ""
    problems: list[str] = field(default_factory=list)
    _stderr: list[str] = field(default_factory=list)

    def env(self, passphrase: bool = True) -> dict[str, str]:
        env = {k: v for k, v in child_env().items() if not k.startswith("CHATCLI_")}
        env["CHATCLI_HOME"] = str(self.home)
        # Unlocking is not measured here: the fast test KDF keeps set-up short.
        env["CHATCLI_INSECURE_FAST_KDF"] = "1"
        if passphrase:
            env["CHATCLI_PASSPHRASE"] = PASSPHRASE
        env["CHATCLI_DEBUG"] = "1"  # a daemon that fails says where
        return env

    def run(self, *args: str, passphrase: bool = True, timeout: float = 120) -> str:
        result = subprocess.run([*chatcli_command(), *args], env=self.env(passphrase),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise BenchError(f"{self.name}: chatcli {' '.join(args[:2])} exited "
                             f"{result.returncode}: {result.stderr.strip()[-500:]}")
        return result.stdout

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [*chatcli_command(), "daemon", "--web", "0"], env=self.env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        assert self.daemon.stderr is not None
        line = self.daemon.stderr.readline()
        if "serving" not in line:
            raise BenchError(f"{self.name}: the daemon did not start: {line.strip()}")
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(self.run("daemon", "status", "--json", passphrase=False))
            if status.get("synced"):
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name}: the daemon did not catch up with its relay")

    def _drain(self) -> None:
        assert self.daemon is not None and self.daemon.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for line in self.daemon.stderr:
                self._stderr.append(line)
                del self._stderr[:-400]

    def api(self) -> Any:
        from chatcli.daemon.sync_client import DaemonCliApi

        return DaemonCliApi(self.home / "daemon.sock")

    def login(self, browser: Any) -> None:
        """A new browser context logged in with a one-time link."""
        self.context = browser.new_context(viewport={"width": 1100, "height": 700})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.new_page(self.context)
        login = json.loads(self.run("web", "--no-browser", "--json", passphrase=False))
        self.page.goto(login["url"])
        self.page.get_by_role("button", name="Invite", exact=True).wait_for()
        self.base_url = login["page"]

    def new_page(self, context: Any) -> Any:
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"{self.name}: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"{self.name}: {e}"))
        return page

    def open(self, other: str) -> None:
        self.page.locator(".conversation", has_text=other).first.click()
        self.page.locator("#chat-name", has_text=other).wait_for()

    def stop(self) -> None:
        if self.context is not None:
            with contextlib.suppress(Exception):
                self.context.close()
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(5)


def introduce(a: Person, b: Person) -> None:
    """a invites b, b accepts, both receive: each can send to the other."""
    link = a.run("invite", "--name", b.name).strip()
    b.run("accept", link, "--name", a.name)
    a.run("receive")
    b.run("receive")


@contextlib.contextmanager
def two_people(relay: RelayProcess, tmp: Path) -> Iterator[tuple[Person, Person]]:
    alice, bob = Person("alice", tmp / "alice"), Person("bob", tmp / "bob")
    try:
        for person in (alice, bob):
            person.run("init", "--name", person.name, "--relay", relay.url, "--json")
        introduce(alice, bob)
        for person in (alice, bob):
            person.start_daemon()
        yield alice, bob
    except BaseException:
        for person in (alice, bob):
            code = person.daemon.poll() if person.daemon is not None else None
            print(f"bench.web: {person.name}'s daemon (exit code {code}) said:\n"
                  + "".join(person._stderr)[-20000:], file=sys.stderr)
        raise
    finally:
        for person in (alice, bob):
            person.stop()


# ------------------------------------------------------------------- clocks


def clock_offset_ms(page: Any, rounds: int = 15) -> float:
    """The page's ``timeOrigin + now()`` minus this process's ``time.time()``,
    in ms, from the exchange with the smallest round trip."""
    best: tuple[float, float] | None = None
    for _ in range(rounds):
        t0 = time.time() * 1000
        value = float(page.evaluate(CLOCK_JS))
        t1 = time.time() * 1000
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, value - (t0 + t1) / 2)
    assert best is not None
    return best[1]


# ----------------------------------------------------------------- figures


def measure_latency(alice: Person, bob: Person, messages: int, warmup: int,
                    gap: float, pause: float) -> dict[str, Any]:
    alice.open("bob")
    bob.open("alice")
    prefix = f"bench-{os.getpid()}-"
    bob.page.evaluate(WATCH_JS, prefix)
    alice.page.evaluate(STAMP_ENTER_JS, prefix)
    box = alice.page.get_by_role("textbox", name="Message")
    dom_ns: list[int] = []
    paint_ns: list[int] = []
    stored_ns: list[int] = []
    uncertainty = 0.0
    offsets: dict[str, float] = {}
    for i in range(warmup + messages):
        if i == warmup or (i > warmup and (i - warmup) % 10 == 0):
            # Measure the clocks again now and then: they may drift apart.
            offsets = {"alice": clock_offset_ms(alice.page), "bob": clock_offset_ms(bob.page)}
        text = f"{prefix}{i:04d} the quick brown fox jumps over the lazy dog"
        box.fill(text)
        # A person types for a while before Enter: the page's "typing" signal
        # (sent on the first keystroke) is delivered by then.
        time.sleep(pause)
        box.press("Enter")
        bob.page.wait_for_function(
            "(t) => window.__seen[t] && window.__seen[t].paint !== null", arg=text)
        if i < warmup:
            continue
        sent = alice.page.evaluate("(t) => window.__entered[t]", text)
        stored = alice.page.evaluate("(t) => window.__stored[t]", text)
        seen = bob.page.evaluate("(t) => window.__seen[t]", text)
        if sent is None:
            raise BenchError("alice's page did not see its Enter key")
        start = float(sent) - offsets["alice"]
        dom_ns.append(int((float(seen["dom"]) - offsets["bob"] - start) * 1e6))
        if stored is not None:
            stored_ns.append(int((float(stored) - float(sent)) * 1e6))
        paint_ns.append(int((float(seen["paint"]) - offsets["bob"] - start) * 1e6))
        time.sleep(gap)
    uncertainty = abs(offsets["alice"] - offsets["bob"])
    return {
        "messages": messages, "warmup": warmup, "gap_s": gap, "typing_pause_s": pause,
        "typed_to_dom": latency_summary(dom_ns),
        "typed_to_painted": latency_summary(paint_ns),
        # In alice's page: Enter to the daemon's answer to `send` (the relay stored it).
        "typed_to_stored_in_sender": latency_summary(stored_ns),
        "page_clock_difference_ms": round(uncertainty, 3),
    }


def load_once(page: Any, how: str, url: str) -> dict[str, Any]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if how == "reload":
        page.reload(wait_until="load")
    else:
        page.goto(url, wait_until="load")
    page.wait_for_function("() => window.__load && window.__load.list !== null")
    # A conversation without messages never shows a time: "complete" stays null.
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function("() => window.__load.complete !== null", timeout=3000)
    figures = page.evaluate("""() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const last = (names) => Math.max(0, ...performance.getEntriesByType('resource')
        .filter((r) => names.some((n) => r.name.includes(n))).map((r) => r.responseEnd));
      return { list: window.__load.list, complete: window.__load.complete,
               html: nav ? nav.responseEnd : null,
               scripts: last(['.js']),
               dom_content_loaded: nav ? nav.domContentLoadedEventEnd : null,
               load: nav ? nav.loadEventEnd : null };
    }""")
    return {k: (None if v is None else round(float(v), 1)) for k, v in figures.items()}


def summarise_loads(loads: list[dict[str, Any]]) -> dict[str, Any]:
    def stat(key: str) -> dict[str, Any]:
        values = sorted(float(x[key]) for x in loads if x.get(key) is not None)
        if not values:
            return {}
        return {"median_ms": round(values[len(values) // 2], 1), "min_ms": values[0],
                "max_ms": values[-1]}

    return {"samples": len(loads), "list_rendered": stat("list"),
            "list_complete": stat("complete"),
            "dom_content_loaded": stat("dom_content_loaded"), "runs": loads}


def measure_first_load(browser: Any, alice: Person, cold: int, warm: int) -> dict[str, Any]:
    url = alice.base_url
    state = alice.context.storage_state()
    cold_loads = []
    for _ in range(cold):
        context = browser.new_context(viewport={"width": 1100, "height": 700},
                                      storage_state=state)
        try:
            context.set_default_timeout(TIMEOUT_MS)
            context.add_init_script(LOAD_PROBE_JS)
            page = alice.new_page(context)
            cold_loads.append(load_once(page, "goto", url))
        finally:
            context.close()
    context = browser.new_context(viewport={"width": 1100, "height": 700}, storage_state=state)
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(LOAD_PROBE_JS)
        page = alice.new_page(context)
        load_once(page, "goto", url)
        warm_loads = [load_once(page, "reload", url) for _ in range(warm)]
    finally:
        context.close()
    return {"url_path": "/", "cold": summarise_loads(cold_loads),
            "warm": summarise_loads(warm_loads)}


def seed_store(person: Person, contact: str, count: int) -> dict[str, Any]:
    """``count`` messages with ``contact`` written into ``person``'s history
    through the client's own store (``Store.write``, ``models.Message``, each
    text sealed by the store's ``Sealer`` under its row, as ``enqueue_text``
    and the inbox do), in one transaction, while the daemon runs. Half out,
    half in, one a second, ending an hour ago; outgoing ones read, incoming
    ones shown. They never went through a relay: what the page and the
    daemon's ``history`` do with them is the same as with sent ones."""
    import uuid

    from chatcli.client import models as db
    from chatcli.client.home import Home
    from chatcli.client.keys import read_secrets
    from chatcli.client.store import Sealer, Store, now_ms

    start = time.monotonic()
    home = Home(person.home)
    secrets = read_secrets(home.keystore, PASSPHRASE)
    store = Store.open(home.database, Sealer(secrets.local_key))
    try:
        first = now_ms() - 3_600_000 - count * 1000
        with store.write():
            row = db.Contact.get(db.Contact.name == contact)
            for i in range(count):
                out = i % 2 == 0
                message_id = str(uuid.uuid4())
                sent_at = first + i * 1000
                who = person.name if out else contact
                text = (f"{who} {i:05d}: a message of the long conversation, "
                        "with a link https://example.org/" + str(i))
                db.Message.create(
                    uuid=message_id, contact=row, outgoing=out,
                    text_sealed=store.sealer.seal_text(text, "message.text", message_id),
                    sent_at=sent_at, received_at=None if out else sent_at + 40,
                    stored_at=sent_at + 20 if out else None,
                    delivered_at=sent_at + 60 if out else None,
                    read_at=sent_at + 500,
                )
            total = db.Message.select().where(db.Message.contact == row).count()
    finally:
        store.close()
    return {"messages": count, "seconds": round(time.monotonic() - start, 2),
            "conversation_messages": total,
            "how": "rows written through the client's Store/Sealer (real sealing) in one "
                   "transaction, half outgoing, half incoming"}


def send_rate(alice: Person, bob: Person, count: int) -> dict[str, Any]:
    """For comparison, ``count`` messages through the daemons' API ``send``
    (alice and bob in two threads), until each daemon stored the other's last."""
    errors: list[str] = []
    last: dict[str, str] = {}

    def sender(me: Person, other: str, n: int) -> None:
        api = me.api()
        try:
            for i in range(n):
                answer = api.call("send", {"to": other, "text": f"{me.name} sent {i:05d}"})
                last[me.name] = answer["id"]
        except Exception as exc:
            errors.append(f"{me.name}: {type(exc).__name__}: {exc}")

    start = time.monotonic()
    threads = [threading.Thread(target=sender, args=(alice, "bob", count - count // 2)),
               threading.Thread(target=sender, args=(bob, "alice", count // 2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError("sending failed: " + "; ".join(errors))
    for me, other in ((alice, "bob"), (bob, "alice")):
        wanted = last.get(other)
        if wanted is None:
            continue
        api = me.api()
        deadline = time.monotonic() + 300
        while not any(m["id"] == wanted
                      for m in api.call("history", {"contact": other, "limit": 20})):
            if time.monotonic() > deadline:
                raise BenchError(f"{me.name}'s daemon did not receive {other}'s last message")
            time.sleep(0.1)
    seconds = time.monotonic() - start
    return {"messages": count, "seconds": round(seconds, 2),
            "messages_per_s": round(count / seconds, 1)}


def measure_long_conversation(browser: Any, alice: Person, bob: Person, count: int,
                              pages: int, sent: int) -> dict[str, Any]:
    # No page shows the conversation while it fills (each would render every message).
    for person in (alice, bob):
        person.page.goto("about:blank")
    report: dict[str, Any] = {"seed": seed_store(alice, "bob", count)}
    if sent:
        report["sent_through_daemons"] = send_rate(alice, bob, sent)
    url = alice.base_url
    context = browser.new_context(viewport={"width": 1100, "height": 700},
                                  storage_state=alice.context.storage_state())
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(LOAD_PROBE_JS)
        page = alice.new_page(context)
        load_once(page, "goto", url)
        page.evaluate("() => { window.__longtasks = window.__longtasks || []; "
                      "window.__longtasks.length = 0; }")
        page.evaluate(FRAMES_JS)
        opened = page.evaluate(OPEN_JS, "bob")
        open_tasks = page.evaluate("() => window.__longtasks.splice(0)")
        page.wait_for_timeout(300)
        scrolled = page.evaluate(SCROLL_JS, {"pages": pages, "pageSize": PAGE_SIZE})
        scroll_tasks = page.evaluate("() => window.__longtasks.splice(0)")
        texts = page.evaluate("() => [...document.querySelectorAll('#message-list .bubble .text')]"
                              ".map((n) => n.textContent)")
        days = page.evaluate("() => [...document.querySelectorAll('#message-list .day')]"
                             ".map((n) => n.dataset.day || n.textContent)")
    finally:
        context.close()
    page_ms = sorted(p["ms"] for p in scrolled["pages"])
    # The seeded texts carry their number: shown oldest first, without a gap.
    seeded = [int(t.split()[1].rstrip(":")) for t in texts
              if t.split()[0] in ("alice", "bob") and t.split()[1].rstrip(":").isdigit()]

    def longest(tasks: list[dict[str, float]] | None) -> float:
        return round(max((t["duration"] for t in tasks or []), default=0.0), 1)

    report.update({
        "open": {"ms": round(opened["ms"], 1), "dom_ms": round(opened["dom_ms"], 1),
                 "messages_shown": opened["messages"],
                 "longest_task_ms": longest(open_tasks), "long_tasks": len(open_tasks or [])},
        "scroll": {
            "pages_asked": pages, "pages_loaded": len(scrolled["pages"]),
            "messages_shown": scrolled["shown"], "distinct_texts": len(set(texts)),
            "seeded_in_order_without_gaps": bool(seeded) and seeded == list(
                range(seeded[0], seeded[0] + len(seeded))),
            "day_separators": len(days), "duplicate_day_separators": len(days) - len(set(days)),
            "older_left": scrolled["hasOlder"],
            "page_ms": {"median": round(page_ms[len(page_ms) // 2], 1) if page_ms else None,
                        "max": round(page_ms[-1], 1) if page_ms else None,
                        "first": round(scrolled["pages"][0]["ms"], 1) if page_ms else None,
                        "last": round(scrolled["pages"][-1]["ms"], 1) if page_ms else None},
            "longest_task_ms": longest(scroll_tasks),
            "long_tasks": len(scroll_tasks or []),
            "longest_frame_gap_ms": round(scrolled["maxFrameGap"], 1),
            "per_page": [{"ms": round(p["ms"], 1), "added": p["added"]}
                         for p in scrolled["pages"]],
        },
        "long_task_note": "0 means no task over 50 ms (the longtask threshold)",
    })
    return report


# ---------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    report: dict[str, Any] = {"bench": "web", "machine": machine_info(),
                              "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                          time.gmtime())}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-web-") as tmp, \
            RelayProcess() as relay, two_people(relay, Path(tmp)) as (alice, bob), \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            report["browser"] = {"name": "chromium", "version": browser.version,
                                 "headless": True}
            for person in (alice, bob):
                person.login(browser)
            if args.messages:
                report["latency"] = measure_latency(alice, bob, args.messages, args.warmup,
                                                    args.gap, args.type_pause)
            if args.history:
                report["long_conversation"] = measure_long_conversation(
                    browser, alice, bob, args.history, args.pages, args.sent)
            if args.cold or args.warm:
                report["first_load"] = measure_first_load(browser, alice, args.cold, args.warm)
                report["first_load"]["messages_in_store"] = (
                    args.history + args.sent + args.messages + args.warmup)
        finally:
            browser.close()
        report["page_errors"] = alice.problems + bob.problems
    report["seconds"] = round(time.monotonic() - started, 1)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = targets(report)
    return report


def targets(report: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    latency = (report.get("latency") or {}).get("typed_to_dom") or {}
    if latency:
        out["typed in A, shown in B: p50 <= 150 ms"] = (
            latency["p50_ms"] is not None and latency["p50_ms"] <= TARGET_LATENCY_P50_MS)
    load = report.get("first_load") or {}
    for kind in ("cold", "warm"):
        median = ((load.get(kind) or {}).get("list_complete") or {}).get("median_ms")
        if median is not None:
            out[f"first load ({kind}): list rendered <= 300 ms"] = median <= TARGET_FIRST_LOAD_MS
    scroll = (report.get("long_conversation") or {}).get("scroll")
    if scroll:
        out["long conversation: no long task over 200 ms while scrolling"] = (
            scroll["longest_task_ms"] <= 200)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=40,
                        help="messages timed from one page to the other (0: skip)")
    parser.add_argument("--warmup", type=int, default=3, help="messages sent first, not timed")
    parser.add_argument("--gap", type=float, default=0.1,
                        help="seconds between timed messages")
    parser.add_argument("--type-pause", type=float, default=0.5,
                        help="seconds between filling the message box and Enter")
    parser.add_argument("--history", type=int, default=10_000,
                        help="messages seeded in the long conversation (0: skip)")
    parser.add_argument("--sent", type=int, default=200,
                        help="messages sent through the daemons after the seeding (also timed)")
    parser.add_argument("--pages", type=int, default=20, help="older pages scrolled back to")
    parser.add_argument("--cold", type=int, default=5, help="first loads in a new context")
    parser.add_argument("--warm", type=int, default=10, help="reloads of one tab")
    parser.add_argument("--output", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if not shutil.which(CHROMIUM):
        print(f"bench.web: {CHROMIUM} is not installed", file=sys.stderr)
        return 2
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
