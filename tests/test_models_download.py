"""Checkpoint downloads: local HTTP server and file:// URLs, checksums, interrupted transfers, registry."""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import SAM_REF

import samrefiner.models
from samrefiner import load_model
from samrefiner.errors import CheckpointError
from samrefiner.models.download import fetch, sha256_of
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
    assert sorted(p.name for p in cache.iterdir()) == ["weights.pth"]


def test_cached_file_is_reused_without_network(cache):
    cache.mkdir()
    (cache / "weights.pth").write_bytes(b"already here")
    assert fetch(closed_port_url(), "weights.pth", PAYLOAD_SHA).read_bytes() == b"already here"


def test_good_download_from_file_url(tmp_path, cache):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    path = fetch(source.as_uri(), "weights.pth", PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD and sha256_of(path) == PAYLOAD_SHA


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
    assert f"{len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes" in message
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
    assert message.endswith(f"put the file at {cache / 'sam_vit_b_01ec64.pth'} or pass --model PATH")


def test_registry_name_downloads_verifies_and_loads(cache, monkeypatch):
    checkpoint = SAM_REF / "reduced_sam.pth"
    entry = replace(REGISTRY["vit_b"], url=checkpoint.as_uri(), sha256=sha256_of(checkpoint))
    monkeypatch.setitem(REGISTRY, "vit_b", entry)
    model = load_model("vit_b")
    assert model.kind == "sam" and model.name == str(cache / "sam_vit_b_01ec64.pth")
    assert sorted(p.name for p in cache.iterdir()) == ["sam_vit_b_01ec64.pth"]


def test_hf_id_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(samrefiner.models, "_hub_unreachable", lambda: "huggingface.co: test network is off")
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
