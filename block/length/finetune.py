"""`block length train --model finetune`: a transformer encoder fine-tuned end to end as the length scorer.

The encoder (all-MiniLM-L6-v2 by default, or any local BERT/RoBERTa-style Hugging Face directory) gets a
one-output head on its mean-pooled last layer and is trained on the training split only:

- `regression`: Huber loss on log1p(length);
- `ranking`: a pairwise logistic (RankNet) loss over the pairs of each batch: the score only has to order
  prompts by length, which is what planning across a queue needs; the trees map it to lengths.

A validation slice of the training split (block.length.calibrate's slice, by prompt hash) early-stops the
fine-tuning on its Spearman correlation. Then, as for the other models, one quantile tree model per level
maps [encoder score, (TF-IDF heads,) intent features] to log1p(length). They are fitted on the validation
slice, not on the fine-tuning rows, whose scores the encoder has partly memorised; cross-fitting on the
slice's two halves gives the conformal offsets of the quantile levels.

The fine-tuned weights are exported as arrays (block.length.finetuned) that the numpy encoder runs: serving
needs no torch. Training does: `pip install 'block-llm[train]'` (a CPU build of torch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from block.length.calibrate import calibration_mask, conformal_offsets
from block.length.estimator import QUANTILES, LengthEstimator
from block.length.finetuned import FinetunedScorer
from block.length.intent import intent_features
from block.length.minilm import TANH_GELU, model_dir, position_offset, special_ids, strip_prefix
from block.length.text import parse, window, words
from block.length.tfidf import TfidfHeads
from block.length.train import MIN_CALIBRATION, OOF_FOLDS, fit_quantile_trees
from block.length.trees import TreeEnsembles
from block.workload import Sample

FINETUNE_MODELS = ("finetune", "tfidf+finetune")  # `block length train --model`
LOSSES = ("regression", "ranking")
DEFAULT_LOSS = "ranking"  # held-out Spearman 0.472 vs 0.464 for regression, same 115 steps (README)
LAYERS = 2  # encoder layers kept: 3.5 ms of CPU per prompt batched (3 layers: ~5 ms, no margin)
MAX_TOKENS = 48  # token window read, [CLS] and [SEP] included
TAIL_SHARE = 0.25  # of the window's word pieces taken from the prompt's end
BATCH = 32
LR = 1e-4  # encoder
HEAD_LR = 1e-3
WARMUP_STEPS = 50
EVAL_EVERY = 100  # steps between validation passes
PATIENCE = 4  # validation passes without improvement before stopping
VALIDATION_MAX = 1000  # prompts of the validation slice scored at each pass (a pass costs seconds)
PROBE_ROWS = 256  # fine-tuning rows whose loss is recorded before and after (the model's metadata)
HUBER_DELTA = 1.0

TRAIN_EXTRA = "block-llm[train]"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FinetuneArgs:
    encoder: Path | None = None  # default: the shipped all-MiniLM-L6-v2
    loss: str = DEFAULT_LOSS
    layers: int = LAYERS
    max_tokens: int = MAX_TOKENS
    max_steps: int | None = None
    max_minutes: float | None = None
    batch: int = BATCH
    lr: float = LR
    eval_every: int = EVAL_EVERY
    patience: int = PATIENCE
    threads: int | None = None  # torch intra-op threads; default: torch's choice
    tfidf: bool = False  # stack the TF-IDF heads with the encoder's score in the trees
    reuse: Path | None = None  # a model file whose fine-tuned encoder is taken instead of fine-tuning

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown --loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.layers < 1 or self.max_tokens < 8 or self.batch < 2:
            raise ValueError("need at least 1 layer, an 8-token window and a batch of 2")


def import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"fine-tuning needs torch: pip install '{TRAIN_EXTRA}' (a CPU build of torch); "
            "serving a fine-tuned model does not"
        ) from None
    return torch


def fit_finetuned(
    train: Sequence[Sample],
    args: FinetuneArgs,
    seed: int = 0,
    quantiles: Sequence[float] = QUANTILES,
    tokenizer: str = "llama3",
    progress: Progress | None = None,
    meta: dict | None = None,
    tree_iters: int | None = None,
) -> LengthEstimator:
    """Fine-tune on `train` (the caller keeps the held-out split away), then fit and calibrate the trees.

    With `args.tfidf` the trees also read the TF-IDF heads (as `--model tfidf+minilm` stacks the frozen
    encoder); with `args.reuse` the fine-tuned encoder of an earlier model file is taken as it is."""
    tick = progress or (lambda _d: None)
    prompts = [s.prompt for s in train]
    log_y = np.log1p(np.array([s.output_tokens for s in train], dtype=np.float64))
    val = calibration_mask(prompts, seed)
    if val.sum() < MIN_CALIBRATION or (~val).sum() < 2 * args.batch:
        raise ValueError(f"too few training samples ({len(train)}) to fine-tune with a validation slice")
    if args.reuse is not None:
        scorer, history = _reused(args.reuse)
    else:
        scorer, history = _fine_tune(prompts, log_y, val, args, seed, tick)

    # The trees learn from the validation slice, rows the encoder never trained on: on its fine-tuning rows
    # its score is far better than on new prompts (Spearman 0.83 against 0.51 after 1,400 steps), and trees
    # fitted there trusted it too much (held-out Spearman 0.497, below the bare score's 0.511).
    rows = np.flatnonzero(val)
    tick("scoring prompts for the quantile trees")
    # The numpy encoder with the weights as saved: the trees learn from the scores serving will compute.
    x = _tree_rows(scorer, train, rows)
    scorers: dict = {"finetune": scorer}
    if args.tfidf:
        tick("text model: TF-IDF")
        fit_rows = np.flatnonzero(~val)
        tfidf, _ = TfidfHeads.fit_with_oof(
            [window(prompts[i]) for i in fit_rows], log_y[fit_rows], OOF_FOLDS, seed, tick
        )
        scorers = {"tfidf": tfidf, "finetune": scorer}  # LengthEstimator.features: scorers in this order
        x = np.column_stack([tfidf.score_many([parse(prompts[i]) for i in rows]), x])
    tick("quantile trees")
    trees = TreeEnsembles.from_sklearn(fit_quantile_trees(x, log_y[rows], quantiles, seed, tree_iters, tick))
    offsets = _cross_fitted_offsets(x, log_y[rows], quantiles, seed, tree_iters, tick)
    info = {
        "model": "tfidf+finetune" if args.tfidf else "finetune",
        "seed": seed,
        "tokenizer": tokenizer,
        "n_train": len(train),
        "train_median": float(np.median(np.expm1(log_y))),
        "calibration": [float(c) for c in offsets],
        "finetune": {**history, "n_fit": int((~val).sum()), "n_validation": int(val.sum())},
    }
    info.update(meta or {})
    return LengthEstimator(scorers, trees, quantiles, info)


def _fine_tune(
    prompts: list[str], log_y: np.ndarray, val: np.ndarray, args: FinetuneArgs, seed: int, tick: Progress
) -> tuple[FinetunedScorer, dict]:
    """The encoder fine-tuned on the rows outside `val`, early-stopped on `val`, as saved (float16)."""
    torch = import_torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    source = Path(args.encoder) if args.encoder is not None else model_dir()
    net, config, tokenizer_json = _load_encoder(torch, source, args.layers)
    net.to("cuda" if torch.cuda.is_available() else "cpu")  # CPU by default; a GPU when there is one
    head_tokens = args.max_tokens - 2 - round((args.max_tokens - 2) * TAIL_SHARE)
    tail_tokens = args.max_tokens - 2 - head_tokens
    token_ids = _token_ids(tokenizer_json, head_tokens, tail_tokens, prompts)
    net.head_bias(float(log_y[~val].mean()))

    t0 = time.perf_counter()
    history = _train(torch, net, token_ids, log_y, ~val, val, args, seed, tick)
    train_s = time.perf_counter() - t0
    with torch.no_grad():  # the weights as the file keeps them
        for p in net.parameters():
            p.copy_(p.half().float())
    scorer = FinetunedScorer(
        net.export(), config, tokenizer_json, net.export_head(), head_tokens, tail_tokens
    )
    info = {
        "encoder": str(source),
        "loss": args.loss,
        "layers": args.layers,
        "max_tokens": args.max_tokens,
        "batch": args.batch,
        "lr": args.lr,
        "train_seconds": round(train_s, 1),
        **history,
    }
    return scorer, info


def _reused(path: Path) -> tuple[FinetunedScorer, dict]:
    """The fine-tuned encoder of the model file at `path`, with the record of its fine-tuning."""
    est = LengthEstimator.load(path)
    scorer = est.scorers.get("finetune")
    if not isinstance(scorer, FinetunedScorer):
        raise ValueError(f"{path} has no fine-tuned encoder (its scorers: {', '.join(est.scorers)})")
    return scorer, {**est.meta.get("finetune", {}), "reused_from": str(path)}


def _tree_rows(scorer: FinetunedScorer, train: Sequence[Sample], rows: np.ndarray) -> np.ndarray:
    """[encoder score, intent features] of `rows`, as LengthEstimator.features computes them."""
    scores = scorer.score_texts([train[i].prompt for i in rows])
    intent = []
    for i in rows:
        w = window(train[i].prompt)
        intent.append(intent_features(train[i].prompt, w, words(w), train[i].prompt_tokens))
    return np.column_stack([scores, np.asarray(intent, dtype=np.float64)])


def _cross_fitted_offsets(
    x: np.ndarray, log_y: np.ndarray, quantiles: Sequence[float], seed: int, tree_iters: int | None, tick
) -> np.ndarray:
    """Conformal offsets of the quantile levels, the trees' rows being all the unseen rows there are: each
    half is predicted by trees fitted on the other half (a little wider than the final trees need)."""
    half = np.random.default_rng(seed).permutation(len(x)) % 2 == 0
    pred = np.empty((len(x), len(quantiles)))
    for part in (half, ~half):
        fitted = fit_quantile_trees(x[~part], log_y[~part], quantiles, seed, tree_iters, tick)
        pred[part] = TreeEnsembles.from_sklearn(fitted).predict(x[part])
    return conformal_offsets(pred, log_y, quantiles)


def _token_ids(
    tokenizer_json: str, head_tokens: int, tail_tokens: int, prompts: list[str]
) -> list[list[int]]:
    """The numpy encoder's own windowing (MiniLMEncoder.token_ids): training reads what serving reads."""
    from tokenizers import Tokenizer

    from block.length.minilm import MiniLMEncoder

    enc = MiniLMEncoder.__new__(MiniLMEncoder)  # a tokenizer only: no weights are needed to cut windows
    enc.tokenizer = Tokenizer.from_str(tokenizer_json)
    enc.tokenizer.no_padding()
    enc.tokenizer.no_truncation()
    enc.cls, enc.sep = special_ids(enc.tokenizer)
    enc.head_tokens, enc.tail_tokens = head_tokens, tail_tokens
    return enc.token_ids(prompts)


