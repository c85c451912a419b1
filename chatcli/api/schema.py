"""Every API method: its name, its parameters and its result, as msgspec Structs.

``METHODS`` maps a dotted method name to a :class:`Method` (params type,
result type, one line of documentation). The parameter Structs validate a
request (unknown fields are refused); the result types document what a method
returns and are checked against the real answers in tests/api. docs/api.md is
generated from here (tests/api/test_docs.py keeps it in step)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1,
                                   description="A contact's (or group's) local name.")]
Limit = Annotated[int, msgspec.Meta(ge=1, description="How many of the latest messages.")]


class Params(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of the parameter objects: named parameters, unknown ones refused."""


class Result(msgspec.Struct, kw_only=True):
    """Base of the documented result objects."""


# ------------------------------------------------------------------ results


class Attachment(Result):
    name: str
    size: int
    path: str | None = None
    error: str | None = None


class Quote(Result):
    """The message a reply quotes: its id, who wrote it ("me" for you), and the
    start of its first line."""
    id: str
    from_: str = msgspec.field(name="from")
    excerpt: str


class Reaction(Result):
    emoji: str
    from_: str = msgspec.field(name="from")


class MessageEvent(Result, tag="message", tag_field="type"):
    """A new message (``group`` is null for one-to-one messages). ``reply_to``
    quotes the message it answers; ``unsupported`` marks content from a newer
    client that this one cannot show (``text`` says "unsupported message,
    update chatcli")."""
    id: str
    from_: str = msgspec.field(name="from")
    text: str
    sent_at: int
    received_at: int
    group: str | None
    attachment: Attachment | None = None
    key_changed: bool | None = None
    fingerprint: str | None = None
    from_contact: bool | None = None
    reply_to: Quote | None = None
    unsupported: bool | None = None


class ReactionEvent(Result, tag="reaction", tag_field="type"):
    """A contact reacted to message ``id`` (``emoji`` "" : took its reaction back)."""
    from_: str = msgspec.field(name="from")
    id: str
    group: str | None
    emoji: str


class EditEvent(Result, tag="edit", tag_field="type"):
    """A contact edited its message ``id``; ``text`` is the new text."""
    from_: str = msgspec.field(name="from")
    id: str
    group: str | None
    text: str


class DeleteEvent(Result, tag="delete", tag_field="type"):
    """A contact deleted its message ``id`` for everyone: it is a tombstone now."""
    from_: str = msgspec.field(name="from")
    id: str
    group: str | None


class ReceiptEvent(Result, tag="receipt", tag_field="type"):
    """A contact's client received (``delivered``) or showed (``read``) messages."""
    from_: str = msgspec.field(name="from")
    kind: Literal["delivered", "read"]
    ids: list[str]


class TypingEvent(Result, tag="typing", tag_field="type"):
    from_: str = msgspec.field(name="from")
    active: bool


class PresenceEvent(Result, tag="presence", tag_field="type"):
    contact: str
    online: bool | None
    last_seen: int | None


class NoticeEvent(Result, tag="notice", tag_field="type"):
    """Something the user should hear about (the text the CLI prints on stderr)."""
    text: str
    warning: bool
    contact: str | None


class KeyChangeEvent(Result, tag="key_change", tag_field="type"):
    """A contact's identity key changed: ``pending`` until accepted with
    ``contacts.verify`` (sending is blocked meanwhile); not pending when the
    old key signed the change."""
    contact: str
    fingerprint: str
    pending: bool
    text: str
    warning: bool


class ProfileEvent(Result, tag="profile", tag_field="type"):
    """A contact shared a new profile (display name, status or picture): the
    next ``profile.get {contact}`` fetches it (a page shows the new picture)."""
    contact: str


class ContactEvent(Result, tag="contact", tag_field="type"):
    """Daemon only: another front end changed what is known of a contact (its
    key verified, a changed key accepted or refused, blocked or unblocked):
    fetch it again (a page takes the changed-key banner down)."""
    contact: str


