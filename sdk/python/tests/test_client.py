"""A client's whole flow through the SDK against `aitbc up`: account, deposit, quote, jobs
paid from escrow and run by the local worker, receipts verified, settlement, and the provider's
earnings of those receipts. Plus the typed errors of refused and bad calls."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aitbc_agent import Client, ComputeProvider, get_receipt
from aitbc_agent.errors import ApiError, InsufficientFunds, NotFound, ValidationError
from aitbc_crypto import published_keys, verify_receipt, verify_receipt_detailed

SPEC = {"kind": "vector_add", "n": 1024, "seed": 7}


@pytest.fixture(scope="module")
def offered(market: Any) -> dict[str, Any]:
    """A listing of the session's provider without a schedule (always open), online."""
    import asyncio

    provider = ComputeProvider.register(
        "sdk-client-gpu", {"gpu_memory": 24, "max_concurrent_jobs": 2, "supported_models": ["llama3.2"]}, {"base_rate_per_hour": 0.05, "strategy": "dynamic"},
        api=market.api, home=market.provider_home,
    )
    asyncio.run(provider.start_offering())
    client = Client.open_account(api=market.api, home=market.root / "client")
    return {"provider": provider, "client": client}


async def test_jobs_receipts_and_earnings(market: Any, offered: dict[str, Any], tmp_path: Path) -> None:
    provider: ComputeProvider = offered["provider"]
    client: Client = offered["client"]
    balances = await client.deposit(100)
    assert balances.wallet.available == Decimal(100)

    quote = await client.quote(2, model="llama3.2", gpu_id=provider.gpu_id)
    # The rate card's floor for llama3.2 (2.0 per GPU-second) is above the listing's rate, and
    # the dynamic strategy leaves it as it is below 80% utilization.
    assert quote.unit_price == Decimal(2) and quote.max_price == Decimal(4) and quote.gpu_id == provider.gpu_id

    jobs = [await client.submit_job(SPEC, units=2, model="llama3.2", gpu_id=provider.gpu_id) for _ in range(2)]
    jobs.append(await client.submit_job(SPEC, quote=quote, idempotency_key="sdk-test-quoted"))
    # The same key again is the same job, paid once.
    again = await client.submit_job(SPEC, quote=quote, idempotency_key="sdk-test-quoted")
    assert again.job_id == jobs[2].job_id
    done = [await client.wait_for_job(j.job_id, until=("settled",), timeout_s=60) for j in jobs]
    # Escrow: each settled job cost its receipt's price; nothing stays held.
    wallet = (await client.balance()).wallet
    assert wallet.held == 0 and wallet.available == Decimal(100) - sum(j.price for j in done)
    for job in done:
        assert job.receipt_id and job.settlement is not None and job.price is not None
        output = await client.get_result(job.job_id)
        assert output["checksum"] and output["backend"] in ("cpu", "cuda")

    receipts = await client.list_receipts()
    mine = {r.job_id: r for r in receipts}
    assert {j.job_id for j in jobs} <= set(mine)
    for job in done:
        r = mine[job.job_id]
        assert r.receipt_id == job.receipt_id and r.price == job.price and r.unit_price == job.unit_price
        detail = verify_receipt_detailed(r)
        # Against the published keys: the provider's signature and the marketplace's
        # countersignature (the document names the marketplace key).
        assert detail.valid and detail.provider_signature and detail.countersignature is True, detail
        # A changed price no longer verifies.
        assert not verify_receipt({**r.raw, "price": str(r.price + 1)}, api=market.api)

    # Pinned key files: the published document verifies; one without the provider's key does not.
    keys = market.get("/v1/keys")
    pinned = tmp_path / "keys.json"
    pinned.write_text(json.dumps(keys))
    sample = mine[done[0].job_id]
    assert verify_receipt(sample, pinned)
    others = tmp_path / "others.json"
    others.write_text(json.dumps({"keys": [k for k in keys["keys"] if k["key_id"] != sample.signature["key_id"]]}))
    assert not verify_receipt(sample, others)

    # The receipts page's synchronous helper, with the client's home.
    fetched = get_receipt(sample.receipt_id, api=market.api, home=client.home)
    assert fetched.raw == sample.raw

    earnings = await provider.get_earnings("1d", ["client", "model_type", "time_of_day"])
    prices = sum((r.price for r in receipts if r.gpu_id == provider.gpu_id), Decimal(0))
    assert earnings.total == earnings.gross == prices and earnings.jobs == 3
    assert earnings.breakdown["client"] == {client.address: prices}
    assert earnings.breakdown["model_type"] == {"llama3.2": prices}
    assert earnings.top_client == client.address
    analytics = await provider.get_analytics()
    assert analytics.profitable_models == ["llama3.2"] and len(analytics.peak_hours) >= 1


