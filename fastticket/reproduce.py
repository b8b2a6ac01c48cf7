"""The paper's Table 1 protocol in one resumable run: `fastticket reproduce glue` (Liang et al. 2021, §5).

For each of the 8 GLUE tasks (RTE, MRPC, CoLA, SST-2, STS-B, QNLI, QQP, MNLI): ft.search with the paper's
levels 0.1 … 0.8 (winning tickets), 5 seeds, and the paper's hyper-parameters for that task
(TrainConfig.paper(task): Adamax, lr 5e-5, batch 32, 10 % warm-up, clip 1, task-layer dropout 0.1 / 0.3
MNLI / 0.05 CoLA, 6 epochs — 3 for MNLI and QNLI as in the authors' scripts — with early stopping, max
length 512) and, by default, the authors' FFN pairing (k FFNs at level k/10 on BERT-base). Each task's
search is its own resumable run directory OUT/<task>/; on several workers (workers=N, or torchrun) every
task's trials are shared by the job, task after task.

Table 1 (table1.md / table1.json): per task the full model (ST-DNN) and the per-seed super tickets
(SuperT), mean over seeds of the held-out dev scores (in %, the task's metrics as the paper reports them;
MNLI: matched / mismatched), the std over seeds of the task score (the mean of its components, as the
GLUE average counts them), the paired t-test over seeds, the percent of weights remaining of the super
tickets, the task average — beside the paper's published numbers (Tables 1, 6, 7).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field

from .distributed import JobFailed, Workers, check_nproc, in_torchrun, launch_function, records_failures
from .report import paired_p_value, seed_super_tickets
from .rundir import claim
from .tickets.store import read_json
from .tickets.trials import PAPER_LEVELS
from .train import TrainConfig
from .utils import atomic_write_text

GLUE_TABLE1 = ("rte", "mrpc", "cola", "sst2", "stsb", "qnli", "qqp", "mnli")  # Table 1's column order
PAPER_SEEDS = (0, 1, 2, 3, 4)
# the components Table 1 reports per task ("split:metric" for an extra dev split), and their header
COMPONENTS = {"rte": ("accuracy",), "mrpc": ("accuracy", "f1"), "cola": ("mcc",), "sst2": ("accuracy",),
              "stsb": ("pearson", "spearman"), "qnli": ("accuracy",), "qqp": ("accuracy", "f1"),
              "mnli": ("accuracy", "dev_mismatched:accuracy")}
HEADERS = {"rte": "RTE Acc", "mrpc": "MRPC Acc/F1", "cola": "CoLA MCC", "sst2": "SST-2 Acc", "stsb": "STS-B P/S",
           "qnli": "QNLI Acc", "qqp": "QQP Acc/F1", "mnli": "MNLI-m/mm Acc"}
# The paper's published numbers: Table 1 (GLUE dev, mean of 5 seeds), Table 6 (std of SuperT over seeds),
# Table 7 (fraction of weights remaining of the selected super tickets, mean over seeds).
PAPER = {
    "base": {
        "full": {"rte": (69.2,), "mrpc": (86.2, 90.4), "cola": (57.8,), "sst2": (92.9,), "stsb": (89.7, 89.2),
                 "qnli": (91.2,), "qqp": (90.9, 88.0), "mnli": (84.5, 84.4), "average": 82.8},
        "super": {"rte": (72.5,), "mrpc": (87.5, 91.1), "cola": (58.8,), "sst2": (93.4,), "stsb": (89.8, 89.4),
                  "qnli": (91.3,), "qqp": (91.3, 88.3), "mnli": (84.5, 84.5), "average": 83.7},
        "super_std": {"rte": 0.91, "mrpc": 0.74, "cola": 1.51, "stsb": 0.49, "sst2": 0.50, "qnli": 0.10, "qqp": 0.08, "mnli": 0.04},
        "weights": {"rte": 83, "mrpc": 86, "cola": 89, "stsb": 86, "sst2": 93, "qnli": 93, "qqp": 93, "mnli": 93, "average": 86.8},
    },
    "large": {
        "full": {"rte": (72.1,), "mrpc": (85.2, 89.5), "cola": (62.1,), "sst2": (93.3,), "stsb": (89.9, 89.6),
                 "qnli": (92.2,), "qqp": (91.3, 88.4), "mnli": (86.2, 86.1), "average": 84.1},
        "super": {"rte": (74.1,), "mrpc": (88.0, 91.4), "cola": (64.3,), "sst2": (93.9,), "stsb": (89.9, 89.7),
                  "qnli": (92.4,), "qqp": (91.4, 88.5), "mnli": (86.5, 86.2), "average": 85.1},
        "super_std": {"rte": 0.72, "mrpc": 0.20, "cola": 0.97, "stsb": 0.07, "sst2": 0.16, "qnli": 0.07, "qqp": 0.11, "mnli": 0.02},
        "weights": {"rte": 82, "mrpc": 66, "cola": 84, "stsb": 77, "sst2": 79, "qnli": 90, "qqp": 84, "mnli": 92, "average": 81.7},
    },
}


@dataclass
class GluePlan:
    """What `reproduce glue` runs: model, data, tasks, seeds, levels, the FFN pairing, and training
    overrides applied on top of every task's TrainConfig.paper(task) (e.g. max_length, a data budget)."""

    model: str
    data_dir: str
    tasks: tuple = GLUE_TABLE1
    seeds: tuple = PAPER_SEEDS
    levels: tuple = PAPER_LEVELS
    ffn_levels: object = "authors"
    overrides: dict = field(default_factory=lambda: {"max_length": 512})
    device: str | None = None
    backend: str = "auto"

    def __post_init__(self):
        from .tickets.search import check_arguments

        unknown = [t for t in self.tasks if t not in GLUE_TABLE1]
        if not self.tasks or unknown or len(set(self.tasks)) != len(self.tasks):  # a repeat is searched twice
            raise ValueError(f"tasks {list(self.tasks)}; allowed: a non-empty subset of {list(GLUE_TABLE1)}, each task once")
        # before out_dir is claimed and the plan recorded: a typo must not leave a plan that --resume then holds to
        check_arguments(self.levels, ("winning",), self.seeds, ffn_levels=self.ffn_levels, backend=self.backend)
        for task in self.tasks:  # every task's configuration is checked before any training
            self.config(task)

    def check_inputs(self) -> None:
        """Every task's data files are there; the checkpoint loads, has a tokenizer, enough positions for every
        task's max_length and enough layers and heads for every level and FFN level. Run before out_dir is
        claimed and the plan recorded (--resume would then hold the user to a plan that cannot run), and before
        the first task trains (not hours later, at the task that fails)."""
        import warnings

        from .data.task import resolve_tokenizer
        from .models import load_model
        from .tickets.search import check_backend_runs, check_level_prunes
        from .tickets.trials import resolve_ffn_levels
        from .utils import resolve_device

        for task in self.tasks:
            self._check_files(task)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a head initialized here is thrown away: the searches warn themselves
            model = load_model(self.model, backend=self.backend)
        resolve_tokenizer(self.model)
        positions, longest = model.config.max_length, max(self.config(task).max_length for task in self.tasks)
        if longest > positions:
            raise ValueError(f"max_length={longest} exceeds the model's {positions} positions; allowed: 2..{positions}")
        for level, ffn_level in zip(self.levels, resolve_ffn_levels(self.levels, self.ffn_levels, model.num_layers)):
            check_level_prunes(model, level, ffn_level)  # 'authors' on fewer than 9 layers, a level pruning nothing
        check_backend_runs(model, resolve_device(self.device), self.backend)

    def _check_files(self, task: str) -> None:
        """The task's training and dev files, and the extra dev set Table 1 reports (MNLI-mm; a search runs without)."""
        from .data.glue import glue_files

        files = glue_files(task, self.data_dir)
        for split in [c.rpartition(":")[0] for c in COMPONENTS[task] if ":" in c]:
            if split not in files:
                raise ValueError(f"no {task} {split} file under {self.data_dir!r} (Table 1 reports that dev set); "
                                 f"expected {os.path.join(os.path.dirname(files['dev']), split + '.tsv')}")

    def config(self, task: str) -> TrainConfig:
        return TrainConfig.paper(task, **self.overrides)

    def to_dict(self) -> dict:
        return {"model": self.model, "data_dir": os.path.abspath(self.data_dir), "tasks": list(self.tasks),
                "seeds": list(self.seeds), "levels": list(self.levels),
                "ffn_levels": self.ffn_levels if self.ffn_levels is None or isinstance(self.ffn_levels, str) else list(self.ffn_levels),
                "overrides": dict(self.overrides)}


