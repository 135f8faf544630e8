"""Sending units to the queue through Celery: the fleet's `Dispatcher` (gen.core.fleet)."""
from __future__ import annotations

from kombu.exceptions import KombuError

from gen.config import check_url_port
from gen.errors import GenError, UsageError
from gen.secrets import redact_url as redacted
from gen.secrets import register_url_password

TASK_RUN_UNITS = "gen.run_units"


def check_broker(redis_url: str) -> None:
    """Fail before anything is written when the queue cannot be reached."""
    import redis

    register_url_password(redis_url)
    check_url_port(redis_url, what="GEN_REDIS_URL")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        message = str(exc).strip().rstrip(".")
        reason = message.rsplit(". ", 1)[-1] if ". " in message else (message or type(exc).__name__)
        raise GenError(f"cannot reach the queue at {redacted(redis_url)} (GEN_REDIS_URL): {reason}") from None
    except ValueError as exc:  # a URL redis-py cannot read
        raise UsageError(f"GEN_REDIS_URL is not a Redis URL ({redacted(str(exc))}): {redacted(redis_url)}") from None


def batch_size_for(units: int) -> int:
    """Small jobs spread unit by unit over every worker; large ones go 20 to a message."""
    return max(1, min(20, units // 50))


class CeleryDispatcher:
    """Messages of `gen.run_units` (a job id and a batch of its unit ids) on the Redis broker."""

    def __init__(self, app, redis_url: str, *, batch_size: int | None = None):  # noqa: ANN001 (a Celery app)
        self.app = app
        self.redis_url = redis_url
        self.batch_size = batch_size
        self._redis = None

    def check(self) -> None:
        check_broker(self.redis_url)

    def send(self, job_id: str, unit_ids: list[int], queue: str) -> int:
        try:
            app = self.app
            size = self.batch_size or batch_size_for(len(unit_ids))
            with app.producer_or_acquire() as producer:
                for start in range(0, len(unit_ids), size):
                    app.send_task(TASK_RUN_UNITS, args=[job_id, unit_ids[start:start + size]], queue=queue,
                                  producer=producer)
        except KombuError as exc:
            raise GenError(f"job {job_id}: its units could not be sent to the queue ({exc}); they are kept in the "
                           f"database and sent again when the queue is back") from None
        return len(unit_ids)

    def queue_length(self, queue: str) -> int | None:
        import redis

        try:
            if self._redis is None:
                self._redis = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3, socket_timeout=3)
            return int(self._redis.llen(queue))
        except redis.RedisError:
            return None

    def supervisor_lock(self, holder: str, seconds: float) -> bool:
        """True while this process is the fleet's supervisor (a Redis key that expires if it dies)."""
        import redis

        try:
            if self._redis is None:
                self._redis = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3, socket_timeout=3)
            key = "gen:supervisor"
            if self._redis.set(key, holder, nx=True, px=int(seconds * 1000)):
                return True
            current = self._redis.get(key)
            if current is not None and current.decode() == holder:
                self._redis.pexpire(key, int(seconds * 1000))
                return True
            return False
        except redis.RedisError:
            return False
