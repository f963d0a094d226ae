"""Prompt-based fine-tuning (Schick & Schütze 2021, PET's cloze patterns; Gao, Fisch & Chen 2021, LM-BFF):
the class of a text (or pair) is predicted from the checkpoint's own LM head filling the blank of a template
such as `{text} It was {mask}.` with each label's verbalizer word(s); the whole LM fine-tunes, no new head.
LM-BFF demonstrations (`--set demonstrations=true`) add one similar training example per class. The scoring
and rendering live in `selfsup.adapt.shared.prompts` / `prompt_inputs`, shared with PET and in-context."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from selfsup.adapt.core.kinds import CLASSIFICATION_KINDS
from selfsup.adapt.core.run import Run
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method
from selfsup.errors import SelfsupError


@dataclasses.dataclass
class PromptOptions:
    template: str | None = dataclasses.field(
        default=None, metadata={"doc": "e.g. '{text} It was {mask}.' (taken as written)"})
    verbalizer: Any = dataclasses.field(
        default=None, metadata={"doc": "{label: word | [words]} (YAML) or a .json/.yaml file"})
    demonstrations: bool = dataclasses.field(
        default=False, metadata={"doc": "LM-BFF: one similar training example per class after the prompt"})


@register_method("prompt")
class Prompt(AdaptMethod):
    help = "template + verbalizer: the LM head fills the blank, no new head (PET / LM-BFF)"
    kinds = CLASSIFICATION_KINDS
    Options = PromptOptions
    whole_model = False
    shared_keys = ("trainable_percent", "template", "verbalizer", "demonstrations")

    def check(self, family: str, kind: str, opts: Any) -> None:
        from selfsup.adapt.shared.prompts import DEFAULT_TEMPLATES, lm_kind_of, parse_template

        lm_kind = lm_kind_of(family, kind)
        parse_template(opts.template if opts.template is not None else DEFAULT_TEMPLATES[(lm_kind, kind)], kind,
                       lm_kind)

    def before_seeds(self, run: Run) -> dict[str, Any]:
        from selfsup.adapt.core.models import load_tokenizer, model_type
        from selfsup.adapt.shared.prompts import build_spec, lm_kind_of

        opts = run.opts
        if opts.demonstrations and run.init != "pretrained":
            raise SelfsupError("demonstrations: needs --init pretrained (demonstrations are chosen with the "
                               "checkpoint's embeddings)")
        lm_kind = lm_kind_of(model_type(run.source), run.kind.name)
        spec = build_spec(load_tokenizer(run.source), lm_kind, run.kind.name, run.data.labels, opts.template,
                          opts.verbalizer, opts.demonstrations)
        return {"spec": spec}

    def train_seed(self, run: Run, seed: int, folder: Path, subset: list) -> dict[str, Any]:
        from selfsup.adapt.shared.prompt_training import train_prompt_seed

        return train_prompt_seed(run.source, run.data, run.cfg, run.extra["spec"], init=run.init, seed=seed,
                                 out=folder, train_examples=subset, progress=run.progress)

    def load(self, folder: Path, info: dict, tokenizer) -> tuple[Any, Any]:
        from selfsup.adapt.shared.prompt_training import load_prompt_model

        return load_prompt_model(folder, info, tokenizer)
