"""Messages a worker refuses (malformed, or naming a unit of another job): logged, counted and kept in Redis
(`gen:dead-letter`, the newest 1,000; `gen:dead-letter:count`) for a person to look at. Never a worker's death."""
from __future__ import annotations

import json
import logging
import time

log = logging.getLogger("gen.worker")
KEY = "gen:dead-letter"
KEEP = 1000


def dead_letter(reason: str, body: object, *, redis_url: str | None = None) -> None:
    log.error("refused a message: %s: %.300r", reason, body)
    try:
        import redis

        from worker.settings import fleet_settings

        client = redis.Redis.from_url(redis_url or fleet_settings().redis_url, socket_connect_timeout=3,
                                      socket_timeout=3)
        entry = json.dumps({"at": time.time(), "reason": reason, "body": repr(body)[:4000]})
        with client.pipeline() as pipe:
            pipe.lpush(KEY, entry).ltrim(KEY, 0, KEEP - 1).incr(f"{KEY}:count").execute()
    except Exception as exc:  # the log line above is the record then
        log.warning("could not keep the refused message in Redis (%s)", type(exc).__name__)
