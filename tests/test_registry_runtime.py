"""Registries (one decorator idiom, lazy import of the defining modules) and the runtime helpers."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from vlmkit.errors import RegistryError
from vlmkit.registry import ATTACKS, METRICS, MODELS, PERTURBATIONS, TASKS, Registry
from vlmkit.runtime import make_generator, seed_everything

PKG = Path(__file__).resolve().parents[1] / "vlmkit"
REGISTRIES = {"MODELS": MODELS, "PERTURBATIONS": PERTURBATIONS, "ATTACKS": ATTACKS, "METRICS": METRICS,
              "TASKS": TASKS}
#: Modules that define the registration API itself (their calls register nothing at import).
API_MODULES = {"vlmkit.registry", "vlmkit.perturb.base"}


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

    @reg.register("recall_at_k")
    def recall_at_k() -> int:
        return 1

    with pytest.raises(RegistryError, match=r"unknown metric 'recal_at_k'. Did you mean: recall_at_k"):
        reg.get("recal_at_k")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("recall_at_k")(lambda: 2)
    assert reg.register("recall_at_k")(recall_at_k) is recall_at_k  # the same object again is fine


def _write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def test_modules_are_imported_on_first_read_only(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("widget", modules=("_vlmkit_test_widgets_a", "_vlmkit_test_widgets_b"))
    monkeypatch.setattr(sys.modules[__name__], "WIDGETS", reg, raising=False)
    for name, entry in (("_vlmkit_test_widgets_a", "alpha"), ("_vlmkit_test_widgets_b", "beta")):
        monkeypatch.delitem(sys.modules, name, raising=False)
        _write_module(tmp_path, name, f"""
            import sys
            WIDGETS = sys.modules[{__name__!r}].WIDGETS
            LOOKED_UP = "alpha" in WIDGETS  # a read while the modules import sees what is there, no recursion

            @WIDGETS.register({entry!r}, size={len(entry)})
            def {entry}():
                return {entry!r}
            """)
    assert "not loaded" in repr(reg) and "_vlmkit_test_widgets_a" not in sys.modules  # nothing imported yet
    assert reg.list() == ["alpha", "beta"]
    assert sys.modules["_vlmkit_test_widgets_b"].LOOKED_UP is True
    assert reg.create("beta") == "beta" and reg.meta("alpha") == {"size": 5} and list(reg) == ["alpha", "beta"]
    assert repr(reg) == "Registry('widget', 2 entries)"


def test_failed_import_propagates_and_is_retried(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "_vlmkit_test_broken", raising=False)
    _write_module(tmp_path, "_vlmkit_test_broken", "raise ImportError('needs an extra')\n")
    reg: Registry = Registry("widget", modules=("_vlmkit_test_broken",))
    with pytest.raises(ImportError, match="needs an extra"):
        reg.list()
    _write_module(tmp_path, "_vlmkit_test_broken", "X = 1\n")
    monkeypatch.delitem(sys.modules, "_vlmkit_test_broken", raising=False)
    import importlib

    importlib.invalidate_caches()
    assert reg.list() == [] and "loaded" not in repr(reg)


def test_concurrent_first_reads_wait_for_the_whole_import(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("widget", modules=("_vlmkit_test_slow",))
    monkeypatch.setattr(sys.modules[__name__], "SLOW", reg, raising=False)
    monkeypatch.delitem(sys.modules, "_vlmkit_test_slow", raising=False)
    _write_module(tmp_path, "_vlmkit_test_slow", f"""
        import sys, time
        SLOW = sys.modules[{__name__!r}].SLOW
        for i in range(5):
            SLOW.register(f"w{{i}}")(lambda: None)
            time.sleep(0.02)
        """)
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(len(reg))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [5, 5, 5, 5]


def _registering_modules() -> dict[str, set[str]]:
    """Registry name -> modules of vlmkit that register into it (``@REG.register``,
    ``@register_perturbation``), read from the source."""
    found: dict[str, set[str]] = {name: set() for name in REGISTRIES}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        if module in API_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "register":
                owner = f.value.attr if isinstance(f.value, ast.Attribute) else getattr(f.value, "id", None)
                if owner in REGISTRIES:
                    found[owner].add(module)
            elif isinstance(f, ast.Name) and f.id == "register_perturbation":
                found["PERTURBATIONS"].add(module)
    return found


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_every_registering_module_is_listed_in_its_registry(name):
    """A registry imports exactly the modules that register into it: none forgotten (its entries would be
    missing until someone imports the module), none stale (a module that moved or registers nothing)."""
    listed, found = set(REGISTRIES[name].modules), _registering_modules()[name]
    assert listed == found, f"{name}.modules: missing {sorted(found - listed)}, stale {sorted(listed - found)}"


def test_import_vlmkit_is_light_and_registries_fill_on_first_read():
    code = ("import sys, vlmkit\n"
            "heavy = sorted(m for m in ('torch', 'pandas', 'vlmkit.models', 'vlmkit.tasks', 'vlmkit.perturb', "
            "'vlmkit.evaluate') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "assert 'gaussian_noise' in vlmkit.list_perturbations()\n"
            "assert 'vlmkit.perturb.corruptions' in sys.modules and 'vlmkit.tasks' not in sys.modules\n"
            "assert callable(vlmkit.load_model) and vlmkit.VLM.__name__ == 'VLM'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_seeds_make_runs_repeatable():
    seed_everything(7)
    a = torch.rand(3)
    seed_everything(7)
    assert torch.equal(a, torch.rand(3))
    g1, g2 = make_generator(3), make_generator(3)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    with pytest.raises(ValueError, match="non-negative int"):
        make_generator(-1)


_REUSE_PROBE = textwrap.dedent("""
    import os, resource, sys
    import vlmkit, vlmkit.allocator as a
    import torch
    def faults_of_fresh_batch():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(64, 3, 224, 224).fill_(1.0)  # 38.5 MB, freed at once
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    for _ in range(12):  # steady state: the small chunks posix_memalign splits off fill glibc's tcache first
        faults_of_fresh_batch()
    print(a.tune_allocator(), min(faults_of_fresh_batch() for _ in range(3)))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_allocator_reuses_freed_batches_and_opts_out():
    """Under the policy ``import vlmkit`` sets, freed 38.5 MB batches are reused: after a few rounds, allocating
    and filling the next one costs (almost) no page faults -- 9,400 4-KiB pages when each is mapped afresh, as
    glibc's defaults do. ``VLMKIT_MALLOC=system`` leaves the C library alone (tune_allocator reports False)."""
    import os

    def probe(**env: str) -> tuple[str, int]:
        e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
        out = subprocess.run([sys.executable, "-c", _REUSE_PROBE], capture_output=True, text=True, env=e, check=True)
        tuned, faults = out.stdout.split()
        return tuned, int(faults)

    tuned, faults = probe()
    assert tuned == "True" and faults < 200, faults
    assert probe(VLMKIT_MALLOC="system")[0] == "False"
