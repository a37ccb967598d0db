"""The Compute Provider Agent Guide's flow, runnable against a marketplace.

    aitbc up                                  # in one terminal: the marketplace and its worker
    python sdk/python/examples/provider_agent.py

It finds the API and the account as the `aitbc` CLI does (AITBC_API, AITBC_HOME, else
~/.aitbc), opens a provider account there if there is none, lists this machine, offers it, and
prints what the marketplace says. `aitbc up` on the same home runs the worker that serves it.
"""

from __future__ import annotations

import asyncio
import warnings

from aitbc_agent import ComputeProvider, NotAppliedWarning


async def offer(provider: ComputeProvider) -> None:
    await provider.set_availability(
        schedule={
            "timezone": "UTC",
            "availability": [{"days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"], "hours": "00:00-24:00"}],
            "maintenance_windows": [{"day": "sunday", "hours": "02:00-04:00"}],
        }
    )
    await provider.start_offering()
    print(f"Provider ID: {provider.id}")
    print(f"Marketplace Listing: {provider.marketplace_url}")

    await provider.enable_dynamic_pricing(base_rate=0.1, demand_threshold=0.8, max_multiplier=2.0, adjustment_frequency="15min")
    status = await provider.get_status()
    print(f"Status: {status.status}, online {status.online}, strategy {status.strategy}, utilization {status.utilization}")

    earnings = await provider.get_earnings(period="30d", breakdown_by=["client", "model_type", "time_of_day"])
    print(f"Total Revenue: {earnings.total} AITBC")
    print(f"Daily Average: {earnings.daily_average}")
    print(f"Top Client: {earnings.top_client}")

    reputation = await provider.get_reputation()
    print(f"Overall Score: {reputation.overall_score}")
    print(f"Job Success Rate: {reputation.success_rate}")


def main() -> None:
    capabilities = ComputeProvider.assess_capabilities()
    print(f"Available GPU Memory: {capabilities.gpu_memory}GB")
    print(f"Supported Models: {capabilities.supported_models}")
    print(f"Performance Score: {capabilities.performance_score}")
    print(f"Max Concurrent Jobs: {capabilities.max_concurrent_jobs}")

    # A machine without a GPU still lists one here, as the guide's example declares 24 GB; the
    # worker runs the jobs on the CPU and its receipts say cpu_seconds.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotAppliedWarning)
        provider = ComputeProvider.register(
            name="gpu-agent-alpha",
            capabilities={"gpu_memory": capabilities.gpu_memory or 24, "supported_models": ["llama3.2"], "max_concurrent_jobs": capabilities.max_concurrent_jobs},
            pricing_model={"base_rate_per_hour": 0.1, "peak_multiplier": 1.5, "bulk_discount": 0.8},
        )
    for w in caught:
        print(f"Note: {w.message}")
    print(f"Registered listing {provider.gpu_id}")
    asyncio.run(offer(provider))


if __name__ == "__main__":
    main()
