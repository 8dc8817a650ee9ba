"""Which routes serve which task (models.specs.ModelSpec.task), and the one refusal of a model
asked for another task's route: a 4xx that says where the model is served instead."""

from __future__ import annotations

from models.errors import InvalidInput
from models.specs import ModelSpec

ROUTES = {
    "embed": "POST /v1/embeddings, /v2/embed or gRPC Embed",
    "rerank": "POST /v2/rerank, /v1/rerank or gRPC Rerank",
    "sparse": "POST /embed_sparse, /v1/embeddings/sparse or gRPC SparseService.EmbedSparse",
}
WHAT = {"embed": "a dense embedding model", "rerank": "a rerank model (a cross-encoder)",
        "sparse": "a sparse (SPLADE) model"}
DOES = {"embed": "give dense vectors", "rerank": "rerank", "sparse": "give sparse vectors"}


def require_task(spec: ModelSpec, task: str) -> None:
    """`spec` serves `task`, or an InvalidInput naming its own routes."""
    if spec.task == task:
        return
    what = WHAT.get(spec.task, f"a {spec.task} model")
    where = ROUTES.get(spec.task, "its own routes")
    raise InvalidInput(
        f"The model '{spec.id}' is {what}: it cannot {DOES.get(task, task)}. Use it at {where}, or name a model "
        f"that serves {task} (GET /v1/models lists each model's task).",
        param="model", code="wrong_model_task",
    )
