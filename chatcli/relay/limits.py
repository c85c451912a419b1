"""Rate limits as token buckets, pure and with explicit time.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per
second; taking a token that is not there is refused. :class:`KeyedBuckets`
keeps one bucket per key (a capability hash) in bounded memory. When full, it
forgets only buckets that have refilled (a full bucket is the same as a new
one), so that no pattern of keys can reset a depleted limit; a new key is
refused while the oldest buckets are all still refilling.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["KeyedBuckets", "TokenBucket"]

EVICTION_SCAN = 16   # least recently used buckets looked at for one that refilled


class TokenBucket:
    """A token bucket; ``now`` is in seconds on any monotonic clock."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if there are enough; say whether it was allowed."""
        self._refill(now)
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens


class KeyedBuckets:
    """One :class:`TokenBucket` per key, at most ``max_keys`` of them."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()

    def take(self, key: bytes, now: float, amount: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys and not self._evict_one(now):
                return False
            bucket = TokenBucket(self.rate, self.burst, now)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, amount)

    def charge(self, key: bytes, now: float, amount: float) -> None:
        """Take ``amount`` tokens, or all there are when fewer (a cost already
        incurred, which cannot be refused, only made to count)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys and not self._evict_one(now):
                return
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(key)
        bucket.take(now, min(amount, bucket.available(now)))

    def available(self, key: bytes, now: float) -> float:
        """Tokens ``key`` has now (a key never seen has a full bucket)."""
        bucket = self._buckets.get(key)
        return self.burst if bucket is None else bucket.available(now)

    def _evict_one(self, now: float) -> bool:
        """Forget one refilled bucket among the least recently used; False if none."""
        for _ in range(min(EVICTION_SCAN, len(self._buckets))):
            key, bucket = self._buckets.popitem(last=False)
            if bucket.available(now) >= self.burst:
                return True
            self._buckets[key] = bucket   # still refilling: keep it, look further
        return False

    def __len__(self) -> int:
        return len(self._buckets)