def run_task(plan: GluePlan, task: str, out_dir: str, progress: bool = True):
    """One task's search (resumed when its run directory exists): the unit a distributed sweep fans out."""
    from .tickets.search import search

    run_dir = os.path.join(out_dir, task)
    return search(plan.model, task, levels=plan.levels, kinds=("winning",), seeds=plan.seeds, out_dir=run_dir,
                  config=plan.config(task), ffn_levels=plan.ffn_levels, data_dir=plan.data_dir, device=plan.device,
                  backend=plan.backend, resume=os.path.isfile(os.path.join(run_dir, "config.json")), progress=progress)


def reproduce_glue(plan: GluePlan, out_dir: str, resume: bool = False, progress: bool = True,
                   paper: str | None = None, workers: int | None = None) -> dict:
    """Runs every task of the plan in turn (what is finished is skipped), rewriting Table 1 after each;
    paper: whose published numbers go beside ours ("base" / "large"; default: by the model's depth).
    workers: one torch.distributed job of that many processes on this machine shares every task's trials
    (under torchrun, leave it None: every worker calls reproduce_glue and the job shares them)."""
    paper = paper or paper_model(plan.model)
    if workers is not None:
        check_nproc(workers)
    job = _job(workers)
    if job is None or job.is_main:
        _checked(job, plan.check_inputs)
        _checked(job, start_record, plan, out_dir, resume)
    if job is None:  # this process launches the workers
        run_on_workers(workers, reproduce_worker, plan, out_dir, progress, paper)
        return table1(out_dir, plan.tasks, paper)
    return _run_tasks(job, plan, out_dir, progress, paper)


