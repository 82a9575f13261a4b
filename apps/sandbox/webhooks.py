"""The stand-in's v3 webhooks: subscriptions, and deliveries signed and sent over HTTP as PagerDuty
sends them (shared/pagerduty/README.md "Webhooks").

Each incident change the stand-in makes — through the REST API or through the control endpoints
that act as a person in PagerDuty's UI would — becomes one event per matching subscription, sent
by one delivery thread in order: `X-PagerDuty-Signature: v1=<HMAC-SHA256 of the raw body>`, an
`X-Webhook-Id` that stays the same across the retries of one delivery, retried on timeouts, 5xx
and 429 (PagerDuty: 5 attempts over ~20 minutes; here a short, configurable schedule). Switches:
`bad_signature` signs with a wrong secret, to show the receiver refusing it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from typing import Any

from .state import invalid, iso, not_found, public

EVENT_TYPES = (
    "incident.triggered",
    "incident.acknowledged",
    "incident.unacknowledged",
    "incident.resolved",
    "incident.reopened",
    "incident.reassigned",
    "incident.delegated",
    "incident.escalated",
    "incident.priority_updated",
    "incident.annotated",
    "incident.responder.added",
    "incident.responder.replied",
    "incident.status_update_published",
)
FILTER_TYPES = ("account_reference", "service_reference", "team_reference")
DELIVERY_TIMEOUT_SECONDS = 5.0  # PagerDuty waits 5 s for a 2xx
MAX_SUBSCRIPTIONS = 100
DELIVERIES_KEPT = 1000


class WebhookHub:
    def __init__(self, state):
        self.state = state
        self.subscriptions: dict[str, dict] = {}
        self.deliveries: list[dict] = []
        self.bad_signature = False
        # Waits before attempts 2..5 (PagerDuty spreads them over ~20 minutes).
        self.retry_delays = [0.5, 1.0, 2.0, 4.0]
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- subscriptions (REST) -------------------------------------------------------------------

    def subscribe(self, body: Any) -> dict:
        data = body.get("webhook_subscription") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise invalid('The request body must be {"webhook_subscription": {...}}')
        delivery = data.get("delivery_method")
        errors = []
        if not isinstance(delivery, dict) or delivery.get("type") != "http_delivery_method":
            errors.append("delivery_method.type must be http_delivery_method")
        elif not isinstance(delivery.get("url"), str) or not delivery["url"].startswith(("https://", "http://")):
            errors.append("delivery_method.url must be an http(s) URL")
        events = data.get("events")
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            errors.append("events must be a non-empty list of event types")
        filter_ = data.get("filter")
        if not isinstance(filter_, dict) or filter_.get("type") not in FILTER_TYPES:
            errors.append(f"filter.type must be one of {', '.join(FILTER_TYPES)}")
        elif filter_["type"] != "account_reference" and not filter_.get("id"):
            errors.append("filter.id is required for a service or team filter")
        if errors:
            raise invalid(*errors)
        with self._lock:
            if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise invalid(f"At most {MAX_SUBSCRIPTIONS} webhook subscriptions")
            sub_id = "PW" + uuid.uuid4().hex[:8].upper()
            subscription = {
                "id": sub_id,
                "type": "webhook_subscription",
                "active": data.get("active", True) is not False,
                "delivery_method": {
                    "id": "PD" + uuid.uuid4().hex[:8].upper(),
                    "type": "http_delivery_method",
                    "url": delivery["url"],
                    "temporarily_disabled": False,
                    "custom_headers": [],
                    "_secret": secrets.token_urlsafe(32),
                },
                "description": str(data.get("description") or ""),
                "events": list(dict.fromkeys(events)),
                "filter": {k: filter_[k] for k in ("type", "id") if k in filter_},
            }
            self.subscriptions[sub_id] = subscription
            shown = self.render(subscription)
        shown["delivery_method"]["secret"] = subscription["delivery_method"]["_secret"]  # only in this answer
        return shown

    def render(self, subscription: dict) -> dict:
        shown = dict(subscription)
        shown["delivery_method"] = {k: v for k, v in subscription["delivery_method"].items() if not k.startswith("_")}
        shown["delivery_method"]["secret"] = None
        return shown

    def get(self, sub_id: str) -> dict:
        subscription = self.subscriptions.get(sub_id)
        if subscription is None:
            raise not_found(f"Webhook subscription {sub_id} not found")
        return subscription

    def delete(self, sub_id: str) -> None:
        with self._lock:
            self.get(sub_id)
            del self.subscriptions[sub_id]

    def ping(self, sub_id: str) -> None:
        subscription = self.get(sub_id)
        event = {
            "id": uuid.uuid4().hex,
            "event_type": "pagey.ping",
            "resource_type": "pagey",
            "occurred_at": iso(self.state.now()),
            "agent": None,
            "client": None,
            "data": {"message": "Hello from your friend Pagey!", "type": "ping"},
        }
        self._enqueue(subscription, event)

    # --- events ---------------------------------------------------------------------------------

    def emit(self, event_type: str, incident: dict, agent: dict | None, data: dict | None = None) -> None:
        """One event about `incident` to every subscription that wants it."""
        if not self.subscriptions:
            return
        resource = "incident"
        if data is None:
            data = self._incident_data(incident)
        else:
            resource = data.get("type", "incident")
        event = {
            "id": uuid.uuid4().hex,
            "event_type": event_type,
            "resource_type": resource,
            "occurred_at": iso(self.state.now()),
            "agent": (
                {k: agent[k] for k in ("id", "type", "summary", "self", "html_url") if k in agent} if agent else None
            ),
            "client": None,
            "data": data,
        }
        for subscription in list(self.subscriptions.values()):
            if self._wants(subscription, event_type, incident):
                self._enqueue(subscription, event)

    def _incident_data(self, incident: dict) -> dict:
        shown = public(incident)
        return {
            "id": shown["id"],
            "type": "incident",
            "self": shown.get("self"),
            "html_url": shown.get("html_url"),
            "number": shown.get("incident_number"),
            "status": shown.get("status"),
            "incident_key": shown.get("incident_key"),
            "created_at": shown.get("created_at"),
            "title": shown.get("title"),
            "service": shown.get("service"),
            "assignees": [a.get("assignee", a) for a in shown.get("assignments") or []],
            "escalation_policy": shown.get("escalation_policy"),
            "teams": shown.get("teams") or [],
            "priority": shown.get("priority"),
            "urgency": shown.get("urgency"),
            "conference_bridge": shown.get("conference_bridge"),
            "resolve_reason": None,
        }

    def _wants(self, subscription: dict, event_type: str, incident: dict) -> bool:
        if not subscription["active"] or event_type not in subscription["events"]:
            return False
        filter_ = subscription["filter"]
        if filter_["type"] == "service_reference":
            return (incident.get("service") or {}).get("id") == filter_.get("id")
        if filter_["type"] == "team_reference":
            return any(t.get("id") == filter_.get("id") for t in incident.get("teams") or [])
        return True

    # --- delivery -------------------------------------------------------------------------------

    def _enqueue(self, subscription: dict, event: dict) -> None:
        body = json.dumps({"event": event}).encode()
        secret = subscription["delivery_method"]["_secret"]
        if self.bad_signature:
            secret = "not-the-subscription-secret"
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        record = {
            "webhook_id": uuid.uuid4().hex,
            "subscription_id": subscription["id"],
            "url": subscription["delivery_method"]["url"],
            "event_type": event["event_type"],
            "incident_id": (event["data"] or {}).get("id") if event["resource_type"] == "incident" else None,
            "attempts": [],
            "delivered": False,
        }
        with self._lock:
            self.deliveries.append(record)
            del self.deliveries[:-DELIVERIES_KEPT]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
                self._thread.start()
        self._queue.put((record, body, f"v1={signature}"))

    def _run(self) -> None:
        while True:
            record, body, signature = self._queue.get()
            try:
                self._deliver(record, body, signature)
            finally:
                self._queue.task_done()

    def _deliver(self, record: dict, body: bytes, signature: str) -> None:
        for attempt in range(1 + len(self.retry_delays)):
            if attempt:
                time.sleep(self.retry_delays[attempt - 1])
            request = urllib.request.Request(
                record["url"],
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "PagerDuty-Webhook/V3.0",
                    "X-PagerDuty-Signature": signature,
                    "X-Webhook-Id": record["webhook_id"],
                    "X-Webhook-Subscription": record["subscription_id"],
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_SECONDS) as answer:
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (OSError, urllib.error.URLError) as exc:
                status = None
                record["attempts"].append({"status": None, "error": str(exc)[:200]})
            if status is not None:
                record["attempts"].append({"status": status})
            if status is not None and 200 <= status < 300:
                record["delivered"] = True
                return
            if status is not None and status != 429 and status < 500:
                return  # any other 4xx: PagerDuty drops the delivery

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until every queued delivery was attempted (tests, the demo)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def reset(self) -> None:
        with self._lock:
            self.subscriptions.clear()
            self.deliveries.clear()
            self.bad_signature = False

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "subscriptions": [
                    {**self.render(s), "secret": s["delivery_method"]["_secret"]} for s in self.subscriptions.values()
                ],
                "deliveries": [dict(d, attempts=list(d["attempts"])) for d in self.deliveries],
                "bad_signature": self.bad_signature,
                "retry_delays": self.retry_delays,
            }


_HUBS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HUBS_LOCK = threading.Lock()


def hub_for(state) -> WebhookHub:
    """The webhook hub of a stand-in (kept beside its state, created on first use)."""
    with _HUBS_LOCK:
        hub = _HUBS.get(state)
        if hub is None:
            hub = _HUBS[state] = WebhookHub(state)
        return hub
