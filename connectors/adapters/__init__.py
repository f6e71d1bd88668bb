"""Provider adapters: one module per vendor behind one interface, chosen by a registry."""

from connectors.adapters.base import (
    Accepted,
    Adapter,
    Delivery,
    ProviderError,
    UnknownTarget,
)
from connectors.adapters.config import ProviderConfig
from connectors.adapters.registry import ADAPTERS, Registry, registry

__all__ = ["ADAPTERS", "Accepted", "Adapter", "Delivery", "ProviderConfig", "ProviderError",
           "Registry", "UnknownTarget", "registry"]