def _run_tasks(job, plan: GluePlan, out_dir: str, progress: bool, paper: str) -> dict:
    """Every task's search on `job`'s workers (each shares the trials), worker 0 rewriting Table 1 after each."""
    job.barrier("plan")  # the others start once worker 0 has checked the inputs and recorded the plan
    for task in plan.tasks:
        run_task(plan, task, out_dir, progress and job.is_main)
        if job.is_main:
            write_table1(out_dir, plan.tasks, paper)
    return table1(out_dir, plan.tasks, paper)


def start_record(plan: GluePlan, out_dir: str, resume: bool) -> None:
    """Claims out_dir for `reproduce` (never a directory of someone else's files) and writes the plan, or on
    resume checks that the plan is the recorded one."""
    claim(out_dir, "reproduce", resume=resume)  # refuses an earlier reproduction without resume
    record = os.path.join(out_dir, "reproduce.json")
    if not os.path.isfile(record):
        atomic_write_text(record, json.dumps(plan.to_dict(), indent=1, sort_keys=True))
        return
    old, new = read_json(record, "reproduction plan"), plan.to_dict()
    if not isinstance(old, dict):  # damaged by hand: name the file, never a traceback
        raise ValueError(f"reproduction plan {record} is not a JSON object; it is not a plan `reproduce` wrote")
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ValueError(f"cannot resume {out_dir!r} with a different plan "
                         f"({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff)})")


def _job(workers):
    """This process's workers: a torchrun job's (scoped to the reproduction), alone, or None when it is to
    launch `workers` processes itself."""
    if in_torchrun():
        job = Workers.from_env().scoped("reproduce")
        if workers is not None and workers != job.world_size:
            raise ValueError(f"workers={workers} inside a torchrun job of {job.world_size} workers; allowed: None "
                             f"(torchrun's --nproc-per-node and --nnodes set the workers)")
        return job
    return None if workers is not None and workers > 1 else Workers()


def _checked(job, fn, *args):
    """fn(*args); a failure stops the job's other workers too (they wait for worker 0 at a barrier)."""
    try:
        fn(*args)
    except BaseException as exc:
        if job is not None:
            job.fail(str(exc))
        raise


def run_on_workers(nproc: int, fn, *args):
    """fn(*args) on nproc workers; a worker's bad input is one ValueError here, as without workers."""
    try:
        return launch_function(nproc, fn, *args)
    except JobFailed as exc:
        if exc.user_error:
            raise ValueError(str(exc)) from None
        raise


@records_failures
def reproduce_worker(plan: GluePlan, out_dir: str, progress: bool, paper: str) -> None:
    """One worker of reproduce_glue(workers=N) (module-level: spawned workers import it); the launcher has
    checked the inputs and recorded the plan."""
    _run_tasks(_job(None), plan, out_dir, progress, paper)


def task_scores(task: str, row: dict) -> list[float]:
    """The row's held-out components of Table 1, in %."""
    values = []
    for name in COMPONENTS[task]:
        split, _, metric = name.rpartition(":")
        values.append(100.0 * (row["extra"][split][metric] if split else row["heldout"][metric]))
    return values


def summarize_task(task: str, rows: list[dict]) -> dict | None:
    """Full model vs per-seed super tickets of one task's rows, over the seeds that have both."""
    full = {r["seed"]: r for r in rows if r["kind"] == "full"}
    picks = seed_super_tickets(rows)
    seeds = sorted(set(full) & set(picks))
    if not seeds:
        return None

    def side(chosen: dict) -> dict:
        parts = [task_scores(task, chosen[s]) for s in seeds]
        scores = [sum(p) / len(p) for p in parts]
        return {"components": [_mean([p[i] for p in parts]) for i in range(len(parts[0]))], "scores": scores,
                "score_mean": _mean(scores), "score_std": _std(scores)}

    out = {"seeds": seeds, "full": side(full), "super": side(picks)}
    weights = [picks[s]["weights_remaining"] for s in seeds]
    out["super"].update(weights_remaining_mean=_mean(weights), weights_remaining_std=_std(weights),
                        levels=[picks[s]["level"] for s in seeds])
    out["p_value"] = paired_p_value(out["super"]["scores"], out["full"]["scores"])
    return out