class SyncedEvent(Result, tag="synced", tag_field="type"):
    """Every message waiting at the relay when the stream started was handled."""


class SentEvent(Result, tag="sent", tag_field="type"):
    """A message sent through the daemon, by any of its front ends (daemon
    only): ``stored`` once the relay(s) stored it; ``group`` for a group."""
    id: str
    to: str
    text: str
    sent_at: int
    stored: bool
    file: str | None = None
    group: str | None = None


Event = (MessageEvent | ReceiptEvent | TypingEvent | PresenceEvent | NoticeEvent
         | KeyChangeEvent | ProfileEvent | SyncedEvent | SentEvent | ContactEvent
         | ReactionEvent | EditEvent | DeleteEvent)
EVENTS: tuple[type[Result], ...] = (MessageEvent, ReceiptEvent, TypingEvent, PresenceEvent,
                                    NoticeEvent, KeyChangeEvent, ProfileEvent, SyncedEvent,
                                    SentEvent, ContactEvent, ReactionEvent, EditEvent,
                                    DeleteEvent)


class VersionResult(Result):
    version: str
    api: int


class StatusResult(Result):
    name: str
    fingerprint: str
    relay: str
    home: str
    resident: bool


class SendResult(Result):
    id: str
    to: str
    stored: bool
    members: int | None = None
    stored_for: int | None = None


class HistoryEntry(Result):
    """``attachment`` for a message with a file: its name and size, and for a
    received one the ``path`` it was saved to, while the file is there.
    ``reply_to`` quotes the message it answers; ``reactions`` one per person;
    ``edited`` when ``text`` is an edited one; ``deleted`` for a tombstone
    (``text`` "message deleted"); ``unsupported`` for content from a newer client."""
    id: str
    from_: str = msgspec.field(name="from")
    to: str
    direction: Literal["in", "out"]
    text: str
    sent_at: int
    received_at: int | None
    state: str
    group: str | None
    attachment: Attachment | None = None
    reply_to: Quote | None = None
    reactions: list[Reaction] = []
    edited: bool = False
    deleted: bool = False
    unsupported: bool = False


class SearchHit(Result):
    """A message found by ``search``: ``conversation`` is the contact's or the
    group's name (``contact`` or ``group`` says which); ``snippet`` is the text
    around the first match, ``highlights`` the ``[start, end)`` of each matching
    word in ``snippet``."""
    id: str
    conversation: str
    contact: str | None
    group: str | None
    from_: str = msgspec.field(name="from")
    direction: Literal["in", "out"]
    sent_at: int
    snippet: str
    highlights: list[list[int]]


class ContactEntry(Result):
    name: str
    fingerprint: str
    verified: bool
    key_changed: bool
    blocked: bool
    online: bool | None
    last_seen: int | None
    relay: str


class VerifyResult(Result):
    """``group`` and ``member`` are set when the name is a group member who is not
    a contact. ``qr`` is the QR code payload (hex); ``was_key_changed`` and
    ``accepted`` say what ``confirm`` did."""
    contact: str | None
    safety_number: str
    fingerprint: str
    verified: bool
    key_changed: bool
    qr: str
    was_key_changed: bool = False
    accepted: bool = False
    rejected: bool = False
    group: str | None = None
    member: str | None = None


class InviteResult(Result):
    link: str
    label: str | None
    expires: int
    label_taken: bool


class AcceptResult(Result):
    name: str
    fingerprint: str


class Presence(Result):
    online: bool | None
    last_seen: int | None
    known: bool


class HiddenResult(Result):
    hidden: bool


class Settings(Result):
    name: str
    relay: str
    read_receipts: bool
    presence_hidden: bool


class Profile(Result):
    """``avatar`` (base64) only when asked for with ``avatar: true``."""
    display_name: str | None
    status: str | None
    avatar_bytes: int
    contact: str | None = None
    avatar: str | None = None


