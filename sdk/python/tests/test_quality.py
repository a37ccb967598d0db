"""The guide's quality check and load balancing with their effects, against `aitbc up`.

Quality: the guide's checker runs in this test's event loop; `aitbc up`'s worker (the one that
serves this home's listings) runs the bridge command set_quality_checker registers in
`<home>/worker.toml` on each result. An accepted result completes and settles; a refused one
fails for good with its hold voided and no receipt. Load balancing: two listings of one
provider, and the listing routing sends a job to with and without the provider's policy."""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aitbc_agent import Client, ComputeProvider, NotAppliedWarning
from aitbc_agent.errors import ValidationError
from aitbc_agent.quality import EXIT_ACCEPT, EXIT_BROKEN, EXIT_REFUSE, JobResult, QualityServer
from aitbc_agent.worker import WorkerConfig

from test_guide import QUALITY_CHECK, run_block

SPEC = {"kind": "vector_add", "n": 1024, "seed": 11}


async def test_the_guides_quality_check_runs_on_each_result_and_a_refusal_fails_the_job(provider_env: Any) -> None:
    market = provider_env
    provider = ComputeProvider.register("sdk-quality-gpu", {"gpu_memory": 24, "max_concurrent_jobs": 1}, {"base_rate_per_hour": 0.05})
    await provider.start_offering()
    client = Client.open_account(api=market.api, home=market.root / "quality-client")
    await client.deposit(100)
    seen: list[JobResult] = []
    ns: dict[str, Any] = {"provider": provider}
    try:
        await run_block(QUALITY_CHECK, ns)
        guide_check = ns["quality_check"]

        async def watched(job_result: JobResult) -> Any:
            seen.append(job_result)
            return await guide_check(job_result)

        command = await provider.set_quality_checker(watched)
        assert WorkerConfig.load(market.provider_home).quality_check == command

        # Accepted: the guide's check passes a quick job; it completes, settles, is paid.
        job = await client.submit_job(SPEC, units=2, gpu_id=provider.gpu_id)
        done = await client.wait_for_job(job.job_id, until=("settled",), timeout_s=60)
        assert done.receipt_id and done.price is not None
        assert [r.job_id for r in seen] == [job.job_id]
        result = seen[0]
        assert result.timeout == job.timeout_ms / 1000 and 0 < result.completion_time < result.timeout * 0.9
        assert result.error_rate == 0.0 and result.kind == "vector_add" and result.output["checksum"]
        before = (await client.balance()).wallet
        assert before.held == 0

        # Refused: the guide's own rule with a job that "took too long" (a timeout the run
        # exceeds 90% of is out of reach for a real job, so the checker is told a tighter one).
        async def strict(job_result: JobResult) -> Any:
            seen.append(job_result)
            return await guide_check(JobResult(**{**job_result.__dict__, "timeout": job_result.completion_time}))

        await provider.set_quality_checker(strict)
        refused = await client.submit_job(SPEC, units=2, gpu_id=provider.gpu_id)
        failed = await client.wait_for_job(refused.job_id, until=("failed",), timeout_s=60)
        assert failed.failure == {"reason": "quality check refused the result: Job took too long", "retryable": False}
        assert failed.receipt_id is None and failed.price is None and failed.status["attempt"] == 1
        after = (await client.balance()).wallet
        assert (after.held, after.available) == (Decimal(0), before.available), "the hold is voided: nothing paid"
        assert refused.job_id not in {r.job_id for r in await client.list_receipts()}
        assert seen[-1].job_id == refused.job_id
    finally:
        await provider.set_quality_checker(None)
        await provider.stop_offering()
    assert WorkerConfig.load(market.provider_home).quality_check is None


