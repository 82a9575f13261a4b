"""Keep the stand-in's account across restarts: what requests changed (incidents, notes, events),
written to a JSON file, read back when the stand-in starts again.

`make run` restarts the stand-in with the rest of the demo; without this, a PagerDuty incident the
demo opened before a restart is unknown after it, and resolving the demo incident fails with a 404.
The directory (users, schedules, ...) is not written: it is seeded again from the same parameters,
and a file written for other parameters is set aside rather than mixed into another account.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from pathlib import Path

from .state import SandboxState

logger = logging.getLogger(__name__)
FORMAT = 1


class StateFile:
    """Saves `state`'s runtime part to `path` (atomically: a reader never sees half a file)."""

    def __init__(self, state: SandboxState, path: Path):
        self.state, self.path = state, Path(path)
        # Ids handed out by seeding; those made by requests since are the ones to keep reserved.
        self._seeded_ids = set(state._ids)
        self._written: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict:
        s = self.state
        with s.lock:
            return {
                "format": FORMAT,
                "seed": s.seed_params,
                "incidents": s.incidents,
                "notes": s.notes,
                "events": s.events,
                "change_events": s.change_events,
                "incident_counter": s._incident_counter,
                "open_keys": [[service, key, incident] for (service, key), incident in s._open_keys.items()],
                "ids": sorted(s._ids - self._seeded_ids),
                "rng": s._rng.getstate(),
            }

    def save(self) -> bool:
        """Write the file if the account changed since the last write; True when written."""
        with self.state.lock:
            text = json.dumps(self.snapshot(), sort_keys=True)
        if text == self._written:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
        self._written = text
        return True

    def load(self) -> str:
        """Restore from the file, if there is one for this account; says what it did."""
        if not self.path.exists():
            return f"state: new (kept in {self.path})"
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("unknown format")
        except (OSError, ValueError) as exc:
            return self._set_aside(f"unreadable ({exc})")
        if data.get("seed") != self.state.seed_params:
            return self._set_aside("written for another seed or size")
        s = self.state
        with s.lock:
            s.incidents.update(data["incidents"])
            s.notes.update(data["notes"])
            s.events.extend(data["events"])
            s.change_events.extend(data["change_events"])
            s._incident_counter = int(data["incident_counter"])
            s._open_keys.update({(service, key): incident for service, key, incident in data["open_keys"]})
            s._ids.update(data["ids"])
            version, internal, gauss = data["rng"]
            s._rng = random.Random()
            s._rng.setstate((version, tuple(internal), gauss))
        self._written = self.path.read_text()
        return f"state: {len(data['incidents'])} incidents restored from {self.path}"

    def _set_aside(self, why: str) -> str:
        aside = self.path.with_name(self.path.name + ".old")
        os.replace(self.path, aside)
        return f"state: {self.path} {why}; moved to {aside.name}, starting empty"

    def start(self, interval: float = 1.0) -> StateFile:
        """Save every `interval` seconds while the stand-in runs (a kill loses at most that)."""

        def loop():
            while not self._stop.wait(interval):
                try:
                    self.save()
                except OSError as exc:
                    logger.warning("cannot save the stand-in's state to %s: %s", self.path, exc)

        self._thread = threading.Thread(target=loop, name="sandbox-state-file", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.save()
