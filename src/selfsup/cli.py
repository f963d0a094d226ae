"""The `selfsup` command line. Imports nothing heavy until a verb runs, so `selfsup --help` is instant.

Every user mistake is a `SelfsupError`: one line on stderr, exit status 2, nothing overwritten.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable

from selfsup.errors import SelfsupError

# modules that add more verbs: each has `add_parser(subparsers)` and keeps heavy imports inside its functions
VERB_MODULES: tuple[str, ...] = ("selfsup.evaluation.cli", "selfsup.adapt.cli", "selfsup.adapt.speech_cli",
                                  "selfsup.adapt.anomaly_cli", "selfsup.adapt.align_cli", "selfsup.adapt.multitask_cli",
                                  "selfsup.adapt.vc_cli", "selfsup.data.cli",
                                  "selfsup.report.cli")


def _pretrain(args: argparse.Namespace) -> int:
    if not args.print_config:
        from selfsup.fileio import check_local_paths

        check_local_paths(args.data)  # a typo is an error before torch is imported
    from selfsup.engine.pretrain import pretrain

    if args.print_config:  # the resolved recipe only: no data read, nothing written
        from selfsup.engine.pretrain import resolved_recipe
        from selfsup.recipes.reference import commented_yaml

        print(commented_yaml(resolved_recipe(args.recipe, args.out, max_steps=args.max_steps, seed=args.seed,
                                             overrides=args.set, resume=args.resume)), end="")
        return 0
    metrics = pretrain(args.recipe, args.data, args.out, max_steps=args.max_steps, seed=args.seed,
                       overrides=args.set, resume=args.resume, progress=not args.no_progress,
                       trust_remote_code=args.trust_remote_code)
    if metrics:
        _print_metrics(metrics, args.out)
    return 0


def _print_metrics(metrics: dict, out: str) -> None:
    keys = ["steps", "train_loss", "heldout_loss", "heldout_perplexity", "throughput_per_s"]
    shown = ", ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                      for k in keys if metrics.get(k) is not None)
    from selfsup.fileio import model_folder_format

    print(f"done: {shown}\nwrote {out}/model ({model_folder_format(Path(out) / 'model')}), {out}/metrics.json")


def _recipes(args: argparse.Namespace) -> int:
    from selfsup.recipes import list_recipes

    if args.reference:
        print(_reference(), end="")
        return 0
    if args.name:
        from selfsup.recipes import load_recipe
        from selfsup.recipes.reference import commented_yaml

        print(commented_yaml(load_recipe(args.name)), end="")
        return 0
    recipes = list_recipes()
    width = max(map(len, recipes)) if recipes else 0
    for name, desc in recipes.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _reference() -> str:
    """docs/recipe-keys.md: every pretraining recipe key, then every `finetune --set` key."""
    from selfsup.adapt.core.options import FinetuneConfig
    from selfsup.adapt.registry import get_method, method_names
    from selfsup.recipes.reference import reference_markdown

    methods = [(f"--method {name} (its own keys)", " ".join(get_method(name).help.split()),
                get_method(name).Options) for name in method_names()]
    return reference_markdown([("every method", "", FinetuneConfig), *methods])


def _summarize(args: argparse.Namespace) -> int:
    import json

    from selfsup.data.summaries import read_pairs
    from selfsup.objectives.text_as_code import load_text_as_code, summarize

    model = load_text_as_code(args.model)  # before reading: a wrong folder is an error before any output
    pairs = read_pairs(args.data, args.document_key, None)
    codes = summarize(model, [" ".join(p.document) for p in pairs])
    for pair, code in zip(pairs, codes):
        print(json.dumps({"where": pair.where, "code": code}))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from selfsup.demo import run_demo

    run_demo(out=args.out, steps=args.steps, force=args.force)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfsup", description="Self-supervised pretraining, adaptation and "
                                "evaluation for text, speech, images and tables.")
    p.add_argument("--version", action="version", version="selfsup 0.1.0")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    pt = sub.add_parser("pretrain", help="pretrain a model with a recipe on unlabeled data",
                        description="Pretrain RECIPE (a name from `selfsup recipes` or a YAML path) on DATA.")
    pt.add_argument("recipe", metavar="RECIPE")
    pt.add_argument("--data", action="append", required=True, metavar="PATH",
                    help="file, folder or hf:NAME[:CONFIG][@SPLIT]; repeatable")
    pt.add_argument("--out", required=True, metavar="DIR", help="run folder (must be new unless --resume)")
    pt.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps (overrides train.max_steps)")
    pt.add_argument("--seed", type=int, metavar="S")
    pt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key, e.g. --set train.lr=5e-4; repeatable")
    pt.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar (--quiet: no informational lines "
                    "either)")
    pt.add_argument("--print-config", action="store_true", help="print the resolved recipe (after --set, --max-steps, "
                    "--seed) with each key's meaning and stop: no data read, nothing written")
    pt.add_argument("--trust-remote-code", action="store_true",
                    help="allow a hub model or tokenizer named by model.from_pretrained / data.tokenizer.pretrained "
                         "to run its own Python code, where the recipe also sets trust_remote_code: true")
    pt.set_defaults(func=_pretrain)

    rc = sub.add_parser("recipes", help="list the built-in recipes, or print one with every key explained",
                        description="Without NAME: the built-in recipes. With NAME (or a YAML path): the resolved "
                                    "recipe, every key with its meaning and default, as YAML `selfsup pretrain` "
                                    "takes.")
    rc.add_argument("name", nargs="?", metavar="NAME")
    rc.add_argument("--reference", action="store_true", help="print docs/recipe-keys.md: every recipe and "
                    "finetune --set key with type, default and meaning")
    rc.set_defaults(func=_recipes)

    sm = sub.add_parser("summarize", help="print the word-sequence code (summary) of each document with a "
                        "text_as_code model", description="One JSON line per document: {where, code}.")
    sm.add_argument("--model", required=True, metavar="DIR", help="a text_as_code run folder (or its model/)")
    sm.add_argument("--data", action="append", required=True, metavar="DOCS",
                    help=".jsonl / .csv / .tsv (or selfsup:package-summaries); repeatable")
    sm.add_argument("--document-key", default="document", metavar="KEY", help="the document's key (default document)")
    sm.set_defaults(func=_summarize)

    dm = sub.add_parser("demo", help="the main job on embedded data: pretrain a tiny BERT on Jane Austen")
    dm.add_argument("--out", default="runs/demo", metavar="DIR")
    dm.add_argument("--steps", type=int, default=None, metavar="N", help="pretraining steps (default: 600 of the recipe's 800, to stay within 5 minutes)")
    dm.add_argument("--force", action="store_true", help="replace an earlier demo run in --out")
    dm.set_defaults(func=_demo)
    for module in VERB_MODULES:  # each adds its verbs; imported here, but imports nothing heavy at top level
        importlib.import_module(module).add_parser(sub)
    _add_quiet(sub)
    return p


def _add_quiet(sub: argparse._SubParsersAction) -> None:
    """`--quiet` on every verb (and sub-verb): added here once rather than by each verb module."""
    for parser in {id(p): p for p in sub.choices.values()}.values():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in nested:
            _add_quiet(action)
        if not nested and "--quiet" not in parser._option_string_actions:
            parser.add_argument("--quiet", action="store_true", help="nothing on stderr but errors and warnings "
                                "that change a result's meaning: no progress, no informational lines")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    func: Callable[[argparse.Namespace], int] = args.func
    from selfsup.console import quiet_mode
    from selfsup.report.cards import set_invocation

    quiet = bool(getattr(args, "quiet", False))
    if quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    set_invocation(sys.argv[1:] if argv is None else argv)  # model cards record the command
    try:
        with quiet_mode(quiet):
            return func(args)
    except SelfsupError as e:
        message = " ".join(str(e).split())
        print(f"selfsup: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("selfsup: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`selfsup predict ... | head`): stop quietly, like cat
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except OSError as e:  # an --out where nothing can be written (read-only, /sys, disk full): one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"selfsup: error: {where}{e.strerror or e} (cannot write or read there)", file=sys.stderr)
        return 2
    finally:
        set_invocation(None)


if __name__ == "__main__":
    sys.exit(main())
