"""Turn older node-id declarations into marks: `python -m proxy.workflows.convert <name>...`

For each name, writes `$name=input` words into the node titles of `<dir>/<name>.json` (and the
declared defaults into the graph's values, where ComfyUI reads defaults from) and replaces
`<dir>/<name>.params.json` with a sidecar keyed by parameter name that holds only what
ComfyUI's /object_info cannot give. Nothing is written unless the spec derived from the
result equals the old declaration.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy.workflows.marked import (
    PARAM_NODES,
    MarkError,
    class_info,
    collect_slots,
    derive_spec,
    find_output,
    merge_slots,
    reference_object_info,
    title_words,
    widget_inputs,
)
from proxy.workflows.spec import ParamSpec, WorkflowSpec, is_legacy_declaration

# Fields that are new in ParamSpec (an old declaration cannot have set them).
NEW_FIELDS = {"step", "aliases"}


def spec_differences(old: WorkflowSpec, new: WorkflowSpec) -> list[str]:
    """Every way `new` serves something other than `old` (fields new to ParamSpec aside)."""
    found = []
    for key in ("name", "title", "description", "kind", "aliases", "output_node"):
        if getattr(old, key) != getattr(new, key):
            found.append(f"{key}: {getattr(old, key)!r} != {getattr(new, key)!r}")
    if old.filename_prefix != new.filename_prefix:
        found.append(f"filename_prefix: {old.filename_prefix} != {new.filename_prefix}")
    if [p.name for p in old.params] != [p.name for p in new.params]:
        found.append(f"params: {[p.name for p in old.params]} != {[p.name for p in new.params]}")
    news = {p.name: p for p in new.params}
    for param in old.params:
        if param.name not in news:
            continue
        was = param.model_dump(exclude=NEW_FIELDS)
        now = news[param.name].model_dump(exclude=NEW_FIELDS)
        for key in was:
            if was[key] != now[key] or type(was[key]) is not type(now[key]):
                found.append(f"{param.name}.{key}: {was[key]!r} != {now[key]!r}")
    return found


def _add_word(node: dict[str, Any], word: str) -> None:
    meta = node.setdefault("_meta", {})
    title = str(meta.get("title") or node["class_type"])
    meta["title"] = f"{title} {word}"


def _extra(param: ParamSpec, base: ParamSpec | None, slot_type: str) -> dict[str, Any]:
    """The sidecar entry that makes the derived parameter `param` (given what the graph alone
    gives, `base`)."""
    extra: dict[str, Any] = {}
    if param.type != slot_type:
        extra["type"] = param.type
    if param.description != (base.description if base else ""):
        extra["description"] = param.description
    for key in ("min", "max", "choices"):
        value = getattr(param, key)
        if value is not None and (base is None or value != getattr(base, key)):
            extra[key] = value
    if param.random != (base.random if base else False):
        extra["random"] = param.random
    for key in ("required", "advanced", "four_k_plus_1"):
        if getattr(param, key):
            extra[key] = True
    for key in ("multiple_of", "min_length", "max_length"):
        if getattr(param, key) is not None:
            extra[key] = getattr(param, key)
    if param.aliases:
        extra["aliases"] = param.aliases
    return extra


def convert(
    spec: WorkflowSpec, graph: Mapping[str, Any], object_info: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(marked graph, sidecar) serving what the node-id declaration `spec` serves over
    `graph`; MarkError if the result would differ, naming how."""
    marked: dict[str, Any] = copy.deepcopy(dict(graph))
    clash = [
        n for n, node in marked.items() if title_words(node) or node["class_type"] in PARAM_NODES
    ]
    if clash:
        raise MarkError([f"node {n} is marked already; convert an unmarked graph" for n in clash])
    for param in spec.params:
        for target in param.targets:
            node = marked[target.node]
            info = class_info(object_info, node["class_type"]) or {}
            only = widget_inputs(node, info) == [target.input]
            _add_word(node, f"${param.name}" if only else f"${param.name}={target.input}")
            value = node["inputs"].get(target.input)
            served = param.default is not None and not param.random and not param.is_file
            if served and (
                value != param.default
                or isinstance(value, bool) is not isinstance(param.default, bool)
            ):
                node["inputs"][target.input] = param.default
    inferred = find_output(marked, object_info, [], [])  # None: none or several to pick
    if inferred != (spec.output_node, spec.filename_prefix):
        _add_word(marked[spec.output_node], "$output")
    problems: list[str] = []
    slots = merge_slots(collect_slots(marked, object_info, problems)[0], problems)
    if problems:
        raise MarkError(problems)
    try:
        bare = {p.name: p for p in derive_spec(spec.name, marked, object_info, None).params}
    except MarkError:
        bare = {}  # e.g. a file list ComfyUI fills at run time: the sidecar must list it
    sidecar: dict[str, Any] = {
        "title": spec.title,
        "description": spec.description,
        "kind": spec.kind,
        "aliases": spec.aliases,
        "params": {p.name: _extra(p, bare.get(p.name), slots[p.name].type) for p in spec.params},
    }
    derived = derive_spec(spec.name, marked, object_info, sidecar)
    differences = spec_differences(spec, derived)
    if differences:
        raise MarkError([f"{spec.name}: the marks would change {d}" for d in differences])
    return marked, sidecar


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.workflows.convert", description=__doc__)
    parser.add_argument("names", nargs="+", help="workflow names (<dir>/<name>.json)")
    parser.add_argument("--dir", type=Path, default=Path("workflows"), help="default: workflows")
    parser.add_argument("--object-info", type=Path, help="a ComfyUI /object_info answer (JSON)")
    args = parser.parse_args(argv)
    object_info = (
        json.loads(args.object_info.read_text()) if args.object_info else reference_object_info()
    )
    failed = 0
    for name in args.names:
        graph_path, decl_path = args.dir / f"{name}.json", args.dir / f"{name}.params.json"
        try:
            declaration = json.loads(decl_path.read_text())
            if not is_legacy_declaration(declaration):
                raise MarkError([f"{decl_path} is not a node-id declaration"])
            spec = WorkflowSpec.model_validate(declaration)
            graph, sidecar = convert(spec, json.loads(graph_path.read_text()), object_info)
        except (OSError, ValueError) as exc:
            print(f"{name}: not converted: {exc}", file=sys.stderr)
            failed += 1
            continue
        _write(graph_path, graph)
        _write(decl_path, sidecar)
        print(f"{name}: marked {graph_path}, wrote the sidecar {decl_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
