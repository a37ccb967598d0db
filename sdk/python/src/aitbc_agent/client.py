"""Client: submit jobs paid from escrow, follow them, read their receipts (Payments and
Receipts). Async, like the provider's calls; `get_receipt()` is a synchronous helper, as the
receipts page calls it."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any, AsyncIterator, Mapping

from . import _units
from ._http import Transport
from .errors import ConfigError, JobFailed, ValidationError
from .home import HomeConfig, discover_api, home_dir
from .models import Balances, Contract, Job, Quote, Receipt, Reservation

TIERS = ("basic", "premium", "enterprise")
# Page size asked for when listing receipts or jobs (the server's pages hold at most 100).
PAGE_LIMIT = 100
WAIT_TIMEOUT_S = 120.0
WAIT_POLL_S = 0.25


class Client:
    """A client (or any) account's view of the marketplace. Credentials come from the home
    (`AITBC_HOME`, else ~/.aitbc), as the CLI's, unless `api_key` is given."""

    def __init__(self, *, api: str | None = None, home: str | os.PathLike[str] | None = None, api_key: str | None = None) -> None:
        self.home = home_dir(home)
        self.config = HomeConfig.load(self.home)
        self._http = Transport(discover_api(api, self.home), api_key or self.config.api_key)

    @property
    def api(self) -> str:
        return self._http.api

    @property
    def address(self) -> str:
        if not self.config.address:
            raise ConfigError(f"no account in {self.home}: call Client.open_account() or run `aitbc init --role client`")
        return self.config.address

    @classmethod
    def open_account(cls, *, api: str | None = None, home: str | os.PathLike[str] | None = None, name: str | None = None) -> "Client":
        """A client account saved in the home, as `aitbc init --role client`; the one already
        there if it is a client's. `name` registers an agent name for a new account (e.g.
        "enterprise-agent-123": words joined by '-'), by which providers can offer it
        contracts and reservations."""
        home_path = home_dir(home)
        config = HomeConfig.load(home_path)
        base = discover_api(api, home_path)
        if config.api_key is None:
            body: dict[str, Any] = {"role": "client"}
            if name is not None:
                body["name"] = name
            opened = Transport(base).request("POST", "/v1/accounts", json=body)
            HomeConfig(api=base, address=opened["address"], role="client", api_key=opened["api_key"]).save(home_path)
        elif config.role != "client":
            raise ConfigError(f"the home {home_path} holds a {config.role} account; a client needs its own home (AITBC_HOME)")
        return cls(api=api, home=home_path)

    # --- money ----------------------------------------------------------------------------

    async def balance(self) -> Balances:
        return Balances.from_wire(await self._http.arequest("GET", f"/v1/accounts/{self.address}"))

    async def deposit(self, amount: Any) -> Balances:
        """Deposits AITBC into the wallet (the local marketplace's faucet; a deployment
        refuses it with `forbidden`)."""
        body = {"amount": _units.amount(amount, "amount")}
        done = await self._http.arequest("POST", f"/v1/accounts/{self.address}/deposits", json=body)
        return Balances.from_wire(done["balances"])

    # --- contracts and reservations ---------------------------------------------------------

    async def accept_contract(self, provider: str) -> Contract:
        """Accepts the fixed-rate contract `provider` (an address) offered this client."""
        return Contract.from_wire(await self._http.arequest("POST", f"/v1/contracts/{provider}/accept"))

    async def accept_reservation(self, reservation_id: str) -> Reservation:
        """Accepts a capacity reservation offered to this client and pays its fee."""
        return Reservation.from_wire(await self._http.arequest("POST", f"/v1/reservations/{reservation_id}/accept"))

    # --- jobs -----------------------------------------------------------------------------

    async def quote(self, units: Any, *, model: str | None = None, region: str | None = None, gpu_id: str | None = None, tier: str = "basic", kind: str | None = None, duration_hours: int | None = None) -> Quote:
        """A signed price for `units` GPU-seconds: on `gpu_id`, or the best listing of
        `region` (us-west when neither is given)."""
        body = self._terms(units, model, region, gpu_id, tier)
        if kind is not None:
            body["kind"] = kind
        if duration_hours is not None:
            body["duration_hours"] = duration_hours
        return Quote.from_wire(await self._http.arequest("POST", "/v1/quotes", json=body))

    @staticmethod
    def _terms(units: Any, model: str | None, region: str | None, gpu_id: str | None, tier: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"units": _units.gpu_seconds(units, "units")}
        if tier is not None:
            if tier not in TIERS:
                raise ValidationError(f"tier must be one of {', '.join(TIERS)}", field="tier")
            body["tier"] = tier
        if model is not None:
            body["model"] = model
        if gpu_id is not None:
            body["gpu_id"] = gpu_id
        else:
            body["region"] = region or "us-west"
        return body

    async def submit_job(
        self,
        spec: Mapping[str, Any],
        *,
        units: Any = None,
        model: str | None = None,
        region: str | None = None,
        gpu_id: str | None = None,
        tier: str | None = None,
        quote: Quote | None = None,
        timeout_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submits `spec` (see samples/jobs), holding its maximum price in escrow: a quote's,
        or `units` GPU-seconds priced now. `idempotency_key` names the job: submitting again
        with the same key returns the same job and pays once."""
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise ValidationError("spec must be a job spec with a `kind`", field="spec")
        body: dict[str, Any] = {"spec": dict(spec)}
        if quote is not None:
            body["quote"] = quote.raw
        else:
            if units is None:
                raise ValidationError("units (GPU-seconds, the most the job may use) or a quote is required", field="units")
            body.update(self._terms(units, model, region, gpu_id, tier))
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        key = idempotency_key or f"sdk-{uuid.uuid4()}"
        return Job.from_wire(await self._http.arequest("POST", "/v1/jobs", json=body, idempotency_key=key))

    async def get_job(self, job_id: str) -> Job:
        return Job.from_wire(await self._http.arequest("GET", f"/v1/jobs/{job_id}"))

    async def wait_for_job(self, job_id: str, *, until: tuple[str, ...] = ("completed", "settled"), timeout_s: float = WAIT_TIMEOUT_S) -> Job:
        """Follows a job until it reaches a state in `until` or ends; raises JobFailed if it
        failed, was cancelled or expired, TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = await self.get_job(job_id)
            if job.state in until:
                return job
            if job.state in ("failed", "cancelled", "expired"):
                raise JobFailed(job_id, job.state, (job.failure or {}).get("reason"))
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout_s:.0f} s")
            await asyncio.sleep(WAIT_POLL_S)

    async def get_result(self, job_id: str) -> dict[str, Any]:
        """The job's output (`JobOutput`); JobFailed if it ended without one."""
        result = await self._http.arequest("GET", f"/v1/jobs/{job_id}/result")
        if "output" in result:
            return dict(result["output"])
        raise JobFailed(job_id, result.get("state", "failed"), (result.get("failure") or {}).get("reason"))

    async def cancel_job(self, job_id: str) -> Job:
        return Job.from_wire(await self._http.arequest("POST", f"/v1/jobs/{job_id}/cancel"))

    async def list_jobs(self, *, limit: int = 50) -> list[Job]:
        return [Job.from_wire(j) async for j in self._pages("/v1/jobs", {}, limit)]

    # --- receipts -------------------------------------------------------------------------

    async def list_receipts(self, *, client: str | None = None, provider: str | None = None, limit: int = 50) -> list[Receipt]:
        """Receipts newest first: the caller's own, or a client's or provider's."""
        params = {k: v for k, v in (("client", client), ("provider", provider)) if v}
        return [self._receipt(r) async for r in self._pages("/v1/receipts", params, limit)]

    def _receipt(self, data: dict[str, Any]) -> Receipt:
        receipt = Receipt.from_wire(data)
        receipt.source_api = self.api
        return receipt

    async def get_receipt(self, receipt_id: str) -> Receipt:
        return self._receipt(await self._http.arequest("GET", f"/v1/receipts/{receipt_id}"))

    async def _pages(self, path: str, params: dict[str, Any], limit: int) -> AsyncIterator[dict[str, Any]]:
        if not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be a positive whole number", field="limit")
        cursor = None
        left = limit
        while left > 0:
            page = await self._http.arequest("GET", path, params={**params, "limit": min(left, PAGE_LIMIT), **({"cursor": cursor} if cursor else {})})
            for item in page["items"][:left]:
                yield item
            left -= len(page["items"])
            cursor = page.get("next_cursor")
            if not cursor or not page["items"]:
                return


def get_receipt(receipt_id: str, *, api: str | None = None, home: str | os.PathLike[str] | None = None) -> Receipt:
    """One receipt, with the home's credentials (its client or its provider)."""
    c = Client(api=api, home=home)
    return c._receipt(c._http.request("GET", f"/v1/receipts/{receipt_id}"))
