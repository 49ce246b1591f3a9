"""The visual memory from the command line: build, classify, forget, audit, info, export.

    python -m procedural_perception.cli.memory build --encoder efficientnet_lite0 --data fashion_mnist:train --out memories/fm
    python -m procedural_perception.cli.memory classify memories/fm --image shoe.png [--k 20 --rule rank]
    python -m procedural_perception.cli.memory classify memories/fm --data fashion_mnist:test --limit 1000 [--k 5,10,20]
    python -m procedural_perception.cli.memory forget memories/fm --ids 12 40 --reason "owner asked for removal"
    python -m procedural_perception.cli.memory forget memories/fm --sources /data/x.jpg --reason "licence withdrawn"
    python -m procedural_perception.cli.memory audit memories/fm --queries fashion_mnist:test --limit 2000 [--k 20 --rule dino]
    python -m procedural_perception.cli.memory info memories/fm
    python -m procedural_perception.cli.memory export memories/fm --out fm.npz   # or fm.safetensors
    python -m procedural_perception.cli.memory check memories/fm

A memory folder remembers the encoder it was built with (resolved path, a hash of its weights,
image size), so classify and audit embed new images the same way, and refuse when the weights
changed; build embeds at the encoder's own input size (the size a checkpoint was trained at) unless
--image-size is given. A k above the memory size is used as the memory size, with one warning line.
Every removal is recorded with its reason and a keyed hash of the source (never the source) in the
audit log, and nothing else of the removed sample stays in the folder. Building again skips the
sources already stored and refuses forgotten ones unless --allow-erased is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lightning_modules.encoders import Encoder, build_encoder
from procedural_perception.datasets.labelled import load_labelled, open_rgb, spec_usages
from procedural_perception.evaluations.embedding import embed_dataset, eval_transform
from procedural_perception.evaluations.knn import AUDIT_K, AUDIT_RULE, fit_ks, headline_k
from procedural_perception.visual_memory import RULES, VisualMemory
from procedural_perception.visual_memory.encoder_identity import check_encoder, encoder_identity
from procedural_perception.visual_memory.export import FORMATS, check_format, export_memory
from procedural_perception.visual_memory.integrity import check_memory
from procedural_perception.visual_memory.voting import DEFAULT_TEMPERATURE


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m procedural_perception.cli.memory", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)

    def voting(q: argparse.ArgumentParser, k: int, rule: str, several: bool = False) -> None:
        if several:
            q.add_argument("--k", type=_int_list, default=[k], metavar="K[,K...]",
                           help=f"neighbours that vote; several k: accuracy for each (default {k}; "
                                "a k above the memory size is used as the memory size)")
        else:
            q.add_argument("--k", type=int, default=k, help=f"neighbours that vote (default {k})")
        q.add_argument("--rule", choices=RULES, default=rule, help=f"voting rule (default {rule})")
        q.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="dino/softmax temperature")

    def embedding(q: argparse.ArgumentParser) -> None:
        q.add_argument("--batch-size", type=int, default=128)
        q.add_argument("--device", default="auto", help="torch device for the encoder (auto: cuda if present)")

    b = sub.add_parser("build", help="embed a labelled data set into a memory folder (appends if it exists)")
    b.add_argument("--encoder", required=True, help="DINO .ckpt, random_vit, rgb or efficientnet_lite0")
    b.add_argument("--data", required=True, help="labelled data spec: " + "; ".join(spec_usages()))
    b.add_argument("--out", required=True, type=Path, help="memory folder")
    b.add_argument("--image-size", type=int, default=None,
                   help="input side (default: the encoder's own: the size a checkpoint was trained at, 224 for the "
                        "reference encoders)")
    b.add_argument("--resize", type=int, default=None, help="shorter side before the centre crop (default size*256/224)")
    b.add_argument("--limit", type=int, default=None, help="a deterministic random subset of this many samples")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--strict", action="store_true", help="fail on unreadable files instead of skipping them")
    b.add_argument("--allow-erased", action="store_true",
                   help="add again sources that were forgotten (refused otherwise; the audit log records it)")
    embedding(b)

    c = sub.add_parser("classify", help="classify images or a data set and show the neighbours that decided")
    c.add_argument("memory", type=Path)
    source = c.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", nargs="+", type=Path, help="image files")
    source.add_argument("--data", help="labelled data spec (prints accuracy and the first predictions)")
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--show", type=int, default=5, help="predictions shown in detail")
    voting(c, AUDIT_K, AUDIT_RULE, several=True)
    embedding(c)

    f = sub.add_parser("forget", help="remove samples (exact unlearning), recording the reason")
    f.add_argument("memory", type=Path)
    which = f.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", nargs="+", type=int)
    which.add_argument("--sources", nargs="+")
    f.add_argument("--reason", required=True, help="why (kept in the audit log)")

    a = sub.add_parser("audit", help="exact privacy audit: samples whose removal changes a prediction")
    a.add_argument("memory", type=Path)
    a.add_argument("--queries", required=True, help="labelled data spec of the queries")
    a.add_argument("--limit", type=int, default=None)
    a.add_argument("--top", type=int, default=10, help="most influential samples listed")
    voting(a, AUDIT_K, AUDIT_RULE)
    embedding(a)

    k = sub.add_parser("check", help="integrity check (vectors, metadata, audit log, snapshot); repairs the snapshot")
    k.add_argument("memory", type=Path)
    k.add_argument("--no-repair", action="store_true", help="only report, change nothing")

    i = sub.add_parser("info", help="size, classes, encoder and the end of the audit log")
    i.add_argument("memory", type=Path)
    i.add_argument("--log", type=int, default=10, help="audit rows shown")

    e = sub.add_parser("export", help="write the embeddings, labels, ids, class names and sources to one file")
    e.add_argument("memory", type=Path)
    e.add_argument("--out", required=True, type=Path, help=f"output file; its suffix ({', '.join(FORMATS)}) "
                                                           "chooses the format")
    return p.parse_args(argv)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected k values separated by commas (5,10,20), got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"k values must be at least 1, got {text!r}")
    return values


def _fit_k(k: int, memory: VisualMemory, console: Console) -> int:
    """``k``, or the memory size when ``k`` exceeds it (with one warning line)."""
    if k > len(memory) > 0:
        console.print(f"[yellow]warning:[/yellow] the memory holds {len(memory)} samples: k = {k} exceeds it and is "
                      f"used as k = {len(memory)}")
    return max(1, min(k, len(memory)))


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def _encoder_of(memory: VisualMemory, device: torch.device) -> tuple[Encoder, object]:
    """The memory's own encoder, refused when its weights are no longer those the memory holds."""
    info = memory.info()
    if "encoder" not in info:
        raise ValueError(f"{memory.path} does not record its encoder; rebuild it with `procedural_perception.cli.memory build`.")
    encoder = build_encoder(info["encoder"])
    size, resize = info.get("image_size", 224), info.get("resize")
    check_encoder(info, encoder_identity(info["encoder"], encoder, size, resize), memory.path)
    return encoder.to(device), eval_transform(size, resize)


