"""The shared send pace (send_rate across every worker and host): the next free instant kept in PostgreSQL (the
send_pace table) or in Redis, moved on atomically by each reservation. Both use the server's clock, so the hosts'
clocks never have to agree. It must not sleep or send: digest.delivery.pace spaces the hand-overs.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..config import mask_secrets, redact_url, url_secrets
from ..errors import ConfigError, StoreError
from ..models import SendPace, table_of
from . import wrap_db_error

_pace = table_of(SendPace)

# Moves the row on by k intervals from the later of its instant and now; answers how far the first booked slot is.
_RESERVE = sa.text(
    "INSERT INTO send_pace (name, next_at) VALUES (:name, clock_timestamp() + :span) "
    "ON CONFLICT (name) DO UPDATE SET next_at = GREATEST(send_pace.next_at, clock_timestamp()) + :span "
    "RETURNING EXTRACT(EPOCH FROM (next_at - :span - clock_timestamp()))"
).bindparams(sa.bindparam("span", type_=sa.Interval()))


def reserve_slots_postgres(engine: Engine, name: str, count: int, interval: float) -> float:
    """Book `count` slots `interval` seconds apart on the pace `name`; seconds until the first (0 or less: now)."""
    try:
        with engine.begin() as conn:
            return float(conn.execute(_RESERVE, {"name": name, "span": timedelta(seconds=count * interval)}).scalar_one())
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None


# The same in Redis, in one script (atomic): the key holds the next free instant in seconds on Redis's clock.
_REDIS_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = math.max(free, now)
redis.call('SET', KEYS[1], string.format('%.6f', first + tonumber(ARGV[1])), 'EX', 86400)
return string.format('%.6f', first - now)
"""


class RedisPace:
    """Reservations in Redis at `url` (redis://host:6379/0), under the key digest:pace:<name>."""

    def __init__(self, url: str, name: str) -> None:
        try:
            import redis
        except ImportError:
            raise StoreError("redis_url is set but the redis package is not installed", "pip install 'digest[redis]'") from None
        self.url, self.key = url, f"digest:pace:{name}"
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        except ValueError as exc:  # a bad port or scheme; the message may quote a password read as a port
            raise ConfigError(f"redis_url {redact_url(url)} is not a Redis URL redis can read: {mask_secrets(str(exc), url_secrets(url))}",
                              "redis_url looks like redis://:PASSWORD@HOST:6379/0 (percent-encode / @ : in the password)") from None
        self.script = self.client.register_script(_REDIS_RESERVE)
        self.errors = redis.RedisError

    def reserve(self, count: int, interval: float) -> float:
        try:
            return float(self.script(keys=[self.key], args=[count * interval]))
        except self.errors as exc:
            raise StoreError(f"cannot reach Redis at redis_url: {type(exc).__name__}: {exc}", "check redis_url and that Redis is running") from None
