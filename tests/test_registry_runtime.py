import pytest
import torch

from vlmkit.errors import RegistryError
from vlmkit.registry import Registry
from vlmkit.runtime import make_generator, seed_everything


def test_register_list_glob_create_and_meta():
    reg: Registry = Registry("perturbation")

    @reg.register("gaussian_noise", family="noise")
    def gaussian_noise(x, sigma=0.1):
        return x + sigma

    @reg.register(family="blur")
    def defocus_blur(x):
        return x

    assert reg.list() == ["defocus_blur", "gaussian_noise"]
    assert reg.list("gauss*") == ["gaussian_noise"]
    assert reg.list(family="blur") == ["defocus_blur"]
    assert reg.create("gaussian_noise", 1.0, sigma=0.5) == 1.5
    assert reg.meta("gaussian_noise") == {"family": "noise"}
    assert "defocus_blur" in reg and len(reg) == 2


def test_unknown_name_suggests_and_duplicates_refused():
    reg: Registry = Registry("metric")
    reg.add("recall_at_k", lambda: 1)
    with pytest.raises(RegistryError, match=r"unknown metric 'recal_at_k'. Did you mean: recall_at_k"):
        reg.get("recal_at_k")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("recall_at_k", lambda: 2)


def test_seeds_make_runs_repeatable():
    seed_everything(7)
    a = torch.rand(3)
    seed_everything(7)
    assert torch.equal(a, torch.rand(3))
    g1, g2 = make_generator(3), make_generator(3)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    with pytest.raises(ValueError, match="non-negative int"):
        make_generator(-1)