async def test_the_bridge_exits_by_the_verdict_and_2_when_it_has_none(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    verdicts = {"a": (True, "fine"), "r": (False, "bad\nresult"), "x": "not a verdict"}

    def checker(job_result: JobResult) -> Any:  # a plain function works as well as a coroutine
        if job_result.job_id == "boom":
            raise RuntimeError("checker crashed")
        return verdicts[job_result.job_id]

    server = QualityServer(checker, path)
    await server.start()
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    async def run(job_id: str, sock: Path = path) -> tuple[int, str]:
        body = json.dumps({"job_id": job_id, "kind": "gemm", "model": None, "completion_time": 1.5, "timeout": 60.0, "error_rate": 0.0, "output": {}})
        command = [*server.command()[:-1], str(sock)]
        proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(body.encode())
        return proc.returncode or 0, out.decode().strip()

    try:
        assert server.command()[:2] == [sys.executable, "-I"]
        assert await run("a") == (EXIT_ACCEPT, "fine")
        assert await run("r") == (EXIT_REFUSE, "bad result"), "the reason is one line"
        assert (await run("x"))[0] == EXIT_BROKEN
        assert (await run("boom"))[0] == EXIT_BROKEN
        assert (await run("a", tmp_path / "nobody.sock"))[0] == EXIT_BROKEN, "no agent listening: retryable, not a refusal"
    finally:
        await server.close()
    assert not path.exists()


async def test_bad_checkers_and_policies_are_typed_errors(provider_env: Any) -> None:
    provider = ComputeProvider.register("sdk-lb-errors", {"gpu_memory": 24}, {"base_rate_per_hour": 0.05})
    with pytest.raises(ValidationError):
        await provider.set_quality_checker("not callable")  # type: ignore[arg-type]
    for bad in ({"strategy": "round_robin"}, {"optimization_target": "cost"}, {"metrics": ["gpu_temperature"]}, {"metrics": "gpu_utilization"}):
        with pytest.raises(ValidationError):
            await provider.enable_load_balancing(**bad)
    assert (await provider.refresh()).load_balancing is None, "a refused call changes nothing"


async def test_load_balancing_changes_which_of_the_providers_listings_a_job_goes_to(provider_env: Any) -> None:
    market = provider_env
    # A region of their own, so the session's other listings do not compete.
    region = "eu-central"
    small = ComputeProvider.register("sdk-lb-small", {"gpu_memory": 24, "max_concurrent_jobs": 1}, {"base_rate_per_hour": 0.05}, region=region)
    large = ComputeProvider.register("sdk-lb-large", {"gpu_memory": 24, "max_concurrent_jobs": 4}, {"base_rate_per_hour": 0.05}, region=region)
    client = Client.open_account(api=market.api, home=market.root / "lb-client")
    await client.deposit(50)
    try:
        for p in (small, large):
            await p.start_offering()
        # Idle, equal prices: plain routing takes the first by its tie-breaks; with adaptive
        # throughput on both, the job goes to the one with the most free slots.
        plain = await client.quote(2, region=region, kind="vector_add")
        assert plain.gpu_id == small.gpu_id, "equal rank and load: the first listed (ids are time-ordered)"
        for p in (small, large):
            with pytest.warns(NotAppliedWarning, match="memory_usage"):
                listing = await p.enable_load_balancing(strategy="adaptive", metrics=["gpu_utilization", "memory_usage"], optimization_target="throughput")
            assert listing.load_balancing == {"strategy": "adaptive", "optimization_target": "throughput"}
        await asyncio.sleep(1.1)  # past the routing view's cache
        balanced = await client.quote(2, region=region, kind="vector_add")
        assert balanced.gpu_id == large.gpu_id
        # Only listings with a policy balance: the small one leaves, and keeps its jobs.
        await small.enable_load_balancing(strategy="none")
        await asyncio.sleep(1.1)
        assert (await client.quote(2, region=region, kind="vector_add")).gpu_id == small.gpu_id
        for p in (small, large):
            assert (await p.enable_load_balancing(strategy="none")).load_balancing is None
    finally:
        for p in (small, large):
            await p.stop_offering()
