"""aitbc_agent: the aitbc marketplace for provider agents and clients.

    from aitbc_agent import ComputeProvider
    capabilities = ComputeProvider.assess_capabilities()
    provider = ComputeProvider.register(name="gpu-agent-alpha", capabilities={...}, pricing_model={...})
    await provider.start_offering()

Credentials and the API are found as the `aitbc` CLI finds them (AITBC_API, AITBC_HOME,
~/.aitbc/config.toml). See sdk/python/README.md.
"""

from . import errors
from .client import Client, get_receipt
from .errors import AitbcError, ApiError, NotAppliedWarning, NotSupportedYet, ValidationError, WorkerNotRunning
from .models import Analytics, Balances, Capabilities, Contract, Earnings, Job, Listing, ListingStatus, Monitoring, Quote, Receipt, Reputation, Reservation, Sharing, Signal, Suggestion
from .provider import ComputeProvider

__all__ = [
    "AitbcError",
    "Analytics",
    "ApiError",
    "Balances",
    "Capabilities",
    "Client",
    "ComputeProvider",
    "Contract",
    "Earnings",
    "Job",
    "Listing",
    "ListingStatus",
    "Monitoring",
    "Sharing",
    "Signal",
    "Suggestion",
    "NotAppliedWarning",
    "Reputation",
    "NotSupportedYet",
    "Quote",
    "Receipt",
    "Reservation",
    "ValidationError",
    "WorkerNotRunning",
    "errors",
    "get_receipt",
]
