"""Every failure a user can cause, as one exception family with an exit code and a one-line message."""
from __future__ import annotations


class GenError(Exception):
    """Base of gen's own errors. `str(err)` is the one-line message shown to the user."""

    exit_code = 1


class UsageError(GenError):
    """The user asked for something that cannot be: bad job file, unknown job, bad option. Exit 2."""

    exit_code = 2


class JobFileError(UsageError):
    """A job file that cannot be read or does not validate. Names the file and the path inside it."""

    def __init__(self, file: str, problems: list[str]):
        self.file = file
        self.problems = problems
        first = problems[0] if problems else "invalid"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{file}: {first}{more}")


class MissingKeyError(UsageError):
    """A teacher's API key variable is not set."""

    def __init__(self, teacher: str, env_var: str):
        self.teacher = teacher
        self.env_var = env_var
        super().__init__(
            f"teacher '{teacher}' needs an API key: set the environment variable {env_var}"
            " (or run with --dry-run to use the simulator)"
        )


class UnknownJobError(UsageError):
    def __init__(self, ref: str):
        super().__init__(f"no job with id or name '{ref}' in this database (see `gen jobs`)")


class StoreError(GenError):
    """The database cannot be used as it is (unreachable, or an incompatible schema version)."""


class TeacherError(GenError):
    """A teacher call failed. `retryable` says whether another attempt may succeed."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 raw: str | None = None, rate_headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.raw = raw
        self.rate_headers = rate_headers or {}  # the response's `x-ratelimit-*` headers (limits, never keys)


class RateLimited(TeacherError):
    """HTTP 429: the provider asks us to wait `retry_after` seconds."""


class ServerError(TeacherError):
    """HTTP 5xx from the provider."""


class CallTimeout(TeacherError):
    """No answer within the per-call timeout."""


class Unreachable(TeacherError):
    """The teacher's host could not be connected to."""


class MalformedResponse(TeacherError):
    """The provider answered with a body we cannot parse."""


class Truncated(TeacherError):
    """finish_reason == "length": the answer was cut at max_tokens."""


class BadRequest(TeacherError):
    """HTTP 4xx other than 429: retrying the same request will not help."""

    retryable = False


class AuthError(BadRequest):
    """HTTP 401/403: the key is wrong or lacks access."""


class ResponseFormatUnsupported(BadRequest):
    """The server refused `response_format` json_schema; the teacher falls back to JSON mode."""


class OutputRejected(GenError):
    """A unit's output failed validation on every attempt: the unit is recorded as rejected.

    `reason` says why (schema path and message, or the check that failed); `raw` is the last output;
    `records` (NewRecord) are kept with kind "rejected", reviewable and exportable with `gen export --rejected`.
    """

    def __init__(self, reason: str, raw: str | None = None, records: list | None = None):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
        self.records = records or []  # rejected work worth keeping for review (stored with kind "rejected")


class TeacherUnavailable(GenError):
    """A teacher failed so persistently (unreachable, bad key) that the whole run stops."""


class LeaseLost(GenError):
    """This process no longer holds the unit (its lease passed and another worker may have it): the unit stops
    at once and writes nothing more."""


class PlannedElsewhere(GenError):
    """Another planner of the job (a supervisor, `gen enqueue`) has already planned from this position: this one
    stops, and the plan goes on where the other left it."""

    def __init__(self, job_id: str, position: int):
        super().__init__(f"job {job_id}: plan position {position} was planned by another process")
        self.position = position


class Draining(GenError):
    """The run is stopping (first Ctrl-C): no new teacher call starts; calls in flight finish and are recorded."""


class BudgetExhausted(GenError):
    """The job's budget_usd has been reached: no new call starts (the unit goes back to pending)."""
