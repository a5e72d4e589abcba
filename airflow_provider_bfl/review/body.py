"""
What the reviewer sees and picks from: one numbered item per image, and the request's Markdown body.

Numbers are the images' positions in the records under review, the same numbers the gallery page
of the task that produced those records shows, so "#7" is the same picture in the body, in the
"leave out" list and in the gallery.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_bfl.storage.manifest import is_manifest_ref, iter_records
from airflow_provider_bfl.ui import urls
from airflow_provider_bfl.ui.page import prompt_of
from airflow_provider_bfl.ui.records import image_id, is_image_record

#: Longest prompt excerpt in a label (the "leave out" list) and in the body's table.
LABEL_PROMPT_CHARS = 60


@dataclass(frozen=True)
class ReviewItem:
    number: int
    record: Mapping[str, Any]

    @property
    def passed(self) -> bool:
        qa = self.record.get("qa")
        return not isinstance(qa, Mapping) or bool(qa.get("passed"))

    @property
    def verdict(self) -> str:
        qa = self.record.get("qa")
        if not isinstance(qa, Mapping):
            return "not checked"
        if qa.get("passed"):
            return "passed"
        return f"{qa.get('action')}: " + "; ".join(str(reason) for reason in qa.get("reasons") or ())

    @property
    def label(self) -> str:
        """``#3 SKU-103 · Stoneware mug, matte glaze...``: unique (by number) and readable."""
        prompt = " ".join(prompt_of(self.record).split())
        if len(prompt) > LABEL_PROMPT_CHARS:
            prompt = prompt[: LABEL_PROMPT_CHARS - 3].rstrip() + "..."
        key = self.record.get("key")
        return " · ".join(part for part in (f"#{self.number}", str(key) if key else "", prompt) if part)


def review_items(
    records: Iterable[Any] | Mapping[str, Any], *, conn_id: str | None = None
) -> list[ReviewItem]:
    """
    The image records in order (a mapped task's list of lists flattened, manifests read), numbered
    from 1.
    """
    return [
        ReviewItem(n, record)
        for n, record in enumerate(_flat(records, conn_id), start=1)
        if is_image_record(record)
    ]


def _flat(records: Iterable[Any] | Mapping[str, Any], conn_id: str | None) -> Iterator[Any]:
    if is_manifest_ref(records):
        yield from iter_records(records, conn_id=conn_id)
        return
    for item in records or ():
        for member in item if isinstance(item, list | tuple) else [item]:
            if is_manifest_ref(member):
                yield from iter_records(member, conn_id=conn_id)
            else:
                yield member


def _cell(text: str) -> str:
    """Markdown table cell text: no pipes, no line breaks, no markup characters."""
    for char in "\\|*_`[]<>#!":
        text = text.replace(char, "\\" + char)
    return " ".join(text.split())


def markdown_body(
    items: Sequence[ReviewItem],
    *,
    dag_id: str,
    run_id: str,
    gallery_task_id: str | None,
    inline_limit: int,
    intro: str = "",
) -> str:
    gallery = urls.under_base(
        urls.task_instance_page(dag_id, run_id, gallery_task_id)
        if gallery_task_id
        else urls.run_page(dag_id, run_id)
    )
    passed = sum(item.passed for item in items)
    cost = sum(float(item.record.get("cost") or 0) for item in items)
    lines = [
        intro.strip(),
        "",
        f"**{len(items)} image(s)**: {passed} passed QA, {len(items) - passed} held back by QA; "
        f"cost {cost:.4f}.",
        "",
        f"[Open all {len(items)} images in the gallery, full size, in this order]({gallery})",
        "",
        "**Publish** publishes every image that passed QA except those picked under *Leave out*; "
        "**Reject the batch** publishes nothing and fails the run.",
        "",
        "| # | image | SKU / key | prompt | QA |",
        "| --- | --- | --- | --- | --- |",
    ]
    for item in items[:inline_limit]:
        thumb = urls.under_base(urls.thumbnail(dag_id, run_id, image_id(item.record)))
        full = urls.under_base(urls.image(dag_id, run_id, image_id(item.record)))
        key = _cell(str(item.record.get("key") or "-"))
        verdict = "passed" if item.passed else f"**{_cell(item.verdict)}**"
        lines.append(
            f"| {item.number} | [![#{item.number}]({thumb})]({full}) | {key} | "
            f"{_cell(prompt_of(item.record)) or '-'} | {verdict} |"
        )
    if len(items) > inline_limit:
        lines.append(f"| ... | {len(items) - inline_limit} more in the gallery | | | |")
    return "\n".join(lines).strip() + "\n"
