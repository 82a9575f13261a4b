"""What a runbook author can save and what a step renders: every tag form is checked, a missing
value is an error with a name (never an empty string), empty values render empty, and the caps
hold exactly at their limits."""

import pytest

from apps.core.limits import RENDERED_FIELD_MAX_CHARS, TEMPLATE_MAX_CHARS, TEMPLATE_MAX_SECTION_DEPTH, TEMPLATE_MAX_TAGS
from apps.runbooks import templating
from apps.runbooks.templating import TemplateError
from apps.runbooks.validation import StepDraft, validate_steps

ALLOWED = [*templating.activity_names(), *templating.pagerduty_names(), "steps.page.incident_id"]


def problems_saving(title: str) -> list[str]:
    """What the runbook validator (YAML, admin, API) says about a create-incident step with this title."""
    step = StepDraft(key="page", action="pagerduty.create_incident", inputs={"title": title, "service_id": "P1"})
    return [f"{p.field}: {p.message}" for p in validate_steps(runbook="rb", steps=[step])]


# --- saving --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "title",
    [
        "Hi {{Incident.nope}}",
        "{{Incident.nope}} hi",
        "{{{Incident.nope}}}",
        "{{&Incident.nope}}",
        "{{#Incident.nope}}x{{/Incident.nope}}",
        "{{^Incident.nope}}x{{/Incident.nope}}",
        "{{#Activity.owner}}{{.}}{{/Activity.owner}} then {{Incident.nope}}",
        "{{! a comment }} {{Incident.nope}}",
    ],
)
def test_an_unknown_variable_in_any_tag_form_or_position_is_refused_on_save(title):
    assert problems_saving(title) == ["title: Unknown variable {{Incident.nope}}"]


def test_the_refusal_suggests_the_closest_name_only_when_there_is_one():
    assert problems_saving("{{Activity.titel}}") == [
        "title: Unknown variable {{Activity.titel}}; did you mean {{Activity.title}}?"
    ]
    assert problems_saving("{{Incident.zqxjwv}}") == ["title: Unknown variable {{Incident.zqxjwv}}"]


def test_known_variables_in_every_tag_form_save():
    title = (
        "{{Activity.title}} {{{Activity.summary}}} {{&Activity.owner}} {{pagerduty.incident_id}}"
        "{{#Activity.resolved_at}}resolved {{.}}{{/Activity.resolved_at}}"
        "{{^Activity.resolved_at}}open{{/Activity.resolved_at}}{{! note }}"
    )
    assert problems_saving(title) == []


def test_the_current_item_is_only_meaningful_inside_a_section():
    templating.validate("{{#Activity.owner}}{{.}}{{/Activity.owner}}", allowed=ALLOWED)
    templating.validate(
        "{{#Activity.owner}}{{#Activity.title}}{{.}}{{/Activity.title}}{{.}}{{/Activity.owner}}", allowed=ALLOWED
    )
    for template in (
        "{{.}}",
        "{{#Activity.owner}}x{{/Activity.owner}}{{.}}",
        "{{^Activity.owner}}{{/Activity.owner}}{{.}}",
    ):
        with pytest.raises(TemplateError, match=r"Unknown variable \{\{\.\}\}"):
            templating.validate(template, allowed=ALLOWED)


def test_a_section_may_open_on_a_group_of_variables_but_a_group_is_not_a_value():
    templating.validate("{{#steps}}x{{/steps}}{{#steps.page}}paged{{/steps.page}}", allowed=ALLOWED)
    templating.validate("{{^steps.page}}not paged{{/steps.page}}", allowed=ALLOWED)
    for template in ("{{steps.page}}", "{{{steps}}}", "{{#steps.pag}}x{{/steps.pag}}"):
        with pytest.raises(TemplateError, match="Unknown variable"):
            templating.validate(template, allowed=ALLOWED)


# --- rendering -----------------------------------------------------------------------------------


