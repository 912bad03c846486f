"""Backbone weight lookup: clear errors, no network unless asked, downloads that cannot hang."""
import socket
import time
import urllib.request

import pytest
import torch
import torchvision
from pytorch_fid.inception import FID_WEIGHTS_URL

from gs_core.eval import backbones
from gs_core.eval.backbones import BACKBONES, Backbone, MissingWeightsError, fetch_weights, require_weights
from gs_core.eval.quality import FIDMetric, LPIPSMetric


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A torch cache with nothing in it, and any network access turned into a test failure."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("metric construction tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_table_matches_the_packages_urls():
    assert BACKBONES["alexnet"].url == torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    assert BACKBONES["vgg16"].url == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    assert BACKBONES["fid_inception"].url == FID_WEIGHTS_URL
    for backbone in BACKBONES.values():
        assert backbone.url.rsplit("/", 1)[1] == backbone.file


def test_missing_weights_error_says_where_and_how(empty_cache):
    with pytest.raises(MissingWeightsError) as info:
        require_weights("alexnet")
    message = str(info.value)
    expected = empty_cache / "alexnet-owt-7be5be79.pth"
    assert info.value.path == expected
    assert str(expected) in message
    assert BACKBONES["alexnet"].url in message
    assert "python -m gs_core fetch-weights" in message


def test_require_weights_finds_file_in_torch_home(empty_cache):
    empty_cache.mkdir(parents=True)
    (empty_cache / BACKBONES["vgg16"].file).write_bytes(b"x")
    assert require_weights("vgg16") == empty_cache / "vgg16-397923af.pth"


def test_unknown_backbone_is_rejected():
    with pytest.raises(ValueError, match="known: alexnet"):
        require_weights("resnet50")


@pytest.mark.parametrize("build", [LPIPSMetric, lambda: LPIPSMetric("vgg"), FIDMetric],
                         ids=["lpips-alex", "lpips-vgg", "fid"])
def test_metrics_fail_fast_without_weights(empty_cache, build):
    start = time.monotonic()
    with pytest.raises(MissingWeightsError):
        build()
    assert time.monotonic() - start < 5


def _file_url(tmp_path, payload: bytes) -> str:
    source = tmp_path / "served.pth"
    source.write_bytes(payload)
    return source.as_uri()


def test_fetch_downloads_atomically_and_skips_present_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    payload = bytes(range(256)) * 1000
    fake = Backbone(file=BACKBONES["alexnet"].file, url=_file_url(tmp_path, payload), used_by="test")
    monkeypatch.setitem(BACKBONES, "alexnet", fake)

    [path] = fetch_weights(["alexnet"], timeout_s=5)
    assert path.read_bytes() == payload
    assert sorted(p.name for p in path.parent.iterdir()) == [fake.file]  # no partial file left

    monkeypatch.setitem(BACKBONES, "alexnet", Backbone(fake.file, "file:///nonexistent/x.pth", "test"))
    assert fetch_weights(["alexnet"]) == [path]  # present: not downloaded again


def test_fetch_failure_is_clear_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(BACKBONES, "vgg16", Backbone(BACKBONES["vgg16"].file, "file:///nonexistent/x.pth", "test"))
    with pytest.raises(RuntimeError, match="Could not download file:///nonexistent/x.pth"):
        fetch_weights(["vgg16"])
    assert list(backbones.weights_path("vgg16").parent.iterdir()) == []


def test_fetch_times_out_on_a_server_that_never_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # accepts connections into the backlog but never replies
        url = f"http://127.0.0.1:{server.getsockname()[1]}/weights.pth"
        monkeypatch.setitem(BACKBONES, "fid_inception",
                            Backbone(BACKBONES["fid_inception"].file, url, "test"))
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="timed out"):
            fetch_weights(["fid_inception"], timeout_s=0.5)
        assert time.monotonic() - start < 5
    assert not backbones.weights_path("fid_inception").exists()