def _batch(torch, rows: list[list[int]], pad: int, device):
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.float32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1.0
    return ids.to(device), mask.to(device)


def _scores(torch, net, token_ids: list[list[int]], pad: int, batch: int = 128) -> np.ndarray:
    """Head outputs of every row, in order (batched by length, so little is padded)."""
    net.eval()
    out = np.zeros(len(token_ids))
    order = np.argsort([len(r) for r in token_ids], kind="stable")
    with torch.no_grad():
        for start in range(0, len(order), batch):
            part = order[start : start + batch]
            ids, mask = _batch(torch, [token_ids[i] for i in part], pad, net.head.weight.device)
            out[part] = net(ids, mask).double().cpu().numpy()
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0]) if np.ptp(a) > 0 else 0.0


def _loss(torch, kind: str, pred, target):
    if kind == "regression":
        return torch.nn.functional.huber_loss(pred, target, delta=HUBER_DELTA)
    # RankNet over the batch's ordered pairs; ties (equal lengths) carry no order and are left out.
    diff = pred[:, None] - pred[None, :]
    sign = torch.sign(target[:, None] - target[None, :])
    pairs = sign != 0
    if not bool(pairs.any()):
        return pred.sum() * 0.0
    return torch.nn.functional.softplus(-sign[pairs] * diff[pairs]).mean()


