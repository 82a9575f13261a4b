"""The embedded default's broker (`make run`): a message is read whole or not at all.

kombu's filesystem transport created a message file under its final name and then wrote it, so a
worker polling at that moment read it empty (`JSONDecodeError`) and the message was gone; it
failed test_make_run once in CI. config.broker.FilesystemChannel writes aside and renames."""

import threading
import time
from queue import Empty

from kombu import Connection
from kombu.transport import filesystem as kombu_filesystem
from kombu.utils.json import dumps

from config import broker
from config.broker import FilesystemTransport

MESSAGES = 200


def slow_dumps(payload):
    # A writer that takes a moment to serialise (another process, a loaded machine): kombu opened
    # the file under its final name before this, which is what left the window open.
    time.sleep(0.002)
    return dumps(payload)


def test_a_reader_polling_during_writes_gets_every_message_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(kombu_filesystem, "dumps", slow_dumps)
    monkeypatch.setattr(broker, "dumps", slow_dumps)
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False}
    writer = Connection(transport=FilesystemTransport, transport_options=options).default_channel
    reader = Connection(transport=FilesystemTransport, transport_options=options).default_channel
    got, errors, done = [], [], threading.Event()

    def read():
        while not done.is_set() or len(got) < MESSAGES:
            try:
                got.append(reader._get("q"))
            except Empty:
                if done.is_set() and len(got) < MESSAGES and not list(tmp_path.glob("*.msg")):
                    return
            except Exception as exc:  # the bug: an empty file read as JSON
                errors.append(exc)
                return

    thread = threading.Thread(target=read)
    thread.start()
    for n in range(MESSAGES):
        writer._put("q", {"n": n, "body": "x" * 2000})
    done.set()
    thread.join(30)

    assert errors == []
    assert sorted(message["n"] for message in got) == list(range(MESSAGES))
    assert list(tmp_path.iterdir()) == []  # nothing left half-written
