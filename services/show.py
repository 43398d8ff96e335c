"""`raynas show`: a picture of an architecture. One graph description per space, drawn by Graphviz
(`dot`) when it is installed and by matplotlib otherwise; ``--format dot`` writes the graph itself."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller_policy.spaces import SearchSpace, build_space, parse_arch


@dataclass
class Graph:
    nodes: dict[str, str] = field(default_factory=dict)  # id -> label
    edges: list[tuple[str, str, str, bool]] = field(default_factory=list)  # src, dst, label, dashed
    clusters: dict[str, list[str]] = field(default_factory=dict)  # title -> node ids

    def add(self, node: str, label: str, cluster: str | None = None) -> None:
        self.nodes[node] = label
        if cluster is not None:
            self.clusters.setdefault(cluster, []).append(node)


def _entry(path: Path, rank: int) -> tuple[Any, str | None, dict[str, Any]]:
    """(the architecture as a structure, string or actions; the space's name if the file says it; its
    params) from any file raynas writes: ``best_arch.json``, ``top_archs.json`` (the ``rank``-th),
    ``summary.json`` (its best), a line of ``trajectory.jsonl``, or a bare structure or string."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read architecture file {path}: {exc.strerror}") from None
    lines = text.strip().splitlines()
    if len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines):
        raise ValueError(f"{path}: {len(lines)} JSON lines (a trajectory?): put the line of the architecture to show "
                         "in a file of its own")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text.strip(), None, {}
    if isinstance(obj, list) and obj and all(isinstance(e, dict) for e in obj):  # top_archs.json
        if not 1 <= rank <= len(obj):
            raise ValueError(f"{path}: --rank {rank}: the file lists {len(obj)} architectures")
        obj = obj[rank - 1]
    elif rank != 1:
        raise ValueError(f"{path}: --rank applies to a top_archs.json (a list of architectures)")
    if not isinstance(obj, dict):
        return obj, None, {}
    space, params = obj.get("space"), obj.get("space_params") or {}
    if isinstance(obj.get("best"), dict):  # summary.json
        obj = obj["best"]
    if isinstance(obj.get("json"), dict):
        return obj["json"], space, params
    if "arch" in obj:
        return obj["arch"], space, params
    return obj, space, params


