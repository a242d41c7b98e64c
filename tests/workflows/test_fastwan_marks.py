"""The shipped FastWAN workflows, marked in the graph, serve exactly what their old node-id
declarations (tests/workflows/legacy/) served; our parameter nodes serve the same again."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from proxy.workflows import WorkflowSpec, load_registry
from proxy.workflows.convert import convert, main, spec_differences
from proxy.workflows.marked import derive_spec, is_link, reference_object_info

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
LEGACY = Path(__file__).resolve().parent / "legacy"
NAMES = ["fastwan_t2v", "fastwan_i2v", "fastwan_v2v"]
OBJECT_INFO = reference_object_info()


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def legacy(name: str) -> WorkflowSpec:
    return WorkflowSpec.model_validate(read(LEGACY / f"{name}.params.json"))


def shipped(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return read(WORKFLOWS / f"{name}.json"), read(WORKFLOWS / f"{name}.params.json")


def without_titles(graph: dict[str, Any]) -> dict[str, Any]:
    return {k: {**v, "_meta": None} for k, v in graph.items()}


@pytest.mark.parametrize("name", NAMES)
def test_the_marked_workflow_serves_what_the_node_id_declaration_did(name):
    graph, sidecar = shipped(name)
    assert isinstance(sidecar["params"], dict)  # keyed by parameter name
    assert "targets" not in json.dumps(sidecar) and "node" not in json.dumps(sidecar)
    old, new = legacy(name), derive_spec(name, graph, OBJECT_INFO, sidecar)
    assert spec_differences(old, new) == []
    # And field by field, independently of the helper above (step and aliases are new).
    assert new.model_dump(exclude={"params"}) == old.model_dump(exclude={"params"})
    assert [p.name for p in new.params] == [p.name for p in old.params]
    for was, now in zip(old.params, new.params, strict=True):
        assert now.model_dump(exclude={"step", "aliases"}) == was.model_dump(
            exclude={"step", "aliases"}
        ), was.name
        assert type(now.default) is type(was.default), was.name
        assert now.aliases == []


@pytest.mark.parametrize("name", NAMES)
def test_only_titles_changed_in_the_graph(name):
    old = read(LEGACY / f"{name}.json")
    assert without_titles(shipped(name)[0]) == without_titles(old)


@pytest.mark.parametrize("name", NAMES)
def test_the_converter_reproduces_the_shipped_files(name):
    graph, sidecar = convert(legacy(name), read(LEGACY / f"{name}.json"), OBJECT_INFO)
    assert (graph, sidecar) == shipped(name)


def test_the_converter_command_rewrites_in_place_and_refuses_a_second_pass(tmp_path, capsys):
    for path in LEGACY.iterdir():
        shutil.copy(path, tmp_path / path.name)
    assert main(["--dir", str(tmp_path), *NAMES]) == 0
    for name in NAMES:
        assert read(tmp_path / f"{name}.json") == shipped(name)[0]
        assert (tmp_path / f"{name}.params.json").read_text() == (
            WORKFLOWS / f"{name}.params.json"
        ).read_text()
    assert main(["--dir", str(tmp_path), "fastwan_t2v"]) == 1
    assert "is not a node-id declaration" in capsys.readouterr().err


def test_the_old_declarations_keep_loading_and_match_the_marked_ones():
    old, new = load_registry(LEGACY), load_registry(WORKFLOWS)
    assert old.broken == {} and new.broken == {}
    assert old.names() == new.names() == sorted(NAMES)
    for name in NAMES:
        assert spec_differences(old.get(name).spec, new.get(name).spec) == []
        # The request models accept and refuse alike.
        a, b = old.get(name).request_model, new.get(name).request_model
        assert a.model_json_schema() == b.model_json_schema()


def as_parameter_nodes(graph: dict[str, Any], spec: WorkflowSpec) -> dict[str, Any]:
    """The same graph with every marked input fed by one of our parameter nodes (loaders of
    files become ApiInputImage / ApiInputVideo), and no `$` left in any title."""
    nodes = copy.deepcopy(graph)
    for node in nodes.values():
        title = node["_meta"]["title"]
        node["_meta"]["title"] = " ".join(w for w in title.split() if not w.startswith("$"))
    next_id = 100
    for param in spec.params:
        first = param.targets[0]
        value = graph[first.node]["inputs"][first.input]
        if param.type in ("image", "video"):
            loader = nodes[first.node]
            loader["class_type"] = "ApiInputImage" if param.type == "image" else "ApiInputVideo"
            loader["inputs"] = {"name": param.name, first.input: value, "description": ""}
            continue
        own: dict[str, Any] = {"name": param.name, "value": value, "description": ""}
        if param.random:
            class_type = "ApiInputSeed"
        elif param.type == "choice":
            options = OBJECT_INFO[first.class_type]["input"]["required"][first.input][0]
            class_type, own["choices"] = "ApiInputChoice", "\n".join(options)
        else:
            class_type = {
                "string": "ApiInputText",
                "int": "ApiInputInt",
                "float": "ApiInputFloat",
                "bool": "ApiInputBool",
            }[param.type]
            if param.type in ("int", "float"):
                # The widest range: the node adds no bound, the inputs it feeds do.
                # (custom_nodes/api_inputs's widget defaults: ±(2**53 - 1), step 1 or 0.01).
                wide = 2**53 - 1 if param.type == "int" else float(2**53 - 1)
                own.update(min=-wide, max=wide, step=1 if param.type == "int" else 0.01)
        nodes[str(next_id)] = {
            "class_type": class_type,
            "inputs": own,
            "_meta": {"title": param.name},
        }
        for target in param.targets:
            nodes[target.node]["inputs"][target.input] = [str(next_id), 0]
        next_id += 1
    return nodes


@pytest.mark.parametrize("name", NAMES)
def test_parameter_nodes_declare_what_titles_declare(name):
    graph, sidecar = shipped(name)
    titled = derive_spec(name, graph, OBJECT_INFO, sidecar)
    # Each parameter node typed as ComfyUI types the input (fps: FLOAT; the sidecar narrows).
    rebuilt = as_parameter_nodes(graph, derive_spec(name, graph, OBJECT_INFO, None))
    assert "$" not in json.dumps([n["_meta"] for n in rebuilt.values()])
    assert any(is_link(v) for v in rebuilt["3"]["inputs"].values())
    # Our node classes are not in the reference /object_info: the derivation knows them.
    assert not any(c.startswith("ApiInput") for c in OBJECT_INFO)
    noded = derive_spec(name, rebuilt, OBJECT_INFO, sidecar)
    assert noded.model_dump(exclude={"params"}) == titled.model_dump(exclude={"params"})
    assert [p.name for p in noded.params] == [p.name for p in titled.params]
    for a, b in zip(titled.params, noded.params, strict=True):
        assert b.model_dump(exclude={"targets"}) == a.model_dump(exclude={"targets"}), a.name
    # Without the sidecar too: ComfyUI's own types, defaults and ranges agree.
    bare_titled = derive_spec(name, graph, OBJECT_INFO, None)
    bare_noded = derive_spec(name, rebuilt, OBJECT_INFO, None)
    strip = [p.model_dump(exclude={"targets"}) for p in bare_titled.params]
    assert sorted(strip, key=str) == sorted(
        (p.model_dump(exclude={"targets"}) for p in bare_noded.params), key=str
    )


def test_the_converter_marks_the_output_when_it_cannot_be_inferred():
    old = legacy("fastwan_t2v")
    graph = read(LEGACY / "fastwan_t2v.json")
    graph["59"] = {**copy.deepcopy(graph["58"]), "_meta": {"title": "Second save"}}
    marked, _sidecar = convert(old, graph, OBJECT_INFO)
    assert marked["58"]["_meta"]["title"] == "Save Video $output"
    assert marked["59"]["_meta"]["title"] == "Second save"
