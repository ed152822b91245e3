"""`tfscope hlo RUN_DIR --stage STAGE --out DIR`: the XLA IR of the compiled step and of the fused
loop at any stage TensorFlow offers, the step function's TF graph, and a summary of what runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_hlo(args: argparse.Namespace) -> int:
    from tfscope.core.errors import ConfigError, RunDirError
    from tfscope.profiling import hlo  # its TensorFlow import is deferred: the checks below cost nothing

    hlo.check_stage(args.stage)
    if args.mode not in (*hlo.IR_MODES, "both"):
        raise ConfigError(f"--mode: {args.mode!r} has no XLA IR; choose one of xla, fused, both")
    modes = hlo.IR_MODES if args.mode == "both" else (args.mode,)
    out = Path(args.out)
    summary = out / f"summary.{args.stage}.json"
    targets = [out / hlo.ir_filename(m, args.stage) for m in modes] + [summary]
    existing = [p for p in targets if p.exists()]
    if existing and not args.force:
        raise RunDirError(f"{existing[0]}: already exists; choose another --out or use --force to replace it")
    from tfscope.core.paths import check_creatable
    from tfscope.core.train.run_dir import load_config

    load_config(args.run_dir)
    check_creatable(out)
    from tfscope.core.train.run import load_run

    trainer = load_run(args.run_dir)
    report = hlo.write_ir(trainer, out, args.stage, modes)
    summary.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(hlo.format_summary(report))
    print(f"summary:  {summary}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("hlo", help="write the XLA IR of a run's compiled step and fused loop")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--stage", default="optimized_hlo",
                   help="hlo, hlo_no_metadata, hlo_serialized, stablehlo, optimized_hlo (default), "
                        "optimized_hlo_serialized, optimized_hlo_proto_serialized, optimized_hlo_dot")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the IR files")
    p.add_argument("--mode", default="both", help="xla (one step per call), fused (the loop), both (default)")
    p.add_argument("--force", action="store_true", help="replace IR files of the same stage in DIR")
    p.set_defaults(func=cmd_hlo)
