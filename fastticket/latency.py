"""Measured latency of compact tickets against the full model, next to the FLOP-ideal speed-up.

Latency depends on shapes only, so the full model is TicketModel(config.full()) with fresh weights, and a
ticket without a trained model (a level of a run) is rewound from it. The two models of a pair are timed
interleaved in one process (A B, then B A, ... `repeats` forwards each after `warmup` untimed ones) so that
drift in machine load hits both alike; medians are reported. Engines: "torch" (fastticket's encoder and
its fused ops), "compile" (torch.compile of the plain-torch hf-compact model), "onnxruntime" (the ONNX
export of both, CPU). FLOPs count the multiply-adds (×2) of every matmul from the shapes: Q/K/V/O, scores
and context over the full T×T (what every engine computes, windows included), DeBERTa's relative terms,
the FFN, the embedding projection and the head.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import torch

from .models import TicketModel
from .models.exporting import hf_config_dict
from .utils import atomic_write_text, resolve_device

ENGINES = ("torch", "compile", "onnxruntime")
REPORT_FORMAT = "fastticket.latency"
REPORT_FILE = "latency.json"


def check_options(config, batch_size: int, seq_len: int, engine: str, repeats: int, device, warmup: int = 0) -> torch.device:
    """One ValueError naming the first bad option, before any work; returns the device."""
    dev = check_settings(batch_size, engine, repeats, device, warmup)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= config.max_length:
        raise ValueError(f"sequence length {seq_len!r}; allowed: 1..{config.max_length} (the model's maximum)")
    return dev


def check_settings(batch_size: int, engine: str, repeats: int, device, warmup: int = 0) -> torch.device:
    """check_options without the model: what can be refused before a model is loaded."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} is not supported; allowed: {ENGINES}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size {batch_size!r}; allowed: an integer >= 1")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats {repeats!r}; allowed: an integer >= 1")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup {warmup!r}; allowed: an integer >= 0")
    dev = resolve_device(device)
    if engine == "onnxruntime":
        if dev.type != "cpu":
            raise ValueError(f"engine 'onnxruntime' runs on the CPU here; device {device!r} is not allowed with it")
        from .models.onnx_export import require_onnx

        require_onnx(("onnx", "onnxscript", "onnxruntime"), what="engine 'onnxruntime'")
    return dev


# --------------------------------------------------------------------------------------------------- FLOPs


def layer_flops(config, layer: int, batch: int, seq: int) -> int:
    """FLOPs of layer `layer`'s attention and FFN at the shapes `config` holds (kept heads, FFN width)."""
    c, b, t = config, batch, seq
    hidden, heads, dim = c.hidden_size, len(c.layer_heads(layer)), c.head_dim
    inner = heads * dim
    flops = 0
    if heads:
        flops += 4 * 2 * b * t * hidden * inner  # Q, K, V, W_O
        flops += 2 * 2 * b * heads * t * t * dim  # scores, context
        if c.relative_attention:
            rows = 2 * c.relative_span
            for _ in c.pos_att_type:  # project the relative table, then q·Krᵀ (c2p) or k·Qrᵀ (p2c)
                flops += 2 * rows * hidden * inner + 2 * b * heads * t * rows * dim
    width = c.layer_ffn_width(layer)
    flops += 2 * b * t * hidden * width * (3 if c.glu else 2)  # up (+ gate) and down
    return flops


def model_flops(config, batch: int, seq: int) -> int:
    """FLOPs of one forward of a model with EncoderConfig `config` over [batch, seq] tokens."""
    c = config
    width = c.embedding_size or c.hidden_size
    flops = 2 * batch * seq * width * c.hidden_size if width != c.hidden_size else 0
    flops += sum(layer_flops(c, l, batch, seq) for l in range(c.num_layers))
    return flops + 2 * batch * c.hidden_size * (c.hidden_size + c.num_labels)


# --------------------------------------------------------------------------------------------------- timing


