"""fastticket plot: redraw a run's phase_transition.png."""

from __future__ import annotations

import os

from .common import read_run

def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="redraw DIR/phase_transition.png from DIR/results.json")
    p.add_argument("run_dir")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..defaults import display_name
    from ..report import plot_phase_transition

    config, rows = read_run(args.run_dir)  # a corrupt results file is one line naming it
    if not rows:
        raise ValueError(f"{os.path.join(args.run_dir, 'results.json')} has no rows yet: no trial has finished")
    title = f"{display_name(config.get('model_name'))} on {config.get('task')}"
    path = plot_phase_transition(rows, os.path.join(args.run_dir, "phase_transition.png"), config.get("metric", "score"), title)
    print(f"wrote {path}")
    return 0
