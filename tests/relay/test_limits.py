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
    assert buckets.take(b"a", 0)   # forgotten: starts full again