class ProfileSetResult(Result):
    shared_with: int


class GroupEntry(Result):
    """``admin`` is the creator; ``is_admin`` whether you are one of the admins;
    ``title`` the name in the group's profile (the creator's name until set)."""
    name: str
    creator_name: str
    admin: str
    is_admin: bool
    status: str
    members: int
    invited: int
    title: str = ""


class GroupInfo(Result):
    """The group's profile and roles. ``name`` is your local name for it,
    ``title`` the profile's; ``avatar`` (base64) only when asked for."""
    name: str
    title: str
    description: str
    avatar_bytes: int
    creator: str
    admins: list[str]
    is_admin: bool
    status: str
    members: int
    invited: int
    avatar: str | None = None


class GroupLeft(Result):
    """``successor``: who took the admin role over (the last admin leaving), or null."""
    successor: str | None


class GroupCreated(Result):
    group: str
    invited: list[str]


class Member(Result):
    """``role``: ``creator``, ``admin`` or ``member``."""
    name: str
    contact: str | None
    fingerprint: str
    admin: bool
    me: bool
    verified: bool
    role: str = "member"


class Members(Result):
    members: list[Member]
    invited: list[str]


class GroupVerifyResult(Result):
    group: str
    member: str
    contact: str | None
    safety_number: str
    fingerprint: str
    verified: bool
    key_changed: bool
    qr: str


# ------------------------------------------------------------------ params


class NoParams(Params):
    pass


Queue = Annotated[bool, msgspec.Meta(description=(
    "Only queue it and answer at once (`stored` false): whoever keeps the identity "
    "online delivers it (an open chat, the daemon, else the next command that connects)."))]


class Send(Params):
    """``to`` names a contact or a group; ``file`` is a path on the API's machine."""
    to: Name
    text: str = ""
    file: str | None = None
    retry_for: Annotated[float, msgspec.Meta(ge=0)] = 20.0
    queue: Queue = False
    reply_to: Annotated[str | None, msgspec.Meta(description=(
        "Quote this message (an id or a unique start of it) in a reply."))] = None


MessageRef = Annotated[str, msgspec.Meta(min_length=1, description=(
    "A message id, or a unique start of it (at least 4 characters)."))]
RetryFor = Annotated[float, msgspec.Meta(ge=0)]


class React(Params):
    """React to a message of a conversation; one reaction per person and
    message (a new one replaces yours); ``remove`` takes yours back."""
    to: Name
    id: MessageRef
    emoji: Annotated[str, msgspec.Meta(max_length=32)] = ""
    remove: bool = False
    retry_for: RetryFor = 20.0
    queue: Queue = False


class Edit(Params):
    """Edit one of your messages (the earlier texts are kept locally)."""
    to: Name
    id: MessageRef
    text: Annotated[str, msgspec.Meta(min_length=1)]
    retry_for: RetryFor = 20.0
    queue: Queue = False


class Delete(Params):
    """Delete one of your messages for everyone (and its attachment's blob)."""
    to: Name
    id: MessageRef
    retry_for: RetryFor = 20.0
    queue: Queue = False


class Typing(Params):
    to: Name
    active: bool
    queue: Queue = False


class Read(Params):
    contact: Name
    ids: list[str]


Before = Annotated[int, msgspec.Meta(description="Only messages sent before this time "
                                                  "(ms since the epoch): the next page.")]


class History(Params):
    contact: Name
    limit: Limit = 50
    before: Before | None = None


class Search(Params):
    """All words of ``text`` must occur (case and Unicode forms do not matter),
    the last one may be the beginning of a word; ``contact`` or ``group``
    searches that conversation only."""
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    contact: Name | None = None
    group: Name | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000,
                                       description="How many of the newest matches.")] = 20


