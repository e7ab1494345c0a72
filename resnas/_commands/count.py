"""`resnas count NAME_OR_ARCH_JSON`: FLOPs, MACs and params of one network, by arithmetic."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnas import zoo
from resnas._arch import Arch
from resnas._build import count
from resnas._errors import UserError


def resolve_arch(text: str) -> tuple[Arch, zoo.ZooEntry | None]:
    """A zoo name, an arch JSON string, or a path to an arch JSON file (e.g. a run's best/arch.json)."""
    if text in zoo.names():
        return zoo.get(text), zoo.entry(text)
    if text.lstrip().startswith("{"):
        return Arch.from_json(text), None
    path = Path(text)
    if path.is_file():
        try:
            return Arch.from_dict(json.loads(path.read_text())), None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
    raise UserError(f"{text!r} is neither a zoo name, an arch JSON string nor a JSON file; "
                    f"zoo names: {', '.join(zoo.names())}")


def _run(args: argparse.Namespace) -> int:
    arch, entry = resolve_arch(args.arch)
    resolution = args.resolution or (entry.resolution if entry else 224)
    classes = args.classes or (entry.num_classes if entry else 1000)
    cost = count(arch, resolution=resolution, num_classes=classes, in_channels=args.in_channels)
    print(f"input   {args.in_channels}x{resolution}x{resolution}, {classes} classes")
    print(f"FLOPs   {cost.flops:>16,}  ({cost.flops / 1e9:.3f} G, fvcore's count: the unit of budgets)")
    print(f"MACs    {cost.macs:>16,}  ({cost.macs / 1e9:.3f} G, conv + linear multiply-adds)")
    print(f"params  {cost.params:>16,}  ({cost.params / 1e6:.3f} M)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("count", help="FLOPs, MACs and params of a zoo network or an arch JSON",
                       description="FLOPs, MACs and params of a zoo network or an arch JSON (string or file).")
    p.add_argument("arch", metavar="NAME_OR_ARCH_JSON")
    p.add_argument("--resolution", type=int, help="input size (default: the zoo entry's, else 224)")
    p.add_argument("--classes", type=int, help="classifier outputs (default: the zoo entry's, else 1000)")
    p.add_argument("--in-channels", type=int, default=3, help="input channels (default 3)")
    p.set_defaults(func=_run)
