"""
Literal text in templated fields is kept as written, never compiled: a 10,000-prompt catalogue
renders in milliseconds, and whatever Jinja would have changed still goes through Jinja.
"""

from __future__ import annotations

import random
from typing import Any

import jinja2
import pytest
from jinja2.nativetypes import NativeEnvironment
from pytest_mock import MockerFixture

from airflow_provider_bfl._templating import renders_to_itself
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator

#: Text whose rendering Jinja changes or that is markup, and text it leaves alone.
TRICKY = [
    "a plain prompt",
    "trailing newline\n",
    "windows\r\nnewlines",
    "old mac\rnewline",
    "{{ params.sku }} front view",
    "{% if x %}y{% endif %}",
    "a {# comment #} inside",
    "braces { alone } and }} closing",
    "percent % and hash # signs",
    "query.sql",
    "",
    "émoji 🖼 and unicode",
    "{ {not markup} }",
    "{{",
]


def _environments() -> list[jinja2.Environment]:
    airflow_like = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return [
        airflow_like,
        jinja2.Environment(),  # keep_trailing_newline off: a trailing newline is stripped
        jinja2.Environment(keep_trailing_newline=True, variable_start_string="[[", variable_end_string="]]"),
        jinja2.Environment(keep_trailing_newline=True, line_statement_prefix="#", line_comment_prefix="##"),
        NativeEnvironment(keep_trailing_newline=True),
    ]


def _random_texts(count: int) -> list[str]:
    rng = random.Random(20261202)
    alphabet = [*"ab {}%#[]\n\r\t.-_", "{{", "}}", "{%", "%}", "{#", "#}", "##"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(count)]


@pytest.mark.parametrize(
    "env", _environments(), ids=["airflow", "default", "brackets", "line-prefixes", "native"]
)
def test_text_said_to_render_to_itself_does(env: jinja2.Environment) -> None:
    skipped = 0
    for text in TRICKY + _random_texts(3000):
        if not renders_to_itself(text, env, template_ext=(".sql",)):
            continue
        skipped += 1
        assert env.from_string(text).render() == text, repr(text)
    assert skipped > 100 or isinstance(env, NativeEnvironment)  # the check is not vacuous


def test_markup_newline_changes_files_and_native_rendering_go_through_jinja() -> None:
    airflow_like = jinja2.Environment(keep_trailing_newline=True)
    assert renders_to_itself("a plain prompt\n", airflow_like)
    for text in ("{{ x }}", "{% raw %}{% endraw %}", "a {# c #}", "crlf\r\n", "query.sql"):
        assert not renders_to_itself(text, airflow_like, template_ext=(".sql",)), text
    assert not renders_to_itself("trailing\n", jinja2.Environment())
    assert not renders_to_itself("1024", NativeEnvironment())  # native rendering makes it an int
    brackets = jinja2.Environment(
        keep_trailing_newline=True, variable_start_string="[[", variable_end_string="]]"
    )
    assert not renders_to_itself("[[ x ]]", brackets) and renders_to_itself("{{ x }}", brackets)


def _operator(prompts: list[str], **dag_kwargs: Any) -> BflImageInferenceOperator:
    import pendulum
    from airflow.sdk import DAG

    with DAG("templating", schedule=None, start_date=pendulum.datetime(2026, 1, 1), **dag_kwargs):
        return BflImageInferenceOperator(task_id="generate", prompts=prompts, width=1024, height=1024, seed=1)


def test_only_the_prompts_with_markup_are_compiled(mocker: MockerFixture) -> None:
    prompts = [f"studio photo of catalogue item {n}" for n in range(500)] + ["{{ params.sku }} front view"]
    operator = _operator(prompts)
    compiled = mocker.spy(jinja2.Environment, "from_string")
    context: Any = {"params": {"sku": "LMP-0142"}}
    operator.render_template_fields(context)
    assert operator.prompts[-1] == "LMP-0142 front view"
    assert operator.prompts[:500] == prompts[:500]
    assert [call.args[1] for call in compiled.call_args_list] == ["{{ params.sku }} front view"]


def test_a_native_rendering_dag_still_renders_every_string_with_jinja(mocker: MockerFixture) -> None:
    operator = _operator(["a plain prompt", "{{ params.sku }}"], render_template_as_native_obj=True)
    compiled = mocker.spy(jinja2.Environment, "from_string")
    operator.render_template_fields({"params": {"sku": "LMP-0142"}})  # type: ignore[arg-type]
    assert operator.prompts == ["a plain prompt", "LMP-0142"]
    assert sorted(call.args[1] for call in compiled.call_args_list) == ["a plain prompt", "{{ params.sku }}"]