def build(args: argparse.Namespace, console: Console) -> None:
    device = _device(args.device)
    encoder = build_encoder(args.encoder)
    args.image_size = args.image_size or int(getattr(encoder, "image_size", 224))
    identity = encoder_identity(args.encoder, encoder, args.image_size, args.resize)
    encoder = encoder.to(device)
    data = load_labelled(args.data, eval_transform(args.image_size, args.resize), strict=args.strict,
                         report=args.out / "skipped.txt")
    data = data.subset(args.limit, args.seed)
    memory = VisualMemory(encoder.embed_dim, path=args.out)
    if memory.info():
        check_encoder(memory.info(), identity, args.out)
    features, labels = embed_dataset(encoder, data, args.batch_size, device=device)
    failed = {index for index, _, _ in data.read_failures()}  # placeholders: never stored
    keep = [i for i in range(len(labels)) if i not in failed]
    if failed or data.skipped:
        data.write_report(args.out / "skipped.txt")
    reason = f"build from {args.data}" + (" (--allow-erased)" if args.allow_erased else "")
    ids = memory.add(features[keep], labels[keep], class_names=data.classes, sources=[data.sources[i] for i in keep],
                     dataset=args.data, reason=reason, allow_erased=args.allow_erased)
    report = memory.last_add
    memory.set_info(**identity)
    memory.save()
    console.print(f"[green]{args.out}[/green]: added {len(ids)} samples"
                  + (f" (ids {ids.min()}..{ids.max()})" if len(ids) else "")
                  + f", {len(memory)} in memory, {len(data.classes)} classes, encoder {identity['encoder']}"
                  + (f"; skipped {len(report.present)} already in the memory" if report.present else "")
                  + (f"; refused {len(report.erased)} forgotten sources (add them again only with --allow-erased)"
                     if report.erased else "")
                  + (f"; re-added {len(report.readded_erased)} forgotten sources (--allow-erased, logged)"
                     if report.readded_erased else "")
                  + (f"; skipped {len(data.skipped) + len(failed)} unreadable entries, every one listed in "
                     f"{args.out / 'skipped.txt'}" if data.skipped or failed else ""))


