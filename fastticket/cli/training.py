"""The training options every training command shares, turned into one TrainConfig (train.py holds every
default: a preset, then the options given on the command line)."""

from __future__ import annotations

from ..train import PRESETS, TrainConfig

# option -> (TrainConfig field, type, help)
OPTIONS = {
    "--epochs": ("epochs", int, "maximum epochs"),
    "--lr": ("lr", float, "peak learning rate (Adamax)"),
    "--batch-size": ("batch_size", int, "training batch size"),
    "--warmup": ("warmup", float, "fraction of steps warming up"),
    "--weight-decay": ("weight_decay", float, "Adamax weight decay"),
    "--clip": ("clip", float, "gradient-norm clip (0 = off)"),
    "--dropout": ("dropout", float, "task-layer dropout; presets leave it to the task (0.3 MNLI, 0.05 CoLA, else 0.1)"),
    "--patience": ("patience", int, "early-stopping patience in evaluations (0 = none)"),
    "--max-length": ("max_length", int, "tokens per example"),
    "--max-train-examples": ("max_train_examples", int, "seeded training subset (0 = all)"),
    "--max-eval-examples": ("max_eval_examples", int, "seeded dev subset (0 = all)"),
}
ZERO_MEANS_NONE = ("patience", "max_train_examples", "max_eval_examples", "clip")


def add_train_options(parser, default_preset: str | None) -> None:
    """--preset (unless default_preset is None) and one option per TrainConfig field; an option not given
    keeps the preset's value."""
    if default_preset is not None:
        parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                            help=f"training preset (default: {default_preset}); the options below override it")
    for flag, (_, kind, text) in OPTIONS.items():
        parser.add_argument(flag, type=kind, default=None, help=f"{text} (default: the preset's)")


def train_overrides(args) -> dict:
    """{TrainConfig field: value} of the training options given on the command line (0 = None where allowed)."""
    overrides = {}
    for field, _, _ in OPTIONS.values():
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = None if value == 0 and field in ZERO_MEANS_NONE else value
    return overrides


def named_errors(call, *args, **kwargs):
    """call(*args, **kwargs) with a TrainConfig field in a ValueError renamed to its option: "--lr=-1.0; ..."."""
    try:
        return call(*args, **kwargs)
    except ValueError as exc:
        message = str(exc)
        for flag, (field, _, _) in OPTIONS.items():
            if message.startswith(field + "="):
                message = flag + message[len(field):]
        raise ValueError(message) from None


def train_config(args, default_preset: str) -> TrainConfig:
    """The TrainConfig of parsed arguments: args.preset (or `default_preset`) with the options given."""
    return named_errors(TrainConfig.preset, getattr(args, "preset", None) or default_preset, **train_overrides(args))


def subset_task(task, config: TrainConfig, seed: int = 0):
    """The task with seeded subsets of its splits (extra dev splits too) as the config's budget says."""
    from ..data.batching import seeded_subset

    task.train = seeded_subset(task.train, config.max_train_examples, seed=seed)
    task.dev = seeded_subset(task.dev, config.max_eval_examples, seed=seed)
    task.extra_dev = {n: seeded_subset(d, config.max_eval_examples, seed=seed) for n, d in (task.extra_dev or {}).items()}
    return task
