"""Run stories: what each node of a run read, did, produced and checked, as JSON and HTML.

A story lives at ``<story path>/<pipeline>/<run id>/`` on the story connection:
``nodes/<node>.json`` (one per node, written by the step that ran it, so the
multiprocess executor needs no coordination), and ``story.json`` + ``story.html``,
re-rendered from all node files after each node. Stories hold data samples and
paths, never credentials.

A node's status is ``success``, ``failed`` (its computation, its write or the loading of
an input failed; a read-only source whose read failed) or ``not run`` (a node it depends
on failed, so it never started; its ``error`` says which). The run's status is
``success`` only while every node listed succeeded.
"""

from __future__ import annotations

import html
import json
import math
import posixpath
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from odibi_dagster.engines.replace import write_file_atomically
from odibi_dagster.resources.base import Location


def now() -> str:
    """The time a node started, as stories show it (UTC, to the millisecond, so the
    order of entries is the order things happened)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


SUCCESS = "success"
FAILED = "failed"
NOT_RUN = "not run"


@dataclass
class NodeStory:
    pipeline: str
    node: str
    status: str  # SUCCESS | FAILED | NOT_RUN
    started: str
    duration_s: float
    where: str = ""
    description: str | None = None
    partition: str | None = None  # the partition the run computed (partitioned nodes)
    inputs: dict[str, int | None] = field(default_factory=dict)  # None: not counted
    read: dict[str, Any] | None = None  # a read-only source: what it read (uri, format)
    files: list[str] = field(default_factory=list)  # the files a sensor's run read
    steps: list[str] = field(default_factory=list)
    rows: int | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    write: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class StoryTarget:
    """Where stories go: a callable turning a relative path into a Location."""

    locate: Any  # Callable[[str], Location]
    path: str
    project: str
    max_sample_rows: int = 10

    def run_dir(self, pipeline: str, run_id: str) -> str:
        return posixpath.join(self.path.strip("/"), pipeline, run_id)

    def html(self, pipeline: str, run_id: str) -> Location:
        """The Location of one run's story.html."""
        loc: Location = self.locate(posixpath.join(self.run_dir(pipeline, run_id), "story.html"))
        return loc


def record(
    target: StoryTarget, run_id: str, story: NodeStory, not_run: Sequence[NodeStory] = ()
) -> Location:
    """Save one node's story and re-render the run's story; return the HTML's location.

    ``not_run``: the nodes that will not run because this one failed; each is saved unless
    its node already has a story (a node that ran, say, before a retry of this one).

    Steps of one run may record at the same time (the multiprocess executor): each writes
    its own node file, renders from every node file it finds, and renders again until the
    node files it finds no longer change. Whichever step renders last has then seen every
    node file written before it, so the run's story lists every node."""
    _put(_node_file(target, run_id, story), _json(asdict(story)))
    for other in not_run:
        loc = _node_file(target, run_id, other)
        if not loc.fs.exists(loc.fs_path):
            _put(loc, _json(asdict(other)))
    for pipeline in dict.fromkeys([story.pipeline, *(o.pipeline for o in not_run)]):
        _render(target, pipeline, run_id)
    return target.html(story.pipeline, run_id)


def _node_file(target: StoryTarget, run_id: str, story: NodeStory) -> Location:
    loc: Location = target.locate(
        posixpath.join(target.run_dir(story.pipeline, run_id), "nodes", f"{story.node}.json")
    )
    return loc


def _render(target: StoryTarget, pipeline: str, run_id: str) -> None:
    """Write story.json and story.html of one pipeline's run from its node files."""
    base = target.run_dir(pipeline, run_id)
    nodes_dir = target.locate(posixpath.join(base, "nodes"))
    seen: list[str] = []
    while True:
        paths = sorted(nodes_dir.fs.glob(posixpath.join(nodes_dir.fs_path, "*.json")))
        if paths == seen:
            break
        seen = paths
        entries = []
        for path in paths:
            with nodes_dir.fs.open(path, "rb") as f:
                entries.append(json.loads(f.read()))
        # in the order things happened; a source read by a node in the same instant first
        entries.sort(key=lambda e: (e.get("started", ""), not e.get("read")))
        doc = {
            "project": target.project,
            "pipeline": pipeline,
            "run_id": run_id,
            "status": FAILED if any(e["status"] != SUCCESS for e in entries) else SUCCESS,
            "nodes": entries,
        }
        _put(target.locate(posixpath.join(base, "story.json")), _json(doc))
        _put(target.html(pipeline, run_id), render_html(doc).encode())


