"""Which variant runs: `auto` takes bf16 only on CPUs with bf16 units and only when its measured
fidelity clears the floor; exact fp32 is always there when asked for; nothing falls back silently.

The rule is tested on the real exported manifests with CPUs described by their flags (with and
without bf16 units); the encoder tests then load real sessions on this machine's CPU."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

from models import cpu as cpuinfo
from models.artifacts import ModelArtifacts
from models.encoder import Encoder
from models.errors import ArtifactsMissing, InvalidOption
from models.specs import resolve_model
from models.variants import FidelityFloor, choose
from tests.support.engine import encoder
from tests.support.service import artifact_dir

AMX_XEON = cpuinfo.CpuInfo("Intel Xeon (AMX)", frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16", "amx_int8"}), 2)
ZEN4_EPYC = cpuinfo.CpuInfo("AMD EPYC (Zen 4)", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}), 2)
OLD_XEON = cpuinfo.CpuInfo("Intel Xeon (Skylake)", frozenset({"avx2", "avx512f", "avx512_vnni"}), 2)
AVX2_ONLY = cpuinfo.CpuInfo("a laptop", frozenset({"avx2"}), 2)


def manifest(model: str) -> dict:
    return ModelArtifacts.load(artifact_dir(), resolve_model(model)).manifest["variants"]


def with_bf16_fidelity(model: str, min_cos: float, top10_kept: float) -> dict:
    """The real manifest with the bf16 variant's measured figures set to these."""
    variants = copy.deepcopy(manifest(model))
    variants["openvino-bf16"]["fidelity"].update(min_cos=min_cos, top10_kept=top10_kept, precision="bf16")
    return variants


@pytest.mark.parametrize("cpu", [AMX_XEON, ZEN4_EPYC], ids=["amx_bf16", "avx512_bf16"])
def test_auto_runs_openvino_bf16_on_cpus_with_bf16_units_when_it_clears_the_floor(cpu):
    choice = choose("auto", with_bf16_fidelity("all-MiniLM-L6-v2", 0.99996, 0.993), cpu)
    assert (choice.variant.name, choice.variant.backend, choice.variant.precision) == ("openvino-bf16", "openvino", "bf16")
    assert choice.fidelity["min_cos"] == 0.99996


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_auto_follows_the_fidelity_measured_for_each_model(model):
    """On the real manifests (measured at export on this machine): bf16 where its figures clear
    the default floor, exact fp32 where they do not (all-mpnet-base-v2 on AVX512-BF16: 0.99945)."""
    variants = manifest(model)
    fid = variants["openvino-bf16"]["fidelity"]
    choice = choose("auto", variants, ZEN4_EPYC)
    clears = FidelityFloor().admits(fid) and fid["precision"] == "bf16"
    print(f"{model}: bf16 measured min cosine {fid['min_cos']}, top-10 kept {fid['top10_kept']} "
          f"({fid['precision']}) -> auto runs {choice.variant.name}")
    assert choice.variant.name == ("openvino-bf16" if clears else "openvino-fp32")


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
@pytest.mark.parametrize("cpu", [OLD_XEON, AVX2_ONLY], ids=["avx512_no_bf16", "avx2"])
def test_auto_runs_exact_fp32_on_cpus_without_bf16_units(model, cpu):
    choice = choose("auto", manifest(model), cpu)
    assert choice.variant.precision == "fp32"
    assert choice.variant.name == "openvino-fp32"  # faster than ONNX Runtime fp32 on both CPUs measured
    skipped = {c["variant"]: c["why"] for c in choice.considered if not c["taken"]}
    assert "openvino-bf16" in skipped and "amx_bf16" in skipped["openvino-bf16"]


def test_a_variant_below_the_fidelity_floor_is_passed_over_for_exact_fp32():
    for variants, floor in ((with_bf16_fidelity("all-MiniLM-L6-v2", 0.9985, 0.9903), FidelityFloor()),
                            (with_bf16_fidelity("all-MiniLM-L6-v2", 0.99996, 0.98), FidelityFloor()),
                            (with_bf16_fidelity("all-MiniLM-L6-v2", 0.99996, 0.993), FidelityFloor(0.999999, 0.99))):
        choice = choose("auto", variants, ZEN4_EPYC, floor)
        assert choice.variant.name == "openvino-fp32"
        bf16 = next(c for c in choice.considered if c["variant"] == "openvino-bf16")
        assert not bf16["taken"] and "below the fidelity floor" in bf16["why"]
    # The floor is a setting: lowered, the same figures are accepted.
    lenient = choose("auto", with_bf16_fidelity("all-MiniLM-L6-v2", 0.9985, 0.9903), ZEN4_EPYC, FidelityFloor(0.998, 0.99))
    assert lenient.variant.name == "openvino-bf16"


