"""Serving /metrics: who may read it, and rendering the registry in the format the scraper asks for.

The HTTP route lives in the API layer; this module holds the rule so the API and tests share one answer:
a scrape from an allowed network (loopback by default) needs no token, any other needs the bearer token.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK_NETWORKS: tuple[IpNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


@dataclass(frozen=True, slots=True)
class MetricsAccess:
    """Allowed networks read /metrics freely; everyone else needs `Authorization: Bearer <token>`."""

    allowed_networks: tuple[IpNetwork, ...] = LOOPBACK_NETWORKS
    token: str | None = None  # None: only the allowed networks may scrape

    @classmethod
    def from_settings(cls, networks: Iterable[str], token: str | None) -> MetricsAccess:
        """Build from settings strings (CIDRs); a bad CIDR raises ValueError at startup, not at scrape."""
        parsed = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip())
        return cls(parsed or LOOPBACK_NETWORKS, token or None)

    def allows(self, client_host: str | None, authorization: str | None) -> bool:
        if client_host is not None and self._from_allowed_network(client_host):
            return True
        if self.token is None or not authorization:
            return False
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), self.token.encode())

    def _from_allowed_network(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False  # a hostname or "testclient": never trusted by name
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.allowed_networks)


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type) for a scrape; OpenMetrics when the scraper asks for it, else text 0.0.4."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
