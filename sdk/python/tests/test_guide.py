"""The Compute Provider Agent Guide's code blocks, verbatim, against `aitbc up`; after each, its
effect is read back over the API. The blocks run in order in one namespace, as a reader pasting
them into one async session would (top-level await allowed)."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import os
import shutil
import tomllib
import time
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import aitbc_agent
from aitbc_agent import NotAppliedWarning
from aitbc_agent.home import HomeConfig
from aitbc_agent.worker import WorkerConfig

# The guide's blocks, as written (the seed page "Compute Provider Agent Guide").
ASSESS = '''
from aitbc_agent import ComputeProvider

# Assess your computational capabilities
capabilities = ComputeProvider.assess_capabilities()
print(f"Available GPU Memory: {capabilities.gpu_memory}GB")
print(f"Supported Models: {capabilities.supported_models}")
print(f"Performance Score: {capabilities.performance_score}")
print(f"Max Concurrent Jobs: {capabilities.max_concurrent_jobs}")
'''
REGISTER = '''
# Register as a compute provider
provider = ComputeProvider.register(
    name="gpu-agent-alpha",
    capabilities={
        "compute_type": "inference",
        "gpu_memory": 24,
        "supported_models": ["llama3.2", "mistral", "deepseek"],
        "performance_score": 0.95,
        "max_concurrent_jobs": 3,
        "specialization": "text_generation"
    },
    pricing_model={
        "base_rate_per_hour": 0.1,  # AITBC tokens
        "peak_multiplier": 1.5,      # During high demand
        "bulk_discount": 0.8        # For >10 hour rentals
    }
)
'''
AVAILABILITY = '''
# Define when your resources are available
await provider.set_availability(
    schedule={
        "timezone": "UTC",
        "availability": [
            {"days": ["monday", "tuesday", "wednesday", "thursday", "friday"], "hours": "09:00-17:00"},
            {"days": ["saturday", "sunday"], "hours": "00:00-24:00"}
        ],
        "maintenance_windows": [
            {"day": "sunday", "hours": "02:00-04:00"}
        ]
    }
)
'''
START = '''
# Start offering your resources on the marketplace
await provider.start_offering()
print(f"Provider ID: {provider.id}")
print(f"Marketplace Listing: https://aitbc.bubuit.net/marketplace/providers/{provider.id}")
'''
DYNAMIC = '''
# Enable dynamic pricing based on demand
await provider.enable_dynamic_pricing(
    base_rate=0.1,
    demand_threshold=0.8,  # Increase price when 80% utilized
    max_multiplier=2.0,
    adjustment_frequency="15min"
)
'''
TIERS = '''
# Create service tiers
tiers = {
    "basic": {
        "rate_per_hour": 0.05,
        "max_jobs": 1,
        "priority": "low",
        "support": "best_effort"
    },
    "premium": {
        "rate_per_hour": 0.15,
        "max_jobs": 3,
        "priority": "high",
        "support": "24/7"
    },
    "enterprise": {
        "rate_per_hour": 0.25,
        "max_jobs": 5,
        "priority": "urgent",
        "support": "dedicated"
    }
}

await provider.set_service_tiers(tiers)
'''
EARNINGS = '''
# Track your earnings
earnings = await provider.get_earnings(
    period="30d",
    breakdown_by=["client", "model_type", "time_of_day"]
)

print(f"Total Revenue: {earnings.total} AITBC")
print(f"Daily Average: {earnings.daily_average}")
print(f"Top Client: {earnings.top_client}")
'''
ANALYTICS = '''
# Analyze your performance
analytics = await provider.get_analytics()
print(f"Utilization Rate: {analytics.utilization_rate}")
print(f"Peak Demand Hours: {analytics.peak_hours}")
print(f"Most Profitable Models: {analytics.profitable_models}")
'''

QUEUE = '''
await provider.configure_queue(
    max_queue_size=20,
    priority_algorithm="weighted_fair_share",
    preemption_policy="graceful",
    timeout_handling="auto_retry"
)
'''
REPUTATION = '''
reputation = await provider.get_reputation()
print(f"Overall Score: {reputation.overall_score}")
print(f"Job Success Rate: {reputation.success_rate}")
print(f"Average Response Time: {reputation.avg_response_time}")
print(f"Client Satisfaction: {reputation.client_satisfaction}")
'''

CREATE_CONTRACT = '''
await provider.create_contract(
    client_id="enterprise-agent-123",
    duration_hours=100,
    fixed_rate=0.08,
    guaranteed_availability=0.95,
    sla_penalties=True
)
'''
DEFINE_SLA = '''
await provider.define_sla(
    availability_target=0.99,
    response_time_target=30,  # seconds
    completion_rate_target=0.98,
    penalty_rate=0.5  # refund multiplier for SLA breaches
)
'''
ENABLE_BATCH_PROCESSING = '''
await provider.enable_batch_processing(
    min_batch_size=10,
    batch_discount=0.3,
    processing_window="24h",
    quality_guarantee=True
)
'''
RESERVE_CAPACITY = '''
await provider.reserve_capacity(
    client_id="enterprise-agent-456",
    reserved_gpu_memory=8,
    reservation_duration="30d",
    reservation_fee=50  # AITBC tokens
)
'''

CONFIGURE_MONITORING = '''
await provider.configure_monitoring(
    health_checks={
        "gpu_status": "30s",
        "memory_usage": "10s", 
        "network_latency": "60s",
        "job_success_rate": "5min"
    },
    alerts={
        "gpu_failure": "immediate",
        "high_memory": "85%",
        "job_failure_rate": "10%"
    }
)
'''
JOIN_SWARM = '''
await provider.join_swarm(
    swarm_type="load_balancing",
    contribution_level="active",
    data_sharing="performance_metrics"
)
'''
SHARE_MARKET_DATA = '''
await provider.share_market_data({
    "current_demand": "high",
    "price_trends": "increasing",
    "resource_constraints": "gpu_memory",
    "competitive_landscape": "moderate"
})
'''
PARTICIPATE_IN_PRICING = '''
await provider.participate_in_pricing({
    "proposed_base_rate": 0.12,
    "rationale": "Increased demand for LLM inference",
    "expected_impact": "revenue_increase_15%"
})
'''
GET_OPTIMIZATION_SUGGESTIONS = '''
suggestions = await provider.get_optimization_suggestions()
for suggestion in suggestions:
    print(f"Suggestion: {suggestion.description}")
    print(f"Expected Impact: {suggestion.impact}")
    print(f"Implementation: {suggestion.implementation_steps}")
'''

HOST_SPECIALIZED_MODEL = '''
await provider.host_specialized_model(
    model_name="custom-medical-llm",
    model_path="/models/medical-llm-v2.pt",
    requirements={
        "gpu_memory": 16,
        "specialization": "medical_text",
        "accuracy_requirement": 0.95
    },
    premium_rate=0.2
)
'''
# The guide's file; the worker loads GGUF files, so the test makes one and runs the block with
# its path in place of this one.
GUIDE_MODEL_PATH = "/models/medical-llm-v2.pt"

LOAD_BALANCING = """
await provider.enable_load_balancing(
    strategy="adaptive",
    metrics=["gpu_utilization", "memory_usage", "job_completion_time"],
    optimization_target="throughput"
)
"""

QUALITY_CHECK = '''
async def quality_check(job_result):
    """Verify job quality before submission"""
    if job_result.completion_time > job_result.timeout * 0.9:
        return False, "Job took too long"
    if job_result.error_rate > 0.05:
        return False, "Error rate too high"
    return True, "Quality check passed"

await provider.set_quality_checker(quality_check)
'''


async def run_block(source: str, namespace: dict[str, Any]) -> None:
    code = compile(source, "<guide>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # noqa: S307 - the guide's own code, the point of the test
    if asyncio.iscoroutine(result):
        await result


def listing(market: Any, gpu_id: str) -> dict[str, Any]:
    return market.get(f"/v1/listings/{gpu_id}")


# The live counters a worker's heartbeat moves; everything else is the listing's settings.
LIVE = {"last_heartbeat_ms", "online", "active_jobs", "completed_jobs", "gpu_seconds_total", "earned", "loaded_models"}


async def test_the_guide_runs_as_written_and_each_step_has_its_effect(provider_env: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    market = provider_env
    ns: dict[str, Any] = {}

    await run_block(ASSESS, ns)
    caps = ns["capabilities"]
    out = capsys.readouterr().out
    assert f"Max Concurrent Jobs: {caps.max_concurrent_jobs}" in out
    assert caps.backend in ("cuda", "cpu") and caps.max_concurrent_jobs >= 1
    if "assess" in caps.source:
        # Measured by the worker binary, on its one scale for GPUs and CPUs.
        assert caps.performance_score is not None and caps.performance_score > 0

    # No account in the home yet: register opens one, as `aitbc init` does.
    assert not (market.provider_home / "config.toml").exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await run_block(REGISTER, ns)
    provider = ns["provider"]
    said = " ".join(str(w.message) for w in caught if issubclass(w.category, NotAppliedWarning))
    for left_out in ("capabilities.compute_type", "capabilities.performance_score", "'mistral'", "'deepseek'"):
        assert left_out in said, said
    config = HomeConfig.load(market.provider_home)
    assert config.role == "provider" and config.address == provider.id and config.api_key
    mine = market.get("/v1/providers/keys", config.api_key)["keys"]
    assert len(mine) == 1 and mine[0]["key_id"] in {k["key_id"] for k in market.get("/v1/keys")["keys"]}
    got = listing(market, provider.gpu_id)
    assert got["name"] == "gpu-agent-alpha" and got["memory_gib"] == 24 and got["max_concurrent_jobs"] == 3
    assert got["models"] == ["llama3.2"] and "text_generation" in got["kinds"]
    assert got["base_price"] == "0.1"
    assert got["params"]["peak_multiplier_bps"] == 15000 and got["params"]["bulk_discount_bps"] == 8000
    assert got["status"] == "paused"

    await run_block(AVAILABILITY, ns)
    got = listing(market, provider.gpu_id)
    assert got["availability"]["timezone"] == "UTC"
    assert got["availability"]["availability"][1] == {"days": ["saturday", "sunday"], "hours": "00:00-24:00"}
    assert got["availability"]["maintenance_windows"] == [{"day": "sunday", "hours": "02:00-04:00"}]

    await run_block(START, ns)
    got = listing(market, provider.gpu_id)
    # Active, and `aitbc up`'s worker for this home heartbeats it.
    assert got["status"] == "active" and got["online"] is True
    assert f"Provider ID: {provider.id}" in capsys.readouterr().out

    await run_block(DYNAMIC, ns)
    got = listing(market, provider.gpu_id)
    assert got["strategy"] == "dynamic" and got["base_price"] == "0.1"
    assert got["params"]["demand_threshold_bps"] == 8000 and got["params"]["max_multiplier_bps"] == 20000
    # The earlier parameters survive (a patch's params replace them all on the server).
    assert got["params"]["peak_multiplier_bps"] == 15000

    with pytest.warns(NotAppliedWarning, match="basic.max_jobs"):
        await run_block(TIERS, ns)
    got = listing(market, provider.gpu_id)
    assert got["base_price"] == "0.05" and got["params"]["tier_bps"] == [10000, 30000, 50000]

    await run_block(EARNINGS, ns)
    earnings = ns["earnings"]
    receipts = market.get("/v1/receipts", config.api_key, provider=provider.id)["items"]
    assert earnings.total == sum((Decimal(r["price"]) for r in receipts if r["gpu_id"] == provider.gpu_id), Decimal(0))
    assert set(earnings.breakdown) == {"client", "model_type", "time_of_day"}
    assert f"Total Revenue: {earnings.total} AITBC" in capsys.readouterr().out

    await run_block(ANALYTICS, ns)
    served = market.get(f"/v1/listings/{provider.gpu_id}/analytics", config.api_key, period="30d")
    analytics = ns["analytics"]
    assert analytics.utilization_rate == served["utilization_bps"] / 10_000
    assert analytics.peak_hours == served["peak_hours"] and analytics.profitable_models == [m["model"] for m in served["profitable_models"]]
    assert analytics.earnings is not None and analytics.earnings.total == earnings.total
    assert f"Peak Demand Hours: {analytics.peak_hours}" in capsys.readouterr().out

    await run_block(QUEUE, ns)
    queue = listing(market, provider.gpu_id)["queue_config"]
    assert (queue["max_queue_size"], queue["priority"], queue["preemption"]) == (20, "weighted_fair_share", "graceful")

    await run_block(REPUTATION, ns)
    served = market.get(f"/v1/providers/{provider.id}/reputation")["reputation"]
    reputation = ns["reputation"]
    assert reputation.overall_score == served["score_bps"] / 10_000
    assert reputation.success_rate == (None if served["success_rate_bps"] is None else served["success_rate_bps"] / 10_000)
    assert f"Overall Score: {reputation.overall_score}" in capsys.readouterr().out

    # Fixed-rate contracts and reserved capacity name their client by the agent name it
    # registered (the guide's client_id): two client agents of those names exist.
    clients = {}
    for agent in ("enterprise-agent-123", "enterprise-agent-456"):
        opened = httpx.post(market.api + "/v1/accounts", json={"role": "client", "name": agent}, timeout=10).json()
        httpx.post(market.api + f"/v1/accounts/{opened['address']}/deposits", json={"amount": "100"}, headers={"Authorization": f"Bearer {opened['api_key']}"}, timeout=10).raise_for_status()
        clients[agent] = opened

    await run_block(CREATE_CONTRACT, ns)
    client = clients["enterprise-agent-123"]
    served = market.get(f"/v1/contracts/{provider.id}/{client['address']}", config.api_key)
    assert (served["state"], served["hours"], served["fixed_rate"], served["guaranteed_availability_bps"], served["sla_penalties"]) == ("offered", 100, "0.08", 9500, True)
    accepted = await aitbc_agent.Client(api=market.api, api_key=client["api_key"], home=market.root / "client-123").accept_contract(provider.id)
    assert accepted.state == "active" and accepted.remaining == Decimal(360000) and accepted.guaranteed_availability == 0.95

    # Another SLA first, so that the block's effect shows.
    httpx.patch(market.api + f"/v1/listings/{provider.gpu_id}", json={"sla": {"response_time_s": 60, "penalty_rate_bps": 1000}}, headers={"Authorization": f"Bearer {config.api_key}"}, timeout=10).raise_for_status()
    with pytest.warns(NotAppliedWarning, match="availability_target"):
        await run_block(DEFINE_SLA, ns)
    assert listing(market, provider.gpu_id)["sla"] == {"response_time_s": 30, "penalty_rate_bps": 5000}

    with pytest.warns(NotAppliedWarning, match="processing_window"):
        await run_block(ENABLE_BATCH_PROCESSING, ns)
    assert listing(market, provider.gpu_id)["batch"] == {"min_batch_size": 10, "discount_percent": 30}

    await run_block(RESERVE_CAPACITY, ns)
    client = clients["enterprise-agent-456"]
    mine = market.get("/v1/reservations", client["api_key"])["items"]
    assert len(mine) == 1 and (mine[0]["gpu_id"], mine[0]["slots"], mine[0]["duration_hours"], mine[0]["fee"], mine[0]["state"]) == (provider.gpu_id, 1, 720, "50", "offered")
    earned_before = Decimal(market.get(f"/v1/accounts/{provider.id}", config.api_key)["earnings"]["available"])
    paid = await aitbc_agent.Client(api=market.api, api_key=client["api_key"], home=market.root / "client-456").accept_reservation(mine[0]["reservation_id"])
    assert paid.state == "active" and paid.platform_fee == Decimal("1.25")
    assert market.get(f"/v1/accounts/{client['address']}", client["api_key"])["wallet"]["available"] == "50"
    assert Decimal(market.get(f"/v1/accounts/{provider.id}", config.api_key)["earnings"]["available"]) - earned_before == Decimal("48.75")
    assert listing(market, provider.gpu_id)["reserved_slots"] == 1

    with pytest.warns(NotAppliedWarning, match="network_latency"):
        await run_block(CONFIGURE_MONITORING, ns)
    alerts = market.get(f"/v1/listings/{provider.gpu_id}/alerts", config.api_key)
    assert alerts["monitoring"]["report_interval_s"] == 10, "the shortest check the worker measures"
    assert alerts["monitoring"]["alerts"] == {"gpu_failure": True, "memory_used_bps_max": 8500, "failure_rate_bps_max": 1000}
    # `aitbc up`'s worker learns the interval from its next heartbeat (every 10 s) and reports
    # with the one after: the listing's health arrives within about 20 s.
    deadline = time.monotonic() + 40
    while (health := market.get(f"/v1/listings/{provider.gpu_id}/alerts", config.api_key).get("health")) is None and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert health is not None and health["report"]["gpu_ok"] is True, health
    assert health == await provider.get_health()

    await run_block(JOIN_SWARM, ns)
    assert market.get(f"/v1/providers/{provider.id}/sharing", config.api_key) == {"performance_metrics": True, "contribution_level": "active"}
    await run_block(SHARE_MARKET_DATA, ns)
    await run_block(PARTICIPATE_IN_PRICING, ns)
    view = market.get("/v1/market/intelligence", region=provider.listing.region)["regions"][0]
    signals = view["signals"]
    assert signals["observations"] == 1 and signals["current_demand"] == {"high": 1} and signals["resource_constraints"] == {"gpu_memory": 1}
    assert (signals["proposals"], signals["proposed_rate_median"]) == (1, "0.12")
    assert view["shared_performance"]["providers"] == 1, "joined with performance_metrics"
    assert listing(market, provider.gpu_id)["base_price"] == "0.05", "a proposal never changes a price"

    await run_block(GET_OPTIMIZATION_SUGGESTIONS, ns)
    served = market.get(f"/v1/listings/{provider.gpu_id}/suggestions", config.api_key)
    assert [s.code for s in ns["suggestions"]] == [i["code"] for i in served["items"]]
    out = capsys.readouterr().out
    for item in served["items"]:
        assert f"Suggestion: {item['description']}" in out

    # Load balancing: the listing joins its provider's group with the guide's policy; the
    # metrics routing does not read are said (test_quality.py shows the routing it changes).
    with pytest.warns(NotAppliedWarning, match="memory_usage.*job_completion_time"):
        await run_block(LOAD_BALANCING, ns)
    assert listing(market, provider.gpu_id)["load_balancing"] == {"strategy": "adaptive", "optimization_target": "throughput"}

    # The quality check: registered as the worker's command (test_quality.py runs jobs through it).
    await run_block(QUALITY_CHECK, ns)
    try:
        command = WorkerConfig.load(market.provider_home).quality_check
        assert command is not None and command[-1].endswith(".sock") and "quality.py" in command[-2]
    finally:
        # This test's event loop ends with it: the next tests' jobs must not meet a dead checker.
        await provider.set_quality_checker(None)
    assert WorkerConfig.load(market.provider_home).quality_check is None


    # Specialized model hosting, at the guide's premium rate. The model file is a GGUF (the
    # default test model when AITBC_TEST_MODEL names one, else a small file made here); the
    # guide's block runs as written with that path in place of its .pt path.
    gguf = tmp_path / "medical-llm-v2.gguf"
    test_model = os.environ.get("AITBC_TEST_MODEL")
    if test_model and Path(test_model).is_file():
        shutil.copyfile(test_model, gguf)
    else:
        gguf.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    assert "custom-medical-llm" not in [m["model"] for m in market.get("/v1/rate-card")["models"]]
    with pytest.warns(NotAppliedWarning, match="specialization"):
        await run_block(HOST_SPECIALIZED_MODEL.replace(GUIDE_MODEL_PATH, str(gguf)), ns)
    got = listing(market, provider.gpu_id)
    assert got["model_prices"] == {"custom-medical-llm": "0.2"} and provider.listing.model_prices == {"custom-medical-llm": Decimal("0.2")}
    worker_toml = tomllib.loads((provider.home / "worker.toml").read_text())
    assert {"name": "custom-medical-llm", "path": str(gguf.resolve()), "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()} in worker_toml["models"]
    # A worker that has loaded the file reports it in its listing heartbeat (the running one
    # read its config at start); a quote for the model on the listing then uses its price:
    # 0.2 per GPU-hour is 0.000055555556 AITBC per GPU-second before the multipliers.
    loaded = sorted({*got["loaded_models"], "custom-medical-llm"})
    market.post(f"/v1/listings/{provider.gpu_id}/heartbeat", {"worker_id": "wrk-guide", "models": loaded}, config.api_key)
    quote_body = {"model": "custom-medical-llm", "units": "1", "gpu_id": provider.gpu_id, "kind": "text_generation"}
    terms = market.post("/v1/quotes", quote_body)["terms"]
    breakdown = terms["breakdown"]
    assert (breakdown["base_source"], breakdown["model_rate"], breakdown["base_rate"]) == ("model_price", "0.000055555556", "0.000055555556"), breakdown
    assert terms["gpu_id"] == provider.gpu_id and Decimal(terms["unit_price"]) > 0
    # Bad premium rates are refused before anything changes.
    for bad in (0, -0.2, "lots"):
        with pytest.raises(aitbc_agent.ValidationError):
            await provider.host_specialized_model("custom-medical-llm", gguf, premium_rate=bad)
    assert listing(market, provider.gpu_id)["model_prices"] == {"custom-medical-llm": "0.2"}


def test_the_example_runs_against_the_market(provider_env: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "provider_agent.py"
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    gpu_id = next(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("Registered listing"))
    got = listing(provider_env, gpu_id)
    assert got["status"] == "active" and got["online"] and got["strategy"] == "dynamic"
    assert "Overall Score: " in done.stdout and "Total Revenue: " in done.stdout
