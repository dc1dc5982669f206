"""The Redis tier's format: the value header, and the Lua scripts that keep tag indexes and leases."""

from __future__ import annotations

import contextlib
import json
import math
import struct

# A value is: magic, expires_at on the tier's clock (inf = never), length of the tags JSON, the
# tags, the caller's bytes. Redis expires it itself (SET PX); the header lets get() honour the
# injected clock too and invalidate() see the entry's current tags. Other bytes are a miss.
_HEADER = struct.Struct("!4sdI")
_MAGIC = b"LMR1"
# Add ARGV[1] to the tag index KEYS[1] (a sorted set) scored by its expiry ARGV[2] ("inf": never)
# on the tier's clock, whose now is ARGV[3]. Expired members are pruned, and the index expires
# with its longest-lived member. Each script touches one key, so both are safe on Cluster.
_SWAP = ("if redis.call('GET', KEYS[1]) == ARGV[1] then"
         " return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) and 1 end return 0")
_INDEX = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if last == 'inf' then redis.call('PERSIST', KEYS[1])
else redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(last) - tonumber(ARGV[3])) * 1000)) end
"""
# Remove members (ARGV: member, score, ...) still at the score read: a member re-added meanwhile
# belongs to a newer write and stays. Returns how many went.
_UNINDEX = """
local n = 0
for i = 1, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and (s == ARGV[i + 1] or tonumber(s) == tonumber(ARGV[i + 1])) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
"""


def _unpack(raw: bytes) -> tuple[float, int] | None:
    """(expires_at, tags length) of a value this tier wrote, else None."""
    if len(raw) >= _HEADER.size:
        magic, expires_at, tags_length = _HEADER.unpack_from(raw)
        if magic == _MAGIC and not math.isnan(expires_at):
            return expires_at, tags_length
    return None


def _tags(blob: bytes) -> list[str]:
    with contextlib.suppress(ValueError):
        tags = json.loads(blob)
        if isinstance(tags, list):
            return tags
    return []
