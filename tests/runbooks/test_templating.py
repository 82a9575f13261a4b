import pytest

from apps.runbooks import templating
from apps.runbooks.templating import TemplateError

CONTEXT = {
    "Activity": {"title": 'R&D <db> "x"', "severity": 1, "resolved_at": "", "owner": "a@b.co"},
    "steps": {"page": {"incident_id": "Q1", "deduplicated": True}},
    "pagerduty": {"incident_id": ""},
}


def test_no_html_escaping_in_any_tag_form():
    for template in ["{{Activity.title}}", "{{{Activity.title}}}", "{{&Activity.title}}"]:
        assert templating.render(template, CONTEXT) == 'R&D <db> "x"'


def test_sections_and_values():
    assert templating.render("{{#Activity.resolved_at}}at {{.}}{{/Activity.resolved_at}}", CONTEXT) == ""
    assert templating.render("{{^pagerduty.incident_id}}none{{/pagerduty.incident_id}}", CONTEXT) == "none"
    assert templating.render("{{steps.page.incident_id}}/{{steps.page.deduplicated}}", CONTEXT) == "Q1/true"
    assert templating.render("SEV{{Activity.severity}}", CONTEXT) == "SEV1"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{Activity.titel}}", "Unknown variable {{Activity.titel}}; did you mean {{Activity.title}}?"),
        ("{{steps.escalate.incident_id}}", "step 'escalate' has not produced outputs"),
        ("{{Activity.title", "Mustache syntax error"),
        ("{{#Activity.title}}x", "Mustache syntax error"),
        ("{{> /etc/passwd}}", "Partials"),
    ],
)
def test_render_refuses_instead_of_emitting_empty(template, message):
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}").replace("?", r"\?")):
        templating.render(template, CONTEXT)


def test_validate_against_schema():
    allowed = templating.activity_names() + ["steps.page.incident_id"]
    templating.validate(
        "{{Activity.short_id}} {{steps.page.incident_id}} {{#Activity.owner}}{{.}}{{/Activity.owner}}", allowed=allowed
    )
    with pytest.raises(TemplateError, match="Unknown variable"):
        templating.validate("{{steps.page.nope}}", allowed=allowed)
    with pytest.raises(TemplateError, match="Unknown variable"):
        templating.validate("{{.}}", allowed=allowed)  # only meaningful inside a section
    with pytest.raises(TemplateError, match="Partials"):
        templating.validate("{{>x}}", allowed=allowed)


def test_render_fields_names_the_field():
    with pytest.raises(TemplateError) as err:
        templating.render_fields({"title": "ok", "summary": "{{Activity.nope}}"}, CONTEXT)
    assert err.value.field == "summary"
    assert str(err.value).startswith("summary: Unknown variable")


def test_only_templating_imports_chevron():
    import pathlib

    offenders = [
        str(p)
        for p in pathlib.Path(templating.__file__).parents[2].joinpath("apps").rglob("*.py")
        if "chevron" in p.read_text() and p.name != "templating.py"
    ]
    assert offenders == []


def test_an_id_field_refuses_two_variables_glued_together():
    from apps.runbooks.validation import StepDraft, validate_steps

    steps = [
        StepDraft(key="create_incident", action="pagerduty.create_incident", inputs={"title": "t"}),
        StepDraft(
            key="escalate",
            action="pagerduty.add_responder",
            inputs={
                "incident_id": "{{pagerduty.incident_id}}{{steps.create_incident.incident_id}}",
                "responder_id": "PRESPND{{Activity.owner}}",
                "requester_id": " {{Activity.owner}} ",
                "message": "{{Activity.short_id}}{{Activity.title}}",  # text may join variables
            },
        ),
    ]
    problems = {(p.step, p.field): p.message for p in validate_steps(runbook="r", steps=steps)}
    assert problems == {
        ("escalate", "incident_id"): (
            "must render to a single id, but '{{pagerduty.incident_id}}{{steps.create_incident.incident_id}}' "
            "joins 2 variables; keep one of them"
        ),
        ("escalate", "responder_id"): (
            "must render to ids separated by commas or spaces, but 'PRESPND{{Activity.owner}}' glues them together"
        ),
    }
    steps[1].inputs.update(
        incident_id="{{steps.create_incident.incident_id}}", responder_id="PRESPND, {{Activity.owner}}"
    )
    assert validate_steps(runbook="r", steps=steps) == []
