"""Check an ONNX model against the operators TensorRT 10.3 (JetPack 6) can import.

Run before building engines, so that an export TensorRT cannot parse fails here, on any
machine, with every offending node named, instead of on the Jetson with the first one.

``python -m avss_sdk.export.tensorrt_ops onnx/*.onnx [--no-plugin]`` exits 1 and lists the offenders.
``--no-plugin`` also refuses ``avss::FusedCrossAttention``: TensorRT 10.3 has no AOT plugins,
so exports meant for it must use the plain attention pattern.

The supported list is data (``tensorrt_10_3_onnx_ops.txt``, taken from onnx-tensorrt's
published support matrix; its header says which release). Nodes in the default ONNX domain
must be on it; nodes in any other domain must be one of ``plugin_ops``. Subgraphs (``If``,
``Loop``, ``Scan`` bodies) and model-local functions are searched too.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError

SUPPORTED_OPS_FILE = Path(__file__).resolve().parent / "tensorrt_10_3_onnx_ops.txt"
TENSORRT_RELEASE = "10.3"
PLUGIN_OPS: frozenset[tuple[str, str]] = frozenset({("avss", "FusedCrossAttention")})
DEFAULT_DOMAINS = ("", "ai.onnx")


class UnsupportedOperatorError(ValueError):
    """The model holds nodes TensorRT cannot import; ``offenders`` lists them all."""

    def __init__(self, message: str, offenders: list["Offender"]) -> None:
        super().__init__(message)
        self.offenders = offenders


@dataclass(frozen=True)
class Offender:
    """One node TensorRT cannot import, and where it is (graph path)."""

    name: str
    domain: str
    op_type: str
    where: str

    def __str__(self) -> str:
        domain = self.domain or "ai.onnx"
        return f"node {self.name!r} ({domain}::{self.op_type}) in {self.where}"


def load_supported_ops(path: str | Path = SUPPORTED_OPS_FILE) -> dict[str, str]:
    """The op list file as {op_type: restriction ('' when none)}."""
    ops: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, restriction = line.partition("#")
        ops[op.strip()] = restriction.strip()
    return ops


def _nodes(graph: onnx.GraphProto, where: str) -> Iterator[tuple[onnx.NodeProto, str, int]]:
    """Every node of ``graph`` and of its subgraphs, with a readable location and index."""
    for index, node in enumerate(graph.node):
        yield node, where, index
        for attribute in node.attribute:
            label = f"{where} > {node.op_type} {node.name or f'#{index}'}.{attribute.name}"
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g, label)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for i, sub in enumerate(attribute.graphs):
                    yield from _nodes(sub, f"{label}[{i}]")


def _all_nodes(model: onnx.ModelProto) -> Iterator[tuple[onnx.NodeProto, str, int]]:
    yield from _nodes(model.graph, f"graph {model.graph.name or 'main'!r}")
    for function in model.functions:
        where = f"function {function.domain}::{function.name}"
        for index, node in enumerate(function.node):
            yield node, where, index
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    yield from _nodes(attribute.g, f"{where} > {node.op_type}.{attribute.name}")


def find_unsupported(model: onnx.ModelProto, plugin_ops: set[tuple[str, str]] | frozenset = PLUGIN_OPS,
                     supported: dict[str, str] | None = None) -> list[Offender]:
    """All nodes TensorRT 10.3 cannot import (empty list: the model passes)."""
    supported = load_supported_ops() if supported is None else supported
    local_functions = {(f.domain, f.name) for f in model.functions}
    offenders = []
    for node, where, index in _all_nodes(model):
        key = (node.domain, node.op_type)
        if key in local_functions:
            continue  # the parser inlines its body, which is checked on its own
        if node.domain in DEFAULT_DOMAINS:
            ok = node.op_type in supported
        else:
            ok = key in plugin_ops
        if not ok:
            offenders.append(Offender(node.name or f"<unnamed #{index}>", node.domain, node.op_type, where))
    return offenders


def restrictions_used(model: onnx.ModelProto, supported: dict[str, str] | None = None) -> dict[str, str]:
    """{op_type: restriction} for the supported ops the model uses that have documented limits."""
    supported = load_supported_ops() if supported is None else supported
    return {node.op_type: supported[node.op_type] for node, _, _ in _all_nodes(model)
            if node.domain in DEFAULT_DOMAINS and supported.get(node.op_type)}


def check_tensorrt_ops(model: onnx.ModelProto,
                       plugin_ops: set[tuple[str, str]] | frozenset = PLUGIN_OPS) -> None:
    """Raise :class:`UnsupportedOperatorError` naming every node TensorRT 10.3 cannot import."""
    offenders = find_unsupported(model, plugin_ops)
    if offenders:
        allowed = ", ".join(f"{d}::{o}" for d, o in sorted(plugin_ops)) or "none"
        lines = "\n".join(f"  {o}" for o in offenders)
        raise UnsupportedOperatorError(
            f"{len(offenders)} node(s) TensorRT {TENSORRT_RELEASE} cannot import "
            f"(plugins allowed: {allowed}; supported list: {SUPPORTED_OPS_FILE.name}):\n{lines}", offenders)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="ONNX files")
    parser.add_argument("--no-plugin", action="store_true",
                        help="refuse avss::FusedCrossAttention too (TensorRT < 10.9 has no AOT plugins)")
    args = parser.parse_args(argv)
    plugin_ops = frozenset() if args.no_plugin else PLUGIN_OPS
    status = 0
    for path in args.models:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except (OSError, DecodeError) as error:
            print(f"{path}: cannot read as ONNX: {error}", file=sys.stderr)
            status = max(status, 2)
            continue
        try:
            check_tensorrt_ops(model, plugin_ops)
        except UnsupportedOperatorError as error:
            print(f"{path}: {error}")
            status = max(status, 1)
            continue
        print(f"{path}: ok for TensorRT {TENSORRT_RELEASE}")
        for op, restriction in sorted(restrictions_used(model).items()):
            print(f"  note: {op}: {restriction}")
    return status


if __name__ == "__main__":
    sys.exit(main())
