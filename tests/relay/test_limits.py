from __future__ import annotations

import pytest

from chatcli.relay.limits import KeyedBuckets, TokenBucket


def test_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.take(0.1)           # one token back after 1/rate seconds
    assert not bucket.take(0.1)
    assert bucket.available(100.0) == 5   # never more than the burst


def test_bucket_ignores_time_going_backwards() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)


def test_bucket_validates() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)


def test_keyed_buckets_are_independent_and_bounded() -> None:
    buckets = KeyedBuckets(rate=1, burst=2, max_keys=3)
    assert buckets.take(b"a", 0) and buckets.take(b"a", 0)
    assert not buckets.take(b"a", 0)
    assert buckets.take(b"b", 0)
    for key in (b"c", b"d", b"e"):
        buckets.take(key, 0)
    assert len(buckets) == 3
    # "a" is depleted: it is kept, and keys arriving while every bucket
    # still refills are refused rather than evicting it.
    assert not buckets.take(b"a", 0)
    assert buckets.take(b"f", 10)   # by t=10 the old ones refilled: one is forgotten
    assert len(buckets) == 3


def test_interleaved_keys_cannot_reset_a_depleted_limit() -> None:
    """Issue 16 item 3: interleaving many fresh keys used to evict (and so
    refill) a depleted bucket, multiplying the limit."""
    buckets = KeyedBuckets(rate=0.01, burst=5, max_keys=100)
    allowed = 0
    now = 0.0
    fresh = 0
    for _ in range(20):
        while buckets.take(b"victim", now):
            allowed += 1
        for _ in range(100):    # enough fresh keys to push the victim out of an LRU
            now += 0.001
            fresh += 1
            buckets.take(fresh.to_bytes(4, "big"), now)
    assert allowed <= 5 + 0.01 * now + 1
    assert len(buckets) <= 100
