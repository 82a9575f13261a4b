"""kombu's Redis transport, with a fix for the worker dying when Redis restarts.

The bug (kombu 5.7.0, celery 5.7.0, redis-py 8.1.0 — the newest releases): when the broker goes
away, Celery's consumer calls `Connection.collect()` and then `Connection.close()`. `collect()`
closes the channels, but a Redis channel's `close()` talks to the server on the way out — it reads
the reply of the BRPOP in flight and deletes its auto-delete fanout queues (remote control, the
`celery.pidbox` exchange) — and with the server gone that raises a connection error half-way.
`collect()` swallows the error and detaches the transport (`transport.client = None`), leaving the
channel half closed. `close()` then closes it again; this time it gets as far as restoring the
unacknowledged messages, which needs a fresh connection pool built from `transport.client.hostname`:
`AttributeError: 'NoneType' object has no attribute 'hostname'`. That is not a connection error,
so Celery reports "Unrecoverable error" and the worker exits. Whether it happens depends on which
socket notices the broker is gone first, hence "sometimes" (tests/integration/test_broker_restart.py
reproduces it).

Two changes, each enough to keep the worker alive:
- closing a channel finishes even when the server is gone (the BRPOP reply and the fanout queue
  deletion are lost anyway), so the first close completes while the transport is still attached;
- a channel whose transport was detached refuses to build a connection pool with a connection
  error — what any Redis command would raise with the server gone — which Celery handles by
  reconnecting, instead of an AttributeError it treats as fatal.

Selected with `CELERY_BROKER_TRANSPORT` in settings for redis:// and rediss:// brokers.
"""

import logging
import os
import uuid
from contextlib import suppress
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps
from redis import exceptions as redis_errors

logger = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):
    def close(self):
        if self._in_poll:
            # The reply of the BRPOP in flight: with the server gone it is lost, and the channel
            # must close all the same (upstream lets the connection error abort the close).
            with suppress(Empty, *self.connection_errors):
                self._brpop_read()
        super().close()

    def queue_delete(self, queue, *args, **kwargs):
        try:
            return super().queue_delete(queue, *args, **kwargs)
        except self.connection_errors:
            if not self._closing:
                raise
            # Closing with the server gone: the auto-delete queue's binding expires on its own.
            logger.debug("could not delete queue %s while closing: broker unreachable", queue)

    def _connparams(self, asynchronous=False):
        transport = self.connection
        if transport is None or transport.client is None:
            raise redis_errors.ConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


class FilesystemChannel(kombu_filesystem.Channel):
    """kombu's filesystem channel, writing each message aside and renaming it into the queue.

    kombu (5.7.0) creates the message file under its final name and then writes it; a worker
    polling the folder at that moment (every 50 ms on the embedded default) moves the file away and
    reads it empty: `JSONDecodeError` in the worker's log, and the message gone. A rename within
    the folder is atomic, and the reader only takes names ending in `<queue>.msg`, so it sees a
    message whole or not at all."""

    def _put(self, queue, payload, **kwargs):
        filename = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, filename)
        partial = f"{path}.partial"
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {filename!r} to directory") from exc


class FilesystemTransport(kombu_filesystem.Transport):
    Channel = FilesystemChannel
