"""A cross-encoder exported from its CrossEncoder folder scores pairs as
`CrossEncoder(folder).predict` does: one label through its sigmoid, three labels as the raw
logits (predict's identity), within 1e-4 at fp32 on every exact variant, on short documents and
on documents over the model's maximum (cut longest-first: the document before the query), with
the same ranking; one pair at a time equals all at once."""

from __future__ import annotations

import numpy as np
import pytest

from models.corpus import evaluation_texts
from models.encoder import Encoder
from models.model_folder import exported_spec, read_folder
from models.rerank import Reranker, rank
from models.specs import register_user_model
from tests.support.cross_encoders import CROSS_ENCODERS, MAX_LENGTH, reference

TOLERANCE = 1e-4
QUERY = "how do cats sleep"
SHORT = ["Cats sleep most of the day.", "The stock market fell.", "A kitten naps in the sun.", "ok", "Dogs bark."]


def long_documents() -> list[str]:
    """Documents well over the tiny models' maximum of MAX_LENGTH tokens."""
    return sorted(evaluation_texts(), key=len)[-4:]


def reranker(cross_encoders, name: str, variant: str = "fp32") -> Reranker:
    spec = exported_spec(cross_encoders.artifact_dir, name)
    register_user_model(spec)
    return Reranker(Encoder.from_artifact_dir(spec, cross_encoders.artifact_dir, variant=variant, providers="cpu",
                                              calibrate=False))


def test_folders_are_read_as_rerank_models_with_their_labels_and_activation(cross_encoders):
    one = read_folder(str(cross_encoders.folders["tiny-rerank"]), "tiny-rerank")
    three = read_folder(str(cross_encoders.folders["tiny-rerank-3"]), "tiny-rerank-3")
    assert (one.task, one.dimension, one.extra["activation"]) == ("rerank", 1, "torch.nn.modules.activation.Sigmoid")
    assert (three.task, three.dimension, three.extra["activation"]) == ("rerank", 3, "torch.nn.modules.linear.Identity")
    assert one.max_seq_length == three.max_seq_length == MAX_LENGTH
    # A plain Hugging Face sequence-classification folder (no sentence-transformers files) is one too.
    plain = read_folder(str(cross_encoders.folders["tiny-rerank"]) + "-hf", "tiny-rerank-hf")
    assert (plain.task, plain.dimension, plain.extra["activation"]) == ("rerank", 1, "torch.nn.modules.activation.Sigmoid")


@pytest.mark.parametrize("variant", ["fp32", "optimized", "openvino-fp32"])
@pytest.mark.parametrize("name", [m.name for m in CROSS_ENCODERS])
def test_scores_equal_cross_encoder_predict_on_short_and_over_long_documents(cross_encoders, name, variant):
    rr = reranker(cross_encoders, name, variant)
    docs = SHORT + long_documents()
    pairs = rr.pairs.encode(QUERY, long_documents())
    assert all(len(s) == MAX_LENGTH for s in pairs.seqs), "the long documents must be cut"
    got = rr.score(QUERY, docs)
    ref = reference(cross_encoders.folders[name], [(QUERY, d) for d in docs])
    assert got.shape == ref.shape == ((len(docs),) if name == "tiny-rerank" else (len(docs), 3))
    assert np.abs(got - ref).max() <= TOLERANCE, np.abs(got - ref).max()
    assert rank(got) == rank(np.asarray(ref))
    assert len(set(np.round(got.ravel(), 4))) > len(docs) // 2, "random weights must still tell pairs apart"


def test_one_label_scores_are_probabilities_and_three_labels_are_logits(cross_encoders):
    one = reranker(cross_encoders, "tiny-rerank").score(QUERY, SHORT)
    three = reranker(cross_encoders, "tiny-rerank-3").score(QUERY, SHORT)
    assert ((one > 0) & (one < 1)).all()
    assert (three < 0).any() or (three > 1).any(), three  # identity: not squashed


def test_a_long_query_is_cut_as_sentence_transformers_cuts_it(cross_encoders):
    rr = reranker(cross_encoders, "tiny-rerank")
    query = long_documents()[0]
    docs = SHORT + long_documents()[1:]
    ref = reference(cross_encoders.folders["tiny-rerank"], [(query, d) for d in docs])
    assert np.abs(rr.score(query, docs) - ref).max() <= TOLERANCE


