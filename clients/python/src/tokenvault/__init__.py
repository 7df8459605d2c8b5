"""tokenvault: lease API credentials from a shared pool and report how they did.

    from tokenvault import Vault

    with Vault("http://localhost:8080", client_token) as vault:
        with vault.lease("github") as lease:
            r = lease.session().get("https://api.github.com/user")
"""

from ._async import AsyncVault
from ._errors import (Conflict, Forbidden, InsufficientCapacity, InvalidRequest, LeaseGone,
                      LeaseRevoked, NotFound, PipelineNotFound, PipelineNotReady, PoolExhausted,
                      PoolFrozen, PoolNotFound, TokenNotFound, Unauthorized, Unavailable,
                      VaultError)
from ._models import Binding, Event, Lease, Report
from ._sync import Vault

__all__ = [
    "AsyncVault", "Binding", "Conflict", "Event", "Forbidden", "InsufficientCapacity",
    "InvalidRequest", "Lease", "LeaseGone", "LeaseRevoked", "NotFound", "PipelineNotFound",
    "PipelineNotReady", "PoolExhausted", "PoolFrozen", "PoolNotFound",
    "Report", "TokenNotFound", "Unauthorized", "Unavailable", "Vault", "VaultError",
]
__version__ = "0.1.0"
