"""ComputeProvider: the Compute Provider Agent Guide over the marketplace's API.

One ComputeProvider is one provider account (its address is `id`) and one GPU listing
(`gpu_id`). `assess_capabilities()` and `register(...)` are synchronous, as the guide calls
them; every other call is a coroutine, and each has its effect on the marketplace. Arguments
that have no place on a listing are named in a NotAppliedWarning while the rest is applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
import warnings
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Mapping

from . import _units
from ._http import Transport
from .capabilities import WORKER_CUDA_VERSION, assess, worker_binary
from .errors import ConfigError, NotAppliedWarning, ValidationError, WorkerNotRunning
from .home import KEY_FILE, HomeConfig, SigningKey, discover_api, home_dir, write_private
from .models import Analytics, Capabilities, Contract, Earnings, Listing, ListingStatus, Monitoring, Reputation, Reservation, Sharing, Signal, Suggestion
from .quality import Checker, QualityServer, socket_path
from .worker import WorkerConfig, spawn_worker, worker_command

DEFAULT_REGION = "us-west"
JOB_KINDS = ("vector_add", "reduction", "gemm", "kernel", "text_generation")
STRATEGIES = ("market-balance", "peak-maximizer", "utilization-guard", "dynamic")
# The server's earnings periods: <N>h up to 8784 or <N>d up to 366 (its EARNINGS_PERIOD_PATTERN).
PERIOD = re.compile(r"^(([1-9]|[1-9][0-9]|[1-9][0-9][0-9]|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-4])h|([1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d)$")
# The guide's breakdown names, and the API's field for each.
BREAKDOWNS = {"client": "by_client", "model_type": "by_model", "model": "by_model", "time_of_day": "by_hour_of_day", "hour_of_day": "by_hour_of_day"}
FREQUENCY = re.compile(r"^[1-9][0-9]{0,4}(s|min|h)$")
# The server's reservation durations: 1..=2160 hours or 1..=90 days (aitbc_core::capacity::DURATION_PATTERN).
DURATION = re.compile(r"^(([1-9]|[1-9][0-9]|[1-9][0-9][0-9]|1[0-9]{3}|20[0-9]{2}|21[0-5][0-9]|2160)h|([1-9]|[1-8][0-9]|90)d)$")
# start_offering waits this long for a worker's heartbeat; the local worker of `aitbc up` finds
# a new listing within 2 s and heartbeats every 3 s.
ONLINE_WAIT_S = 30.0
POLL_S = 0.25

_CAPABILITY_KEYS = {"gpu_memory", "supported_models", "max_concurrent_jobs", "kinds", "cuda_version", "count", "specialization"}
_PRICING_KEYS = {"base_rate_per_hour", "peak_multiplier", "bulk_discount", "bulk_hours_min", "strategy"}


def _not_applied(call: str, what: list[str], why: str) -> None:
    if what:
        warnings.warn(NotAppliedWarning(f"{call}: not applied: {', '.join(what)} ({why})"), stacklevel=3)


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValidationError(f"{field} must be a whole number, not {value!r}", field=field)
    if not low <= int(value) <= high:
        raise ValidationError(f"{field} must be {low}..={high}, not {value!r}", field=field)
    return int(value)


def _open_provider_account(http: Transport, home: Path, api: str) -> HomeConfig:
    """What `aitbc init` does: an account, an Ed25519 key pair (file 0600), the public key
    registered for receipts, and the config saved in the home."""
    opened = http.request("POST", "/v1/accounts", json={"role": "provider"})
    address = opened["address"]
    key = SigningKey.generate(f"{address[4:16]}-ed25519-1")
    home.mkdir(parents=True, exist_ok=True)
    key_path = home / KEY_FILE
    import json

    write_private(key_path, json.dumps(key.to_file(), indent=2))
    config = HomeConfig(api=api, address=address, role="provider", api_key=opened["api_key"], key_file=str(key_path))
    # Saved before the key is registered: a failure after this point leaves an account this
    # home knows, and the next register() registers the key (see _ensure_key_registered).
    config.save(home)
    http.with_key(config.api_key or "").request("POST", "/v1/providers/keys", json=key.public_entry())
    return config


def _ensure_key_registered(http: Transport, config: HomeConfig) -> None:
    if not config.key_file:
        raise ConfigError("the home's provider account has no key_file; run `aitbc init --force` or use another AITBC_HOME")
    key = SigningKey.load(Path(config.key_file))
    registered = http.request("GET", "/v1/providers/keys")["keys"]
    if key.public_entry() not in registered:
        http.request("POST", "/v1/providers/keys", json=key.public_entry())


QUEUE_PRIORITIES = ("fifo", "weighted_fair_share")
PREEMPTIONS = ("none", "graceful")
# timeout_handling -> the listing's attempt limit (None: the marketplace's default).
TIMEOUT_HANDLING: dict[str, int | None] = {"auto_retry": None, "fail": 1}


# The API's ModelName: lower-case letters, digits and . : _ -, starting with a letter or digit.
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9.:_-]{0,63}")


class ComputeProvider:
    """A provider agent's account and GPU listing."""

    def __init__(self, http: Transport, home: Path, config: HomeConfig, listing: Listing, capabilities: dict[str, Any] | None = None) -> None:
        self._http = http
        self.home = home
        self.config = config
        self.listing = listing
        self.capabilities = capabilities or {}
        self.worker_process: Any = None
        # The quality checker this agent serves (set_quality_checker), if any.
        self._quality: QualityServer | None = None

    # --- identity -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The provider's address (its earnings, keys and explorer page are under it)."""
        return self.listing.provider

    @property
    def gpu_id(self) -> str:
        return self.listing.gpu_id

    @property
    def api(self) -> str:
        return self._http.api

    @property
    def marketplace_url(self) -> str:
        """The provider's page in the marketplace's explorer."""
        return f"{self.api}/explorer/#/account/{self.id}"

    def __repr__(self) -> str:
        return f"ComputeProvider(id={self.id!r}, gpu_id={self.gpu_id!r}, api={self.api!r})"

    # --- synchronous steps of the guide ---------------------------------------------------

    @staticmethod
    def assess_capabilities(home: str | os.PathLike[str] | None = None) -> Capabilities:
        """This machine's GPU (or CPU), measured as the worker measures it."""
        return assess(home)

    @classmethod
    def register(
        cls,
        name: str,
        capabilities: Mapping[str, Any] | Capabilities | None = None,
        pricing_model: Mapping[str, Any] | None = None,
        *,
        region: str = DEFAULT_REGION,
        sla: Mapping[str, Any] | None = None,
        api: str | None = None,
        home: str | os.PathLike[str] | None = None,
    ) -> "ComputeProvider":
        """Lists a GPU named `name`, opening a provider account and key pair first when the
        home has none (as `aitbc init`). The listing starts paused; `start_offering()` puts it
        on the market. `capabilities` defaults to `assess_capabilities()`; `pricing_model` needs
        `base_rate_per_hour` (AITBC per GPU-hour)."""
        home_path = home_dir(home)
        config = HomeConfig.load(home_path)
        base = discover_api(api, home_path)
        http = Transport(base)
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("name must be a non-empty string", field="name")
        caps = cls._capabilities(capabilities, home_path)
        card = http.request("GET", "/v1/rate-card")
        body = cls._new_listing(name, caps, dict(pricing_model or {}), region, sla, card)
        if config.api_key is None:
            config = _open_provider_account(http, home_path, base)
        elif config.role != "provider":
            raise ConfigError(f"the home {home_path} holds a {config.role} account; a provider needs its own home (AITBC_HOME)")
        http = http.with_key(config.api_key or "")
        _ensure_key_registered(http, config)
        listing = Listing.from_wire(http.request("POST", "/v1/listings", json=body))
        # Registered is not yet offered: the guide sets the schedule first, then starts offering.
        listing = Listing.from_wire(http.request("PATCH", f"/v1/listings/{listing.gpu_id}", json={"status": "paused"}))
        return cls(http, home_path, config, listing, dict(caps))

    @classmethod
    def attach(cls, gpu_id: str, *, api: str | None = None, home: str | os.PathLike[str] | None = None) -> "ComputeProvider":
        """The ComputeProvider of an existing listing of this home's provider account."""
        home_path = home_dir(home)
        config = HomeConfig.load(home_path)
        if config.api_key is None or config.role != "provider":
            raise ConfigError(f"no provider account in {home_path}: run register() or `aitbc init`")
        http = Transport(discover_api(api, home_path), config.api_key)
        return cls(http, home_path, config, Listing.from_wire(http.request("GET", f"/v1/listings/{gpu_id}")))

    @staticmethod
    def _capabilities(capabilities: Mapping[str, Any] | Capabilities | None, home: Path) -> dict[str, Any]:
        if capabilities is None:
            capabilities = assess(home)
        if isinstance(capabilities, Capabilities):
            return capabilities.as_dict()
        if not isinstance(capabilities, Mapping):
            raise ValidationError("capabilities must be a dict or a Capabilities", field="capabilities")
        return dict(capabilities)

    @staticmethod
    def _new_listing(name: str, caps: dict[str, Any], pricing: dict[str, Any], region: str, sla: Mapping[str, Any] | None, card: dict[str, Any]) -> dict[str, Any]:
        ignored = [f"capabilities.{k}" for k in sorted(caps) if k not in _CAPABILITY_KEYS]
        body: dict[str, Any] = {"name": name.strip(), "region": region}
        memory = caps.get("gpu_memory")
        if memory is None or memory == 0:
            raise ValidationError("capabilities.gpu_memory: a listing needs the GPU's memory in GiB (this machine reported none)", field="gpu_memory")
        body["memory_gib"] = _whole(memory, "gpu_memory", 1, 4096)
        cuda = caps.get("cuda_version") or WORKER_CUDA_VERSION
        if not isinstance(cuda, str) or not re.match(r"^[1-9][0-9]?\.[0-9]{1,2}$", cuda):
            raise ValidationError(f"cuda_version {cuda!r} is not MAJOR.MINOR", field="cuda_version")
        body["cuda_version"] = cuda
        if "count" in caps:
            body["count"] = _whole(caps["count"], "count", 1, 1024)
        if "max_concurrent_jobs" in caps:
            body["max_concurrent_jobs"] = _whole(caps["max_concurrent_jobs"], "max_concurrent_jobs", 1, 4096)
        models = caps.get("supported_models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ValidationError("supported_models must be a list of model names", field="supported_models")
        # A listing may name only models the marketplace prices (the rate card); the others
        # cannot be sold, so they are left out, and said so.
        on_card = _card_models(card)
        body["models"] = [m for m in models if m in on_card]
        off_card = [f"supported_models {m!r}" for m in models if m not in on_card]
        kinds = list(caps.get("kinds") or ["vector_add", "reduction", "gemm"])
        specialization = caps.get("specialization")
        if specialization is not None:
            if specialization in JOB_KINDS:
                # A specialization that is a job kind is one the listing serves.
                if specialization not in kinds:
                    kinds.append(specialization)
            else:
                ignored.append("capabilities.specialization")
        bad = [k for k in kinds if k not in JOB_KINDS]
        if bad:
            raise ValidationError(f"kinds {bad} are not job kinds ({', '.join(JOB_KINDS)})", field="kinds")
        body["kinds"] = kinds

        if "base_rate_per_hour" not in pricing:
            raise ValidationError("pricing_model.base_rate_per_hour (AITBC per GPU-hour) is required", field="base_rate_per_hour")
        body["base_price"] = _units.amount(pricing["base_rate_per_hour"], "base_rate_per_hour")
        params: dict[str, Any] = {}
        if "peak_multiplier" in pricing:
            params["peak_multiplier_bps"] = _units.bps(pricing["peak_multiplier"], "peak_multiplier")
        if "bulk_discount" in pricing:
            params["bulk_discount_bps"] = _units.bps(pricing["bulk_discount"], "bulk_discount")
        if "bulk_hours_min" in pricing:
            params["bulk_hours_min"] = _whole(pricing["bulk_hours_min"], "bulk_hours_min", 1, 8760)
        if params:
            body["params"] = params
        if "strategy" in pricing:
            if pricing["strategy"] not in STRATEGIES:
                raise ValidationError(f"strategy must be one of {', '.join(STRATEGIES)}", field="strategy")
            body["strategy"] = pricing["strategy"]
        ignored += [f"pricing_model.{k}" for k in sorted(pricing) if k not in _PRICING_KEYS]
        if sla is not None:
            body["sla"] = _sla(sla)
        _not_applied("register", ignored, "a listing has no such field; the marketplace measures performance itself")
        _not_applied("register", off_card, "not on the marketplace's rate card, so no listing can sell it")
        return body

    # --- the listing ----------------------------------------------------------------------

    async def refresh(self) -> Listing:
        self.listing = Listing.from_wire(await self._http.arequest("GET", f"/v1/listings/{self.gpu_id}"))
        return self.listing

    async def _patch(self, body: dict[str, Any]) -> Listing:
        self.listing = Listing.from_wire(await self._http.arequest("PATCH", f"/v1/listings/{self.gpu_id}", json=body))
        return self.listing

    async def _patch_params(self, changes: dict[str, Any], extra: dict[str, Any]) -> Listing:
        # A patch's `params` replaces them all: merge into the current ones.
        await self.refresh()
        return await self._patch({**extra, "params": {**self.listing.params, **changes}})

    async def set_availability(self, schedule: Mapping[str, Any]) -> Listing:
        """The weekly schedule (time zone, windows, maintenance windows) within which the
        listing takes jobs; the server checks it and matches jobs only inside it."""
        if not isinstance(schedule, Mapping):
            raise ValidationError("schedule must be a dict", field="schedule")
        return await self._patch({"availability": dict(schedule)})

    async def start_offering(self, *, wait_s: float = ONLINE_WAIT_S, queue: str | None = None) -> Listing:
        """Puts the listing on the market (active) and makes sure a worker serves it.

        A worker already running for this provider (`aitbc up` on this home runs one) is
        found by its heartbeat. Else, with a queue (`queue=`, or AITBC_WORKER_QUEUE: `sqs` or
        `sqlite:<data-dir>/aitbc.db`) and the `aitbc-worker` binary, one is started here
        (`worker_process`). Else WorkerNotRunning says the command to run; the listing stays
        active."""
        await self._patch({"status": "active"})
        if await self._wait_online(wait_s if queue is None and not os.environ.get("AITBC_WORKER_QUEUE") else min(wait_s, 8.0)):
            return self.listing
        queue = queue or os.environ.get("AITBC_WORKER_QUEUE")
        binary = worker_binary()
        worker_config = WorkerConfig.load(self.home)
        if not worker_config.path.exists():
            # Always a config file: the worker reads its quality_check again for each result,
            # so a checker set after the worker started still applies.
            worker_config.save()
        config = worker_config.path
        cmd = worker_command(binary or "aitbc-worker", api=self.api, key_file=self.config.key_file or str(self.home / KEY_FILE), gpu_id=self.gpu_id, queue=queue or "<sqs|sqlite:DATA_DIR/aitbc.db>", config=config)
        if queue and binary:
            self.worker_process = spawn_worker(cmd, self.config.api_key or "", self.home / f"worker-{self.gpu_id}.log")
            if await self._wait_online(wait_s):
                return self.listing
            raise WorkerNotRunning(f"started `{' '.join(cmd)}` but listing {self.gpu_id} did not come online within {wait_s:.0f} s; see {self.home / f'worker-{self.gpu_id}.log'}")
        raise WorkerNotRunning(
            f"listing {self.gpu_id} is active but no worker serves it (no heartbeat within {wait_s:.0f} s). "
            f"Run `aitbc up` with AITBC_HOME={self.home}, or: AITBC_API_KEY=<api_key from {self.home / 'config.toml'}> {' '.join(cmd)}"
        )

    async def _wait_online(self, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            if (await self.refresh()).online:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)

    async def stop_offering(self) -> Listing:
        """Takes the listing off the market (paused); a started worker is stopped."""
        listing = await self._patch({"status": "paused"})
        if self.worker_process is not None:
            self.worker_process.terminate()
            self.worker_process.wait(timeout=30)
            self.worker_process = None
        return listing

    async def get_status(self) -> ListingStatus:
        return ListingStatus.from_wire(await self._http.arequest("GET", f"/v1/listings/{self.gpu_id}/status"))

    # --- pricing --------------------------------------------------------------------------

    async def enable_dynamic_pricing(self, base_rate: Any = None, demand_threshold: float = 0.8, max_multiplier: float = 2.0, adjustment_frequency: str | None = None) -> Listing:
        """The `dynamic` strategy: the base rate (AITBC per GPU-hour) up to `demand_threshold`
        utilization, then rising linearly to `max_multiplier` times it at 100%. The server
        prices every quote from the utilization measured then, so prices follow demand at
        least as often as any `adjustment_frequency` ("15min", "30s", "1h")."""
        if adjustment_frequency is not None and (not isinstance(adjustment_frequency, str) or not FREQUENCY.match(adjustment_frequency)):
            raise ValidationError("adjustment_frequency is like '15min', '30s' or '1h'", field="adjustment_frequency")
        changes = {"demand_threshold_bps": _units.bps(demand_threshold, "demand_threshold"), "max_multiplier_bps": _units.bps(max_multiplier, "max_multiplier")}
        extra: dict[str, Any] = {"strategy": "dynamic"}
        if base_rate is not None:
            extra["base_price"] = _units.amount(base_rate, "base_rate")
        return await self._patch_params(changes, extra)

    async def set_pricing_strategy(self, strategy: str) -> Listing:
        if strategy not in STRATEGIES:
            raise ValidationError(f"strategy must be one of {', '.join(STRATEGIES)}", field="strategy")
        return await self._patch({"strategy": strategy})

    async def set_service_tiers(self, tiers: Mapping[str, Mapping[str, Any]]) -> Listing:
        """Per-tier rates (AITBC per GPU-hour) for basic, premium and enterprise: the basic
        rate becomes the base price, the others its multipliers (to the basis point)."""
        names = ("basic", "premium", "enterprise")
        unknown = sorted(set(tiers) - set(names))
        if unknown or "basic" not in tiers:
            raise ValidationError(f"tiers are {', '.join(names)} (basic is required); not {unknown}", field="tiers")
        rates = {}
        for n in names:
            if n in tiers:
                if "rate_per_hour" not in tiers[n]:
                    raise ValidationError(f"tiers.{n}.rate_per_hour is required", field="rate_per_hour")
                rates[n] = _units.to_decimal(tiers[n]["rate_per_hour"], f"tiers.{n}.rate_per_hour")
        base = rates["basic"]
        if base <= 0:
            raise ValidationError("tiers.basic.rate_per_hour must be above 0", field="rate_per_hour")
        await self.refresh()
        current = list(self.listing.params.get("tier_bps", [10000, 30000, 50000]))
        tier_bps = [10000] + [int((rates[n] / base * 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP)) if n in rates else current[i + 1] for i, n in enumerate(names[1:])]
        _not_applied("set_service_tiers", sorted({f"{n}.{k}" for n in tiers for k in tiers[n] if k != "rate_per_hour"}), "per-tier job limits, priority and support are not on listings yet")
        return await self._patch({"base_price": _units.amount(base, "tiers.basic.rate_per_hour"), "params": {**self.listing.params, "tier_bps": tier_bps}})

    # --- earnings and analytics -----------------------------------------------------------

    async def get_earnings(self, period: str = "30d", breakdown_by: list[str] | None = None) -> Earnings:
        """Gross, fees, net and daily average over `period` ("24h", "30d", up to 366 days),
        broken down by "client", "model_type" and "time_of_day" (local hours of the region)."""
        if not isinstance(period, str) or not PERIOD.match(period):
            raise ValidationError(f"period {period!r}: write <N>h or <N>d, from 1h to 366d", field="period")
        wanted = list(breakdown_by or [])
        bad = [b for b in wanted if b not in BREAKDOWNS]
        if bad:
            raise ValidationError(f"breakdown_by {bad}: choose from {', '.join(BREAKDOWNS)}", field="breakdown_by")
        earnings = Earnings.from_wire(await self._http.arequest("GET", f"/v1/listings/{self.gpu_id}/earnings", params={"period": period}))
        earnings.breakdown = {b: getattr(earnings, BREAKDOWNS[b]) for b in wanted}
        return earnings

    async def get_analytics(self, period: str = "30d") -> Analytics:
        """The listing's analytics over `period` ("24h", "30d", up to 366 days), measured by the
        marketplace from its receipts: utilization rate, peak demand hours (local), the most
        profitable models, and the period's earnings by client, model and hour of day."""
        if not isinstance(period, str) or not PERIOD.match(period):
            raise ValidationError(f"period {period!r}: write <N>h or <N>d, from 1h to 366d", field="period")
        return Analytics.from_wire(await self._http.arequest("GET", f"/v1/listings/{self.gpu_id}/analytics", params={"period": period}))

    # --- models ---------------------------------------------------------------------------

    async def host_specialized_model(self, model_name: str, model_path: str | os.PathLike[str], requirements: Mapping[str, Any] | None = None, premium_rate: Any = None) -> dict[str, str]:
        """Adds a GGUF model (llama architecture) to this machine's worker config
        (`<home>/worker.toml` `[[models]]`, with its sha256, which the worker checks before
        loading it). The worker started by start_offering() loads it and reports it in its
        heartbeats; the listing then serves `text_generation` jobs of it.

        `premium_rate` (AITBC per GPU-hour, like the base price) is the listing's own price of
        the model (`PATCH /v1/listings/{id}` `model_prices`): a job for it pays that rate
        instead of the base price, at least the rate card's rate when the model is on the card.
        With it, a model that is not on the rate card (the guide's `custom-medical-llm`) can be
        hosted; without it, the model must be on the card, or no job could pay for it."""
        if not isinstance(model_name, str) or not _MODEL_NAME.fullmatch(model_name):
            raise ValidationError(f"model_name {model_name!r} must be a model name (a-z, 0-9, '.', ':', '_', '-'; at most 64), e.g. custom-medical-llm", field="model_name")
        rate: str | None = None
        if premium_rate is not None:
            rate = _units.amount(premium_rate, "premium_rate")
            if Decimal(rate) <= 0:
                raise ValidationError(f"premium_rate {premium_rate!r} must be above 0 (AITBC per GPU-hour)", field="premium_rate")
        else:
            card = await self._http.arequest("GET", "/v1/rate-card")
            if model_name not in _card_models(card):
                raise ValidationError(f"model {model_name!r} is not on the marketplace's rate card, so no job can pay for it: give premium_rate to price it on this listing", field="model_name")
        path = Path(model_path)
        if path.suffix != ".gguf" or not path.is_file():
            raise ValidationError(f"model_path {path}: the worker loads GGUF files (*.gguf) that exist", field="model_path")
        if requirements:
            need = requirements.get("gpu_memory")
            if need is not None and need > self.listing.memory_gib:
                raise ValidationError(f"the model needs {need} GiB; listing {self.gpu_id} has {self.listing.memory_gib}", field="requirements")
            _not_applied("host_specialized_model", sorted(k for k in requirements if k != "gpu_memory"), "the marketplace does not record model requirements")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if rate is not None:
            # The price first: the server checks the name and the rate, and a refusal leaves the
            # worker's config as it was. Other models keep their prices (a merge patch).
            await self._patch({"model_prices": {model_name: rate}})
        config = WorkerConfig.load(self.home)
        config.upsert_model(model_name, str(path.resolve()), digest.hexdigest())
        config.save()
        done = {"name": model_name, "path": str(path.resolve()), "sha256": digest.hexdigest(), "config": str(config.path)}
        if rate is not None:
            done["premium_rate"] = rate
        return done

    # --- the guide's calls without server support yet ---------------------------------------

    async def define_sla(
        self,
        availability_target: Any = None,
        response_time_target: Any = None,
        completion_rate_target: Any = None,
        penalty_rate: Any = None,
    ) -> Listing:
        """The listing's SLA: jobs should start within `response_time_target` seconds
        (1..=3600) of submission; a job that starts later refunds `penalty_rate` (0..=1) of its
        price to the client, out of the provider's share. Unchanged parts keep their values.
        The marketplace measures availability and completion rates itself (get_reputation);
        targets for them are not stored (a NotAppliedWarning says so)."""
        await self.refresh()
        sla = dict(self.listing.sla)
        if response_time_target is not None:
            sla["response_time_s"] = _whole(response_time_target, "response_time_target", 1, 3600)
        if penalty_rate is not None:
            rate = _units.bps(penalty_rate, "penalty_rate")
            if rate > 10_000:
                raise ValidationError(f"penalty_rate {penalty_rate!r} must be 0..=1", field="penalty_rate")
            sla["penalty_rate_bps"] = rate
        ignored = [n for n, v in (("availability_target", availability_target), ("completion_rate_target", completion_rate_target)) if v is not None]
        for name, value in (("availability_target", availability_target), ("completion_rate_target", completion_rate_target)):
            if value is not None and not 0 <= _units.bps(value, name) <= 10_000:
                raise ValidationError(f"{name} {value!r} must be 0..=1", field=name)
        _not_applied("define_sla", ignored, "the marketplace measures these rates itself (get_reputation); contracts carry an availability guarantee")
        return await self._patch({"sla": sla})

    async def create_contract(
        self,
        client_id: str,
        duration_hours: int,
        fixed_rate: Any,
        guaranteed_availability: Any = 0,
        sla_penalties: bool = True,
        offer_valid_hours: int | None = None,
    ) -> Contract:
        """Offers the client `client_id` (its address, or the agent name it registered) a
        fixed rate (AITBC per GPU-hour) for `duration_hours` GPU-hours. Once the client accepts
        (`Client.accept_contract`), its jobs on this provider's listings pay that rate until
        the hours are used. `guaranteed_availability` (0..=1) is the share of its jobs that
        start within the listing's SLA response time; with `sla_penalties`, a job completing
        below it pays the listing's SLA penalty."""
        if not isinstance(client_id, str) or not client_id:
            raise ValidationError("client_id must be a client's address or agent name", field="client_id")
        body: dict[str, Any] = {
            "client": client_id,
            "hours": _whole(duration_hours, "duration_hours", 1, 8760),
            "fixed_rate": _units.amount(fixed_rate, "fixed_rate"),
            "guaranteed_availability_bps": _units.bps(guaranteed_availability, "guaranteed_availability"),
            "sla_penalties": bool(sla_penalties),
        }
        if body["guaranteed_availability_bps"] > 10_000:
            raise ValidationError(f"guaranteed_availability {guaranteed_availability!r} must be 0..=1", field="guaranteed_availability")
        if offer_valid_hours is not None:
            body["offer_valid_hours"] = _whole(offer_valid_hours, "offer_valid_hours", 1, 720)
        return Contract.from_wire(await self._http.arequest("POST", "/v1/contracts", json=body))

    async def get_contract(self, client: str) -> Contract:
        """The contract with `client` (an address): hours left, measured availability."""
        return Contract.from_wire(await self._http.arequest("GET", f"/v1/contracts/{self.id}/{client}"))

    async def configure_queue(
        self,
        max_queue_size: int = 1000,
        priority_algorithm: str = "fifo",
        preemption_policy: str = "none",
        timeout_handling: str = "auto_retry",
    ) -> Listing:
        """The listing's queue: at most `max_queue_size` jobs waiting (a submission past it is
        refused before anything is held), claimed in `priority_algorithm` order ("fifo", or
        "weighted_fair_share": tier first, then fair shares across clients), `preemption_policy`
        "none" or "graceful", and `timeout_handling` "auto_retry" (a timed-out job is queued
        again up to the marketplace's attempt limit) or "fail" (one attempt)."""
        if isinstance(max_queue_size, bool) or not isinstance(max_queue_size, int) or max_queue_size < 1:
            raise ValidationError("max_queue_size must be a whole number of at least 1", field="max_queue_size")
        if priority_algorithm not in QUEUE_PRIORITIES:
            raise ValidationError(f"priority_algorithm must be one of {', '.join(QUEUE_PRIORITIES)}", field="priority_algorithm")
        if preemption_policy not in PREEMPTIONS:
            raise ValidationError(f"preemption_policy must be one of {', '.join(PREEMPTIONS)}", field="preemption_policy")
        if timeout_handling not in TIMEOUT_HANDLING:
            raise ValidationError(f"timeout_handling must be one of {', '.join(TIMEOUT_HANDLING)}", field="timeout_handling")
        config = {"max_queue_size": max_queue_size, "priority": priority_algorithm, "preemption": preemption_policy, "attempts_max": TIMEOUT_HANDLING[timeout_handling]}
        return await self._patch({"queue_config": config})

    async def enable_load_balancing(self, strategy: str = "adaptive", metrics: list[str] | None = None, optimization_target: str = "throughput") -> Listing:
        """Joins this listing to its provider's load-balancing group: when routing picks one of
        the provider's listings that has a policy, the job goes to the one the policy prefers
        among the provider's listings in the region that fit the job, have a policy and quote
        no higher a price. `strategy` "least_loaded" (fewest jobs, running and waiting, per
        slot), "adaptive" (by `optimization_target`: "throughput", the most free slots;
        "latency", the fewest jobs per slot) or "none" (leave the group). `metrics` name what
        the guide balances on; the marketplace balances on what it measures live: running jobs
        against capacity ("gpu_utilization", "queue_length"); "memory_usage" and
        "job_completion_time" are named in a NotAppliedWarning. The exact rule is in the
        repository's ARCHITECTURE.md. Call it on each listing that should take part."""
        if strategy not in BALANCE_STRATEGIES:
            raise ValidationError(f"strategy must be one of {', '.join(BALANCE_STRATEGIES)}", field="strategy")
        if optimization_target not in OPTIMIZATION_TARGETS:
            raise ValidationError(f"optimization_target must be one of {', '.join(OPTIMIZATION_TARGETS)}", field="optimization_target")
        wanted = list(metrics or [])
        if not all(isinstance(m, str) for m in wanted):
            raise ValidationError("metrics must be a list of metric names", field="metrics")
        unknown = [m for m in wanted if m not in BALANCE_METRICS]
        if unknown:
            raise ValidationError(f"metrics {unknown}: choose from {', '.join(BALANCE_METRICS)}", field="metrics")
        _not_applied("enable_load_balancing", [f"metrics {m!r}" for m in wanted if not BALANCE_METRICS[m]], "routing balances on running and waiting jobs against capacity, which the marketplace measures live")
        return await self._patch({"load_balancing": {"strategy": strategy, "optimization_target": optimization_target}})

    async def configure_monitoring(self, health_checks: Mapping[str, Any] | None = None, alerts: Mapping[str, Any] | None = None) -> Monitoring:
        """The listing's health monitoring. Its workers report GPU status, memory use and job
        results as often as the shortest of `health_checks` ("30s", "5min"; the server takes
        10 s to 1 h); checks the worker cannot measure (network latency) are named in a
        NotAppliedWarning. `alerts` are recorded as the listing's alerts
        (`get_alerts()`) when a report crosses them: "gpu_failure": "immediate", "high_memory":
        "85%", "job_failure_rate": "10%", "high_temperature": 85 (degrees C),
        "high_utilization": "95%", "queue_length": 50."""
        checks = dict(health_checks or {})
        seconds = []
        unmeasured = []
        for name, every in checks.items():
            if not isinstance(every, str) or not FREQUENCY.match(every):
                raise ValidationError(f"health_checks.{name}: an interval like '30s', '5min' or '1h', not {every!r}", field="health_checks")
            if name not in HEALTH_CHECKS:
                unmeasured.append(f"health_checks.{name}")
                continue
            seconds.append(_seconds(every))
        interval = min(seconds) if seconds else 60
        clamped = min(max(interval, REPORT_INTERVAL_S[0]), REPORT_INTERVAL_S[1])
        if clamped != interval:
            unmeasured.append(f"an interval of {interval} s (reports come every {clamped} s)")
        _not_applied("configure_monitoring", unmeasured, "the worker does not measure it, or the server bounds it")
        thresholds: dict[str, Any] = {"gpu_failure": False}
        for name, value in dict(alerts or {}).items():
            if name not in ALERTS:
                raise ValidationError(f"alerts.{name}: choose from {', '.join(ALERTS)}", field="alerts")
            key, parse = ALERTS[name]
            thresholds[key] = parse(value, f"alerts.{name}")
        body = {"report_interval_s": clamped, "alerts": thresholds}
        return Monitoring.from_wire(await self._http.arequest("PUT", f"/v1/listings/{self.gpu_id}/monitoring", json=body))

    async def get_alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        """The listing's alerts, newest first (kept 7 days; one per metric per 5 minutes)."""
        return list((await self._http.arequest("GET", f"/v1/listings/{self.gpu_id}/alerts", params={"limit": limit}))["items"])

    async def get_health(self) -> dict[str, Any] | None:
        """The latest health report of the listing's worker (`at_ms`, `worker_id`, `report`)."""
        return (await self._http.arequest("GET", f"/v1/listings/{self.gpu_id}/alerts", params={"limit": 1})).get("health")

    async def get_reputation(self) -> Reputation:
        """This provider's reputation, measured by the marketplace from its jobs and its clients'
        ratings (the formula is in the repository's ARCHITECTURE.md)."""
        return Reputation.from_wire(await self._http.arequest("GET", f"/v1/providers/{self.id}/reputation"))

    async def set_quality_checker(self, checker: Checker | None) -> list[str] | None:
        """Runs `checker` on each job result before the worker completes the job. The checker
        (a coroutine function or a plain function) gets a `JobResult` (`completion_time` and
        `timeout` in seconds, `error_rate`, `output`, `job_id`, `kind`, `model`) and returns
        `(ok, reason)` or a bool. A refusal fails the job for good: its hold is voided and the
        client pays nothing; a checker that raises fails it retryably.

        The checker runs in this agent's event loop, served on a Unix socket; the worker of
        this home (`aitbc up`'s, or the one start_offering() started) runs the command this
        registers as `quality_check` in `<home>/worker.toml` (returned), reading it again for
        each result. While this event loop is not running, results fail retryably rather than
        go unchecked; `set_quality_checker(None)` removes the check."""
        if checker is not None and not callable(checker):
            raise ValidationError("checker must be a function of a job result, or None", field="checker")
        config = WorkerConfig.load(self.home)
        if checker is None:
            config.quality_check = None
            config.save()
            if self._quality is not None:
                await self._quality.close()
                self._quality = None
            return None
        if self._quality is None:
            server = QualityServer(checker, socket_path(self.home))
            await server.start()
            self._quality = server
        else:
            # Swapped in place: the registered command and socket stay valid throughout.
            self._quality.checker = checker
        config.quality_check = self._quality.command()
        config.save()
        return config.quality_check

    async def join_swarm(self, swarm_type: str = "market_intelligence", contribution_level: str = "active", data_sharing: str = "performance_metrics") -> Sharing:
        """Joins the marketplace's one swarm, its market-intelligence group (every `swarm_type`
        of the guide: "load_balancing", "market_intelligence", "pricing"): with `data_sharing`
        "performance_metrics" the provider's measured listing metrics count in the public market
        view (`GET /v1/market/intelligence`); "active" members also post signals
        (share_market_data, participate_in_pricing); "passive" ones only read."""
        if swarm_type not in SWARM_TYPES:
            raise ValidationError(f"swarm_type must be one of {', '.join(SWARM_TYPES)}", field="swarm_type")
        if contribution_level not in ("active", "passive"):
            raise ValidationError("contribution_level must be 'active' or 'passive'", field="contribution_level")
        if data_sharing not in ("performance_metrics", "none"):
            raise ValidationError("data_sharing must be 'performance_metrics' or 'none'", field="data_sharing")
        body = {"performance_metrics": data_sharing == "performance_metrics", "contribution_level": contribution_level}
        return Sharing.from_wire(await self._http.arequest("PUT", f"/v1/providers/{self.id}/sharing", json=body))

    async def share_market_data(self, data: Mapping[str, Any]) -> Signal:
        """Posts what the provider sees in its listing's region (current_demand, competitive_landscape:
        low/moderate/high; price_trends: decreasing/stable/increasing, or rising/falling;
        resource_constraints: none/gpu_memory/compute/network/storage). Shown as counts in
        the market view, apart from its measured figures. Needs join_swarm(contribution_level="active")."""
        if not isinstance(data, Mapping):
            raise ValidationError("data must be a dict", field="data")
        unknown = sorted(set(data) - set(OBSERVATION_FIELDS))
        if unknown:
            raise ValidationError(f"unknown market data {unknown}: give {', '.join(OBSERVATION_FIELDS)}", field="data")
        observation = {}
        for name, allowed in OBSERVATION_FIELDS.items():
            value = SYNONYMS.get(data.get(name), data.get(name))
            if value not in allowed:
                raise ValidationError(f"{name} must be one of {', '.join(allowed)}", field=name)
            observation[name] = value
        return Signal.from_wire(await self._http.arequest("POST", "/v1/market/signals", json={"region": self.listing.region, "observation": observation}))

    async def participate_in_pricing(self, proposal: Mapping[str, Any]) -> Signal:
        """Records a pricing proposal for the listing's region (proposed_base_rate in AITBC per
        GPU-hour, rationale, expected_impact). Proposals are shown aggregated (count, least,
        median, greatest) in the market view and never change any price."""
        if not isinstance(proposal, Mapping) or "proposed_base_rate" not in proposal:
            raise ValidationError("proposal needs proposed_base_rate (AITBC per GPU-hour)", field="proposed_base_rate")
        unknown = sorted(set(proposal) - {"proposed_base_rate", "rationale", "expected_impact"})
        if unknown:
            raise ValidationError(f"unknown proposal fields {unknown}", field="proposal")
        body = {
            "proposed_base_rate": _units.amount(proposal["proposed_base_rate"], "proposed_base_rate"),
            "rationale": str(proposal.get("rationale", "")),
            "expected_impact": str(proposal.get("expected_impact", "")),
        }
        return Signal.from_wire(await self._http.arequest("POST", "/v1/market/signals", json={"region": self.listing.region, "proposal": body}))

    async def get_market_intelligence(self, hours: int = 24) -> dict[str, Any]:
        """The public market view of the listing's region over the last `hours` (1..=168)."""
        return dict(await self._http.arequest("GET", "/v1/market/intelligence", params={"region": self.listing.region, "hours": hours}))

    async def enable_batch_processing(self, min_batch_size: int, batch_discount: Any, processing_window: Any = None, quality_guarantee: Any = None) -> Listing:
        """A batch discount on the listing: a batch of at least `min_batch_size` jobs
        (2..=100, one `POST /v1/batches`) pays `1 - batch_discount` (0..=1, whole percent) of
        each job's price. Batches run as their jobs are claimed; the marketplace stores no
        processing window or quality guarantee (a NotAppliedWarning says so)."""
        size = _whole(min_batch_size, "min_batch_size", 2, 100)
        percent = _units.to_decimal(batch_discount, "batch_discount") * 100
        if percent != percent.to_integral_value() or not 0 <= percent <= 100:
            raise ValidationError(f"batch_discount {batch_discount!r} must be 0..=1 in whole percent (0.3, not 0.305)", field="batch_discount")
        ignored = [n for n, v in (("processing_window", processing_window), ("quality_guarantee", quality_guarantee)) if v is not None]
        _not_applied("enable_batch_processing", ignored, "batches are not scheduled in windows, and quality is measured as reputation")
        return await self._patch({"batch": {"min_batch_size": size, "discount_percent": int(percent)}})

    async def reserve_capacity(
        self,
        client_id: str,
        reserved_gpu_memory: int | None = None,
        reservation_duration: str = "30d",
        reservation_fee: Any = None,
        reserved_slots: int | None = None,
        offer_valid_hours: int | None = None,
    ) -> Reservation:
        """Offers the client `client_id` (address or agent name) a share of this listing:
        `reserved_gpu_memory` GiB (converted to whole slots of its concurrent jobs) or
        `reserved_slots`, for `reservation_duration` ("<N>h" or "<N>d", up to 90d) from its
        acceptance, at `reservation_fee` AITBC. The client accepts and pays
        (`Client.accept_reservation`): the fee goes to this provider's earnings less the
        platform's fee, and the listing keeps that many queue places for the client."""
        if not isinstance(client_id, str) or not client_id:
            raise ValidationError("client_id must be a client's address or agent name", field="client_id")
        if (reserved_gpu_memory is None) == (reserved_slots is None):
            raise ValidationError("give reserved_gpu_memory (GiB) or reserved_slots", field="reserved_gpu_memory")
        if reservation_fee is None:
            raise ValidationError("reservation_fee (AITBC) is required", field="reservation_fee")
        if not isinstance(reservation_duration, str) or not DURATION.match(reservation_duration):
            raise ValidationError(f"reservation_duration {reservation_duration!r}: write <N>h or <N>d, from 1h to 90d", field="reservation_duration")
        body: dict[str, Any] = {"gpu_id": self.gpu_id, "client": client_id, "duration": reservation_duration, "fee": _units.amount(reservation_fee, "reservation_fee")}
        if reserved_gpu_memory is not None:
            body["gpu_memory_gib"] = _whole(reserved_gpu_memory, "reserved_gpu_memory", 1, 4096)
        else:
            body["slots"] = _whole(reserved_slots, "reserved_slots", 1, 4096)
        if offer_valid_hours is not None:
            body["offer_valid_hours"] = _whole(offer_valid_hours, "offer_valid_hours", 1, 720)
        return Reservation.from_wire(await self._http.arequest("POST", "/v1/reservations", json=body))

    async def get_reservation(self, reservation_id: str) -> Reservation:
        return Reservation.from_wire(await self._http.arequest("GET", f"/v1/reservations/{reservation_id}"))

    async def get_optimization_suggestions(self) -> list[Suggestion]:
        """Suggestions from the listing's measured data of the last 7 days: its price against
        the region's median, its utilization, hours its schedule closes while the region has
        demand, its failure rate (the rules are in the repository's ARCHITECTURE.md)."""
        answer = await self._http.arequest("GET", f"/v1/listings/{self.gpu_id}/suggestions")
        return [Suggestion.from_wire(item) for item in answer["items"]]


# configure_monitoring: the checks a worker measures, the server's report interval bounds, and
# the guide's alert names with the threshold each sets.
HEALTH_CHECKS = ("gpu_status", "memory_usage", "job_success_rate", "gpu_temperature", "gpu_utilization", "queue_length")
REPORT_INTERVAL_S = (10, 3600)


def _seconds(every: str) -> int:
    number = int(re.sub(r"[a-z]+$", "", every))
    return number * {"s": 1, "min": 60, "h": 3600}[re.sub(r"^[0-9]+", "", every)]


def _percent_bps(value: Any, field: str) -> int:
    text = str(value).strip()
    if not re.match(r"^[0-9]{1,3}(\.[0-9]{1,2})?%$", text):
        raise ValidationError(f"{field}: a percentage like '85%', not {value!r}", field=field)
    bps = int((Decimal(text[:-1]) * 100).to_integral_value())
    if not 1 <= bps <= 10_000:
        raise ValidationError(f"{field}: between 0.01% and 100%", field=field)
    return bps


def _immediate(value: Any, field: str) -> bool:
    if value not in ("immediate", True):
        raise ValidationError(f"{field}: 'immediate' (an alert at the first report of a failed GPU)", field=field)
    return True


def _celsius(value: Any, field: str) -> int:
    text = str(value).strip().removesuffix("C").removesuffix("°")
    return _whole(int(text) if text.isdigit() else value, field, 1, 150)


def _jobs(value: Any, field: str) -> int:
    return _whole(value, field, 1, 100_000)


ALERTS: dict[str, tuple[str, Any]] = {
    "gpu_failure": ("gpu_failure", _immediate),
    "high_memory": ("memory_used_bps_max", _percent_bps),
    "job_failure_rate": ("failure_rate_bps_max", _percent_bps),
    "high_utilization": ("gpu_utilization_bps_max", _percent_bps),
    "high_temperature": ("gpu_temperature_c_max", _celsius),
    "queue_length": ("queue_length_max", _jobs),
}
SWARM_TYPES = ("load_balancing", "market_intelligence", "pricing")
# enable_load_balancing: the server's strategies and targets (aitbc_core::routing), and the
# guide's metric names with whether routing reads them.
BALANCE_STRATEGIES = ("adaptive", "least_loaded", "none")
OPTIMIZATION_TARGETS = ("throughput", "latency")
BALANCE_METRICS = {"gpu_utilization": True, "queue_length": True, "memory_usage": False, "job_completion_time": False}
LEVELS = ("low", "moderate", "high")
OBSERVATION_FIELDS = {
    "current_demand": LEVELS,
    "price_trends": ("decreasing", "stable", "increasing"),
    "resource_constraints": ("none", "gpu_memory", "compute", "network", "storage"),
    "competitive_landscape": LEVELS,
}
SYNONYMS = {"rising": "increasing", "falling": "decreasing", "flat": "stable", "medium": "moderate"}


def _card_models(card: Mapping[str, Any]) -> set[str]:
    """The model names of a `GET /v1/rate-card` answer (`RateCardOut`)."""
    return {entry["model"] for entry in card.get("models", [])}


def _sla(sla: Mapping[str, Any]) -> dict[str, int]:
    unknown = set(sla) - {"response_time_s", "penalty_rate_bps", "response_time_target", "penalty_rate"}
    if unknown:
        raise ValidationError(f"sla: unknown key(s) {sorted(unknown)}", field="sla")
    out: dict[str, int] = {}
    if "response_time_s" in sla or "response_time_target" in sla:
        out["response_time_s"] = _whole(sla.get("response_time_s", sla.get("response_time_target")), "response_time_s", 1, 3600)
    if "penalty_rate_bps" in sla:
        out["penalty_rate_bps"] = _whole(sla["penalty_rate_bps"], "penalty_rate_bps", 0, 10000)
    elif "penalty_rate" in sla:
        out["penalty_rate_bps"] = _units.bps(sla["penalty_rate"], "penalty_rate")
    return out
