"""Recipes: one YAML per method, validated on load.

A recipe has five sections. `objective` names the method (a registry name) and holds its options; `model`
names the backbone type and its sizes; `data` says how raw data becomes examples (modality-specific);
`train` is the engine's; `description` is the one line `selfsup recipes` prints. Each section is checked
against a dataclass chosen by the objective and backbone, so an unknown key, a wrong type or an impossible
value is an error naming the key.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import yaml

from selfsup.config import bounded, from_dict, to_dict
from selfsup.errors import SelfsupError

RECIPE_DIR = Path(__file__).parent


@dataclasses.dataclass
class TrainConfig:
    """The engine's settings (same keys for every method and modality)."""

    max_steps: int = bounded(200, gt=0, doc="optimizer steps of the run (--max-steps)")
    batch_size: int = bounded(32, gt=0, doc="global batch per optimizer step, before accumulation")
    accumulate: int = bounded(1, gt=0, doc="micro-batches per optimizer step")
    lr: float = bounded(1e-3, gt=0, doc="peak learning rate (AdamW)")
    weight_decay: float = bounded(0.01, ge=0, doc="AdamW decoupled weight decay (not on biases and norms)")
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999], metadata={"doc": "AdamW betas"})
    eps: float = bounded(1e-8, gt=0, doc="AdamW epsilon")
    warmup_steps: int = bounded(20, ge=0, doc="linear warm-up from 0 to lr (shortened when above max_steps)")
    schedule: Literal["linear", "cosine", "constant"] = dataclasses.field(default="linear", metadata={
        "doc": "after the warm-up: linear or cosine decay to 0 at max_steps, or constant"})
    grad_clip: float = bounded(1.0, ge=0, doc="max gradient norm; 0 disables")
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = dataclasses.field(default="auto", metadata={
        "doc": "auto: bf16-mixed on GPUs that have it, else 32"})
    seed: int = dataclasses.field(default=0, metadata={"doc": "data order, noise and initialization (--seed)"})
    log_every: int = bounded(10, gt=0, doc="steps between logged rows (and plain progress lines)")
    eval_every: int = bounded(100, gt=0, doc="steps between held-out evaluations")
    eval_batches: int = bounded(20, gt=0, doc="held-out batches per evaluation (at most)")
    checkpoint_every: int = bounded(100, gt=0, doc="steps between checkpoints (also at the end)")
    export_every: int = bounded(0, ge=0, doc="keep a Hugging Face export every N steps in exports/ (0: off)")
    devices: int = bounded(1, gt=0, doc="processes / accelerators per node (data parallel)")
    num_nodes: int = bounded(1, gt=0, doc="machines (data parallel)")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = dataclasses.field(default="auto", metadata={
        "doc": "Lightning accelerator; auto: a GPU when there is one"})
    strategy: Literal["auto", "ddp", "fsdp", "ddp_spawn"] = dataclasses.field(default="auto", metadata={
        "doc": "Lightning strategy; auto: ddp when devices x num_nodes > 1"})
    num_workers: int = bounded(0, ge=0, doc="data-loader worker processes (0: in the training process)")
    compile: bool = dataclasses.field(default=False, metadata={"doc": "torch.compile the objective's forward"})
    sync_batchnorm: bool = dataclasses.field(default=True, metadata={"doc": (
        "BatchNorm statistics over the global batch under DDP (torch's SyncBatchNorm on GPUs, "
        "distributed.GlobalBatchNorm on CPU processes)")})
    threads: int = bounded(0, ge=0, doc="torch intra-op threads per process; 0 = torch's default")
    logger: Literal["csv", "tensorboard", "wandb", "mlflow"] = dataclasses.field(default="csv", metadata={
        "doc": "where curves go besides logs/*.csv: tensorboard/, wandb/ (offline), mlruns/ (Lightning's loggers)"})

    def validate(self) -> None:
        from selfsup.loggers import check_logger

        check_logger(self.logger, key="logger")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise SelfsupError(f"betas: must be two numbers in [0, 1), got {self.betas!r}")