def test_empty_values_render_empty_never_none_or_false():
    context = {
        "Activity": {"resolved_at": None, "flag": False, "on": True, "severity": 0, "owner": [{"id": None}, {"id": 1}]},
        "steps": {"page": {"incident_id": None}},
    }
    rendered = templating.render(
        "[{{Activity.resolved_at}}][{{Activity.flag}}][{{Activity.on}}][{{Activity.severity}}]"
        "[{{steps.page.incident_id}}][{{#Activity.owner}}<{{id}}>{{/Activity.owner}}]",
        context,
    )
    assert rendered == "[][][true][0][][<><1>]"
    assert templating.render("{{^Activity.resolved_at}}open{{/Activity.resolved_at}}", context) == "open"


def test_a_field_that_is_not_a_template_is_rendered_as_its_value():
    assert templating.render(None, {}) == ""
    assert templating.render(5, {}) == "5"
    assert templating.render("plain", {}) == "plain"


def test_inside_a_section_a_name_may_be_relative_to_the_section_value():
    context = {"steps": {"page": {"incident_id": "Q1", "items": [{"id": "a"}, {"id": "b"}]}}}
    assert templating.render("{{#steps.page}}{{incident_id}}{{/steps.page}}", context) == "Q1"
    assert templating.render("{{#steps.page.items}}{{id}};{{/steps.page.items}}", context) == "a;b;"
    # Still inside the outer section once an inner one has closed.
    nested = "{{#steps.page}}{{#steps.page.items}}{{id}};{{/steps.page.items}}{{incident_id}}{{/steps.page}}"
    assert templating.render(nested, context) == "a;b;Q1"
    # Unescaped tags too.
    assert templating.render("{{#steps.page}}{{{incident_id}}}|{{&incident_id}}{{/steps.page}}", context) == "Q1|Q1"


@pytest.mark.parametrize(
    "template",
    [
        "{{#steps.page}}x{{/steps.page}}{{incident_id}}",  # after the section closed
        "{{^steps.page}}x{{/steps.page}}{{incident_id}}",
        "{{^steps.page.nope}}x{{/steps.page.nope}}",  # an inverted section's name must exist too
        "{{#steps.page}}{{#nope}}x{{/nope}}{{/steps.page}}",  # a section's own name must exist
        "{{{steps.page.nope}}}",
        "{{&steps.page.nope}}",
    ],
)
def test_a_missing_value_is_an_error_with_its_name(template):
    with pytest.raises(TemplateError, match="Unknown variable"):
        templating.render(template, {"steps": {"page": {"incident_id": "Q1"}}})


def test_a_missing_value_under_a_step_that_ran_names_the_value_not_the_step():
    with pytest.raises(TemplateError) as err:
        templating.render("{{steps.page.incident_ix}}", {"steps": {"page": {"incident_id": "Q1"}}})
    assert str(err.value) == "Unknown variable {{steps.page.incident_ix}}; did you mean {{steps.page.incident_id}}?"
    with pytest.raises(TemplateError) as err:
        templating.render("{{steps.later.incident_id}}", {"Activity": {}})
    assert (
        str(err.value) == "{{steps.later.incident_id}} has no value: step 'later' has not produced outputs in this run"
    )


def test_partials_are_refused_when_rendering():
    with pytest.raises(TemplateError, match="Partials"):
        templating.render("{{#steps}}{{> x}}{{/steps}}", {"steps": {}})


def test_render_fields_renders_every_field_and_names_the_failing_one():
    context = {"Activity": {"title": "T", "owner": "o"}}
    assert templating.render_fields({"a": "{{Activity.title}}", "b": "{{Activity.owner}}"}, context) == {
        "a": "T",
        "b": "o",
    }
    with pytest.raises(TemplateError) as err:
        templating.render_fields({"a": "{{Activity.title}}", "b": "{{Incident.nope}}"}, context)
    assert err.value.field == "b"
    assert str(err.value) == "b: Unknown variable {{Incident.nope}}"


