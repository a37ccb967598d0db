"""What the SDK returns: the API's objects with exact decimals as `Decimal` and fractions as
`float`. Each model names the OpenAPI schema it reads (`SCHEMA`); its fields are that schema's
properties, except those marked derived, and a test checks both directions against the served
document, so a model cannot drift from the server. `raw` keeps the object as it came."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal
from typing import Any, Callable, ClassVar, Mapping, TypeVar

T = TypeVar("T", bound="WireModel")


def derived(default: Any = None) -> Any:
    """A field the SDK computes, not a property of the schema."""
    return field(default=default, metadata={"derived": True})


def _dec(v: Any) -> Decimal:
    return Decimal(str(v))


def _dec_map(v: Any) -> dict[str, Decimal]:
    return {str(k): Decimal(str(p)) for k, p in (v or {}).items()}


@dataclass
class WireModel:
    SCHEMA: ClassVar[str]
    # Converters of wire values, by field name (decimal strings to Decimal, ...).
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {}
    raw: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"derived": True})

    @classmethod
    def wire_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if not f.metadata.get("derived")]

    @classmethod
    def from_wire(cls: type[T], data: dict[str, Any]) -> T:
        values: dict[str, Any] = {"raw": data}
        for f in fields(cls):
            if f.metadata.get("derived") or f.name not in data:
                continue
            value = data[f.name]
            convert = cls.CONVERT.get(f.name)
            values[f.name] = convert(value) if (convert and value is not None) else value
        obj = cls(**values)
        obj._derive()
        return obj

    def _derive(self) -> None:
        """Fills the derived fields."""


@dataclass
class Listing(WireModel):
    """A GPU listing with its live counters (`ListingView`). `base_price` and `model_prices`
    (the listing's own price per model, e.g. set by `host_specialized_model(premium_rate=...)`)
    are AITBC per GPU-hour."""

    SCHEMA: ClassVar[str] = "ListingView"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {"base_price": _dec, "earned": _dec, "gpu_seconds_total": _dec, "model_prices": _dec_map}
    gpu_id: str = ""
    provider: str = ""
    name: str = ""
    memory_gib: int = 0
    cuda_version: str = ""
    base_price: Decimal = Decimal(0)
    region: str = ""
    count: int = 1
    models: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    strategy: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    availability: dict[str, Any] | None = None
    # Its load-balancing policy (`strategy`, `optimization_target`), if it joined its provider's group.
    load_balancing: dict[str, Any] | None = None
    max_concurrent_jobs: int = 1
    sla: dict[str, Any] = field(default_factory=dict)
    model_prices: dict[str, Decimal] = field(default_factory=dict)
    status: str = ""
    queue: str = ""
    created_at_ms: int = 0
    active_jobs: int = 0
    online: bool = False
    last_heartbeat_ms: int | None = None
    completed_jobs: int = 0
    gpu_seconds_total: Decimal = Decimal(0)
    earned: Decimal = Decimal(0)
    loaded_models: list[str] = field(default_factory=list)
    queue_room: int = 0
    # Slots that live capacity reservations hold now (queue places kept for their clients).
    reserved_slots: int = 0
    # The listing's `Reputation`: `score_bps` (0..=10000) and the measured rates behind it.
    reputation: dict[str, Any] = field(default_factory=dict)


@dataclass
class Contract(WireModel):
    """A fixed-rate contract (`ContractRecord`): `fixed_rate` is AITBC per GPU-hour, `remaining`
    GPU-seconds; `guaranteed_availability` and `availability` (measured) are fractions."""

    SCHEMA: ClassVar[str] = "ContractRecord"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {"fixed_rate": _dec, "remaining": _dec}
    provider: str = ""
    client: str = ""
    fixed_rate: Decimal = Decimal(0)
    hours: int = 0
    state: str = ""
    guaranteed_availability_bps: int = 0
    sla_penalties: bool = True
    offered_at_ms: int = 0
    offer_expires_at_ms: int = 0
    accepted_at_ms: int | None = None
    remaining: Decimal | None = None
    jobs_completed: int = 0
    jobs_available: int = 0
    availability_bps: int | None = None
    guaranteed_availability: float = derived(0.0)
    availability: float | None = derived()

    def _derive(self) -> None:
        self.guaranteed_availability = self.guaranteed_availability_bps / 10_000
        self.availability = None if self.availability_bps is None else self.availability_bps / 10_000


@dataclass
class Reservation(WireModel):
    """A capacity reservation (`Reservation`): `slots` of a listing for `duration_hours` from
    acceptance, for `fee` AITBC (of which `platform_fee` is the platform's)."""

    SCHEMA: ClassVar[str] = "Reservation"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {"fee": _dec, "platform_fee": _dec}
    reservation_id: str = ""
    gpu_id: str = ""
    provider: str = ""
    client: str = ""
    slots: int = 0
    gpu_memory_gib: int | None = None
    duration_hours: int = 0
    fee: Decimal = Decimal(0)
    platform_fee: Decimal = Decimal(0)
    state: str = ""
    offered_at_ms: int = 0
    offer_expires_at_ms: int = 0
    accepted_at_ms: int | None = None
    ends_at_ms: int | None = None


@dataclass
class ListingStatus(WireModel):
    """A listing's live status (`ListingStatusView`); `utilization` is a float in [0, 1]."""

    SCHEMA: ClassVar[str] = "ListingStatusView"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "base_price": _dec, "earned": _dec, "gpu_seconds_total": _dec,
        "realized_rate_per_hour": _dec, "utilization": lambda v: float(Decimal(str(v))),
    }
    gpu_id: str = ""
    name: str = ""
    region: str = ""
    status: str = ""
    online: bool = False
    last_heartbeat_ms: int | None = None
    strategy: str = ""
    base_price: Decimal = Decimal(0)
    active_jobs: int = 0
    capacity: int = 0
    utilization: float = 0.0
    queued_jobs: int = 0
    completed_jobs: int = 0
    gpu_seconds_total: Decimal = Decimal(0)
    earned: Decimal = Decimal(0)
    realized_rate_per_hour: Decimal = Decimal(0)


def _amounts(v: dict[str, Any]) -> dict[str, Decimal]:
    return {k: Decimal(str(x)) for k, x in v.items()}


@dataclass
class Reputation:
    """A provider's reputation (`GET /v1/providers/{address}/reputation`), in the guide's
    terms: fractions as floats in [0, 1], times in seconds, the rating on the 1-5 scale; None
    where nothing is measured yet. `wire` keeps the server's exact integers."""

    overall_score: float
    success_rate: float | None
    completion_rate: float | None
    sla_breach_rate: float | None
    avg_response_time: float | None
    p95_response_time: float | None
    client_satisfaction: float | None
    wire: dict[str, Any]

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> "Reputation":
        r = dict(body["reputation"])

        def bps(name: str) -> float | None:
            return None if r.get(name) is None else r[name] / 10_000

        def seconds(name: str) -> float | None:
            return None if r.get(name) is None else r[name] / 1_000

        rating = r.get("mean_rating_centi")
        return cls(
            overall_score=r["score_bps"] / 10_000,
            success_rate=bps("success_rate_bps"),
            completion_rate=bps("completion_rate_bps"),
            sla_breach_rate=bps("sla_breach_rate_bps"),
            avg_response_time=seconds("mean_start_ms"),
            p95_response_time=seconds("p95_start_ms"),
            client_satisfaction=None if rating is None else rating / 100,
            wire=dict(body),
        )


@dataclass
class Earnings(WireModel):
    """A listing's earnings over a period (`Earnings`), in AITBC. `total` is the gross (the
    guide's "Total Revenue"); `breakdown` holds the breakdowns asked for, by the guide's names."""

    SCHEMA: ClassVar[str] = "Earnings"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "gross": _dec, "fees": _dec, "net": _dec, "daily_average": _dec,
        "by_client": _amounts, "by_model": _amounts, "by_hour_of_day": _amounts,
    }
    gpu_id: str = ""
    period: str = ""
    jobs: int = 0
    gross: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    net: Decimal = Decimal(0)
    daily_average: Decimal = Decimal(0)
    by_client: dict[str, Decimal] = field(default_factory=dict)
    by_model: dict[str, Decimal] = field(default_factory=dict)
    by_hour_of_day: dict[str, Decimal] = field(default_factory=dict)
    top_client: str | None = None
    truncated: bool = False
    total: Decimal = derived(Decimal(0))
    breakdown: dict[str, dict[str, Decimal]] = derived()

    def _derive(self) -> None:
        self.total = self.gross
        if self.breakdown is None:
            self.breakdown = {}