@dataclasses.dataclass
class Recipe:
    name: str
    description: str
    objective: Any
    model: Any
    data: Any
    train: TrainConfig

    def to_dict(self) -> dict:
        d = to_dict(self)
        d.pop("name")
        d["objective"] = {"name": self.name, **d["objective"]}
        return d


def list_recipes() -> dict[str, str]:
    """Built-in recipe name -> description (reads YAML only; imports nothing heavy)."""
    out = {}
    for p in sorted(RECIPE_DIR.glob("*.yaml")):
        try:
            out[p.stem] = str(yaml.safe_load(p.read_text()).get("description", "")).strip()
        except Exception:  # a broken built-in recipe must not hide the others
            out[p.stem] = "(unreadable recipe)"
    return out


def resolve_recipe_path(recipe: str) -> Path:
    p = Path(recipe)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise SelfsupError(f"{recipe}: recipe file not found")
        return p
    builtin = RECIPE_DIR / f"{recipe}.yaml"
    if not builtin.is_file():
        import difflib

        close = difflib.get_close_matches(recipe, list_recipes(), n=4, cutoff=0.5)
        known = f"close names: {', '.join(close)}; `selfsup recipes` lists all" if close else \
            f"known: {', '.join(list_recipes())}"
        raise SelfsupError(f"{recipe}: unknown recipe ({known}; or give a YAML path)")
    return builtin


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SelfsupError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise SelfsupError(f"{path}:{line} invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise SelfsupError(f"{path}: a recipe must be a YAML mapping")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`--set a.b=value`: the value is parsed as YAML (so 1e-3, true, [1,2] work)."""
    for item in overrides:
        if "=" not in item:
            raise SelfsupError(f"--set {item}: expected key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise SelfsupError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def load_recipe(recipe: str | dict, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe (built-in name, YAML path or dict), apply overrides, validate every key."""
    from selfsup.registry import get_backbone, get_objective

    path = None if isinstance(recipe, dict) else resolve_recipe_path(recipe)
    data = dict(recipe) if path is None else read_yaml(path)
    data = apply_overrides(data, list(overrides or []))
    user_file = path is not None and Path(path).resolve().parent != RECIPE_DIR.resolve()
    given = {o.split("=", 1)[0].strip() for o in overrides or []}
    try:
        return _build(data)
    except SelfsupError as e:  # a key of the user's recipe file: name the file (an --set key names itself)
        if user_file and not any(str(e).startswith(k + ":") for k in given):
            raise SelfsupError(f"{path}: {e}") from None
        raise


def _build(data: dict) -> Recipe:
    from selfsup.registry import get_backbone, get_objective

    known = {"description", "objective", "model", "data", "train"}
    for k in data:
        if k not in known:
            raise SelfsupError(f"{k}: unknown key (known: {', '.join(sorted(known))})")
    obj = data.get("objective")
    if isinstance(obj, str):
        obj = {"name": obj}
    if not isinstance(obj, dict) or "name" not in obj:
        raise SelfsupError("objective.name: missing (which method to train)")
    obj = dict(obj)
    name = obj.pop("name")
    objective_cls = get_objective(str(name))
    model = dict(data.get("model") or {})
    model.setdefault("type", objective_cls.default_backbone)
    backbone_cls = get_backbone(str(model["type"]))
    if objective_cls.modality != backbone_cls.modality:
        raise SelfsupError(f"model.type: {model['type']!r} is a {backbone_cls.modality} backbone; "
                           f"objective {name!r} needs {objective_cls.modality}")
    model_cfg = from_dict(backbone_cls.Config, model, "model")
    objective_cfg = from_dict(objective_cls.Options, obj, "objective")
    data_cfg = from_dict(objective_cls.data_config_class(), data.get("data"), "data")
    train_cfg = from_dict(TrainConfig, data.get("train"), "train")
    description = str(data.get("description", "")).strip()
    r = Recipe(str(name), description, objective_cfg, model_cfg, data_cfg, train_cfg)
    objective_cls.check_recipe(r)
    return r