def test_variable_names_offered_to_authors():
    assert templating.activity_names()[:2] == ["Activity.id", "Activity.short_id"]
    assert len(templating.activity_names()) == len(templating.ACTIVITY_FIELDS)
    assert templating.pagerduty_names() == ["pagerduty.incident_id"]


# --- the caps, exactly at their limits -----------------------------------------------------------


def test_a_template_of_exactly_the_maximum_length_is_accepted():
    at_limit = "x" * TEMPLATE_MAX_CHARS
    templating.validate(at_limit, allowed=[])
    assert templating.render(at_limit, {}) == at_limit
    with pytest.raises(TemplateError, match=f"is {TEMPLATE_MAX_CHARS + 1:,} characters long; the limit is"):
        templating.validate(at_limit + "x", allowed=[])


def test_exactly_the_maximum_number_of_tags_is_accepted():
    templating.validate("{{Activity.title}}" * TEMPLATE_MAX_TAGS, allowed=ALLOWED)
    # Text between the tags is not a tag.
    templating.validate("- {{Activity.title}}" * TEMPLATE_MAX_TAGS, allowed=ALLOWED)
    with pytest.raises(TemplateError, match=f"more than {TEMPLATE_MAX_TAGS} tags"):
        templating.validate("{{Activity.title}}" * (TEMPLATE_MAX_TAGS + 1), allowed=ALLOWED)


def test_sections_one_after_another_are_not_nested():
    # Depth goes back down at each end tag, inverted sections included.
    side_by_side = "{{#Activity.title}}x{{/Activity.title}}{{^Activity.owner}}y{{/Activity.owner}}" * (
        TEMPLATE_MAX_SECTION_DEPTH + 1
    )
    templating.validate(side_by_side, allowed=ALLOWED)
    assert templating.render(side_by_side, {"Activity": {"title": "T", "owner": ""}}) == "xy" * (
        TEMPLATE_MAX_SECTION_DEPTH + 1
    )
    too_deep = "{{^Activity.owner}}" * (TEMPLATE_MAX_SECTION_DEPTH + 1) + "{{/Activity.owner}}" * (
        TEMPLATE_MAX_SECTION_DEPTH + 1
    )
    with pytest.raises(TemplateError, match=r"nested more than 8 deep \(at \{\{#Activity.owner\}\}\)"):
        templating.validate(too_deep, allowed=ALLOWED)

    # After a closed section the count starts from where it was: the full depth is still allowed
    # once, and one more is still refused.
    def nested(levels: int) -> str:
        return "{{^Activity.owner}}" * levels + "{{/Activity.owner}}" * levels

    closed_first = "{{#Activity.title}}x{{/Activity.title}}"
    templating.validate(closed_first + nested(TEMPLATE_MAX_SECTION_DEPTH), allowed=ALLOWED)
    with pytest.raises(TemplateError, match="nested more than 8 deep"):
        templating.validate(closed_first + nested(TEMPLATE_MAX_SECTION_DEPTH + 1), allowed=ALLOWED)


def test_a_rendered_value_of_exactly_the_maximum_size_is_accepted():
    at_limit = {"Activity": {"title": "x" * RENDERED_FIELD_MAX_CHARS}}
    assert len(templating.render("{{Activity.title}}", at_limit)) == RENDERED_FIELD_MAX_CHARS
    with pytest.raises(TemplateError, match=f"is {RENDERED_FIELD_MAX_CHARS + 1:,} characters long"):
        templating.render("{{Activity.title}}!", at_limit)


def test_list_sections_may_repeat_exactly_the_budget():
    ten_thousand = {"steps": {"a": {"ids": list(range(100))}}}
    template = "{{#steps.a.ids}}{{#steps.a.ids}}.{{/steps.a.ids}}{{/steps.a.ids}}"
    # 100 outer + 100 × 100 inner items = 10,100: one list of 10,000 is the most one render may walk.
    with pytest.raises(TemplateError, match="repeat more than 10,000 times"):
        templating.render(template, ten_thousand)
    exactly = {"steps": {"a": {"ids": ["."] * 10_000}}}
    assert templating.render("{{#steps.a.ids}}{{.}}{{/steps.a.ids}}", exactly) == "." * 10_000
    with pytest.raises(TemplateError, match="repeat more than 10,000 times"):
        templating.render("{{#steps.a.ids}}{{.}}{{/steps.a.ids}}", {"steps": {"a": {"ids": ["."] * 10_001}}})


