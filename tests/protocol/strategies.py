"""Hypothesis strategies for valid frames (shared by protocol and relay fuzz tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from chatcli.protocol import frames

req = st.integers(min_value=0, max_value=2**53 - 1)
b16 = st.binary(min_size=16, max_size=16)
b32 = st.binary(min_size=32, max_size=32)
b64 = st.binary(min_size=64, max_size=64)
payload = st.binary(min_size=1, max_size=300)
small_list = {"min_size": 1, "max_size": 4}

client_frames: st.SearchStrategy[frames.Frame] = st.one_of(
    st.builds(frames.Hello, versions=st.lists(st.integers(1, 255), **small_list), nonce=b32),
    st.builds(frames.Register, req=req, auth_key=b32, signature=b64,
              token=st.none() | st.text(max_size=20)),
    st.builds(frames.Auth, req=req, mailbox=b16, signature=b64),
    st.builds(frames.CapAdd, req=req, cap_hashes=st.lists(b32, **small_list)),
    st.builds(frames.CapRevoke, req=req, cap_hashes=st.lists(b32, **small_list)),
    st.builds(frames.Deposit, req=req, items=st.lists(
        st.builds(frames.DepositItem, mailbox=b16, cap=b32, payload=payload), **small_list)),
    st.builds(frames.Ack, req=req, ids=st.lists(st.integers(0, 2**53 - 1), **small_list)),
    st.builds(frames.AccountDelete, req=req),
    st.builds(frames.PresenceQuery, req=req, targets=st.lists(
        st.builds(frames.PresenceTarget, mailbox=b16, cap=b32), **small_list)),
    st.builds(frames.PresenceSubscribe, req=req, targets=st.lists(
        st.builds(frames.PresenceTarget, mailbox=b16, cap=b32), **small_list)),
    st.builds(frames.PresenceSettings, req=req, hidden=st.booleans()),
    st.builds(frames.BlobPut, req=req, blob=b16, offset=st.integers(0, 10_000),
              data=st.binary(max_size=300), final=st.booleans(), read_cap_hash=b32,
              ttl=st.integers(60, 366 * 86400)),
    st.builds(frames.BlobGet, req=req, blob=b16, read_cap=b32, offset=st.integers(0, 10_000),
              length=st.integers(1, frames.MAX_BLOB_CHUNK)),
    st.builds(frames.BlobDelete, req=req, blob=b16),
    st.builds(frames.Ping, req=req),
)