def test_the_default_floor_admits_bf16_that_keeps_the_neighbours_with_one_text_at_0_9995():
    """all-mpnet-base-v2 in bf16 on an AVX512-BF16 EPYC: mean cosine 0.99997, top-10 kept 0.991,
    its worst text at 0.99945. Search keeps its neighbours, so `auto` serves bf16 (the floor was
    0.9995 min cosine, which served it fp32 at a third of the speed)."""
    choice = choose("auto", with_bf16_fidelity("all-mpnet-base-v2", 0.99945, 0.991), ZEN4_EPYC)
    assert choice.variant.name == "openvino-bf16"
    assert (FidelityFloor().min_cos, FidelityFloor().top10_kept) == (0.999, 0.99)


def test_exact_fp32_is_always_selectable_by_name():
    for cpu in (AMX_XEON, ZEN4_EPYC, AVX2_ONLY):
        choice = choose("fp32", manifest("all-MiniLM-L6-v2"), cpu)
        assert (choice.variant.backend, choice.variant.precision) == ("onnxruntime", "fp32")


def test_on_a_gpu_onnx_runtime_runs_and_openvino_is_not_considered():
    choice = choose("auto", manifest("all-MiniLM-L6-v2"), ZEN4_EPYC, gpu=True)
    assert choice.variant.backend == "onnxruntime" and choice.variant.precision == "fp32"


def test_without_openvino_installed_onnx_runtime_serves():
    choice = choose("auto", manifest("all-MiniLM-L6-v2"), ZEN4_EPYC, available_backends=("onnxruntime",))
    assert choice.variant.name == "optimized"
    assert all(c["why"] == "openvino is not installed" for c in choice.considered if c["variant"].startswith("openvino"))


def test_unknown_or_unexported_variants_are_clear_errors():
    with pytest.raises(InvalidOption, match="unknown variant 'fp16'"):
        choose("fp16", manifest("all-MiniLM-L6-v2"), ZEN4_EPYC)
    without_int8 = {k: v for k, v in manifest("all-MiniLM-L6-v2").items() if k != "int8"}
    with pytest.raises(ArtifactsMissing, match="--int8-weights"):
        choose("int8", without_int8, ZEN4_EPYC)


def test_int8_weights_are_never_picked_by_auto():
    for cpu in (AMX_XEON, ZEN4_EPYC, OLD_XEON, AVX2_ONLY):
        assert choose("auto", manifest("all-MiniLM-L6-v2"), cpu).variant.precision != "int8"


# ---- real sessions on this machine's CPU -------------------------------------------------


def test_auto_on_this_machine_runs_bf16_exactly_when_the_cpu_has_bf16_units():
    here = cpuinfo.detect()
    enc = Encoder.from_artifact_dir(resolve_model("all-MiniLM-L6-v2"), artifact_dir(), providers="cpu")
    d = enc.describe()
    print(f"this CPU: {here.model} {here.features}; auto runs {enc.variant} ({d['backend']}, {d['precision']})")
    bf16_clears = FidelityFloor().admits(enc.artifacts.manifest["variants"]["openvino-bf16"]["fidelity"])
    assert d["precision"] == ("bf16" if here.bf16 and bf16_clears else "fp32")
    assert d["cpu"]["features"] == here.features
    assert d["fidelity"]["min_cos"] >= FidelityFloor().min_cos


def test_planning_as_a_cpu_without_bf16_runs_exact_fp32_vectors():
    spec = resolve_model("all-MiniLM-L6-v2")
    enc = Encoder.from_artifact_dir(spec, artifact_dir(), providers="cpu", cpu=cpuinfo.detect().with_flags({"avx2"}))
    assert (enc.variant, enc.session.precision) == ("openvino-fp32", "fp32")
    texts = ["exact fp32 on a CPU without bf16 units", "the same vectors as ONNX Runtime fp32"]
    np.testing.assert_allclose(enc.embed(texts), encoder("all-MiniLM-L6-v2", "fp32").embed(texts), atol=2e-5)


def test_a_bf16_figure_taken_without_bf16_units_is_measured_again_on_a_cpu_that_has_them(caplog):
    """Artifacts exported on a CPU without bf16 carry an fp32 figure for openvino-bf16; a bf16
    machine measures the variant itself before trusting it (never a silent guess)."""
    here = cpuinfo.detect()
    spec = resolve_model("all-MiniLM-L6-v2")
    real = ModelArtifacts.load(artifact_dir(), spec)
    doctored = copy.deepcopy(real.manifest)
    doctored["variants"]["openvino-bf16"]["fidelity"]["precision"] = "fp32"
    artifacts = ModelArtifacts(spec, real.root, doctored)
    with caplog.at_level(logging.WARNING):
        enc = Encoder(spec, artifacts, providers="cpu", calibrate=False)
    if here.bf16:
        assert enc.variant == "openvino-bf16"
        assert enc.choice.fidelity["measured_at"] == "load" and enc.choice.fidelity["precision"] == "bf16"
        assert "measuring openvino-bf16 on this CPU" in caplog.text
    else:  # this CPU has no bf16 units: the variant is not a candidate, nothing is measured
        assert enc.variant == "openvino-fp32" and "measuring" not in caplog.text