def test_lists_inside_lists_are_paid_for_too():
    # A step output holding lists of lists: the inner items spend the same budget as the outer ones.
    nested = {"steps": {"a": {"groups": [["."] * 100] * 100}}}
    inner = "{{#steps.a.groups}}{{#.}}{{.}}{{/.}}{{/steps.a.groups}}"
    with pytest.raises(TemplateError, match="repeat more than 10,000 times"):
        templating.render(inner, nested)
    small = {"steps": {"a": {"groups": [["a", "b"], ["c"]]}}}
    assert templating.render(inner, small) == "abc"


def test_a_syntax_error_is_reported_on_one_line():
    with pytest.raises(TemplateError) as err:
        templating.validate("{{#Activity.title}}x", allowed=ALLOWED)
    assert str(err.value) == (
        'Mustache syntax error: Unexpected EOF; the tag "Activity.title" was never closed; was opened at line 1'
    )


# --- fields that take one id (or a list of ids): what a save refuses --------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{steps.page.incident_id}}",
        "  {{steps.page.incident_id}}  ",  # spaces around are trimmed by the field
        "PABC123",  # no variable: a literal id
        "{{#steps.page}}{{incident_id}}{{/steps.page}}",  # sections are the author's business
        "{{^steps.page}}PABC123{{/steps.page}}",
        "{{{steps.page.incident_id}}}",
        "{{bad",  # a broken template is validate()'s to report, not this rule's
    ],
)
def test_one_id_fields_accept_one_variable_or_a_literal(template):
    assert templating.single_value_problem(template) is None


def test_one_id_fields_refuse_two_variables_joined_and_say_how_many():
    problem = templating.single_value_problem("{{pagerduty.incident_id}}{{steps.page.incident_id}}")
    assert problem == (
        "must render to a single id, but '{{pagerduty.incident_id}}{{steps.page.incident_id}}' joins 2 variables; "
        "keep one of them"
    )
    three = templating.single_value_problem("{{a}} {{b}} {{{c}}}")
    assert three is not None and "joins 3 variables" in three


@pytest.mark.parametrize("template", ["QX{{steps.page.incident_id}}", "{{steps.page.incident_id}}-2"])
def test_one_id_fields_refuse_text_glued_to_the_variable_and_name_it(template):
    assert templating.single_value_problem(template) == (
        f"must render to a single id, but {template!r} puts text next to {{{{steps.page.incident_id}}}}"
    )


def test_a_long_template_is_shown_cut_at_120_characters():
    template = "{{a}}" + "x" * 200
    problem = templating.single_value_problem(template)
    assert problem is not None and f"{template[:120] + '…'!r}" in problem and template not in problem


@pytest.mark.parametrize(
    "template",
    [
        "{{a}}, {{b}}",
        "{{a}},{{b}}",
        "{{a}} {{b}}",
        "PABC123, {{a}}",
        "{{a}}\t{{b}}",
        "{{a}}",
        "PABC123,PDEF456",
    ],
)
def test_list_fields_accept_ids_separated_by_commas_or_spaces(template):
    assert templating.single_value_problem(template, many=True) is None


@pytest.mark.parametrize(
    "template",
    # Only the character where text meets a variable counts: ", P" ends in P, "P ," starts with it.
    [
        "{{a}}{{b}}",
        "X{{a}}",
        "{{a}}X",
        "{{a}}, {{b}}{{c}}",
        "{{a}}, P1{{b}}",
        "{{a}}, P{{b}}",
        "{{a}}P ,{{b}}",
        "P1 {{! primary }}, P2{{a}}",  # the text on both sides of a comment is read on past it
    ],
)
def test_list_fields_refuse_ids_glued_together(template):
    assert templating.single_value_problem(template, many=True) == (
        f"must render to ids separated by commas or spaces, but {template!r} glues them together"
    )


