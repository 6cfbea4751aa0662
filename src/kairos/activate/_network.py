"""Where deliveries may not go: ``delivery.blocked_networks``.

A destination's url is checked at save when its host is an IP address, and every address its host name
resolves to is checked again when a delivery is sent, since DNS can change after the save (or point a
harmless-looking name at the cloud metadata service from the start). The check at sending time sits in the
HTTP client's resolver (:class:`GuardedResolver`), so the addresses checked are the ones connected to: no
second lookup that could answer differently.

>>> nets = networks(["169.254.0.0/16", "fe80::/10"])
>>> str(blocked_by("169.254.169.254", nets))
'169.254.0.0/16'
>>> str(blocked_by("::ffff:169.254.169.254", nets))  # an IPv4-mapped address is the IPv4 one
'169.254.0.0/16'
>>> str(blocked_by("64:ff9b::a9fe:a9fe", nets))  # so is a NAT64 one (RFC 6052), a 6to4 and a Teredo one
'169.254.0.0/16'
>>> blocked_by("10.0.0.7", nets) is None
True
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["BlockedAddress", "GuardedResolver", "Network", "blocked_by", "embedded_ipv4", "networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# RFC 6052's well-known prefix, and RFC 8215's local-use one as /96 prefixes use it (the IPv4 address last)
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible addresses (RFC 4291 2.5.5.1)


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The networks of ``delivery.blocked_networks`` (already validated by the settings)."""
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped (``::ffff:a.b.c.d``, which a dual-stack
    socket connects to over IPv4), NAT64 (``64:ff9b::a.b.c.d``, translated by the network's gateway),
    IPv4-compatible (``::a.b.c.d``), 6to4 (``2002:AABB:CCDD::``) and Teredo (its server and client)."""
    out = [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
    if any(ip in net for net in _NAT64) or (ip in _COMPATIBLE and int(ip) > 1):  # `::` and `::1` are not IPv4 addresses
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.teredo is not None:
        out.extend(ip.teredo)
    return out


def blocked_by(address: str, nets: Sequence[Network]) -> Network | None:
    """The first of ``nets`` holding ``address`` (an IP address as text), else None. An IPv6 address that
    leads to an IPv4 one (:func:`embedded_ipv4`) is checked as that IPv4 address too, and a zone
    (``fe80::1%eth0``) is ignored."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates.extend(embedded_ipv4(ip))
    for net in nets:
        if any(c.version == net.version and c in net for c in candidates):
            return net
    return None


class BlockedAddress(OSError):
    """A delivery's host is, or resolves to, an address in ``delivery.blocked_networks``. An ``OSError``, so
    that aiohttp reports it as the connection's cause (``ClientConnectorDNSError.os_error``)."""

    def __init__(self, address: str, network: Network) -> None:
        super().__init__(f"{address} is in {network} (delivery.blocked_networks)")
        self.address = address
        self.network = network

    @property
    def reason(self) -> str:
        """What the delivery record says: the address and the network, never the url (it may be secret)."""
        return f"blocked address: {self.address} is in {self.network} (delivery.blocked_networks)"


class GuardedResolver(AbstractResolver):
    """aiohttp's own resolver (a worker thread's ``getaddrinfo``, or aiodns where installed: either way off
    the event loop), refusing a host when any address it resolves to is blocked. Any, not only the one tried
    first: the connector falls back to the others, and a name that points at the metadata service at all is
    not one to send personal data to."""

    def __init__(self, inner: AbstractResolver, nets: Sequence[Network]) -> None:
        self.inner = inner
        self.nets = tuple(nets)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        for result in found:
            net = blocked_by(result["host"], self.nets)
            if net is not None:
                raise BlockedAddress(result["host"], net)
        return found

    async def close(self) -> None:
        await self.inner.close()