def test_one_pair_at_a_time_equals_all_at_once(cross_encoders):
    rr = reranker(cross_encoders, "tiny-rerank")
    docs = SHORT + long_documents()
    together = rr.score(QUERY, docs)
    alone = np.concatenate([rr.score(QUERY, [d]) for d in docs])
    assert np.abs(together - alone).max() <= 1e-5


def test_max_tokens_per_doc_cuts_each_document_before_pairing(cross_encoders):
    rr = reranker(cross_encoders, "tiny-rerank")
    docs = long_documents()
    cut = rr.pairs.cut(docs, 5)
    ref = reference(cross_encoders.folders["tiny-rerank"], [(QUERY, d) for d in cut])
    assert np.abs(rr.score(QUERY, docs, max_tokens_per_doc=5) - ref).max() <= TOLERANCE
    assert all(len(rr.pairs.encode(QUERY, [d]).seqs[0]) < MAX_LENGTH for d in cut)


def test_a_rerank_model_makes_no_embeddings_not_even_in_the_bulk_job(cross_encoders, tmp_path):
    from models.errors import InvalidInput
    from models.postprocess import OutputOptions, validate_options
    from serving.batch.plan import BatchOptions, prepare
    from serving.settings import Settings
    from tests.support.batch import write_jsonl

    spec = exported_spec(cross_encoders.artifact_dir, "tiny-rerank")
    register_user_model(spec)
    with pytest.raises(InvalidInput, match="rerank model, not an embedding model"):
        validate_options(spec, OutputOptions())
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "some text"}])
    opts = BatchOptions(input=str(corpus), output=tmp_path / "out", model="tiny-rerank", workers=1, progress=False)
    with pytest.raises(Exception, match=r"is a rerank model \(a cross-encoder\): the bulk job embeds texts .*POST /v2/rerank"):
        prepare(opts, Settings(artifact_dir=cross_encoders.artifact_dir, models=["tiny-rerank"]))


def test_a_cross_encoder_the_engine_cannot_run_as_predict_does_is_refused(cross_encoders, tmp_path):
    import json
    import shutil

    from models.model_folder import ModelFolderError

    prompted = tmp_path / "prompted"
    shutil.copytree(cross_encoders.folders["tiny-rerank"], prompted)
    meta = json.loads((prompted / "config_sentence_transformers.json").read_text())
    (prompted / "config_sentence_transformers.json").write_text(
        json.dumps({**meta, "prompts": {"query": "query: "}, "default_prompt_name": "query"}))
    with pytest.raises(ModelFolderError, match="default prompt"):
        read_folder(str(prompted), "prompted")
    other = tmp_path / "other-activation"
    shutil.copytree(cross_encoders.folders["tiny-rerank"], other)
    (other / "config_sentence_transformers.json").write_text(
        json.dumps({**meta, "activation_fn": "torch.nn.modules.activation.Softplus"}))
    with pytest.raises(ModelFolderError, match="activation"):
        read_folder(str(other), "other")


def test_auto_runs_an_exact_variant_whose_scores_were_measured(cross_encoders):
    enc = reranker(cross_encoders, "tiny-rerank", "auto").encoder
    assert enc.choice.variant.precision == "fp32", enc.choice.considered
    assert enc.choice.fidelity["max_abs_diff"] <= TOLERANCE and enc.choice.fidelity["ranking_equal"]


def test_exporting_again_reuses_the_complete_export(cross_encoders):
    from tests.support.user_models import run_export

    log = cross_encoders.export_log
    assert "CrossEncoder.predict on" in log and "ranking equal True" in log
    again = run_export(f"tiny-rerank={cross_encoders.folders['tiny-rerank']}", artifact_dir=cross_encoders.artifact_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "artifacts in" in again.stdout and "complete; reusing them" in again.stdout, again.stdout


def test_a_path_entry_is_exported_on_first_start_and_scores_as_predict(cross_encoders, tmp_path):
    import contextlib
    import io

    from serving.cli import ensure_exported
    from serving.settings import Settings

    s = Settings(models=[f"my-reranker={cross_encoders.folders['tiny-rerank-3']}"], artifact_dir=tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ensure_exported(s)
    assert "my-reranker is not exported yet" in out.getvalue() and "exported to" in out.getvalue()
    rr = reranker(type(cross_encoders)({}, tmp_path, ""), "my-reranker")
    ref = reference(cross_encoders.folders["tiny-rerank-3"], [(QUERY, d) for d in SHORT])
    assert np.abs(rr.score(QUERY, SHORT) - ref).max() <= TOLERANCE
