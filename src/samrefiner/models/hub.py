"""Can the Hugging Face Hub be reached? A quick probe, so that an offline machine gets one line
instead of minutes of retries."""

from __future__ import annotations

import socket
import urllib.request
from urllib.parse import SplitResult, urlsplit


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached (offline mode, DNS, connection), or None if it can.

    Behind a proxy (HTTPS_PROXY / HTTP_PROXY, unless NO_PROXY exempts the Hub) the proxy is what
    huggingface_hub connects to, so that is what is probed.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(constants.ENDPOINT)
    proxy = proxy_for(endpoint.scheme, endpoint.hostname or "")
    server = proxy or endpoint
    port = server.port or (443 if server.scheme == "https" else 80)
    try:
        socket.create_connection((server.hostname, port), timeout=timeout).close()
    except OSError as error:
        via = f" (proxy for {endpoint.hostname})" if proxy else ""
        return f"{server.hostname}:{port}{via}: {getattr(error, 'strerror', None) or error}"
    return None


def proxy_for(scheme: str, host: str) -> SplitResult | None:
    """The proxy that the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) sets for `host`."""
    proxies = urllib.request.getproxies()
    url = proxies.get(scheme) or proxies.get("all")
    if not url or urllib.request.proxy_bypass(host):
        return None
    return urlsplit(url if "://" in url else f"http://{url}")