def example_batch(config, batch_size: int, seq_len: int, device) -> dict:
    """Unpadded random token ids [B, T] (never the padding id), masks of ones, token types of zeros."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=gen)
    ids[ids == config.pad_token_id] = (config.pad_token_id + 1) % config.vocab_size
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if config.type_vocab_size > 1:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return {k: v.to(device) for k, v in batch.items()}


def forward_of(model: TicketModel, engine: str, batch: dict, workdir: str):
    """A zero-argument function running one forward of `model` on `batch` with `engine`."""
    if engine == "torch":
        return lambda: model(**batch).logits
    if engine == "compile":
        from .models.hf_compact import plain_torch_model

        compiled = torch.compile(plain_torch_model(model, hf_config_dict(model.config)))
        with torch.inference_mode():  # compiles now, as timed (inference mode): never inside a timed forward
            compiled(**batch)
        return lambda: compiled(**batch).logits
    from .models.onnx_export import onnx_logits, onnx_session, write_onnx

    directory = tempfile.mkdtemp(dir=workdir)
    write_onnx(model, directory, hf_config_dict(model.config))
    session, names = onnx_session(directory, threads=torch.get_num_threads())
    return lambda: onnx_logits(session, names, batch)


def timed(run, device) -> float:
    """Milliseconds of one call of `run`, synchronized on an accelerator."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000.0 * (time.perf_counter() - start)


def measure_pair(runs: list, repeats: int, warmup: int, device) -> tuple[float, float]:
    """(median ms of runs[0], median ms of runs[1]), timed interleaved: A B, B A, A B, ..."""
    samples = [[], []]
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runs:
                run()
        for r in range(repeats):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                samples[i].append(timed(runs[i], device))
    return statistics.median(samples[0]), statistics.median(samples[1])


def measure(full: TicketModel, tickets: list[tuple[dict, TicketModel]], *, engine: str = "torch", batch_size: int = 32,
            seq_len: int = 128, repeats: int = 20, warmup: int = 3, device=None) -> dict:
    """Times every (info, compact model) of `tickets` against `full`; returns the latency report (a dict)."""
    dev = check_options(full.config, batch_size, seq_len, engine, repeats, device, warmup)
    try:
        results = _measure_all(full, tickets, engine, batch_size, seq_len, repeats, warmup, dev)
    except RuntimeError as exc:  # torch.OutOfMemoryError is one too
        if not _out_of_memory(exc):
            raise
        raise ValueError(f"batch size {batch_size} x sequence length {seq_len} does not fit in memory on {dev}; "
                         "allowed: a smaller --batch-size or --seq-len") from None
    return {"format": REPORT_FORMAT, "version": 1, "engine": engine, "device": str(dev), "batch_size": batch_size,
            "seq_len": seq_len, "repeats": repeats, "warmup": warmup, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "results": results}


def _measure_all(full, tickets, engine: str, batch_size: int, seq_len: int, repeats: int, warmup: int, dev) -> list[dict]:
    full = full.to(dev).eval()
    batch = example_batch(full.config, batch_size, seq_len, dev)
    full_flops = model_flops(full.config, batch_size, seq_len)
    results = []
    with tempfile.TemporaryDirectory(prefix="fastticket-latency-") as workdir:
        full_run = forward_of(full, engine, batch, workdir)  # built once (a compile or an ONNX export) for all
        for info, model in tickets:
            model = model.to(dev).eval()
            runs = [full_run, forward_of(model, engine, batch, workdir)]
            full_ms, ticket_ms = measure_pair(runs, repeats, warmup, dev)
            flops = model_flops(model.config, batch_size, seq_len)
            results.append({**info, "full_ms": full_ms, "ticket_ms": ticket_ms, "measured_speedup": full_ms / ticket_ms,
                            "full_flops": full_flops, "ticket_flops": flops, "ideal_speedup": full_flops / flops,
                            "heads_kept": int(model.kept_heads_mask().sum()), "ffn_kept": int(model.kept_ffn_mask().sum())})
    return results


def _out_of_memory(exc: RuntimeError) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator's refusal (a plain RuntimeError naming it)."""
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc) or "out of memory" in str(exc)


def full_model_of(config) -> TicketModel:
    """A full model of `config`'s shapes with fresh weights (latency depends on shapes only)."""
    torch.manual_seed(0)
    return TicketModel(config.full()).eval()


# --------------------------------------------------------------------------------------------------- output


def format_report(report: dict) -> str:
    head = (f"{'ticket':24s} {'heads':>5s} {'ffns':>4s} {'ticket ms':>10s} {'full ms':>10s} {'measured':>9s} "
            f"{'FLOP-ideal':>10s}")
    lines = [f"latency ({report['engine']}, {report['device']}, batch {report['batch_size']} x {report['seq_len']} tokens, "
             f"median of {report['repeats']} interleaved repeats, {report['threads']} threads)", head, "-" * len(head)]
    for r in report["results"]:
        lines.append(f"{r['label']:24s} {r['heads_kept']:5d} {r['ffn_kept']:4d} {r['ticket_ms']:10.2f} {r['full_ms']:10.2f} "
                     f"{r['measured_speedup']:8.2f}x {r['ideal_speedup']:9.2f}x")
    return "\n".join(lines)