def _train(torch, net, token_ids, log_y, fit_mask, val_mask, args: FinetuneArgs, seed: int, tick) -> dict:
    """AdamW with linear warm-up, stopped by --max-steps / --max-minutes or by validation patience; the
    network ends with its best validation weights. Returns the history for the model's metadata."""
    pad = int(net.pad)
    fit_idx = np.flatnonzero(fit_mask)
    val_idx = np.flatnonzero(val_mask)
    if len(val_idx) > VALIDATION_MAX:  # a fixed random part: the passes compare on the same prompts
        val_idx = np.sort(np.random.default_rng(seed).choice(val_idx, VALIDATION_MAX, replace=False))
    val_ids = [token_ids[i] for i in val_idx]
    rng = np.random.default_rng(seed)
    # The word embeddings stay as pre-trained: they are a third of the weights and most of the optimizer's
    # work per step, and a length signal over a few thousand prompts would mostly overfit them.
    net.w("embeddings.word_embeddings.weight").requires_grad_(False)
    head = [p for n, p in net.named_parameters() if n.startswith("head.")]
    body = [p for n, p in net.named_parameters() if not n.startswith("head.") and p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": args.lr}, {"params": head, "lr": HEAD_LR}], weight_decay=0.01
    )
    base = [g["lr"] for g in opt.param_groups]
    warmup = min(WARMUP_STEPS, max(1, args.max_steps // 10)) if args.max_steps else WARMUP_STEPS
    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else math.inf
    best = {"spearman": -math.inf, "step": 0, "state": None}
    losses: list[float] = []
    evals: list[dict] = []
    step = 0
    stale = 0
    stop = "patience"
    device = net.head.weight.device
    target_all = torch.tensor(log_y, dtype=torch.float32, device=device)
    # A fixed sample of the fine-tuning rows on which the training loss is measured before and after.
    probe = np.sort(rng.choice(fit_idx, min(PROBE_ROWS, len(fit_idx)), replace=False))
    probe_ids = [token_ids[i] for i in probe]

    def probe_loss() -> float:
        pred = torch.tensor(_scores(torch, net, probe_ids, pad), dtype=torch.float32, device=device)
        return round(float(_loss(torch, args.loss, pred, target_all[probe])), 4)

    loss_before = probe_loss()
    while True:
        order = rng.permutation(fit_idx)
        for start in range(0, len(order) - args.batch + 1, args.batch):
            if args.max_steps is not None and step >= args.max_steps:
                stop = "max-steps"
                break
            if time.monotonic() >= deadline:
                stop = "max-minutes"
                break
            part = order[start : start + args.batch]
            net.train()
            ids, mask = _batch(torch, [token_ids[i] for i in part], pad, device)
            loss = _loss(torch, args.loss, net(ids, mask), target_all[part])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head + body, 1.0)
            warm = min(1.0, (step + 1) / warmup)
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr * warm
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % args.eval_every == 0:
                rho = _spearman(_scores(torch, net, val_ids, pad), log_y[val_idx])
                evals.append({"step": step, "val_spearman": round(rho, 4)})
                tick(f"fine-tuning: step {step}, validation Spearman {rho:.3f}")
                if rho > best["spearman"]:
                    best = {"spearman": rho, "step": step, "state": _copy_state(net)}
                    stale = 0
                else:
                    stale += 1
                    if stale >= args.patience:
                        break
        else:
            continue  # epoch finished without a stop: next epoch
        break
    rho = _spearman(_scores(torch, net, val_ids, pad), log_y[val_idx])
    evals.append({"step": step, "val_spearman": round(rho, 4)})
    if rho >= best["spearman"]:
        best = {"spearman": rho, "step": step, "state": None}
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    window_ = max(1, min(50, len(losses) // 4))
    return {
        "fit_loss_before": loss_before,
        "fit_loss_after": probe_loss(),
        "steps": step,
        "stopped_by": stop,
        "best_step": best["step"],
        "val_spearman": round(float(best["spearman"]), 4),
        "loss_first": round(float(np.mean(losses[:window_])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-window_:])), 4) if losses else None,
        "evals": evals,
    }


def _copy_state(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _load_encoder(torch, path: Path, layers: int):
    """The first `layers` layers of the encoder at `path` (model.safetensors, config.json, tokenizer.json),
    with a fresh head, as a torch module that computes what the numpy encoder computes."""
    import json

    from safetensors.numpy import load_file

    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (path / name).is_file():
            raise ValueError(f"{path} is not a Hugging Face encoder directory: no {name}")
    config = json.loads((path / "config.json").read_text())
    kept = min(layers, int(config["num_hidden_layers"]))
    # The tanh form of GELU: in numpy it costs a tenth of the exact (erf) form, a third of the encoder's
    # time at serving; it differs from it by under 1e-3 and fine-tuning adapts the weights to it.
    config = {**config, "num_hidden_layers": kept, "hidden_act": TANH_GELU}
    weights = strip_prefix(load_file(str(path / "model.safetensors")))
    weights = {
        k: v for k, v in weights.items() if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < kept
    }
    net = _encoder_module(torch)(weights, config)
    return net, config, (path / "tokenizer.json").read_text(encoding="utf-8")


def _encoder_module(torch):
    nn = torch.nn
    f = torch.nn.functional

    class Encoder(nn.Module):
        """BERT encoder (post-LN, exact GELU) + mean pooling + linear head; parameter names are the
        Hugging Face ones, so `export` hands the numpy encoder what it loads from a checkpoint."""

        def __init__(self, weights: dict[str, np.ndarray], config: dict) -> None:
            super().__init__()
            self.heads = int(config["num_attention_heads"])
            self.eps = float(config.get("layer_norm_eps", 1e-12))
            self.pad = int(config.get("pad_token_id", 0) or 0)
            self.offset = position_offset(config)
            self.names = sorted(weights)
            self.params = nn.ParameterDict(
                {
                    k.replace(".", "__"): nn.Parameter(torch.from_numpy(np.array(v, dtype=np.float32)))
                    for k, v in weights.items()
                }
            )
            self.layers = int(config["num_hidden_layers"])
            self.approximate = "tanh" if config.get("hidden_act") == TANH_GELU else "none"
            self.head = nn.Linear(int(weights["embeddings.word_embeddings.weight"].shape[1]), 1)
            nn.init.zeros_(self.head.weight)

        def head_bias(self, value: float) -> None:
            with torch.no_grad():
                self.head.bias.fill_(value)

        def w(self, name: str):
            return self.params[name.replace(".", "__")]

        def lin(self, x, name: str):
            return f.linear(x, self.w(name + ".weight"), self.w(name + ".bias"))

        def ln(self, x, name: str):
            return f.layer_norm(x, x.shape[-1:], self.w(name + ".weight"), self.w(name + ".bias"), self.eps)

        def forward(self, ids, mask):
            b, t = ids.shape
            pos = self.w("embeddings.position_embeddings.weight")[self.offset : self.offset + t]
            x = self.w("embeddings.word_embeddings.weight")[ids] + pos
            x = self.ln(x + self.w("embeddings.token_type_embeddings.weight")[0], "embeddings.LayerNorm")
            bias = ((1.0 - mask) * -1e9)[:, None, None, :]
            d = x.shape[-1]
            hd = d // self.heads
            for i in range(self.layers):
                p = f"encoder.layer.{i}."

                def split(y):
                    return y.view(b, t, self.heads, hd).transpose(1, 2)

                q = split(self.lin(x, p + "attention.self.query"))
                k = split(self.lin(x, p + "attention.self.key"))
                v = split(self.lin(x, p + "attention.self.value"))
                att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
                ctx = (att @ v).transpose(1, 2).reshape(b, t, d)
                x = self.ln(x + self.lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
                h = f.gelu(self.lin(x, p + "intermediate.dense"), approximate=self.approximate)
                x = self.ln(x + self.lin(h, p + "output.dense"), p + "output.LayerNorm")
            pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
            return self.head(pooled)[:, 0]

        def export(self) -> dict[str, np.ndarray]:
            return {k: self.w(k).detach().cpu().numpy().copy() for k in self.names}

        def export_head(self) -> dict[str, np.ndarray]:
            return {
                "w": self.head.weight.detach().cpu().numpy().reshape(-1).copy(),
                "b": self.head.bias.detach().cpu().numpy().copy(),
            }

    return Encoder
