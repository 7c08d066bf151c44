"""Which upstream URLs the router may connect to: every instance and predictor URL (command line,
YAML, POST /instances, auto-provisioning) is validated, and optionally restricted to an allow-list.

A valid URL is http(s)://host[:port][/path] with a port in 1..65535, no user:password@, no query or
fragment. The allow-list (--allowed-upstreams) holds CIDRs (10.0.0.0/8), IP addresses and host
names. An IP-literal URL is allowed when a CIDR or address contains it; a host-name URL only when
that name is listed (case-insensitive, no wildcards). Names are never resolved: a DNS answer could
change between the check and the connection, so `localhost` must be listed as a name even when
127.0.0.0/8 is."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens (and underscores,
# which container runtimes put in service names).
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class BadUpstream(ValueError):
    """An instance or predictor URL that is malformed (code: invalid_url)."""

    code = "invalid_url"


class UpstreamNotAllowed(ValueError):
    """A well-formed URL whose host is outside --allowed-upstreams (code: upstream_not_allowed)."""

    code = "upstream_not_allowed"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_host_name(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_LABEL.match(label) for label in labels)


@dataclass(frozen=True, slots=True)
class AllowList:
    networks: tuple[Network, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: list[str]) -> AllowList | None:
        """None (anything allowed) for no entries. Each entry may hold several, comma-separated."""
        networks: list[Network] = []
        names: set[str] = set()
        for entry in (part.strip() for item in entries for part in str(item).split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if "/" in entry or not _is_host_name(name):
                raise ValueError(
                    f"--allowed-upstreams entry {entry!r} is not a CIDR, an IP address or a host name"
                )
            names.add(name)
        if not networks and not names:
            return None
        return cls(tuple(networks), frozenset(names))

    def allows(self, host: str) -> bool:
        address = _ip(host)
        if address is None:
            return host.lower().rstrip(".") in self.names
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        return any(address in net for net in self.networks)

    def describe(self) -> str:
        return ", ".join([str(n) for n in self.networks] + sorted(self.names))


def check_upstream(url: str, allowed: AllowList | None = None, what: str = "instance") -> str:
    """The URL without its trailing slash; raises BadUpstream or UpstreamNotAllowed."""
    usage = f"{what} URL must be http(s)://host[:port][/path]"
    if not isinstance(url, str) or not url or any(c.isspace() or ord(c) < 32 for c in url):
        raise BadUpstream(f"{usage}: {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when not a number or over 65535
    except ValueError as e:
        raise BadUpstream(f"{usage} with a port in 1..65535: {url!r}") from e
    if parts.scheme not in ("http", "https"):
        raise BadUpstream(f"{usage} (scheme http or https): {url!r}")
    if "@" in parts.netloc:
        raise BadUpstream(f"{what} URL must not carry a user or password: {url!r}")
    if "?" in url or "#" in url:
        raise BadUpstream(f"{what} URL must not carry a query or fragment: {url!r}")
    host = parts.hostname
    if not host or (_ip(host) is None and not _is_host_name(host)):
        raise BadUpstream(f"{usage} (a host name or IP address): {url!r}")
    if port is not None and not 1 <= port <= 65535:
        raise BadUpstream(f"{usage} with a port in 1..65535: {url!r}")
    if allowed is not None and not allowed.allows(host):
        raise UpstreamNotAllowed(
            f"{what} host {host!r} is not in --allowed-upstreams ({allowed.describe()}); "
            "host names are matched by name, never resolved"
        )
    return url.rstrip("/")


def check_event_endpoint(endpoint: str, allowed: AllowList | None = None) -> str:
    """A ZeroMQ endpoint the router subscribes to (vLLM's KV events): tcp://host:port, the host allowed
    like an instance's; raises BadUpstream or UpstreamNotAllowed."""
    usage = "KV events endpoint must be tcp://host:port"
    if not isinstance(endpoint, str) or not endpoint.startswith("tcp://"):
        raise BadUpstream(f"{usage}: {endpoint!r}")
    check_upstream("http://" + endpoint.removeprefix("tcp://"), allowed, "KV events endpoint")
    parts = urlsplit("http://" + endpoint.removeprefix("tcp://"))
    if parts.port is None or parts.path not in ("", "/"):
        raise BadUpstream(f"{usage}: {endpoint!r}")
    return endpoint.rstrip("/")