def test_a_one_id_field_may_fall_back_to_a_literal_in_an_inverted_section():
    # "The owner's id, or PDEFAULT when there is none": one id either way, so it saves.
    template = "{{Activity.owner}}{{^Activity.owner}}PDEFAULT{{/Activity.owner}}"
    assert templating.single_value_problem(template) is None
    assert templating.single_value_problem(template.replace("^", "#")) is None


def test_a_template_of_exactly_120_characters_is_shown_whole():
    template = "{{Activity.title}}{{Activity.id}}"
    template += " " * (120 - len(template))
    problem = templating.single_value_problem(template)
    assert problem is not None and f"{template!r} joins 2 variables" in problem and "…" not in problem
    longer = template + " "
    assert f"{longer[:120] + '…'!r}" in templating.single_value_problem(longer)


def test_a_step_that_has_not_run_is_named_even_without_a_field_after_it():
    with pytest.raises(TemplateError) as err:
        templating.render("{{steps.later}}", {"Activity": {}, "steps": {}})
    assert str(err.value) == "{{steps.later}} has no value: step 'later' has not produced outputs in this run"


def test_pagerduty_event_variables_are_text_empty_when_absent_and_capped_at_2000():
    context = templating.pagerduty_event_context({"status": None, "agent": "t" * 2001, "urgency": "high"})
    assert set(context) == set(templating.PAGERDUTY_EVENT_FIELDS)
    assert context["status"] == "" and context["urgency"] == "high"
    assert context["agent"] == "t" * 2000
    absent = [name for name in templating.PAGERDUTY_EVENT_FIELDS if name not in ("status", "agent", "urgency")]
    assert absent and all(context[name] == "" for name in absent)


@pytest.mark.parametrize("template", ["Hi {{Activity.title}} {{", "{{", "{{=<% %>=}}<%Activity.title%><%"])
def test_an_opening_tag_left_open_at_the_end_is_refused_not_dropped(template):
    # chevron renders "Hi {{Activity.title}} {{" as "Hi Checkout errors ": the author's "{{" vanishes.
    opening = "<%" if "<%" in template else "{{"
    assert problems_saving(template) == [f"title: The template ends with an opening {opening} that is never closed"]
    with pytest.raises(TemplateError, match="never closed"):
        templating.render(template, {"Activity": {"title": "Checkout errors"}})


def test_a_tag_of_two_words_does_not_change_the_delimiters():
    # Only a {{=<% %>=}} tag sets delimiters; a tag that merely holds two words leaves "{{" the opening.
    with pytest.raises(TemplateError, match=r"^The template ends with an opening \{\{ that is never closed$"):
        templating.render("{{Activity.title x}} {{", {"Activity": {"title": "T"}})


def test_text_split_by_a_comment_is_one_piece_of_text_in_a_list_field():
    assert templating.single_value_problem("P1{{! the on-call lead }}P2 {{a}}", many=True) is None


@pytest.mark.parametrize("template", ["{{}}", "Hi {{ }}", "{{#}}x{{/}}", "{{=<% %>=}}<%%>"])
def test_an_empty_tag_is_a_clear_refusal_not_a_crash(template):
    # chevron's tokenizer raised IndexError on "{{}}": the admin and the API answered 500.
    [problem] = problems_saving(template)
    assert problem.startswith("title: ") and ("empty tag" in problem or "Unknown variable {{}}" in problem)
    with pytest.raises(TemplateError):
        templating.render(template, {"Activity": {}})


@pytest.mark.parametrize(("template", "shown"), [("{{}}", "{{}}"), ("{{=<% %>=}}<%%>", "<%%>")])
def test_an_empty_tag_is_shown_in_the_delimiters_in_use(template, shown):
    with pytest.raises(TemplateError) as err:
        templating.render(template, {})
    assert str(err.value) == f"Mustache syntax error: an empty tag {shown}"
