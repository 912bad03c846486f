"""GS on the published full-width generators (CartoonGAN, CycleGAN ResNet-9, AnimeGANv2), not only on tiny ones: bugs that only real sizes show (more than
2^24 activation values, 256-channel trunks) stay fixed. Random weights in the official layouts; a step or two."""
import pytest
import torch

from gs_core.methods import SlimConfig, run_method
from gs_core.models import create_generator
from gs_core.slim.quant import layer_bits
from gs_core.slim.train import TrainConfig

FULL_WIDTH = {"cartoongan": {}, "cyclegan": {"n_blocks": 9}, "animeganv2": {}}


# 8 bits as the default grid trains it (quantizers switched on after the freeze, on the narrowed student), 4 from
# the first step
@pytest.mark.parametrize("bits, quant_delay", [(8, 0.5), (4, 0.0)])
@pytest.mark.parametrize("arch", FULL_WIDTH)
def test_gs_runs_on_a_full_width_official_generator(arch, bits, quant_delay, tmp_path):
    torch.manual_seed(0)
    teacher = create_generator(arch, **FULL_WIDTH[arch]).eval()
    inputs = torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        outputs = teacher(inputs)
    cfg = SlimConfig(method="gs", bits=bits, sparsity=0.5, batch_size=1,
                     train=TrainConfig(steps=2, ndf=8, d_layers=2, log_every=1, checkpoint_every=2,
                                       quant_delay=quant_delay))
    slim, card = run_method(teacher, inputs, outputs, cfg, tmp_path, progress=False)
    assert set(layer_bits(slim).values()) == {bits}
    assert card["plan"]["channels_kept"] < card["plan"]["channels_total"]
    with torch.no_grad():
        y = slim(inputs[:1])
    assert y.shape == inputs[:1].shape and torch.isfinite(y).all()