@dataclass
class Receipt(WireModel):
    """A signed usage receipt. `raw` is exactly what the server sent: verify that
    (`aitbc_crypto.verify_receipt(receipt)` does), never a re-serialization."""

    SCHEMA: ClassVar[str] = "Receipt"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {"units": _dec, "unit_price": _dec, "price": _dec}
    version: int = 0
    receipt_id: str = ""
    job_id: str = ""
    gpu_id: str = ""
    attempt: int = 0
    provider: str = ""
    client: str = ""
    units: Decimal = Decimal(0)
    unit_type: str = ""
    unit_price: Decimal = Decimal(0)
    price: Decimal = Decimal(0)
    model: str | None = None
    started_at: int = 0
    completed_at: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    signature: dict[str, str] = field(default_factory=dict)
    countersignature: dict[str, str] | None = None
    # The API it was read from: verify_receipt reads that marketplace's published keys when
    # given no keys and no api.
    source_api: str | None = derived()


@dataclass
class Job(WireModel):
    """A job (`JobRecord`). `state` is `status.state`: queued, claimed, running, completed,
    settled, failed, cancelled or expired. `unit_price` is AITBC per GPU-second."""

    SCHEMA: ClassVar[str] = "JobRecord"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {"max_price": _dec, "price": _dec, "unit_price": _dec, "units_max": _dec}
    job_id: str = ""
    client: str = ""
    provider: str = ""
    gpu_id: str = ""
    queue: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    tier: str = ""
    units_max: Decimal = Decimal(0)
    unit_price: Decimal = Decimal(0)
    max_price: Decimal = Decimal(0)
    hold_id: str = ""
    timeout_ms: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    created_at_ms: int = 0
    claimed_at_ms: int | None = None
    finished_at_ms: int | None = None
    model: str | None = None
    output: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    price: Decimal | None = None
    receipt_id: str | None = None
    settlement: dict[str, Any] | None = None
    state: str = derived("")

    TERMINAL: ClassVar[frozenset[str]] = frozenset({"completed", "settled", "failed", "cancelled", "expired"})

    def _derive(self) -> None:
        self.state = str(self.status.get("state", ""))

    @property
    def done(self) -> bool:
        return self.state in self.TERMINAL


