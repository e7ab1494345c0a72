"""`resnas count NAME_OR_ARCH_JSON`: FLOPs, MACs and params of one network, by arithmetic."""

from __future__ import annotations

import argparse
from pathlib import Path

from resnas import zoo
from resnas._arch import MAX_JSON_CHARS, MIN_RESOLUTION, Arch, brief
from resnas._build import count
from resnas._errors import UserError


def _is_file(path: Path) -> bool:
    """Whether `path` is a file; a name the OS refuses (too long, a NUL byte) is none."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve_arch(text: str) -> tuple[Arch, zoo.ZooEntry | None]:
    """A zoo name, an arch JSON string, or a path to an arch JSON file (e.g. a run's best/arch.json)."""
    if text in zoo.names():
        return zoo.get(text), zoo.entry(text)
    if text.lstrip().startswith("{"):
        return Arch.from_json(text), None
    path = Path(text)
    if _is_file(path):
        try:
            with path.open(encoding="utf-8") as f:
                content = f.read(MAX_JSON_CHARS + 1)  # bounded: a wrong file must not fill memory
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read it as an arch JSON file ({e})") from None
        try:
            return Arch.from_json(content), None
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
    raise UserError(f"{brief(text)} is neither a zoo name, an arch JSON string nor a JSON file; "
                    f"zoo names: {', '.join(zoo.names())}")


def _check_flags(args: argparse.Namespace) -> None:
    """--resolution, --classes and --in-channels, where given, are large enough."""
    for flag, value, minimum in (("--resolution", args.resolution, MIN_RESOLUTION), ("--classes", args.classes, 1),
                                 ("--in-channels", args.in_channels, 1)):
        if value is not None and value < minimum:
            raise UserError(f"{flag} must be at least {minimum}, got {value}")


def _run(args: argparse.Namespace) -> int:
    _check_flags(args)
    arch, entry = resolve_arch(args.arch)
    # `is None`, not `or`: a given 0 is an error above, never a silent default.
    resolution = args.resolution if args.resolution is not None else (entry.resolution if entry else 224)
    classes = args.classes if args.classes is not None else (entry.num_classes if entry else 1000)
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