class Receive(Params):
    """``wait``: stay this many seconds after catching up. ``read_receipts``:
    mark what arrives read and say so (if the account sends read receipts).
    ``save_dir``: where attachments go (default CHATCLI_HOME/downloads)."""
    wait: Annotated[float, msgspec.Meta(ge=0)] | None = None
    read_receipts: bool = False
    save_dir: str | None = None


class ContactsList(Params):
    offline: bool = False


class ContactsVerify(Params):
    contact: Name
    confirm: bool = False
    reject: bool = False


class Contact(Params):
    contact: Name


DeviceName = Annotated[str, msgspec.Meta(min_length=1, max_length=64,
                                         description="A device's name in the device list.")]


class DevicesRemove(Params):
    name: DeviceName


class DevicesRename(Params):
    name: DeviceName
    new_name: DeviceName


class DeviceEntry(Result):
    """One device of this identity (its signed device list)."""
    id: str
    name: str
    this_device: bool
    added_at: int


class InvitesCreate(Params):
    label: str | None = None
    expires: Annotated[int, msgspec.Meta(gt=0, description="Seconds.")] = 7 * 86400


class InvitesAccept(Params):
    """``previous_keys``: a key backup (path) of the identity used before, opened
    with ``previous_passphrase``; its key signs that the current key replaces it."""
    link: str
    name: str | None = None
    previous_keys: str | None = None
    previous_passphrase: str | None = None


class PresenceGet(Params):
    contacts: list[str] | None = None


class PresenceSet(Params):
    mode: Literal["hide", "show"]


class SettingsSet(Params):
    read_receipts: bool | None = None


class ProfileGet(Params):
    contact: str | None = None
    avatar: bool = False


class ProfileSet(Params):
    """``avatar`` is a path to an image file (at most 512 KiB)."""
    display_name: str | None = None
    status: str | None = None
    avatar: str | None = None


class GroupsCreate(Params):
    name: Name
    members: list[str] = []


class GroupContact(Params):
    group: Name
    contact: Name


class GroupMember(Params):
    group: Name
    member: Name


class Group(Params):
    group: Name


class GroupLeave(Params):
    """``successor``: the member who takes the admin role when you are its last
    admin (else the longest-standing member does)."""
    group: Name
    successor: Name | None = None


class GroupAdmin(Params):
    """``remove``: take the role back instead of giving it."""
    group: Name
    member: Name
    remove: bool = False


class GroupsInfo(Params):
    group: Name
    avatar: bool = False


class GroupsSet(Params):
    """Admins only. ``avatar`` is a path to an image file (at most 32 KiB);
    ``clear_avatar`` drops the picture. What is not given stays."""
    group: Name
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    avatar: str | None = None
    clear_avatar: bool = False


class GroupsVerify(Params):
    group: Name
    member: Name
    confirm: bool = False


class GroupsHistory(Params):
    group: Name
    limit: Limit = 50
    before: Before | None = None


class WebSocketEndpoint(Result):
    url: str
    """`ws://127.0.0.1:PORT/`."""
    token_file: str
    """The file holding the bearer token (mode 0600, replaced at each start)."""


class DaemonStatus(Result):
    """``state``: ``unlocked``, ``locked`` (unlock with the passphrase) or
    ``empty`` (no identity yet: ``account.create``); name, fingerprint and
    relay are null unless unlocked."""
    pid: int
    home: str
    socket: str
    state: Literal["unlocked", "locked", "empty"]
    name: str | None
    fingerprint: str | None
    relay: str | None
    connected: bool
    synced: bool
    subscribers: int
    backlog: int
    outbox: int
    uptime: float
    web: str | None = None
    """The web page's address (no login token) when the daemon serves it."""
    locked: bool = False
    """Locked or empty (`state` says which): `name`, `fingerprint` and `relay`
    are null until `unlock` (or `account.create`)."""
    identity: bool = True
    """False for a daemon started on an empty home, until `account.create`."""
    websocket: WebSocketEndpoint | None = None
    """The loopback WebSocket API, when the daemon was started with `--websocket`."""


class DaemonStopped(Result):
    pid: int
    stopping: bool