@dataclass
class Quote(WireModel):
    """A signed quote (`SignedQuote`); pass it to `Client.submit_job(quote=...)` to hold its
    price. `unit_price` is AITBC per GPU-second, `max_price` what the job would hold."""

    SCHEMA: ClassVar[str] = "SignedQuote"
    terms: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, str] = field(default_factory=dict)
    quote_id: str = derived("")
    gpu_id: str = derived("")
    unit_price: Decimal = derived(Decimal(0))
    max_price: Decimal = derived(Decimal(0))

    def _derive(self) -> None:
        self.quote_id = self.terms.get("quote_id", "")
        self.gpu_id = self.terms.get("gpu_id", "")
        self.unit_price = Decimal(str(self.terms.get("unit_price", "0")))
        self.max_price = Decimal(str(self.terms.get("max_price", "0")))


@dataclass
class Balance(WireModel):
    SCHEMA: ClassVar[str] = "Balance"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {"available": _dec, "held": _dec}
    available: Decimal = Decimal(0)
    held: Decimal = Decimal(0)


@dataclass
class Balances(WireModel):
    """An account's wallet and, for providers, its earnings awaiting payout (AITBC)."""

    SCHEMA: ClassVar[str] = "Balances"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {"wallet": Balance.from_wire, "earnings": Balance.from_wire}
    address: str = ""
    wallet: Balance = field(default_factory=Balance)
    earnings: Balance | None = None


