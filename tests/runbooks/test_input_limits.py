"""Templates and runbook files cannot stall the web process or a worker.

The stalls these caps prevent are shown in subprocesses with a deadline (and, for memory, an
address-space limit), so without a cap the test fails by timing out or running out of memory
instead of hanging the suite; nothing here asserts how fast anything ran.
"""

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.core.limits import RENDERED_FIELD_MAX_CHARS, TEMPLATE_MAX_SECTION_DEPTH, YAML_MAX_NODES
from apps.runbooks import templating
from apps.runbooks.loader import load_yaml, read_documents, spec_problems
from apps.runbooks.models import Runbook
from apps.runbooks.validation import StepDraft, validate_steps

ROOT = Path(__file__).resolve().parents[2]
REPO_RUNBOOKS = ROOT / "runbooks"
DEADLINE_SECONDS = 60


def nested_sections(depth: int, name: str = "Activity.title") -> str:
    return ("{{#" + name + "}}") * depth + "x" + ("{{/" + name + "}}") * depth


def run_python(code: str, *, memory_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter from the repository root, killed after the deadline."""

    def limit_memory():
        if memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        preexec_fn=limit_memory,
        check=False,
    )


# --- templates ----------------------------------------------------------------------------------


def test_fifty_thousand_nested_sections_are_refused_instead_of_rendering_forever():
    # Before the caps, 8,000 nested sections took 16 s per render and 50,000 never finished.
    result = run_python(
        """
        from apps.runbooks import templating
        template = ("{{#Activity.title}}" * 50_000) + "x" + ("{{/Activity.title}}" * 50_000)
        for check in (lambda: templating.validate(template, allowed=["Activity.title"]),
                      lambda: templating.render(template, {"Activity": {"title": "T"}})):
            try:
                check()
            except templating.TemplateError as exc:
                print("refused:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("refused: The template is 1,900,001 characters long; the limit is 10,000") == 2


def test_deep_nesting_within_the_length_limit_is_refused_before_rendering():
    template = nested_sections(TEMPLATE_MAX_SECTION_DEPTH + 1)
    assert len(template) < 1000
    with pytest.raises(templating.TemplateError, match=f"nested more than {TEMPLATE_MAX_SECTION_DEPTH} deep"):
        templating.render(template, {"Activity": {"title": "T"}})
    templating.validate(nested_sections(TEMPLATE_MAX_SECTION_DEPTH), allowed=["Activity.title"])


def test_eight_thousand_nested_sections_are_refused_when_the_runbook_is_saved():
    problems = validate_steps(
        runbook="deep",
        steps=[StepDraft(key="page", action="pagerduty.create_incident", inputs={"title": nested_sections(8000)})],
    )
    assert [(p.runbook, p.step, p.field) for p in problems] == [("deep", "page", "title")]
    assert "characters long; the limit is 10,000" in problems[0].message


def test_too_many_tags_and_nul_are_refused():
    with pytest.raises(templating.TemplateError, match="more than 500 tags"):
        templating.validate("{{Activity.title}}" * 501, allowed=["Activity.title"])
    with pytest.raises(templating.TemplateError, match="^The template contains a NUL character$"):
        templating.validate("a\x00b", allowed=[])


def test_list_sections_repeat_within_a_budget():
    # Nested sections over one list repeat their body n^depth times: 100^4 would never end.
    template = "{{#steps.a.ids}}" * 4 + "{{.}}" + "{{/steps.a.ids}}" * 4
    with pytest.raises(templating.TemplateError, match="repeat more than 10,000 times"):
        templating.render(template, {"steps": {"a": {"ids": list(range(100))}}})
    assert templating.render("{{#steps.a.ids}}{{.}},{{/steps.a.ids}}", {"steps": {"a": {"ids": [1, 2]}}}) == "1,2,"


def test_a_rendered_value_has_a_maximum_size():
    summary = "s" * 10_000
    template = "{{Activity.summary}}" * 11  # 110,000 characters once rendered
    with pytest.raises(templating.TemplateError, match=f"the limit is {RENDERED_FIELD_MAX_CHARS:,}"):
        templating.render_fields({"summary": template}, {"Activity": {"summary": summary}})


# --- YAML ---------------------------------------------------------------------------------------

ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
slug: *i
name: *i
trigger: {on: *i}
steps: [{key: page, action: pagerduty.create_incident, with: {title: *i}}]
"""


def test_a_nine_level_alias_bomb_is_refused_without_expanding_it(tmp_path):
    # 10^9 strings once expanded (2.3 GB before the cap). The check runs in a process limited to
    # 1 GiB of address space: without the cap it dies of MemoryError instead of printing the problem.
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    result = run_python(
        f"""
        import os, django
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        django.setup()
        from django.core.management import call_command, CommandError
        try:
            call_command("load_runbooks", "--check", {str(bomb)!r})
        except CommandError as exc:
            print("refused:", exc)
        """,
        memory_bytes=1024**3,
    )
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{bomb}: YAML error: line 5: the document expands to more than {YAML_MAX_NODES:,} values" in result.stderr
    assert "refused: 1 problem(s) in 1 runbook(s); nothing was written" in result.stdout


def test_aliases_within_the_limit_still_work():
    docs = load_yaml("base: &w {title: T}\nsteps: [{key: a, with: *w}, {key: b, with: {<<: *w, summary: S}}]")
    assert docs[0]["steps"][1]["with"] == {"title": "T", "summary": "S"}


def test_an_alias_that_contains_itself_is_refused():
    with pytest.raises(Exception, match="refers to a node that contains it"):
        load_yaml("a: &a [1, *a]")


def test_duplicate_keys_are_refused_with_their_lines():
    with pytest.raises(Exception, match=r"found the key 'name' twice \(first on line 2\)"):
        load_yaml("slug: x\nname: one\nname: two\n")
    # Keys brought in by a merge may be overridden: that is what merges are for.
    assert load_yaml("d: &d {a: 1}\ne: {<<: *d, a: 2}")[0]["e"] == {"a": 2}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("slug: x\n".encode("utf-16"), "the file is UTF-16 (it starts with a byte-order mark); save it as UTF-8"),
        ("slug: x\n".encode("utf-32"), "the file is UTF-32 (it starts with a byte-order mark); save it as UTF-8"),
        ("slug: café\n".encode("latin-1"), "the file is not UTF-8 (byte 0xe9 on line 1); save it as UTF-8"),
        (b"\x7fELF\x02\x01\x01\x00\x00", "the file is binary (NUL byte at offset 7), not YAML text"),
        (b"slug: [unclosed\n", "YAML syntax error: while parsing a flow sequence"),
        (b"slug: x\nslug: y\n", "YAML error: while reading a mapping"),
        (b"x" * (1024 * 1024 + 1), "the file is 1,048,577 bytes; the limit is 1,048,576"),
    ],
)
def test_unreadable_files_are_problems_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    [(source, error)] = read_documents(path)
    assert source == str(path)
    assert str(error).startswith(problem)


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (REPO_RUNBOOKS / "page-on-critical.yaml").read_bytes())
    [(_, spec)] = read_documents(path)
    assert spec["slug"] == "page-on-critical" and spec_problems(spec) == []


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"slug": "../../x"}, "slug '../../x' may contain only letters, digits, hyphens and underscores"),
        ({"slug": "/etc/cron.d/x"}, "may contain only letters, digits, hyphens and underscores"),
        ({"slug": ["a"]}, "slug must be text, not list"),
        ({"slug": "s" * 101}, "slug is 101 characters long; the limit is 100"),
        ({"name": {"a": 1}}, "name must be text, not dict"),
        ({"name": "n" * 201}, "name is 201 characters long; the limit is 200"),
        ({"description": "d" * 10_001}, "description is 10,001 characters long; the limit is 10,000"),
        ({"trigger": {"on": ["status_changed"]}}, "trigger.on must be one of"),
        ({"trigger": {"on": "status_changed", "to": [{"a": 1}]}}, "trigger.to must be a list of statuses"),
        ({"conditions": {"services": ["s"] * 101}}, "conditions.services has 101 names; the limit is 100"),
        ({"steps": "page"}, "steps must be a list"),
        ({"steps": [{"key": "a", "action": "pagerduty.create_incident"}] * 51}, "51 steps; a runbook has at most 50"),
        ({"steps": [{"key": ["a"], "action": "pagerduty.create_incident"}]}, "key must be text, not list"),
        ({"steps": [{"key": "a", "action": 7}]}, "action must be text, not int"),
        (
            {"steps": [{"key": "a", "action": "pagerduty.create_incident", "with": {"title": ["x"]}}]},
            "must be a single template string",
        ),
        (
            {"steps": [{"key": "a", "action": "pagerduty.create_incident", "with": {1: "x"}}]},
            "every field name under `with` must be text",
        ),
        (
            {"steps": [{"key": "a", "action": "pagerduty.create_incident", "on_failure": ["stop"]}]},
            "on_failure must be stop or continue, not '<a list>'",
        ),
    ],
)
def test_wrong_types_and_sizes_are_problems_not_tracebacks(spec, problem):
    base = {"slug": "ok", "name": "OK", "trigger": {"on": "manual"}, "steps": []}
    problems = [str(p) for p in spec_problems({**base, **spec}, source="x.yaml")]
    assert any(problem in p for p in problems), problems


@pytest.mark.django_db
def test_load_reports_every_bad_file_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "utf16.yaml").write_bytes("slug: x\n".encode("utf-16"))
    (tmp_path / "traversal.yaml").write_text(
        (REPO_RUNBOOKS / "page-on-critical.yaml").read_text().replace("slug: page-on-critical", "slug: ../../escaped")
    )
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("load_runbooks", str(tmp_path))
    err = capsys.readouterr().err
    assert f"{tmp_path / 'utf16.yaml'}: the file is UTF-16" in err
    assert (
        f"{tmp_path / 'traversal.yaml'}: runbook '../../escaped', field 'slug': slug '../../escaped' may contain" in err
    )
    assert Runbook.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("slug", ["../../escaped", "/tmp/absolute-escape", "a/../../b"])
def test_export_never_writes_outside_its_directory(tmp_path, slug):
    call_command("load_runbooks", str(REPO_RUNBOOKS))
    Runbook.objects.filter(slug="page-on-critical").update(slug=slug)  # saved before slugs were checked
    target = tmp_path / "out" / "deeper"
    with pytest.raises(CommandError, match="1 runbook\\(s\\) not exported"):
        call_command("export_runbooks", str(target))
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.yaml"))
    assert written == [
        Path("out/deeper") / p.name for p in sorted(REPO_RUNBOOKS.glob("*.yaml")) if p.name != "page-on-critical.yaml"
    ]
    assert not Path("/tmp/absolute-escape.yaml").exists()