def _json(obj: Any) -> bytes:
    """Strict JSON: NaN and infinities (missing values in samples) become null."""
    return json.dumps(_finite(obj), default=str, indent=2, allow_nan=False).encode()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _put(loc: Location, data: bytes) -> None:
    """Write all bytes to a temporary sibling, then move it over the target."""

    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    write_file_atomically(loc.fs, loc.fs_path, write, uri=loc.uri)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2433}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem}
.ok{color:#12773b}.failed{color:#b3261e}.not-run{color:#6b7280}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
td,th{border:1px solid #d5d9e0;padding:.2rem .5rem;text-align:left}
th{background:#f3f5f8} code{background:#f3f5f8;padding:0 .2rem}
.err{white-space:pre-wrap;background:#fdecea;padding:.5rem}
.why{background:#f3f5f8;padding:.5rem}
"""

_CLASS = {SUCCESS: "ok", NOT_RUN: "not-run"}  # anything else: "failed"


def render_html(doc: dict[str, Any]) -> str:
    e = html.escape
    counts = Counter(n["status"] for n in doc["nodes"])
    tally = ", ".join(f"{counts[k]} {k}" for k in (SUCCESS, FAILED, NOT_RUN) if counts[k])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(doc['pipeline'])} run {e(doc['run_id'][:8])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(str(doc['project']))} / {e(doc['pipeline'])}: "
        f"<span class='{_CLASS.get(doc['status'], 'failed')}'>{e(doc['status'])}</span></h1>",
        f"<p>Run <code>{e(doc['run_id'])}</code>, {len(doc['nodes'])} node(s)"
        f"{': ' + e(tally) if tally else ''}.</p>",
    ]
    for n in doc["nodes"]:
        parts.append(
            f"<h2 id='{e(n['node'])}'>{e(n['node'])} "
            f"<span class='{_CLASS.get(n['status'], 'failed')}'>{e(n['status'])}</span></h2>"
        )
        if n.get("description"):
            parts.append(f"<p>{e(n['description'])}</p>")
        if n["status"] == NOT_RUN:  # it never started: no time, rows or data to show
            parts.append(f"<p><code>{e(n.get('where') or '')}</code></p>")
            if n.get("error"):
                parts.append(f"<div class='why'>{e(n['error'])}</div>")
            continue
        facts = [f"started {e(n['started'])}", f"{n['duration_s']:.3f} s"]
        if n.get("partition") is not None:
            facts.insert(0, f"partition <code>{e(str(n['partition']))}</code>")
        if n.get("rows") is not None:
            facts.append(f"{n['rows']} rows")
        parts.append(f"<p>{', '.join(facts)} &middot; <code>{e(n.get('where') or '')}</code></p>")
        if n.get("read"):
            r = n["read"]
            how = f" ({e(str(r['incremental']))})" if r.get("incremental") else ""
            parts.append(
                f"<p>Read {e(str(r.get('format')))} from <code>{e(str(r.get('uri')))}</code>"
                f"{how}</p>"
            )
        if n.get("inputs"):
            ins = ", ".join(
                f"{e(k)} ({v} rows)" if v is not None else e(k) for k, v in n["inputs"].items()
            )
            parts.append(f"<p>Inputs: {ins}</p>")
        if n.get("files"):
            items = "".join(f"<li><code>{e(f)}</code></li>" for f in n["files"])
            parts.append(f"<p>Read {len(n['files'])} new file(s):</p><ul>{items}</ul>")
        if n.get("steps"):
            items = "".join(f"<li><code>{e(s)}</code></li>" for s in n["steps"])
            parts.append(f"<ol>{items}</ol>")
        if n.get("write"):
            w = n["write"]
            verb = "Wrote" if w.get("written", True) else "Did not write (it exists; mode ignore)"
            parts.append(
                f"<p>{verb} {e(str(w.get('format')))} to <code>{e(str(w.get('uri')))}</code> "
                f"(mode {e(str(w.get('mode')))})</p>"
            )
        if n.get("checks"):
            rows = "".join(
                f"<tr><td>{e(c['name'])}</td><td class='{'ok' if c['passed'] else 'failed'}'>"
                f"{'pass' if c['passed'] else 'FAIL'}</td><td>{e(c['description'])}</td></tr>"
                for c in n["checks"]
            )
            parts.append(f"<table><tr><th>check</th><th></th><th></th></tr>{rows}</table>")
        if n.get("error"):
            parts.append(f"<div class='err'>{e(n['error'])}</div>")
        if n.get("sample"):
            cols = list(n["sample"][0].keys())
            head = "".join(f"<th>{e(str(c))}</th>" for c in cols)
            body = "".join(
                "<tr>" + "".join(f"<td>{e(str(r.get(c)))}</td>" for c in cols) + "</tr>"
                for r in n["sample"]
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
