"""LocalApi: every API method, implemented over an unlocked ChatClient.

``resident=False`` (direct mode, one CLI command): a method that needs a relay
opens ``client.online()`` around its work, as the commands always did.
``resident=True`` (the daemon): the client is kept online by its owner, and
methods use the open connections. Nothing here imports trio at module level:
the local methods run without it (see :meth:`LocalApi.call_local`)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from chatcli import __version__
from chatcli.api import schema as s
from chatcli.api.errors import ApiError, from_chatcli_error
from chatcli.api.events import KeyWatch, event_json
from chatcli.errors import ChatcliError, RelayError, UsageError

if TYPE_CHECKING:
    from chatcli.client.groups.service import GroupService
    from chatcli.client.service import ChatClient

# Methods that only read or write the local database: no relay, no trio.
LOCAL_METHODS = frozenset({
    "version", "status", "read", "history", "search", "settings.get", "settings.set",
    "groups.list", "groups.members", "groups.verify", "groups.history", "groups.info",
})


def needs_network(method: str, params: dict[str, Any]) -> bool:
    """Whether ``method`` with ``params`` talks to a relay."""
    if method == "contacts.list":
        return not params.get("offline", False)
    if method == "contacts.verify":
        return bool(params.get("reject", False))
    if method == "profile.get":
        return params.get("contact") is not None
    if method in ("send", "typing", "react", "edit", "delete") and params.get("queue", False):
        return params.get("file") is not None  # the file is uploaded first
    return method not in LOCAL_METHODS


class LocalApi:
    """The API over one unlocked identity, in this process."""

    def __init__(self, client: ChatClient, *, resident: bool) -> None:
        self.client = client
        self.resident = resident

    # ------------------------------------------------------------ dispatch

    def _validate(self, method: str, params: dict[str, Any] | None) -> s.Params:
        spec = s.METHODS.get(method)
        if spec is None:
            raise ApiError("method_not_found", f"There is no method {method!r}.", exit_code=2)
        if spec.daemon_only:
            raise ApiError("usage_error", f"{method} is served only by a running "
                           "`chatcli daemon`.", exit_code=2)
        try:
            return msgspec.convert(params or {}, spec.params)
        except msgspec.ValidationError as exc:
            raise ApiError("invalid_params", f"Bad parameters for {method}: {exc}.",
                           exit_code=2) from None

    def call_local(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A method that needs no relay (``needs_network`` is false), run at
        once, without trio: what the CLI's local commands use."""
        valid = self._validate(method, params)
        handler = getattr(self, "_" + method.replace(".", "_"))
        try:
            result = handler(valid)
            if isinstance(result, Coroutine):
                result = _finish_without_suspending(method, result)
        except ChatcliError as exc:
            raise from_chatcli_error(exc) from exc
        return result

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Validate ``params`` and run ``method``; plain JSON back, or ApiError."""
        valid = self._validate(method, params)
        handler: Callable[[Any], Any] = getattr(self, "_" + method.replace(".", "_"))
        try:
            result = handler(valid)
            if isinstance(result, Awaitable):
                result = await result
        except ChatcliError as exc:
            raise from_chatcli_error(exc) from exc
        return result

    @contextlib.asynccontextmanager
    async def _online(self, *, resume: bool = True) -> AsyncIterator[None]:
        if self.resident:
            yield
        else:
            async with self.client.online(resume=resume):
                yield

    # ------------------------------------------------------------ events

    async def events(self, *, wait: float | None = None, read_receipts: bool = False,
                     save_dir: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Fetch and then (with ``wait``) stay for what arrives, as event objects.

        With ``read_receipts`` every message is marked read as it is handed out
        (and the sender told so, if the account sends read receipts); else only
        a delivery receipt goes back."""
        from chatcli.client.service import MessageEvent

        client = self.client
        client.auto_read = read_receipts
        keys = KeyWatch(client)
        folder = Path(save_dir) if save_dir is not None else None
        try:
            async with self._online():
                async for event in client.listen(wait=wait):
                    if isinstance(event, MessageEvent) and event.attachment is not None:
                        from chatcli.client.attachments import download_for_event

                        event = await download_for_event(client, event, folder)
                    yield event_json(event, keys)
        except ChatcliError as exc:
            raise from_chatcli_error(exc) from exc
        finally:
            client.auto_read = False

    async def _receive(self, p: s.Receive) -> list[dict[str, Any]]:
        return [event async for event in self.events(wait=p.wait, read_receipts=p.read_receipts,
                                                     save_dir=p.save_dir)]

    # ------------------------------------------------------------ identity

    def _version(self, p: s.NoParams) -> dict[str, Any]:
        return {"version": __version__, "api": s.API_VERSION}

    def _status(self, p: s.NoParams) -> dict[str, Any]:
        account = self.client.account()
        return {"name": account.name, "fingerprint": self.client.identity.public.fingerprint(),
                "relay": account.relay_url, "home": str(self.client.home.root),
                "resident": self.resident}

    def _settings_get(self, p: s.NoParams) -> dict[str, Any]:
        row = self.client.account()
        return {"name": row.name, "relay": row.relay_url,
                "read_receipts": bool(row.read_receipts),
                "presence_hidden": bool(row.presence_hidden)}

    def _settings_set(self, p: s.SettingsSet) -> dict[str, Any]:
        if p.read_receipts is not None:
            self.client.set_read_receipts(p.read_receipts)
        return self._settings_get(s.NoParams())

    async def _presence_set(self, p: s.PresenceSet) -> dict[str, Any]:
        async with self._online():
            await self.client.set_presence_hidden(p.mode == "hide")
        return {"hidden": bool(self.client.account().presence_hidden)}

    async def _presence_get(self, p: s.PresenceGet) -> dict[str, Any]:
        async with self._online():
            found = await self.client.presence(p.contacts)
        return {name: {"online": info.online, "last_seen": info.last_seen, "known": info.known}
                for name, info in found.items()}

    # ------------------------------------------------------------ messages

    async def _send(self, p: s.Send) -> dict[str, Any]:
        client = self.client
        if not p.text and p.file is None:
            raise UsageError("The message is empty.")
        if p.queue and p.file is None:
            return {"id": client.enqueue_text(p.to, p.text, reply_to=p.reply_to), "to": p.to,
                    "stored": False}
        async with self._online():
            attachment = None
            if p.file is not None:
                from chatcli.client.attachments import upload_attachment

                attachment = await upload_attachment(client, Path(p.file))
            if p.queue:
                message_id = client.enqueue_text(p.to, p.text, attachment, reply_to=p.reply_to)
            else:
                message_id = await client.send_text(p.to, p.text, time_limit=p.retry_for,
                                                    attachment=attachment, reply_to=p.reply_to)
        from chatcli.client.groups.service import group_copies_stored

        result: dict[str, Any] = {"id": message_id, "to": p.to, "stored": not p.queue}
        copies = group_copies_stored(client, message_id)
        if copies is not None:
            result.update(members=copies[1], stored_for=copies[0])
        return result

    async def _action(self, to: str, ref: str, kind: str, value: str, queue: bool,
                      retry_for: float) -> dict[str, Any]:
        client = self.client
        if queue:
            target = client.enqueue_action(to, ref, kind, value)
            return {"id": target, "to": to, "stored": False}
        async with self._online():
            target = await client.send_action(to, ref, kind, value, time_limit=retry_for)
        return {"id": target, "to": to, "stored": True}

    async def _react(self, p: s.React) -> dict[str, Any]:
        return await self._action(p.to, p.id, "reaction", "" if p.remove else p.emoji,
                                  p.queue, p.retry_for)

    async def _edit(self, p: s.Edit) -> dict[str, Any]:
        return await self._action(p.to, p.id, "edit", p.text, p.queue, p.retry_for)

    async def _delete(self, p: s.Delete) -> dict[str, Any]:
        return await self._action(p.to, p.id, "delete", "", p.queue, p.retry_for)

    async def _typing(self, p: s.Typing) -> None:
        self.client.queue_typing(p.to, p.active)
        if p.queue:
            return
        if self.resident:
            await self.client.flush_outbox()
        else:
            async with self._online():
                await self.client.flush_outbox()

    async def _read(self, p: s.Read) -> None:
        self.client.mark_read(p.contact, p.ids)
        if self.resident:
            await self.client.flush_outbox()

    def _history(self, p: s.History) -> list[dict[str, Any]]:
        return self.client.history(p.contact, p.limit, before=p.before)

    def _search(self, p: s.Search) -> list[dict[str, Any]]:
        from chatcli.client import search

        client = self.client
        where = search.conversation(client.store, contact=p.contact, group=p.group)
        client.search_index.refresh(client.store, client.sealer)
        return search.results(client.store, client.search_index, p.text, limit=p.limit,
                              conversation=where, own_identity=client.identity.public.raw)

    # ------------------------------------------------------------ contacts

    async def _contacts_list(self, p: s.ContactsList) -> list[dict[str, Any]]:
        client = self.client
        rows = client.contacts()
        status: dict[str, Any] = {}
        if rows and not p.offline:
            async with self._online():
                status = dict(await client.presence())
        items = []
        for contact in rows:
            presence = status.get(contact.name)
            items.append({
                "name": contact.name,
                "fingerprint": client.contact_identity(contact).fingerprint(),
                "verified": bool(contact.verified and not contact.key_changed),
                "key_changed": bool(contact.key_changed),
                "blocked": bool(contact.blocked),
                "online": getattr(presence, "online", None),
                "last_seen": getattr(presence, "last_seen", None),
                "relay": contact.relay_url.split("#")[0],
            })
        return items

    def _contacts_verify(self, p: s.ContactsVerify) -> Any:
        client = self.client
        if p.confirm and p.reject:
            raise UsageError("--confirm and --reject exclude each other.")
        if p.reject:
            return self._reject(p.contact)
        from chatcli.client.groups.service import group_of_member

        group_name = group_of_member(client, p.contact)
        if group_name is not None:  # a member of one of your groups, not a contact
            return self._groups_verify(s.GroupsVerify(group=group_name, member=p.contact,
                                                      confirm=p.confirm))
        number, payload, row = client.safety_number(p.contact)
        changed = bool(row.key_changed)
        accepted = client.confirm_contact(p.contact) if p.confirm else False
        row = client.get_contact(p.contact, allow_key_changed=True)
        return {"contact": p.contact, "safety_number": number,
                "fingerprint": client.contact_identity(row).fingerprint(),
                "verified": bool(row.verified), "key_changed": bool(row.key_changed),
                "qr": payload.hex(), "was_key_changed": changed, "accepted": accepted}

    async def _reject(self, name: str) -> dict[str, Any]:
        client = self.client
        async with self._online():
            await client.reject_key_change(name)
        row = client.get_contact(name)
        number, payload, _ = client.safety_number(name)
        return {"contact": name, "safety_number": number,
                "fingerprint": client.contact_identity(row).fingerprint(),
                "verified": bool(row.verified), "key_changed": False, "qr": payload.hex(),
                "rejected": True}

    async def _contacts_block(self, p: s.Contact) -> None:
        async with self._online():
            await self.client.block(p.contact)

    async def _contacts_unblock(self, p: s.Contact) -> None:
        async with self._online():
            await self.client.unblock(p.contact)

    async def _contacts_remove(self, p: s.Contact) -> None:
        async with self._online():
            await self.client.remove_contact(p.contact)

    # ------------------------------------------------------------ devices

    async def _devices_list(self, p: s.NoParams) -> list[dict[str, Any]]:
        client = self.client
        me = client.device_id
        return [{"id": d.device_id.hex(), "name": d.name, "this_device": d.device_id == me,
                 "added_at": d.added_at} for d in client.own_device_list().devices]

    async def _devices_remove(self, p: s.DevicesRemove) -> None:
        self.client.remove_own_device(p.name)
        async with self._online():
            await self.client.flush_outbox()

    async def _devices_rename(self, p: s.DevicesRename) -> None:
        self.client.rename_own_device(p.name, p.new_name)
        async with self._online():
            await self.client.flush_outbox()

    async def _invites_create(self, p: s.InvitesCreate) -> dict[str, Any]:
        taken = p.label is not None and p.label in self.client.contact_names()
        async with self._online():
            link = await self.client.create_invite(p.label, p.expires)
        return {"link": link, "label": p.label, "expires": p.expires, "label_taken": taken}

    async def _invites_accept(self, p: s.InvitesAccept) -> dict[str, Any]:
        client = self.client
        previous = None
        if p.previous_keys is not None:
            previous = _identity_from_backup(Path(p.previous_keys), p.previous_passphrase or "")
        async with self._online():
            added = await client.accept_invite(p.link, p.name, previous_identity=previous)
        contact = client.get_contact(added)
        return {"name": added, "fingerprint": client.contact_identity(contact).fingerprint()}

    # ------------------------------------------------------------ profiles

    async def _profile_get(self, p: s.ProfileGet) -> dict[str, Any] | None:
        from chatcli.client.profiles import contact_profile, image_kind, own_profile

        if p.contact is None:
            shown = own_profile(self.client)
        else:
            async with self._online():
                shown = await contact_profile(self.client, p.contact)
        if shown is None:
            return None
        data: dict[str, Any] = {"display_name": shown.display_name, "status": shown.status,
                                "avatar_bytes": len(shown.avatar) if shown.avatar else 0}
        if p.contact:
            data["contact"] = p.contact
        if p.avatar and shown.avatar and image_kind(shown.avatar) is not None:
            # A contact's client might share anything: only an image is handed on.
            data["avatar"] = base64.b64encode(shown.avatar).decode("ascii")
        return data

    async def _profile_set(self, p: s.ProfileSet) -> dict[str, Any]:
        from chatcli.client.profiles import merge, own_profile, publish_profile

        avatar = _read_file(p.avatar) if p.avatar is not None else None
        new = merge(own_profile(self.client), p.display_name, p.status, avatar)
        async with self._online():
            told = await publish_profile(self.client, new)
        return {"shared_with": told}

    # ------------------------------------------------------------ groups

    def _service(self) -> GroupService:
        from chatcli.client.groups.service import GroupService

        return GroupService(self.client)

    async def _deliver(self, what: str) -> None:
        """Register the group capability and deposit what was queued."""
        try:
            async with self._online(resume=False):
                await self._service().deliver(time_limit=20.0)
        except RelayError as exc:
            raise RelayError(f"{what} is queued but not delivered yet: {exc}") from None

    def _groups_list(self, p: s.NoParams) -> list[dict[str, Any]]:
        return self._service().groups()

    async def _groups_create(self, p: s.GroupsCreate) -> dict[str, Any]:
        self._service().create(p.name, list(p.members))
        await self._deliver("The invitation")
        return {"group": p.name, "invited": list(dict.fromkeys(p.members))}

    async def _groups_add(self, p: s.GroupContact) -> None:
        self._service().add(p.group, p.contact)
        await self._deliver("The invitation")

    async def _groups_remove(self, p: s.GroupMember) -> None:
        self._service().remove(p.group, p.member)
        await self._deliver("The removal")

    async def _groups_leave(self, p: s.GroupLeave) -> dict[str, Any]:
        successor = self._service().leave(p.group, p.successor)
        await self._deliver("The notice that you left")
        return {"successor": successor}

    async def _groups_admin(self, p: s.GroupAdmin) -> None:
        self._service().set_admin(p.group, p.member, admin=not p.remove)
        await self._deliver("The change of admins")

    async def _groups_vote(self, p: s.GroupMember) -> None:
        self._service().vote_admin(p.group, p.member)
        await self._deliver("Your vote")

    def _groups_info(self, p: s.GroupsInfo) -> dict[str, Any]:
        from chatcli.client.profiles import image_kind

        info = self._service().info(p.group)
        avatar: bytes | None = info.pop("avatar")
        info.pop("profile_set")
        info["avatar_bytes"] = len(avatar) if avatar else 0
        if p.avatar and avatar and image_kind(avatar) is not None:
            # An admin's client might put anything there: only an image is handed on.
            info["avatar"] = base64.b64encode(avatar).decode("ascii")
        return info

    async def _groups_set(self, p: s.GroupsSet) -> dict[str, Any]:
        from chatcli.client.profiles import image_kind

        avatar = _read_file(p.avatar) if p.avatar is not None else None
        if avatar is not None and image_kind(avatar) is None:
            raise UsageError("The avatar must be a PNG, JPEG, GIF or WebP image.")
        self._service().set_profile(p.group, title=p.name, description=p.description,
                                    avatar=avatar, clear_avatar=p.clear_avatar)
        await self._deliver("The group's profile")
        return self._groups_info(s.GroupsInfo(group=p.group))

    def _groups_members(self, p: s.Group) -> dict[str, Any]:
        service = self._service()
        return {"members": [m.to_json() for m in service.members(p.group)],
                "invited": service.invited(p.group)}

    def _groups_verify(self, p: s.GroupsVerify) -> dict[str, Any]:
        service = self._service()
        number, payload, person = service.safety_number(p.group, p.member)
        if p.confirm:
            service.confirm_member(p.group, p.member)
        return {"group": p.group, "member": person.name, "contact": person.contact,
                "safety_number": number, "fingerprint": person.fingerprint,
                "verified": p.confirm or person.verified, "key_changed": False,
                "qr": payload.hex()}

    def _groups_history(self, p: s.GroupsHistory) -> list[dict[str, Any]]:
        service = self._service()
        return service.history(p.group, p.limit, before=p.before)


def _finish_without_suspending(method: str, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that takes the local path of an async method (e.g.
    ``contacts.list`` with ``offline``): it must finish without ever waiting,
    since no event loop runs."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise TypeError(f"{method} with these parameters needs a relay: use call()")


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None


def _identity_from_backup(path: Path, passphrase: str) -> Any:
    """The old identity key in a key backup, opened with its passphrase."""
    from chatcli.client.service import ChatClient
    from chatcli.crypto.backup import import_armoured

    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None
    return ChatClient.identity_of_backup(import_armoured(text, passphrase))
