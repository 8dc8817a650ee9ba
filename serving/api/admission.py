"""The one admission check: what a request asks, checked once, before any work, whichever door
it came through (the OpenAI, Cohere, rerank and sparse routes, gRPC, /tokenize, the bulk job's
OpenAI batch lines).

`admit` resolves the model among those served here (a model of another task: a 4xx naming its
routes), checks the options against it (dimensions, every encoding format), the inputs (none,
too many, an empty text), the request's own limits (Cohere's max_tokens, rerank's top_n) and
the prompt its input_type names, and gives back the job with what serves it (`Admitted`). The
pipeline takes an `Admitted` and checks none of this again. Each door turns its own wire format
into the core's job first (serving.api.openai_route, cohere_route, ...): what is a wire matter
(a missing field, an unknown enum) is refused there."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from models.errors import InvalidInput, InvalidOption, ModelNotFound, TooManyInputs
from models.postprocess import validate_options
from models.prompts import resolve_prompt
from models.rerank import check_pairs
from models.sparse import check_top_k
from models.specs import resolve_model
from models.tokenizer import Truncate
from serving.pipeline.embed import EmbedJob
from serving.pipeline.reranking import RerankJob
from serving.pipeline.runtime import Admitted, ModelRuntime
from serving.pipeline.sparse import LocalSparse, SparseJob
from serving.pipeline.tasks import require_task

NO_SPARSE = ("No sparse (SPLADE) model is served here (GET /v1/models lists each model's task); "
             "dense vectors: POST /v1/embeddings.")


@dataclass(frozen=True)
class Served:
    """What a door admits requests to."""

    dense: Mapping[str, ModelRuntime]  # the pipeline's models (embed and rerank), by spec key
    sparse: Mapping[str, LocalSparse] | None = None  # None: no sparse service here
    max_inputs: int = 2048  # inputs (texts, documents) per request


def admit(served: Served, job: EmbedJob | RerankJob | SparseJob, *, any_task: bool = False) -> Admitted:
    """`job` checked against what is served, with its runtime and prompt, or the refusal.
    `any_task`: only the tokenizer is wanted (/tokenize), whatever the model's task."""
    if isinstance(job, RerankJob):
        return _rerank(served, job)
    if isinstance(job, SparseJob):
        return _sparse(served, job)
    return _embed(served, job, any_task)


def dense_runtime(served: Served, model: str) -> ModelRuntime:
    """The served model `model` names; a 404 that lists the served ones (not the registry's)."""
    try:
        rt = served.dense.get(resolve_model(model).key)
    except ModelNotFound:
        rt = None
    if rt is None:
        names = ", ".join(r.spec.id for r in served.dense.values())
        raise ModelNotFound(f"The model '{model[:100]}' is not served here. Served models: {names}.", param="model")
    return rt


def _embed(served: Served, job: EmbedJob, any_task: bool) -> Admitted:
    if not any_task:
        _refuse_sparse_model(served, job.model)
    rt = dense_runtime(served, job.model)
    if job.max_tokens is not None and job.max_tokens < rt.spec.max_seq_length:
        raise InvalidOption(
            f"max_tokens below the model's maximum ({rt.spec.max_seq_length}) is not supported; leave it out.",
            param="max_tokens",
        )
    if not any_task:
        require_task(rt.spec, "embed")
        for fmt in job.formats:
            validate_options(rt.spec, replace(job.options, encoding_format=fmt))
    _check_inputs(job.count, job.texts, served.max_inputs, "input")
    prompt = resolve_prompt(rt.prompts, job.input_type)
    if prompt and job.texts is None:
        raise InvalidOption(
            f"input_type '{job.input_type}' puts a prompt before the text; token ids are embedded as given.",
            param="input_type",
        )
    return Admitted(job, rt, prompt)


def _refuse_sparse_model(served: Served, model: str) -> None:
    """A sparse model named on a dense route: a 400 that says where to go."""
    if served.sparse and model:
        try:
            key = resolve_model(model).key
        except ModelNotFound:
            return
        if key in served.sparse:
            require_task(served.sparse[key].spec, "embed")


def _check_inputs(count: int, texts: list[str] | None, max_inputs: int, param: str) -> None:
    """Some inputs, not too many, no empty text (token ids: `texts` None); `param` names the field."""
    if count == 0:
        raise InvalidInput(f"{param} must not be empty.", param=param)
    if count > max_inputs:
        raise TooManyInputs(f"{param} has {count} items; at most {max_inputs} are allowed per request.", param=param)
    for i, t in enumerate(texts or ()):
        if not t:
            raise InvalidInput(f"{param}[{i}] is an empty string.", param=param)


def _rerank(served: Served, job: RerankJob) -> Admitted:
    rt = dense_runtime(served, job.model)
    require_task(rt.spec, "rerank")
    check_pairs(job.query, job.documents, served.max_inputs)
    if job.top_n is not None and job.top_n < 1:
        raise InvalidOption("top_n must be at least 1.", param="top_n")
    if job.max_tokens_per_doc is not None and job.max_tokens_per_doc < 1:  # before the cache: a hit is not tokenized
        raise InvalidOption("max_tokens_per_doc must be at least 1.", param="max_tokens_per_doc")
    return Admitted(job, rt)


def _sparse(served: Served, job: SparseJob) -> Admitted:
    if served.sparse is None:
        raise InvalidInput(NO_SPARSE, param="model", code="wrong_model_task")
    if not job.model and served.sparse:  # the model is optional in TEI's request: the first served
        job = replace(job, model=next(iter(served.sparse.values())).spec.id)
    local = _sparse_model(served, job.model)
    _check_inputs(len(job.texts or ()), job.texts, served.max_inputs, "inputs")
    if job.truncate is Truncate.WINDOW:
        raise InvalidOption("truncate window is for dense vectors; a sparse vector reads one window (end, start "
                            "or none).", param="truncate")
    check_top_k(job.top_k)
    return Admitted(job, local, resolve_prompt(local.prompts, job.input_type))


def _sparse_model(served: Served, name: str) -> LocalSparse:
    try:
        key = resolve_model(name).key
    except ModelNotFound:
        key = None
    if key in served.sparse:
        return served.sparse[key]
    names = ", ".join(m.spec.id for m in served.sparse.values()) or "none"
    if key in served.dense:
        require_task(served.dense[key].spec, "sparse")
    raise ModelNotFound(f"The model '{name[:100]}' is not served here. Sparse models served here: {names}.",
                        param="model")