class Unlock(Params):
    passphrase: str


class AccountCreate(Params):
    name: Name
    relay: Annotated[str, msgspec.Meta(description="The relay address, "
                                                   "ws://host:port/#FINGERPRINT.")]
    passphrase: Annotated[str, msgspec.Meta(min_length=1)]
    token: str | None = None
    """A registration token, for a relay that admits by invitation."""


class AccountCreated(DaemonStatus):
    pinned_on_first_use: bool = False
    """The relay address had no fingerprint: its key was pinned on first use."""


class WebStart(Params):
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    """The loopback port (0: a free one); ignored when the page is served already."""


class WebStarted(Result):
    page: str
    """The page's address, without a login token."""
    port: int
    started: bool
    """False when the daemon served the page already."""


class WebLogin(Result):
    url: str
    """A one-time login link (valid 120 s, spent by the first browser that opens it)."""
    page: str


class Subscribe(Params):
    types: list[str] | None = None
    """Only these event types (default: all)."""
    consumer: bool = False
    """Take events as a `receive` does: while a consumer is subscribed, nothing
    waits in the backlog."""
    backlog: bool = False
    """First the events that arrived while no consumer was subscribed (implies
    `consumer`); waits until the daemon caught up with its relay."""
    contact: Name | None = None
    """Only one conversation's events: those whose `group` is this name, or (not
    in a group) whose `from`, `to` or `contact` is. A chat window subscribes so,
    as a consumer: the other conversations' events keep waiting for `receive`."""


class Subscribed(Result):
    subscription: int
    replayed: int


class Unsubscribe(Params):
    subscription: int


@dataclass(frozen=True)
class Method:
    params: type[Params]
    result: Any
    doc: str
    daemon_only: bool = False


