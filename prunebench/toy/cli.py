"""``prunebench toy {train,eval}``; also runnable as ``python -m prunebench.toy.cli ...``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .world import FAMILIES


def _train(args) -> int:
    from . import TOY_MODEL_DIR
    from .train import train

    out = Path(args.output) if args.output else TOY_MODEL_DIR
    recipe = train(
        out,
        seed=args.seed,
        vision_steps=args.vision_steps,
        vision_lr=args.vision_lr,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        minutes=args.minutes,
        eval_every=args.eval_every,
        threads=args.threads,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        init_from=Path(args.init_from) if args.init_from else None,
        extra_questions=args.extra_questions,
        background_keep=args.background_keep,
        full_fraction=args.full_fraction,
        question_weight=args.question_weight,
        families=args.families,
        lookup_weight=args.lookup_weight,
    )
    if args.eval:
        from .evaluate import evaluate_checkpoint

        res = evaluate_checkpoint(out, split="test", threads=args.threads)
        recipe["test_accuracy"] = res["accuracy"]
        (out / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
        print(json.dumps(res["accuracy"], indent=2))
    return 0


def _eval(args) -> int:
    from . import TOY_MODEL_DIR
    from .evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(
        Path(args.model) if args.model else TOY_MODEL_DIR, split=args.split, keep=args.random_keep, seed=args.seed, threads=args.threads, limit=args.limit
    )
    print(json.dumps(res["accuracy"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


def _families(value: str) -> tuple[str, ...]:

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    return names


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``toy`` (with ``train`` and ``eval``) on an argparse subparsers object."""
    p = subparsers.add_parser("toy", help="the built-in shapes world and its small LLaVA (train / eval)")
    sub = p.add_subparsers(dest="toy_command", required=True)

    t = sub.add_parser(
        "train",
        help="train the toy LLaVA from scratch on CPU (seeded; two stages, see prunebench.toy.train)",
        description="Stage 1 trains the ViT + projector with training-only per-patch and [CLS] probes; "
        "stage 2 freezes them and trains the Llama decoder on answers. The defaults "
        "reproduce the shipped checkpoint (prunebench/assets/toy-llava/training.json).",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--vision-steps", type=int, default=2000, help="stage 1 optimizer steps (0 skips it, e.g. with --init-from)")
    t.add_argument("--vision-lr", type=float, default=3e-3)
    t.add_argument("--steps", type=int, default=4000, help="stage 2 optimizer steps (default: %(default)s)")
    t.add_argument(
        "--minutes",
        type=float,
        default=40.0,
        help="stage 2 wall-time budget; its cosine follows steps or minutes, whichever runs out first (default: %(default)s)",
    )
    t.add_argument("--stop-after", type=int, default=None, help="stop stage 2 at this step (the schedule still follows --steps)")
    t.add_argument("--init-from", default=None, help="start from this checkpoint's weights")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3, help="stage 2 peak learning rate")
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--extra-questions", type=int, default=8, help="extra chat turns per training image: other questions about the same scene")
    t.add_argument(
        "--background-keep",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        default=(16, 128),
        metavar="LO,HI",
        help="stage 2 shows the object tokens plus LO..HI random background tokens (default: 16,128)",
    )
    t.add_argument("--full-fraction", type=float, default=0.2, help="share of stage 2 batches that show all 576 visual tokens")
    t.add_argument("--question-weight", type=float, default=1.0, help="weight of the training-only question probe at decoder layer 1 (0 disables it)")
    t.add_argument(
        "--lookup-weight",
        type=float,
        default=1.0,
        help="weight of the training-only probe that regresses a relation question's two object columns at the middle decoder layer (0 disables it)",
    )
    t.add_argument(
        "--families",
        type=_families,
        default=FAMILIES,
        metavar="F,F,...",
        help="question families of stage 2's scenes; repeat one to draw it more often (default: all six once)",
    )
    t.add_argument("--eval-every", type=int, default=200, help="log val accuracy and save a .partial checkpoint")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--output", default=None, help="checkpoint directory (default: the shipped prunebench/assets/toy-llava)")
    t.add_argument("--eval", action="store_true", help="evaluate on the test split afterwards and record it")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="unpruned accuracy per family with plain transformers generate")
    e.add_argument("--model", default=None, help="checkpoint directory (default: the shipped toy-llava)")
    e.add_argument("--split", default="test", choices=["test", "val"])
    e.add_argument("--random-keep", type=int, default=None, help="sanity check: keep this many random visual tokens (pre-LLM) instead of all 576")
    e.add_argument("--seed", type=int, default=0, help="seed of --random-keep")
    e.add_argument("--limit", type=_at_least_one, default=None, help="at most this many questions per family")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--json", default=None, help="write the per-sample results here")
    e.set_defaults(func=_eval)
    return p


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1 question per family, or leave --limit out for all")
    return value


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m prunebench.toy.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["toy", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
