"""The SDK's exceptions. Everything it raises on purpose is an AitbcError; a refusal by the
marketplace is an ApiError carrying the server's problem+json `code` (stable, machine-readable),
with a subclass for the codes a caller is likely to handle."""

from __future__ import annotations

from typing import Any


class AitbcError(Exception):
    """Base of every error the SDK raises."""


class ValidationError(AitbcError, ValueError):
    """Bad input, caught before anything was sent. `field` names the argument."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(AitbcError):
    """The home's config or key file cannot be read or is incomplete."""


class ApiUnreachable(AitbcError):
    """The marketplace API did not answer; the message names the URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the aitbc API at {url}: {reason}")
        self.url = url


class ApiError(AitbcError):
    """The marketplace refused a request (an RFC 9457 problem)."""

    code: str
    status: int
    detail: str
    field: str | None

    def __init__(self, status: int, code: str, detail: str, field: str | None = None, problem: dict[str, Any] | None = None) -> None:
        where = f" ({field})" if field else ""
        super().__init__(f"{code}{where}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.problem = problem or {}


class InvalidRequest(ApiError):
    """`invalid_request`: the server found an argument invalid; `field` names it."""


class Unauthenticated(ApiError):
    """`unauthenticated`: no API key, or an unknown one."""


class Forbidden(ApiError):
    """`forbidden`: the key's role or owner may not do this."""


class NotFound(ApiError):
    """`not_found`."""


class Conflict(ApiError):
    """`conflict`: the resource's state does not allow it now (e.g. a job no longer queued)."""


class InsufficientFunds(ApiError):
    """`insufficient_funds` or `spending_limit_exceeded`: escrow cannot hold the job's price."""


class NoCapacity(ApiError):
    """`no_capacity`: no listing online can take the job now."""


class RateLimited(ApiError):
    """`rate_limited`."""


PROBLEM_CLASSES: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequest,
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "insufficient_funds": InsufficientFunds,
    "spending_limit_exceeded": InsufficientFunds,
    "no_capacity": NoCapacity,
    "rate_limited": RateLimited,
}


class NotSupportedYet(AitbcError, NotImplementedError):
    """A call of the provider guide that the marketplace has no server support for yet.
    `capability` names what the server lacks; nothing was changed."""

    def __init__(self, call: str, capability: str) -> None:
        super().__init__(f"{call}: the marketplace has no {capability} yet, so nothing was changed")
        self.call = call
        self.capability = capability


class WorkerNotRunning(AitbcError):
    """A listing is offered but no worker serves it; the message says how to start one."""


class JobFailed(AitbcError):
    """A job ended without output (failed, cancelled or expired)."""

    def __init__(self, job_id: str, state: str, reason: str | None) -> None:
        super().__init__(f"job {job_id} {state}" + (f": {reason}" if reason else ""))
        self.job_id = job_id
        self.state = state
        self.reason = reason


class NotAppliedWarning(UserWarning):
    """Part of a call's arguments has no place on the marketplace yet; the rest was applied.
    The message names what was left out."""