@dataclass
class Capabilities:
    """What this machine offers (`ComputeProvider.assess_capabilities()`): the figures
    `aitbc-worker assess` measures, or, without the worker binary, what nvidia-smi or the OS
    report (then `performance_score` is None: nothing was measured)."""

    gpu_memory: int
    supported_models: list[str]
    performance_score: float | None
    max_concurrent_jobs: int
    backend: str
    gpu_name: str | None = None
    cuda_version: str | None = None
    cpu_cores: int | None = None
    kinds: list[str] = field(default_factory=list)
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The form `ComputeProvider.register(capabilities=...)` takes."""
        out: dict[str, Any] = {
            "gpu_memory": self.gpu_memory,
            "supported_models": list(self.supported_models),
            "max_concurrent_jobs": self.max_concurrent_jobs,
            "kinds": list(self.kinds),
        }
        if self.cuda_version:
            out["cuda_version"] = self.cuda_version
        return out


@dataclass
class Analytics(WireModel):
    """A listing's analytics over a period (`GET /v1/listings/{gpu_id}/analytics`):
    `utilization_rate` (float in [0, 1]: metered GPU time over the listing's GPUs and the
    period), `peak_hours` (local hours of the listing's region with the most jobs started, most
    first), `profitable_models` (model names by gross earnings, most first; `model_profits` has
    each one's jobs, gross and gross per GPU-hour) and the period's `earnings`."""

    SCHEMA: ClassVar[str] = "ListingAnalytics"
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "gpu_seconds": _dec,
        "earnings": lambda v: Earnings.from_wire(v),
        "profitable_models": lambda v: [m["model"] for m in v],
        "jobs_by_hour_of_day": lambda v: {int(h): int(n) for h, n in v.items()},
    }
    gpu_id: str = ""
    period: str = ""
    jobs: int = 0
    gpu_seconds: Decimal = Decimal(0)
    utilization_bps: int = 0
    utilization: str = "0"
    peak_hours: list[int] = field(default_factory=list)
    jobs_by_hour_of_day: dict[int, int] = field(default_factory=dict)
    profitable_models: list[str] = field(default_factory=list)
    earnings: Earnings | None = None
    utilization_rate: float = derived(0.0)
    model_profits: list[dict[str, Any]] = derived(None)

    def _derive(self) -> None:
        self.utilization_rate = self.utilization_bps / 10_000
        self.model_profits = list(self.raw.get("profitable_models", []))


@dataclass
class Monitoring(WireModel):
    """A listing's health monitoring (`configure_monitoring`): seconds between its workers'
    health reports and the alert thresholds (degrees Celsius, basis points, jobs)."""

    SCHEMA: ClassVar[str] = "MonitoringConfig"
    report_interval_s: int = 60
    alerts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suggestion(WireModel):
    """One optimization suggestion: its rule (`code`), what it saw (`description`), the effect
    to expect (`impact`) and how (`implementation_steps`)."""

    SCHEMA: ClassVar[str] = "Suggestion"
    code: str = ""
    description: str = ""
    impact: str = ""
    implementation_steps: list[str] = field(default_factory=list)


@dataclass
class Sharing(WireModel):
    """The provider's membership of the market-intelligence group (`join_swarm`)."""

    SCHEMA: ClassVar[str] = "Sharing"
    performance_metrics: bool = False
    contribution_level: str = "passive"


@dataclass
class Signal(WireModel):
    """A market signal as recorded (`share_market_data`, `participate_in_pricing`)."""

    SCHEMA: ClassVar[str] = "SignalRecord"
    region: str = ""
    provider: str = ""
    at_ms: int = 0
    observation: dict[str, Any] | None = None
    proposal: dict[str, Any] | None = None