def _run_config_space(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The space of the search whose output directory holds ``path`` (its config.json), if any."""
    config = path.parent / "config.json"
    try:
        space = json.loads(config.read_text())["space"]
        return space["name"], dict(space.get("params") or {})
    except (OSError, ValueError, KeyError, TypeError):
        return None, {}


def read_architecture(path: str | Path, space_name: str | None = None,
                      params: dict[str, Any] | None = None, rank: int = 1) -> tuple[SearchSpace, list[int]]:
    """An architecture file and its space: the one the file names, else the one of the search whose
    directory holds it (config.json), else ``space_name``; the space's size comes from ``params``,
    the file, or the structure."""
    path = Path(path)
    structure, name, file_params = _entry(path, rank)
    if name is None:
        name, file_params = _run_config_space(path)
    if name is not None and space_name and space_name != name:
        raise ValueError(f"{path}: the architecture belongs to {name!r}, not {space_name!r}")
    name = name or space_name
    if name is None:
        raise ValueError(f"{path}: the file does not say its search space; pass --space")
    params = {**file_params, **(params or {})}
    if isinstance(structure, dict):  # the structure implies the space's size
        if name == "enas_macro" and isinstance(structure.get("layers"), list):
            params.setdefault("num_layers", len(structure["layers"]))
        if name == "enas_micro" and isinstance(structure.get("normal"), list):
            params.setdefault("num_nodes", len(structure["normal"]))
    try:
        space = build_space(name, **params)
        return space, list(parse_arch(space, structure))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def architecture_graph(space: SearchSpace, arch: list[int]) -> Graph:
    g = Graph()
    if space.name == "enas_macro":
        g.add("input", "input (stem)")
        previous = "input"
        for i, (op, skips) in enumerate(space.layers(arch)):
            g.add(f"L{i}", f"layer {i}: {space.ops[op]}")
            g.edges.append((previous, f"L{i}", "", False))
            g.edges += [(f"L{j}", f"L{i}", "skip", True) for j, bit in enumerate(skips) if bit]
            previous = f"L{i}"
        g.add("output", "classifier")
        g.edges.append((previous, "output", "", False))
    elif space.name == "enas_micro":
        for kind, nodes in space.cells(arch).items():
            title = f"{kind} cell"
            g.add(f"{kind}_0", "c_{k-2}", title)
            g.add(f"{kind}_1", "c_{k-1}", title)
            used = set()
            for j, (x_id, x_op, y_id, y_op) in enumerate(nodes):
                node = f"{kind}_{2 + j}"
                g.add(node, f"node {2 + j}", title)
                g.edges.append((f"{kind}_{x_id}", node, space.ops[x_op], False))
                g.edges.append((f"{kind}_{y_id}", node, space.ops[y_op], False))
                used |= {x_id, y_id}
            g.add(f"{kind}_out", "concat", title)
            g.edges += [(f"{kind}_{k}", f"{kind}_out", "", False) for k in range(2, 2 + len(nodes)) if k not in used]
    else:  # nb201: a cell of 4 nodes, one op per edge ("none" edges carry nothing)
        nodes = space.to_json(arch)["nodes"]
        g.add("n0", "node 0 (input)", "cell")
        for i, inputs in enumerate(nodes, start=1):
            g.add(f"n{i}", f"node {i}" + (" (output)" if i == len(nodes) else ""), "cell")
            g.edges += [(f"n{j}", f"n{i}", op, False) for op, j in inputs if op != "none"]
    return g


def to_dot(g: Graph, title: str) -> str:
    quote = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
    lines = [f"digraph {quote(title)} {{", "  rankdir=TB;", "  node [shape=box, style=rounded];"]
    clustered = {n for members in g.clusters.values() for n in members}
    for i, (name, members) in enumerate(g.clusters.items()):
        lines.append(f"  subgraph cluster_{i} {{ label={quote(name)};")
        lines += [f"    {quote(n)} [label={quote(g.nodes[n])}];" for n in members]
        lines.append("  }")
    lines += [f"  {quote(n)} [label={quote(label)}];" for n, label in g.nodes.items() if n not in clustered]
    for src, dst, label, dashed in g.edges:
        attrs = [f"label={quote(label)}"] if label else []
        attrs += ["style=dashed"] if dashed else []
        lines.append(f"  {quote(src)} -> {quote(dst)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _layers(g: Graph, members: list[str]) -> dict[str, int]:
    """Longest-path depth of each node among ``members`` (the graphs are DAGs)."""
    depth = {n: 0 for n in members}
    for _ in members:
        for src, dst, _, _ in g.edges:
            if src in depth and dst in depth:
                depth[dst] = max(depth[dst], depth[src] + 1)
    return depth


def draw_matplotlib(g: Graph, path: Path, fmt: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # labels stay text in an SVG
    groups = list(g.clusters.items()) or [("", list(g.nodes))]
    pos: dict[str, tuple[float, float]] = {}
    max_depth = 0
    for c, (_, members) in enumerate(groups):
        depth = _layers(g, members)
        max_depth = max(max_depth, *depth.values())
        for d in set(depth.values()):
            row = [n for n in members if depth[n] == d]
            for k, n in enumerate(row):
                pos[n] = (c * 4.0 + (k - (len(row) - 1) / 2) * 1.6, -d)
    xs = [x for x, _ in pos.values()]
    fig, ax = plt.subplots(figsize=(max(4.0, (max(xs) - min(xs)) * 1.4 + 3), max(3.0, (max_depth + 1) * 1.1)))
    for src, dst, label, dashed in g.edges:
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(
            arrowstyle="->", linestyle="--" if dashed else "-", shrinkA=12, shrinkB=12,
            connectionstyle="arc3,rad=0.35" if dashed or abs(y1 - y0) > 1 else "arc3"))
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, fontsize=7, color="tab:blue", ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    for n, (x, y) in pos.items():
        ax.text(x, y, g.nodes[n], ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.3", fc="#f0f4ff", ec="#335"))
    for c, (name, _) in enumerate(groups):
        if name:
            ax.text(c * 4.0, 0.8, name, ha="center", fontsize=10, weight="bold")
    ax.set_xlim(min(xs) - 1.5, max(xs) + 1.5)
    ax.set_ylim(-max_depth - 0.8, 1.3)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, format=fmt, dpi=120)
    plt.close(fig)


def draw(arch_file: str | Path, fmt: str = "png", out: str | Path | None = None, space_name: str | None = None,
         overrides: dict[str, Any] | None = None, renderer: str | None = None, rank: int = 1) -> Path | None:
    """Write the picture (``out`` "-": to stdout, and return None); ``renderer``: "graphviz",
    "matplotlib" or None (Graphviz when installed)."""
    if fmt not in ("png", "svg", "dot"):
        raise ValueError(f"--format {fmt}: choose png, svg or dot")
    params = {k.split(".", 2)[2]: v for k, v in (overrides or {}).items() if k.startswith("space.params.")}
    unknown = [k for k in (overrides or {}) if not k.startswith("space.params.")]
    if unknown:
        raise ValueError(f"--set {unknown[0]}: only space.params.* applies to show")
    space, arch = read_architecture(arch_file, space_name, params, rank)
    g = architecture_graph(space, arch)
    title = f"{space.name}: {space.to_string(arch)}"
    if str(out) == "-":
        with tempfile.TemporaryDirectory() as tmp:
            picture = _render(g, title, fmt, Path(tmp) / f"arch.{fmt}", renderer)
            sys.stdout.buffer.write(picture.read_bytes())
            sys.stdout.flush()
        return None
    path = Path(out) if out else Path(arch_file).with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return _render(g, title, fmt, path, renderer)


def _render(g: Graph, title: str, fmt: str, path: Path, renderer: str | None) -> Path:
    dot = to_dot(g, title)
    if fmt == "dot":
        path.write_text(dot)
        return path
    renderer = renderer or ("graphviz" if shutil.which("dot") else "matplotlib")
    if renderer == "graphviz":
        subprocess.run(["dot", f"-T{fmt}", "-o", str(path)], input=dot.encode(), check=True, capture_output=True)
    else:
        draw_matplotlib(g, path, fmt, title)
    return path
