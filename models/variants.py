"""The ways one exported model can run (a variant = a graph file, a backend, a precision), and the
one place that picks a variant for this machine.

`auto` picks the fastest variant this machine runs natively whose fidelity, measured against
sentence-transformers fp32, clears a floor (min cosine on the fidelity texts, long ones included,
and the share of float top-10 neighbours kept). Exact fp32 is always selectable by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from models.cpu import BF16_FLAGS, CpuInfo
from models.errors import ArtifactsMissing, InvalidOption

Backend = Literal["onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]


@dataclass(frozen=True)
class Variant:
    name: str
    backend: Backend
    precision: Precision
    file: str  # the graph in the model's artifact folder
    # CPU flags of which one is needed to run this precision natively (empty: any CPU).
    needs_any: tuple[str, ...] = ()
    # Never picked by `auto`: a lossy option a user must ask for by name.
    opt_in: bool = False
    # Built at export only when asked for (`embedserve export --int8-weights`).
    optional: bool = False

    def runs_natively_on(self, cpu: CpuInfo) -> bool:
        return not self.needs_any or any(f in cpu.flags for f in self.needs_any)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        # ONNX Runtime reading optimum's graph: the reference, exact fp32.
        Variant("fp32", "onnxruntime", "fp32", "model.onnx"),
        # ONNX Runtime's transformer fusions of the same graph: the same vectors.
        Variant("optimized", "onnxruntime", "fp32", "model_optimized.onnx"),
        # Dynamic int8 weights for ONNX Runtime: lossy (mpnet min cosine ~0.77), opt-in.
        Variant("int8", "onnxruntime", "int8", "model_int8.onnx", opt_in=True, optional=True),
        # OpenVINO reading the same model.onnx: exact f32, and bf16 on CPUs with bf16 units.
        Variant("openvino-fp32", "openvino", "fp32", "model.onnx"),
        Variant("openvino-bf16", "openvino", "bf16", "model.onnx", needs_any=BF16_FLAGS),
    )
}
VARIANT_NAMES = tuple(VARIANTS)
AUTO = "auto"

# Fastest first, measured in-process on 2 cores (BENCHMARKS.md, "Choosing the backend"): on an
# AMX Xeon ORT fp32 142 texts/s, OpenVINO f32 161, OpenVINO bf16 463; on an AVX512-BF16 EPYC
# 232, 258, 405.
CPU_PREFERENCE = ("openvino-bf16", "openvino-fp32", "optimized", "fp32")
# CUDA / TensorRT run through ONNX Runtime only.
GPU_PREFERENCE = ("optimized", "fp32")


@dataclass(frozen=True)
class FidelityFloor:
    """What `auto` accepts from a variant that is not exact fp32."""

    # Search is the judge: the share of the fp32 top-10 neighbours kept. The min cosine only
    # guards against one text gone astray (all-mpnet-base-v2 in bf16: min 0.99945-0.99987, mean
    # 0.99997, top-10 kept 0.991 - a floor of 0.9995 served it fp32 at a third of the speed).
    min_cos: float = 0.999
    top10_kept: float = 0.99

    def admits(self, fidelity: dict | None) -> bool:
        return (
            fidelity is not None
            and fidelity.get("min_cos", 0.0) >= self.min_cos
            and fidelity.get("top10_kept", 0.0) >= self.top10_kept
        )


@dataclass
class Choice:
    variant: Variant
    reason: str
    # Every variant looked at and why it was or was not taken, for the log and /v1/models.
    considered: list[dict]
    fidelity: dict | None = None


def get(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise InvalidOption(
            f"unknown variant '{name}'; choose {AUTO} or one of {', '.join(VARIANT_NAMES)}.", param="variant"
        ) from None


def native_fidelity(info: dict, variant: Variant) -> dict | None:
    """The manifest's fidelity figure for `variant` if it was measured at the precision the
    variant runs at here (a bf16 figure taken on a CPU without bf16 units measured fp32)."""
    fid = info.get("fidelity")
    if fid is None:
        return None
    ran = fid.get("precision", variant.precision)
    return fid if ran == variant.precision else None


def choose(
    requested: str,
    exported: dict[str, dict],
    cpu: CpuInfo,
    floor: FidelityFloor = FidelityFloor(),
    *,
    gpu: bool = False,
    available_backends: tuple[str, ...] = ("onnxruntime", "openvino"),
    measure: Callable[[Variant], dict] | None = None,
) -> Choice:
    """The variant to run. `exported`: the manifest's variants (name -> file, fidelity).
    `measure` re-measures a variant's fidelity on this machine when the manifest's figure was
    not taken at the precision it would run at here."""
    if requested != AUTO:
        v = get(requested)
        if requested not in exported:
            raise ArtifactsMissing(
                f"variant '{requested}' was not exported (have: {', '.join(exported)}). "
                "Run: embedserve export" + (" --int8-weights" if v.optional else "")
            )
        if v.backend not in available_backends:
            raise ArtifactsMissing(f"variant '{requested}' needs {v.backend}, which is not installed here.")
        note = "" if v.runs_natively_on(cpu) else f"; this CPU has no {'/'.join(v.needs_any)}, so it runs emulated or at fp32"
        return Choice(v, f"asked for by name{note}", [{"variant": v.name, "taken": True, "why": "asked for by name"}],
                      exported[requested].get("fidelity"))

    # A fixed order, not the texts/s the manifest records: those come from one noisy run on the
    # export machine, and bf16's lead over fp32 (1.7-3x) is what the units are for.
    order = GPU_PREFERENCE if gpu else CPU_PREFERENCE
    considered: list[dict] = []
    for name in order:
        v = VARIANTS[name]
        info = exported.get(name)
        why = None
        if info is None:
            why = "not exported"
        elif v.backend not in available_backends:
            why = f"{v.backend} is not installed"
        elif not v.runs_natively_on(cpu):
            why = f"this CPU has none of {', '.join(v.needs_any)}"
        if why:
            considered.append({"variant": name, "taken": False, "why": why})
            continue
        fid = native_fidelity(info, v)
        if fid is None and v.precision != "fp32" and measure is not None:
            fid = measure(v)
        if v.precision == "fp32":
            ok, why = True, "exact fp32"
        elif fid is None:
            ok, why = False, f"no fidelity measured at {v.precision} on a CPU that runs it"
        elif floor.admits(fid):
            ok, why = True, (f"min cosine {fid['min_cos']:.5f} >= {floor.min_cos}, "
                             f"top-10 kept {fid['top10_kept']:.4f} >= {floor.top10_kept}")
        else:
            ok, why = False, (f"below the fidelity floor: min cosine {fid.get('min_cos', 0):.5f} "
                              f"(floor {floor.min_cos}), top-10 kept {fid.get('top10_kept', 0):.4f} "
                              f"(floor {floor.top10_kept})")
        considered.append({"variant": name, "taken": ok, "why": why})
        if ok:
            fid = fid or info.get("fidelity")
            return Choice(v, f"auto: the fastest variant this CPU runs natively that clears the floor; {why}", considered, fid)
    raise ArtifactsMissing(
        "no exported variant can run here: " + "; ".join(f"{c['variant']}: {c['why']}" for c in considered)
    )