def check_report_path(path) -> None:
    """Refuses, before any work, a report path that holds something other than an earlier latency report, or
    whose directory cannot be created or written (a file where a folder should be, no permission)."""
    from .rundir import check_writable, owner

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory; the latency report is a file")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        check_writable(parent)
    except ValueError as exc:
        raise ValueError(f"latency report {path!r}: {exc}") from None
    if os.path.isdir(parent) and owner(parent) == "export":  # a file it did not write: it could not be replaced
        raise ValueError(f"latency report {path!r} would lie inside an export, which then holds a file the export "
                         "did not write; allowed: a path outside it (the default is MODEL_DIR-latency.json beside it)")
    if os.path.lexists(path):
        try:
            with open(path, encoding="utf-8") as f:
                ours = json.load(f).get("format") == REPORT_FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"{path!r} exists and is not a fastticket latency report; refusing to overwrite it")


def write_report(path, report: dict) -> None:
    """Writes the report atomically; an existing file is replaced only if it is an earlier latency report."""
    check_report_path(path)
    atomic_write_text(os.fspath(path), json.dumps(report, indent=1, sort_keys=True))


# --------------------------------------------------------------------------------------------------- runs


def level_tickets(rows: list[dict], full: TicketModel, kinds=("winning",)) -> list[tuple[dict, TicketModel]]:
    """One compact model per (kind, level, FFN level) of a search's rows: the ticket of its lowest seed,
    rewound from `full` (the tickets of other seeds keep the same counts)."""
    from .tickets import Ticket
    from .tickets.rewind import rewind

    chosen: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        key = (row["kind"], row["level"], row.get("ffn_level", row["level"]))
        if row["kind"] in kinds and "ticket" in row and key not in chosen:
            chosen[key] = row
    out = []
    for (kind, level, ffn_level), row in sorted(chosen.items()):
        info = {"label": f"{kind} {level:.2f}/{ffn_level:.2f} s{row['seed']}", "kind": kind, "level": level,
                "ffn_level": ffn_level, "seed": row["seed"]}
        out.append((info, rewind(full, Ticket.from_dict(row["ticket"]))))
    return out


def with_latency_column(table: str, summary: list[dict], report: dict) -> str:
    """The search table (SearchResult.table(): a header, a rule, one line per summary line, then more) with
    the measured and FLOP-ideal speed-ups of each line's ticket appended."""
    lines = table.split("\n")
    measured = {(r["kind"], r["level"], r["ffn_level"]): r for r in report["results"]}
    lines[0] += f"  {'measured':>9s} {'FLOP-ideal':>10s}"
    lines[1] += "-" * 21
    for i, line in enumerate(summary):
        r = measured.get((line["kind"], line["level"], line.get("ffn_level", line["level"])))
        lines[2 + i] += f"  {r['measured_speedup']:8.2f}x {r['ideal_speedup']:9.2f}x" if r else ""
    return "\n".join(lines)


def search_latency(result, model, *, engine: str = "torch", batch_size: int = 32, seq_len: int | None = None,
                   repeats: int = 20, device=None) -> str:
    """`fastticket search --latency`: measures every winning level of a finished search (`result`, whose model
    was `model`: a path, hub name or TicketModel), writes latency.json into its run directory and returns
    the search table with the speed-up columns."""
    from .models import load_model, load_pruned
    from .tickets.kept_models import SUPER_MODEL_DIR

    kept = os.path.join(result.out_dir, SUPER_MODEL_DIR) if result.out_dir else None
    if kept and os.path.isdir(kept):  # the task's head size; else the model's own config
        config = load_pruned(kept).config
    else:
        config = model.config if isinstance(model, TicketModel) else load_model(model).config
    full = full_model_of(config)
    seq_len = min(128, full.config.max_length) if seq_len is None else seq_len
    path = os.path.join(result.out_dir, REPORT_FILE) if result.out_dir else None
    if path:
        check_report_path(path)
    report = measure(full, level_tickets(result.rows, full), engine=engine, batch_size=batch_size, seq_len=seq_len,
                     repeats=repeats, device=device)
    if path:
        write_report(path, report)
    return with_latency_column(result.table(), result.summary(), report)