def table1(out_dir: str, tasks=GLUE_TABLE1, paper: str = "base") -> dict:
    """Table 1 from the tasks' run directories under out_dir (tasks not finished yet are left out)."""
    results = {}
    for task in tasks:
        path = os.path.join(out_dir, task, "results.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                summary = summarize_task(task, json.load(f)["rows"])
            if summary is not None:
                results[task] = summary
    return {"tasks": results, "average": _average(results, tasks), "paper_model": paper, "paper": PAPER[paper]}


def _average(results: dict, tasks) -> dict | None:
    """The task average (complete only when every task is there) and its std over the common seeds."""
    if not results:
        return None
    out = {"tasks": list(results), "complete": set(results) == set(tasks)}
    seeds = sorted(set.intersection(*(set(r["seeds"]) for r in results.values())))
    for side in ("full", "super"):
        out[side] = _mean([r[side]["score_mean"] for r in results.values()])
        per_seed = [_mean([r[side]["scores"][r["seeds"].index(s)] for r in results.values()]) for s in seeds]
        out[side + "_std"] = _std(per_seed)
    out["weights_remaining"] = _mean([r["super"]["weights_remaining_mean"] for r in results.values()])
    return out


def format_table1(table: dict, tasks=GLUE_TABLE1) -> str:
    """Table 1 as markdown: ours (mean of the components, ± std of the task score over seeds) and the paper's."""
    results, paper, average = table["tasks"], table["paper"], table["average"]
    head = "| | " + " | ".join(HEADERS[t] for t in tasks) + " | Average | Weights remaining |"
    lines = [head, "|" + "---|" * (len(tasks) + 3)]

    def ours(side: str) -> str:
        cells = [_cell(results[t][side]["components"], results[t][side]["score_std"]) if t in results else "—" for t in tasks]
        avg = "—" if average is None else _cell([average[side]], average[side + "_std"]) + ("" if average["complete"] else " (partial)")
        weights = "100%" if side == "full" else ("—" if average is None else f"{average['weights_remaining']:.1f}%")
        return " | ".join(cells + [avg, weights])

    lines.append("| ST-DNN (ours: full model) | " + ours("full") + " |")
    lines.append("| SuperT (ours: super tickets) | " + ours("super") + " |")
    lines.append("| p-value (paired t-test over seeds) | " + " | ".join(
        "—" if t not in results or results[t]["p_value"] is None else f"{results[t]['p_value']:.3g}" for t in tasks) + " | | |")
    lines.append("| SuperT weights remaining (ours) | " + " | ".join(
        f"{results[t]['super']['weights_remaining_mean']:.1f}%" if t in results else "—" for t in tasks) + " | | |")
    name = table["paper_model"]
    lines.append(f"| ST-DNN (paper, BERT-{name}) | " + " | ".join(_cell(paper["full"][t]) for t in tasks)
                 + f" | {paper['full']['average']:.1f} | 100% |")
    lines.append(f"| SuperT (paper, BERT-{name}) | " + " | ".join(
        _cell(paper["super"][t], paper["super_std"][t]) for t in tasks) + f" | {paper['super']['average']:.1f} | "
        f"{paper['weights']['average']:.1f}% |")
    lines.append("| SuperT weights remaining (paper) | " + " | ".join(f"{paper['weights'][t]}%" for t in tasks) + " | | |")
    return "\n".join(lines)


def write_table1(out_dir: str, tasks=GLUE_TABLE1, paper: str = "base") -> dict:
    table = table1(out_dir, tasks, paper)
    atomic_write_text(os.path.join(out_dir, "table1.json"), json.dumps(table, indent=1, sort_keys=True))
    text = ("# Table 1 (GLUE dev, held-out 90 %; mean over seeds, ± the std of the task score)\n\n"
            + format_table1(table, tasks) + "\n")
    atomic_write_text(os.path.join(out_dir, "table1.md"), text)
    return table


def paper_model(model: str) -> str:
    """Which published columns to print beside ours: BERT-large for a 24-layer checkpoint, else BERT-base."""
    try:
        with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
            return "large" if json.load(f).get("num_hidden_layers") == 24 else "base"
    except (OSError, ValueError):
        return "base"


def _cell(values, std=None) -> str:
    text = "/".join(f"{v:.1f}" for v in values)
    return text if std is None else f"{text} ± {std:.2f}"


def _mean(values):
    return statistics.fmean(values) if values else float("nan")


def _std(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0  # sample std (n - 1), as report.py
