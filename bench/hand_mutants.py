"""Mutants mutmut cannot make (module constants, settings) and the survivors issue 9 named, applied
by hand in a scratch copy of the project, each followed by the tests that must now fail. Prints one
line per mutant; exits 1 if any survives. Seconds, not minutes: only the named test files run.

    .venv/bin/python bench/hand_mutants.py            # all
    .venv/bin/python bench/hand_mutants.py routing    # those whose name contains "routing"

Like `make mutation`, it runs with SQLite and eager Celery (server variables removed).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("apps", "config", "templates", "runbooks", "tests", "manage.py", "pyproject.toml")
SERVER_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PAGERDUTY_RATE_LIMIT_REDIS_URL")

MATCHER = "apps/runbooks/matcher.py"
CLIENT = "apps/pagerduty/client.py"
TEMPLATING = "apps/runbooks/templating.py"
REDACTION = "apps/core/redaction.py"
SETTINGS = "config/settings.py"
WEBHOOKS = "apps/pagerduty/webhooks.py"
VALIDATORS = "apps/pagerduty/validators.py"
WAITS = "apps/runbooks/waits.py"
EVENTS = "apps/runbooks/executors/pagerduty_events.py"

# (name, file, text, replacement, tests that must fail)
MUTANTS = [
    (
        "TriggerOn.CREATED mapped to status changes",
        MATCHER,
        "TriggerOn.CREATED: IncidentEventKind.CREATED",
        "TriggerOn.CREATED: IncidentEventKind.STATUS_CHANGED",
        ["tests/runbooks/test_matcher.py"],
    ),
    (
        "trigger kind check: or → and",
        MATCHER,
        "if not runbook.enabled or _KIND_FOR_TRIGGER",
        "if not runbook.enabled and _KIND_FOR_TRIGGER",
        ["tests/runbooks/test_matcher.py"],
    ),
    (
        "from filter never rejects",
        MATCHER,
        "if runbook.trigger_from and event.from_status not in runbook.trigger_from:\n            return False",
        "if runbook.trigger_from and event.from_status not in runbook.trigger_from:\n            return True",
        ["tests/runbooks/test_matcher.py"],
    ),
    (
        "services condition never rejects",
        MATCHER,
        "incident.service not in runbook.condition_services:\n        return False",
        "incident.service not in runbook.condition_services:\n        return True",
        ["tests/runbooks/test_matcher.py"],
    ),
    (
        "severity judged at dispatch",
        MATCHER,
        "severity = event.to_severity if event.to_severity is not None else incident.severity",
        "severity = incident.severity",
        ["tests/runbooks/test_matcher.py"],
    ),
    (
        "RetryPolicy.max_attempts 5 → 1",
        CLIENT,
        "max_attempts: int = 5",
        "max_attempts: int = 1",
        ["tests/pagerduty/test_client_transport.py"],
    ),
    (
        "PAGERDUTY_MAX_ATTEMPTS default 5 → 1",
        SETTINGS,
        'env.int("PAGERDUTY_MAX_ATTEMPTS", default=5)',
        'env.int("PAGERDUTY_MAX_ATTEMPTS", default=1)',
        ["tests/pagerduty/test_client_transport.py"],
    ),
    (
        "request timeout None",
        CLIENT,
        "timeout=self.timeout, allow_redirects=False",
        "timeout=None, allow_redirects=False",
        ["tests/pagerduty/test_client_transport.py"],
    ),
    (
        "a reset on a write is not ambiguous",
        CLIENT,
        "maybe_processed=write)",
        "maybe_processed=False)",
        ["tests/pagerduty/test_client_transport.py"],
    ),
    (
        "a connect timeout may have been processed",
        CLIENT,
        'f"connect timeout: {exc}", maybe_processed=False',
        'f"connect timeout: {exc}", maybe_processed=True',
        ["tests/pagerduty/test_client_transport.py"],
    ),
    (
        "5xx boundary >= 500 → > 500",
        CLIENT,
        "error.status >= 500",
        "error.status > 500",
        ["tests/pagerduty/test_client_transport.py"],
    ),
    (
        "validation: continue → break after an end tag",
        TEMPLATING,
        "            depth -= 1\n            continue",
        "            depth -= 1\n            break",
        ["tests/runbooks/test_templating_rules.py"],
    ),
    (
        "validation: continue → break after text",
        TEMPLATING,
        'if kind not in ("variable", "no escape", "section", "inverted section"):\n            continue',
        'if kind not in ("variable", "no escape", "section", "inverted section"):\n            break',
        ["tests/runbooks/test_templating_rules.py"],
    ),
    (
        "validation: triple braces not checked",
        TEMPLATING,
        'if kind not in ("variable", "no escape", "section", "inverted section"):',
        'if kind not in ("variable", "section", "inverted section"):',
        ["tests/runbooks/test_templating_rules.py"],
    ),
    (
        "validation: inverted sections not checked",
        TEMPLATING,
        'if kind not in ("variable", "no escape", "section", "inverted section"):',
        'if kind not in ("variable", "no escape", "section"):',
        ["tests/runbooks/test_templating_rules.py"],
    ),
    (
        "validation: section depth flipped at an end tag",
        TEMPLATING,
        '        if kind == "end":\n            depth -= 1\n            continue',
        '        if kind == "end":\n            depth += 1\n            continue',
        ["tests/runbooks/test_templating_rules.py"],
    ),
    (
        "None renders as 'None'",
        TEMPLATING,
        '    if value is None:\n        return ""',
        '    if value is None:\n        return "None"',
        ["tests/runbooks/test_templating_rules.py"],
    ),
    (
        "x-routing-key not a sensitive header",
        REDACTION,
        '"authorization", "x-routing-key", ',
        '"authorization", ',
        ["tests/core/test_redaction.py"],
    ),
    (
        "cookies not sensitive headers",
        REDACTION,
        '"cookie", "set-cookie", ',
        "",
        ["tests/core/test_redaction.py"],
    ),
    (
        "key-based redaction of bodies off",
        REDACTION,
        '{"routing_key", "api_key", "token"} and value',
        '{"routing_key", "api_key", "token"} and value and False',
        ["tests/core/test_redaction.py"],
    ),
    (
        "the log filter drops records",
        REDACTION,
        "        if record.stack_info:\n            record.stack_info = redact_text(record.stack_info)\n        return True",
        "        if record.stack_info:\n            record.stack_info = redact_text(record.stack_info)\n        return False",
        ["tests/core/test_redaction.py"],
    ),
    # Round 2: the constants of the webhook receiver, the key checks and the approvals.
    (
        "webhook body limit 256 KB → 512 KB",
        WEBHOOKS,
        "WEBHOOK_BODY_MAX = 256 * 1024",
        "WEBHOOK_BODY_MAX = 512 * 1024",
        ["tests/pagerduty/test_webhooks.py"],
    ),
    (
        "incident.resolved not an event the mirror acts on",
        WEBHOOKS,
        '    "incident.resolved",\n',
        "",
        ["tests/pagerduty/test_webhooks.py"],
    ),
    (
        "events_url not a destination that needs the key again",
        VALIDATORS,
        'DESTINATION_FIELDS = ("api_url", "events_url")',
        'DESTINATION_FIELDS = ("api_url",)',
        ["tests/pagerduty/test_exfiltration.py"],
    ),
    (
        "routing keys of 31 characters",
        VALIDATORS,
        "ROUTING_KEY_LENGTH = 32",
        "ROUTING_KEY_LENGTH = 31",
        ["tests/pagerduty/test_events_channels.py"],
    ),
    (
        "approval comments unbounded",
        WAITS,
        "COMMENT_MAX = 2000",
        "COMMENT_MAX = 20000",
        ["tests/runbooks/test_control_steps.py"],
    ),
    # Built at import, before mutmut switches a mutant on in its forked test process: mutmut's own
    # mutants of UpdateEvent.__init__ can never act, so these are applied here.
    (
        "acknowledge_event sends resolve",
        EVENTS,
        'for _action, _label in (("acknowledge", "Acknowledge"), ("resolve", "Resolve")):',
        'for _action, _label in (("resolve", "Acknowledge"), ("resolve", "Resolve")):',
        ["tests/runbooks/test_events_actions.py"],
    ),
    (
        "UpdateEvent forgets its action",
        EVENTS,
        "        self.action = action\n",
        "        self.action = None\n",
        ["tests/runbooks/test_events_actions.py"],
    ),
]


def main() -> int:
    wanted = sys.argv[1:]
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    survived = []
    with tempfile.TemporaryDirectory(prefix="hand-mutants-") as scratch:
        work = Path(scratch)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, work / name)
        for name, path, text, replacement, tests in MUTANTS:
            if wanted and not any(w.lower() in name.lower() for w in wanted):
                continue
            target = work / path
            original = target.read_text()
            if original.count(text) != 1:
                print(f"?  {name}: the code changed ({path} has the text {original.count(text)} times)")
                survived.append(name)
                continue
            target.write_text(original.replace(text, replacement))
            try:
                result = subprocess.run(
                    [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                )
            finally:
                target.write_text(original)
            if result.returncode == 1:
                failed = next((line for line in result.stdout.splitlines() if line.startswith("FAILED")), "")
                print(f"killed    {name}: {failed.removeprefix('FAILED ').split(' - ')[0]}")
            else:
                print(f"SURVIVED  {name} (pytest exit {result.returncode})")
                survived.append(name)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