METHODS: dict[str, Method] = {
    "version": Method(NoParams, VersionResult, "The chatcli version and the API version."),
    "status": Method(NoParams, StatusResult, "This identity: name, fingerprint, relay, home."),
    "send": Method(Send, SendResult,
                   "Send a text (and optionally a file) to a contact or a group; answers once "
                   "the relay(s) stored it (`members`/`stored_for` for a group)."),
    "typing": Method(Typing, None, "Tell a contact that you are (or stopped) typing."),
    "react": Method(React, SendResult,
                    "React to a message with an emoji, or take your reaction back "
                    "(`id` in the answer is the message's full id)."),
    "edit": Method(Edit, SendResult, "Edit one of your messages; the contact sees it edited."),
    "delete": Method(Delete, SendResult,
                     "Delete one of your messages for everyone: the contact's copy becomes a "
                     "tombstone and the attachment's blob is deleted from your relay."),
    "read": Method(Read, None,
                   "Mark messages of a contact read; queues a read receipt if the account "
                   "sends them."),
    "history": Method(History, list[HistoryEntry],
                      "The latest messages with a contact or group, oldest first (local)."),
    "search": Method(Search, list[SearchHit],
                     "Messages of the local history containing all the words, newest first "
                     "(local; an in-memory index)."),
    "receive": Method(Receive, list[Event],
                      "Fetch, decrypt and store what waits at the relay; the events, in order."),
    "contacts.list": Method(ContactsList, list[ContactEntry],
                            "Contacts with fingerprint, verified state and presence."),
    "contacts.verify": Method(ContactsVerify, VerifyResult,
                              "The safety number with a contact (or group member); `confirm` "
                              "marks it verified, `reject` refuses a changed key."),
    "contacts.block": Method(Contact, None, "Revoke a contact's capability on your relay."),
    "contacts.unblock": Method(Contact, None, "Send a contact a new capability."),
    "contacts.remove": Method(Contact, None, "Delete a contact and its history."),
    "devices.list": Method(NoParams, list[DeviceEntry],
                           "This identity's devices, from its signed device list."),
    "devices.remove": Method(DevicesRemove, None,
                             "Remove a device: a new signed list goes to every contact and "
                             "own device (the removed one included); nothing more is "
                             "encrypted to it."),
    "devices.rename": Method(DevicesRename, None, "Rename a device in the signed list."),
    "invites.create": Method(InvitesCreate, InviteResult, "A one-time invite link."),
    "invites.accept": Method(InvitesAccept, AcceptResult,
                             "Accept an invite link: add the inviter and send the handshake."),
    "presence.get": Method(PresenceGet, dict[str, Presence],
                           "Whether contacts are online (all, or those named)."),
    "presence.set": Method(PresenceSet, HiddenResult, "Hide or show your own presence."),
    "settings.get": Method(NoParams, Settings, "This identity's settings."),
    "settings.set": Method(SettingsSet, Settings, "Change settings; answers the new ones."),
    "profile.get": Method(ProfileGet, Profile | None,
                          "Your profile, or a contact's (fetched from their relay); null if "
                          "none was shared."),
    "profile.set": Method(ProfileSet, ProfileSetResult,
                          "Update your profile and share it with your contacts."),
    "groups.list": Method(NoParams, list[GroupEntry], "Your groups."),
    "groups.create": Method(GroupsCreate, GroupCreated, "Create a group and invite contacts."),
    "groups.add": Method(GroupContact, None, "Invite a contact to a group (admins)."),
    "groups.remove": Method(GroupMember, None,
                            "Remove a member or withdraw an invitation (admins)."),
    "groups.leave": Method(GroupLeave, GroupLeft,
                           "Leave a group; its last admin hands the role over first."),
    "groups.members": Method(Group, Members,
                             "A group's members (with their roles) and pending invitees."),
    "groups.admin": Method(GroupAdmin, None,
                           "Make a member an admin, or take the role back (admins)."),
    "groups.vote": Method(GroupMember, None,
                          "Back a member as admin: a majority of the members' votes makes "
                          "it one (a group whose admins are gone)."),
    "groups.info": Method(GroupsInfo, GroupInfo, "A group's profile and roles (local)."),
    "groups.set": Method(GroupsSet, GroupInfo,
                         "Set the group's profile: name, description, avatar (admins)."),
    "groups.verify": Method(GroupsVerify, GroupVerifyResult,
                            "The safety number with a group member; `confirm` marks it verified."),
    "groups.history": Method(GroupsHistory, list[HistoryEntry],
                             "The latest messages of a group, oldest first (local)."),
    "subscribe": Method(Subscribe, Subscribed,
                        "Daemon only: events as `event` notifications from now on "
                        "(`{\"subscription\", \"event\"}`).", daemon_only=True),
    "unsubscribe": Method(Unsubscribe, bool, "Daemon only: end a subscription.",
                          daemon_only=True),
    "daemon.status": Method(NoParams, DaemonStatus,
                            "Daemon only: pid, connection, subscribers, backlog, outbox.",
                            daemon_only=True),
    "daemon.stop": Method(NoParams, DaemonStopped,
                          "Daemon only: stop the daemon (it answers first).", daemon_only=True),
    "unlock": Method(Unlock, DaemonStatus,
                     "Daemon only: open the keystore with the passphrase and go online.",
                     daemon_only=True),
    "lock": Method(NoParams, DaemonStatus,
                   "Daemon only: go offline and drop the keys; only `unlock`, `daemon.*` "
                   "and `web.*` work until then.", daemon_only=True),
    "account.create": Method(AccountCreate, AccountCreated,
                             "Daemon only, on an empty home: register a mailbox on the relay "
                             "and create the identity (unlocked).", daemon_only=True),
    "web.start": Method(WebStart, WebStarted,
                        "Daemon only: serve the web front end on 127.0.0.1 (once).",
                        daemon_only=True),
    "web.login": Method(NoParams, WebLogin,
                        "Daemon only: a fresh one-time login link for the web front end.",
                        daemon_only=True),
}

API_VERSION = 1
