"""Checkpoint downloads: local HTTP server and file:// URLs, checksums, interrupted transfers, registry."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import samrefiner.models.download
import samrefiner.models.hub
from conftest import SAM_REF
from samrefiner import load_model
from samrefiner.errors import CheckpointError
from samrefiner.io.digests import file_sha256
from samrefiner.models.download import fetch
from samrefiner.models.registry import REGISTRY

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """/file sends PAYLOAD; /cut announces PAYLOAD's length, sends half of it and hangs up."""

    def do_GET(self) -> None:
        if self.path not in ("/file", "/cut"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD if self.path == "/file" else PAYLOAD[: len(PAYLOAD) // 2])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SAMREFINER_CACHE", str(folder))
    return folder


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/sam_vit_b_01ec64.pth"


def test_good_download_over_http(server_url, cache):
    path = fetch(f"{server_url}/file", "weights.pth", PAYLOAD_SHA)
    assert path == cache / "weights.pth"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in cache.iterdir()) == ["weights.pth", "weights.pth.sha256"]


def test_cached_file_is_reused_without_network(cache):
    cache.mkdir()
    (cache / "weights.pth").write_bytes(PAYLOAD)
    assert fetch(closed_port_url(), "weights.pth", PAYLOAD_SHA).read_bytes() == PAYLOAD


def test_hand_placed_file_with_wrong_sha256_is_named(cache):
    cache.mkdir()
    placed = cache / "weights.pth"
    placed.write_bytes(b"already here")
    with pytest.raises(CheckpointError) as error:
        fetch(closed_port_url(), "weights.pth", PAYLOAD_SHA)
    found = hashlib.sha256(b"already here").hexdigest()
    assert str(error.value) == (
        f"{placed}: sha256 is {found}, expected {PAYLOAD_SHA} (not the official file, or a damaged copy): "
        "delete it to download it again, or replace it with the official file"
    )
    assert placed.read_bytes() == b"already here"  # the user's file is left alone
    assert sorted(p.name for p in cache.iterdir()) == ["weights.pth"]  # nothing recorded as verified


def test_cached_file_is_hashed_once_until_it_changes(cache, monkeypatch):
    cache.mkdir()
    placed = cache / "weights.pth"
    placed.write_bytes(PAYLOAD)
    hashed = []

    def counting_file_sha256(path, on_chunk=None):
        hashed.append(path)
        return file_sha256(path)

    monkeypatch.setattr(samrefiner.models.download, "file_sha256", counting_file_sha256)
    for _ in range(3):
        assert fetch(closed_port_url(), "weights.pth", PAYLOAD_SHA) == placed
    assert hashed == [placed]
    damaged = bytearray(PAYLOAD)
    damaged[1000] ^= 0xFF
    placed.write_bytes(bytes(damaged))  # same size, new mtime
    stat = placed.stat()
    os.utime(placed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(
        CheckpointError, match=f"sha256 is {hashlib.sha256(damaged).hexdigest()}, expected {PAYLOAD_SHA}"
    ):
        fetch(closed_port_url(), "weights.pth", PAYLOAD_SHA)
    assert hashed == [placed, placed]


def test_downloaded_file_is_not_hashed_again(server_url, cache, monkeypatch):
    fetch(f"{server_url}/file", "weights.pth", PAYLOAD_SHA)

    def no_hashing(path, on_chunk=None):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(samrefiner.models.download, "file_sha256", no_hashing)
    assert fetch(closed_port_url(), "weights.pth", PAYLOAD_SHA).read_bytes() == PAYLOAD


def test_registry_name_with_wrong_hand_placed_file(cache, monkeypatch):
    checkpoint = SAM_REF / "reduced_sam.pth"
    monkeypatch.setitem(REGISTRY, "vit_b", replace(REGISTRY["vit_b"], url=closed_port_url()))
    cache.mkdir()
    (cache / "sam_vit_b_01ec64.pth").symlink_to(checkpoint)  # a loadable SAM checkpoint, but not ViT-B's
    with pytest.raises(CheckpointError) as error:
        load_model("vit_b")
    message = str(error.value)
    assert "\n" not in message
    assert f"sha256 is {file_sha256(checkpoint)}, expected {REGISTRY['vit_b'].sha256}" in message


def test_good_download_from_file_url(tmp_path, cache):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    path = fetch(source.as_uri(), "weights.pth", PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD and file_sha256(path) == PAYLOAD_SHA


def test_wrong_checksum_leaves_nothing(server_url, cache):
    with pytest.raises(CheckpointError) as error:
        fetch(f"{server_url}/file", "weights.pth", "0" * 64)
    message = str(error.value)
    assert "\n" not in message and "sha256" in message and str(cache / "weights.pth") in message
    assert list(cache.iterdir()) == []


def test_interrupted_transfer_leaves_nothing(server_url, cache):
    with pytest.raises(CheckpointError) as error:
        fetch(f"{server_url}/cut", "weights.pth", PAYLOAD_SHA)
    message = str(error.value)
    assert "\n" not in message and "cannot download weights.pth" in message
    half = hashlib.sha256(PAYLOAD[: len(PAYLOAD) // 2]).hexdigest()
    assert f"what arrived has sha256 {half}, expected {PAYLOAD_SHA} (the transfer was cut short" in message
    assert list(cache.iterdir()) == []


def test_missing_file_url(tmp_path, cache):
    with pytest.raises(CheckpointError, match="cannot download weights.pth"):
        fetch((tmp_path / "nothing.bin").as_uri(), "weights.pth", PAYLOAD_SHA)
    assert list(cache.iterdir()) == []


def test_offline_registry_name_says_where_to_put_the_file(cache, monkeypatch):
    monkeypatch.setitem(REGISTRY, "vit_b", replace(REGISTRY["vit_b"], url=closed_port_url()))
    with pytest.raises(CheckpointError) as error:
        load_model("vit_b")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("cannot download sam_vit_b_01ec64.pth")
    assert message.endswith(f"put the official file at {cache / 'sam_vit_b_01ec64.pth'}")
    assert "--" not in message  # the library names no CLI flag


def test_registry_name_downloads_verifies_and_loads(cache, monkeypatch):
    checkpoint = SAM_REF / "reduced_sam.pth"
    entry = replace(REGISTRY["vit_b"], url=checkpoint.as_uri(), sha256=file_sha256(checkpoint))
    monkeypatch.setitem(REGISTRY, "vit_b", entry)
    model = load_model("vit_b")
    assert model.kind == "sam" and model.name == str(cache / "sam_vit_b_01ec64.pth")
    assert sorted(p.name for p in cache.iterdir()) == ["sam_vit_b_01ec64.pth", "sam_vit_b_01ec64.pth.sha256"]


def test_hf_id_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(samrefiner.models.hub, "hub_unreachable", lambda: "huggingface.co: test network is off")
    with pytest.raises(CheckpointError) as error:
        load_model("samrefiner-tests/not-cached-anywhere")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("cannot download samrefiner-tests/not-cached-anywhere (Hugging Face Hub unreachable")


def test_official_registry_entries():
    for name, digest in [
        ("vit_b", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        ("vit_l", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
        ("vit_h", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    ]:
        entry = REGISTRY[name]
        assert entry.url == f"https://dl.fbaipublicfiles.com/segment_anything/{entry.file_name}"
        assert entry.sha256 == digest and entry.kind == "sam"


PROXY_VARIABLES = ["https_proxy", "http_proxy", "all_proxy", "no_proxy"]


@pytest.fixture
def hub(monkeypatch):
    """The default Hub endpoint, online mode, and no proxy variables unless a test sets them."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def connections(monkeypatch):
    """Record where the reachability probe connects instead of connecting."""
    made = []

    class _Connection:
        def close(self) -> None:
            pass

    def connect(address, timeout=None):
        made.append(address)
        return _Connection()

    monkeypatch.setattr(samrefiner.models.hub.socket, "create_connection", connect)
    return made


def test_hub_probe_goes_through_https_proxy(hub, connections):
    hub.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert samrefiner.models.hub.hub_unreachable() is None
    assert connections == [("proxy.example", 3128)]


def test_hub_probe_honours_no_proxy(hub, connections):
    hub.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    hub.setenv("NO_PROXY", "localhost,.huggingface.co")
    assert samrefiner.models.hub.hub_unreachable() is None
    assert connections == [("huggingface.co", 443)]


def test_unreachable_proxy_is_named(hub):
    proxy_url = closed_port_url().rsplit("/", 1)[0]
    hub.setenv("https_proxy", proxy_url)
    reason = samrefiner.models.hub.hub_unreachable()
    assert reason is not None and reason.startswith(f"{proxy_url.split('//')[1]} (proxy for huggingface.co): ")


def test_reachable_local_proxy_counts_as_online(hub, server_url):
    hub.setenv("HTTPS_PROXY", server_url)
    assert samrefiner.models.hub.hub_unreachable(timeout=2.0) is None