def classify(args: argparse.Namespace, console: Console) -> None:
    memory = VisualMemory.load(args.memory)
    device = _device(args.device)
    encoder, transform = _encoder_of(memory, device)
    names = memory.class_names()
    ks, _, note = fit_ks(args.k, None, len(memory))
    if note:
        console.print(f"[yellow]warning:[/yellow] {note}")
    args.k = headline_k(ks)  # the neighbours shown for each prediction
    if args.image:
        readable, images = [], []
        for path in args.image:  # one unreadable file is named and skipped; the others are still classified
            try:
                images.append(transform(open_rgb(path)))
                readable.append(path)
            except (OSError, ValueError) as err:
                console.print(f"[bold yellow]skipped:[/bold yellow] {err if str(path) in str(err) else f'{path}: {err}'}")
        if not readable:
            raise ValueError(f"none of the {len(args.image)} images could be read (each is named above)")
        with torch.no_grad():
            features = encoder(torch.stack(images).to(device)).cpu()
        for path, feature in zip(readable, features, strict=True):
            _show_attribution(console, memory, feature, str(path), args, names)
        return
    data = load_labelled(args.data, transform).subset(args.limit)
    features, labels = embed_dataset(encoder, data, args.batch_size, device=device)
    for k in ks:
        predictions = memory.classify(features, k, args.rule, args.temperature)
        accuracy = 100.0 * (predictions == labels).float().mean().item()
        console.print(f"{args.data}: top-1 {accuracy:.2f}% over {len(labels)} images ({args.rule} vote, k = {k})")
        if k == args.k:
            headline = predictions
    table = Table(title=f"per-class top-1 ({args.rule} vote, k = {args.k})")
    for column in ("class", "queries", "top-1 %"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for c in torch.unique(labels).tolist():
        mask = labels == c
        table.add_row(str(names.get(c, c)), str(int(mask.sum())), f"{100.0 * (headline[mask] == c).float().mean():.2f}")
    console.print(table)
    for q in range(min(args.show, len(labels))):
        _show_attribution(console, memory, features[q], f"{data.sources[q]} (label {names.get(int(labels[q]), labels[q])})",
                          args, names)


def _show_attribution(console: Console, memory: VisualMemory, feature: torch.Tensor, title: str,
                      args: argparse.Namespace, names: dict[int, str]) -> None:
    result = memory.attribute(feature, args.k, args.rule, args.temperature)
    predicted = names.get(result.prediction, str(result.prediction))
    table = Table(title=f"{title}: [bold]{predicted}[/bold] ({100 * result.class_shares[result.prediction]:.1f}% of the vote)")
    for column in ("rank", "id", "class", "similarity", "vote share", "source"):
        table.add_column(column, justify="right" if column in ("rank", "id", "similarity", "vote share") else "left")
    for n in result.neighbours:
        style = "green" if n["label"] == result.prediction else None
        table.add_row(str(n["rank"]), str(n["id"]), str(n["class_name"]), f"{n['similarity']:.4f}",
                      f"{100 * n['share']:.1f}%", str(n["source"]), style=style)
    console.print(table)


def forget(args: argparse.Namespace, console: Console) -> None:
    memory = VisualMemory.load(args.memory)
    if args.ids:
        memory.remove(args.ids, args.reason)
        removed = args.ids
    else:
        removed = memory.forget_sources(args.sources, args.reason)
    memory.save()
    memory.store.checkpoint()
    console.print(f"removed {len(removed)} samples ({', '.join(map(str, removed[:20]))}{' ...' if len(removed) > 20 else ''}) "
                  f"for: {args.reason!r}; {len(memory)} remain")


def audit(args: argparse.Namespace, console: Console) -> None:
    memory = VisualMemory.load(args.memory)
    device = _device(args.device)
    encoder, transform = _encoder_of(memory, device)
    data = load_labelled(args.queries, transform).subset(args.limit)
    features, _ = embed_dataset(encoder, data, args.batch_size, device=device)
    args.k = _fit_k(args.k, memory, console)
    report = memory.audit(features, args.k, args.rule, args.temperature)
    console.print(f"[bold]{report.count}[/bold] of {report.memory_size} memory samples are non-private "
                  f"({100 * report.fraction:.3f}%): removing any one changes at least one of {report.num_queries} "
                  f"predictions ({args.rule} vote, k = {args.k}).")
    order = report.influence.argsort()[::-1][: args.top]
    rows = {r["id"]: r for r in memory.metadata(report.non_private_ids[order].tolist())}
    table = Table(title="most influential samples")
    for column in ("id", "class", "queries changed", "source"):
        table.add_column(column)
    for i in order:
        row = rows[int(report.non_private_ids[i])]
        table.add_row(str(row["id"]), str(row["class_name"]), str(int(report.influence[i])), str(row["source"]))
    console.print(table)


def info(args: argparse.Namespace, console: Console) -> None:
    memory = VisualMemory.load(args.memory)
    console.print(f"{args.memory}: {len(memory)} samples of dim {memory.dim}, {len(memory.class_names())} classes, "
                  f"built with {memory.info()}")
    table = Table(title="audit log (latest)")
    for column in ("seq", "action", "sample", "label", "source hash", "reason"):
        table.add_column(column)
    for r in memory.audit_log(args.log):
        table.add_row(str(r["seq"]), r["action"], str(r["sample_id"]), str(r["label"]), str(r["source_hash"])[:16],
                      str(r["reason"]))
    console.print(table)


def export(args: argparse.Namespace, console: Console) -> None:
    check_format(args.out)  # before loading a large memory
    memory = VisualMemory.load(args.memory)
    count = export_memory(memory, args.out)
    console.print(f"[green]{args.out}[/green]: {count} embeddings of dim {memory.dim} with labels, ids, class names "
                  "and sources")


def check(args: argparse.Namespace, console: Console) -> int:
    report = check_memory(args.memory, repair=not args.no_repair)
    for action in report.repaired:
        console.print(f"[yellow]repaired:[/yellow] {action}")
    for problem in report.problems:
        console.print(f"[bold red]problem:[/bold red] {problem}")
    verdict = "[green]consistent[/green]" if report.ok else "[bold red]NOT consistent[/bold red]"
    console.print(f"{args.memory}: {verdict}; {report.samples} samples, generation {report.generation}")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    commands = {"build": build, "classify": classify, "forget": forget, "audit": audit, "info": info, "export": export,
                "check": check}
    try:
        status = commands[args.command](args, console)
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError, OSError) as err:
        console.print(f"[bold red]error:[/bold red] {err.args[0] if isinstance(err, KeyError) else err}")
        return 2
    return status or 0


if __name__ == "__main__":
    raise SystemExit(main())
