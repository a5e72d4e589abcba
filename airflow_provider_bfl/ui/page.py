"""The gallery page: server-rendered HTML (no script), autoescaped, one page of tiles at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from airflow_provider_bfl.ui import urls
from airflow_provider_bfl.ui.records import GalleryImage, Totals

#: Tiles per page: a 500-image run is five pages; images below the fold load lazily.
PAGE_SIZE = 100

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Images · {{ title }}</title>
<style>
 :root { color-scheme: light dark; --line: #8884; --muted: #777; }
 body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; }
 h1 { font-size: 18px; margin: 0 0 4px; }
 .totals { margin: 0 0 12px; color: var(--muted); }
 .totals b { color: CanvasText; }
 .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
 .card { border: 1px solid var(--line); border-radius: 8px; padding: 8px; overflow: hidden; }
 .card.bad { border: 2px solid #d33; background: #d331; }
 .card img { display: block; width: 100%; height: auto; aspect-ratio: var(--ratio); object-fit: contain;
             background: #8882; border-radius: 4px; }
 .badge { display: inline-block; padding: 0 6px; border-radius: 4px; font-weight: 600; font-size: 12px; }
 .kept { background: #2a62; color: #2a6; } .quarantined, .failed { background: #d332; color: #d33; }
 .skipped, .unchecked { background: #8883; color: var(--muted); }
 .prompt { margin: 4px 0; display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical;
           overflow: hidden; }
 dl { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; margin: 4px 0 0; font-size: 12px; }
 dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
 dd.loc { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; direction: rtl; text-align: left; }
 .reasons { color: #d33; font-size: 12px; margin: 4px 0 0; padding-left: 16px; }
 nav { margin: 12px 0; } nav a, nav span { margin-right: 8px; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="totals" id="totals"><b>{{ totals.images }}</b> image(s) · cost <b>{{ "%.4f"|format(totals.cost) }}</b>
{% for verdict, count in verdicts %} · {{ verdict }} <b>{{ count }}</b>{% endfor %}</p>
{% if not tiles %}<p>No landed images are recorded here.</p>{% endif %}
{{ pager }}
<main class="grid">
{% for tile in tiles %}
<figure class="card {{ 'bad' if tile.bad }}" data-verdict="{{ tile.verdict }}" id="image-{{ tile.number }}">
 <a href="{{ tile.full }}" target="_blank" rel="noopener" title="Open the full-size image">
  <img src="{{ tile.thumb }}" alt="#{{ tile.number }} {{ tile.prompt[:80] }}" loading="lazy" decoding="async"
       width="{{ tile.thumb_w }}" height="{{ tile.thumb_h }}" style="--ratio: {{ tile.thumb_w }}/{{ tile.thumb_h }}"></a>
 <figcaption>
  <b>#{{ tile.number }}</b>{% if tile.key %} · <b>{{ tile.key }}</b>{% endif %}
  <span class="badge {{ tile.verdict }}">{{ 'passed' if tile.verdict == 'kept' else tile.verdict }}</span>
  <p class="prompt" title="{{ tile.prompt }}">{{ tile.prompt or '(no prompt recorded)' }}</p>
  {% if tile.reasons %}<ul class="reasons">{% for r in tile.reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
  <dl>
   <dt>size</dt><dd>{{ tile.size }}</dd><dt>seed</dt><dd>{{ tile.seed }}</dd>
   <dt>cost</dt><dd>{{ tile.cost }}</dd><dt>stored</dt><dd class="loc" title="{{ tile.location }}">{{ tile.location }}</dd>
   {% if tile.published %}<dt>published</dt><dd class="loc" title="{{ tile.published }}">{{ tile.published }}</dd>{% endif %}
   <dt>task</dt><dd>{{ tile.task }}</dd>
  </dl>
 </figcaption>
</figure>
{% endfor %}
</main>
{{ pager }}
</body></html>
"""


@dataclass(frozen=True)
class Tile:
    number: int
    key: str
    prompt: str
    verdict: str
    bad: bool
    reasons: Sequence[str]
    size: str
    seed: str
    cost: str
    location: str
    published: str
    task: str
    full: str
    thumb: str
    thumb_w: int
    thumb_h: int


def prompt_of(record: Mapping[str, Any]) -> str:
    requested = record.get("requested")
    requested = requested if isinstance(requested, Mapping) else {}
    return str(record.get("prompt") or requested.get("positivePrompt") or "")


def tile(number: int, entry: GalleryImage, dag_id: str, run_id: str) -> Tile:
    record = entry.record
    width, height = record.get("width"), record.get("height")
    box = 320
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        scale = box / max(width, height)
        thumb_w, thumb_h = max(1, round(width * scale)), max(1, round(height * scale))
    else:
        thumb_w = thumb_h = box
    qa = entry.qa or {}
    task = entry.task_id if entry.map_index < 0 else f"{entry.task_id}[{entry.map_index}]"
    return Tile(
        number=number,
        key=str(record.get("key") or ""),
        prompt=prompt_of(record),
        verdict=entry.verdict,
        bad=entry.verdict in ("quarantined", "failed"),
        reasons=[str(reason) for reason in qa.get("reasons") or ()],
        size=f"{width}x{height}" if width and height else "-",
        seed=str(record.get("seed", "-")),
        cost="-" if record.get("cost") is None else str(record.get("cost")),
        location=str(record.get("quarantinedURI") or record.get("storedURI")),
        published=str(record.get("publishedURI") or ""),
        task=task,
        full=urls.under_base(urls.image(dag_id, run_id, entry.image_id)),
        thumb=urls.under_base(urls.thumbnail(dag_id, run_id, entry.image_id)),
        thumb_w=thumb_w,
        thumb_h=thumb_h,
    )


@cache
def _template() -> Any:
    from jinja2 import Environment

    return Environment(autoescape=True).from_string(TEMPLATE)


def _pager(page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    from markupsafe import Markup

    links = [
        f"<span>page {n}</span>" if n == page else f'<a href="?page={n}">page {n}</a>'
        for n in range(1, pages + 1)
    ]
    return Markup(f'<nav aria-label="pages">{"".join(links)}</nav>')


def render(
    title: str, images: Sequence[GalleryImage], totals: Totals, dag_id: str, run_id: str, page: int = 1
) -> str:
    pages = max(1, -(-len(images) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    first = (page - 1) * PAGE_SIZE
    tiles = [
        tile(first + offset + 1, entry, dag_id, run_id)
        for offset, entry in enumerate(images[first : first + PAGE_SIZE])
    ]
    order = ("kept", "quarantined", "skipped", "failed", "unchecked")
    verdicts = [
        ("passed" if verdict == "kept" else verdict, totals.verdicts[verdict])
        for verdict in order
        if totals.verdicts.get(verdict)
    ]
    return str(
        _template().render(
            title=title, totals=totals, verdicts=verdicts, tiles=tiles, pager=_pager(page, pages)
        )
    )