async def test_published_keys_are_cached_and_refetched_for_an_unknown_key(market: Any) -> None:
    first = published_keys(market.api)
    assert published_keys(market.api) is first
    assert published_keys(market.api, refresh=True) is not first


async def test_refusals_carry_the_servers_problem_code(market: Any, offered: dict[str, Any]) -> None:
    client: Client = offered["client"]
    provider: ComputeProvider = offered["provider"]
    with pytest.raises(NotFound) as nf:
        await client.get_job("job-doesnotexist")
    assert nf.value.code == "not_found" and nf.value.status == 404
    poor = Client.open_account(api=market.api, home=market.root / "poor")
    with pytest.raises(InsufficientFunds) as funds:
        await poor.submit_job(SPEC, units=2, model="llama3.2", gpu_id=provider.gpu_id)
    assert funds.value.code == "insufficient_funds" and isinstance(funds.value, ApiError)
    # A client key may not change a provider's listing.
    with pytest.raises(ApiError) as forbidden:
        await client._http.arequest("PATCH", f"/v1/listings/{provider.gpu_id}", json={"status": "paused"})
    assert forbidden.value.code in ("forbidden", "not_found")


async def test_bad_input_is_refused_before_anything_is_sent(market: Any, offered: dict[str, Any]) -> None:
    client: Client = offered["client"]
    provider: ComputeProvider = offered["provider"]
    with pytest.raises(ValidationError, match="3 decimal places") as e:
        await client.submit_job(SPEC, units="1.2345", gpu_id=provider.gpu_id)
    assert e.value.field == "units"
    with pytest.raises(ValidationError, match="nano"):
        await client.deposit("0.0000000001")
    with pytest.raises(ValidationError, match="period"):
        await provider.get_earnings("30 days")
    with pytest.raises(ValidationError, match="breakdown_by"):
        await provider.get_earnings("30d", ["weather"])
    with pytest.raises(ValidationError, match="basis points"):
        await provider.enable_dynamic_pricing(demand_threshold=0.12345)
    with pytest.raises(ValidationError, match="base_rate_per_hour"):
        ComputeProvider.register("no-price", {"gpu_memory": 8}, {}, api=market.api, home=market.provider_home)
    with pytest.raises(ValidationError, match="gpu_memory"):
        ComputeProvider.register("no-memory", {"gpu_memory": 0}, {"base_rate_per_hour": 1}, api=market.api, home=market.provider_home)
    # The listing is unchanged by all of that.
    listing = await provider.refresh()
    assert listing.strategy == "dynamic" and listing.base_price == Decimal("0.05")


async def test_a_client_home_is_not_a_provider(market: Any, offered: dict[str, Any]) -> None:
    from aitbc_agent.errors import ConfigError

    with pytest.raises(ConfigError, match="client account"):
        ComputeProvider.register("wrong-home", {"gpu_memory": 8}, {"base_rate_per_hour": 1}, api=market.api, home=offered["client"].home)


async def test_host_specialized_model_writes_the_workers_models_config(market: Any, offered: dict[str, Any], tmp_path: Path) -> None:
    import hashlib
    import tomllib

    from aitbc_agent.capabilities import local_models

    provider: ComputeProvider = offered["provider"]
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF test bytes")
    done = await provider.host_specialized_model("codellama", gguf, requirements={"gpu_memory": 16})
    config = tomllib.loads(Path(done["config"]).read_text())
    # The provider's home is the session's: the guide's test may have hosted a model there too.
    assert {"name": "codellama", "path": str(gguf.resolve()), "sha256": hashlib.sha256(b"GGUF test bytes").hexdigest()} in config["models"]
    assert "codellama" in local_models(provider.home)
    with pytest.raises(ValidationError, match="GGUF"):
        await provider.host_specialized_model("codellama", tmp_path / "model.pt")
    with pytest.raises(ValidationError, match="rate card"):
        await provider.host_specialized_model("custom-medical-llm", gguf)
    # With a premium rate the listing prices it (a model off the card, too); a bad name or rate
    # is the server's 400 and leaves the worker's config as it was.
    done = await provider.host_specialized_model("custom-medical-llm", gguf, premium_rate="0.25")
    assert done["premium_rate"] == "0.25" and provider.listing.model_prices["custom-medical-llm"] == Decimal("0.25")
    assert "custom-medical-llm" in local_models(provider.home)
    before = Path(done["config"]).read_text()
    with pytest.raises(ValidationError, match="model_name"):
        await provider.host_specialized_model("Not A Name", gguf, premium_rate=1)
    with pytest.raises(ApiError):
        await provider.host_specialized_model("custom-medical-llm", gguf, premium_rate="1000000.5")
    with pytest.raises(ValidationError, match="premium_rate"):
        await provider.host_specialized_model("custom-medical-llm", gguf, premium_rate=0)
    assert Path(done["config"]).read_text() == before
