"""NATS JetStream: the events stream and durable, idempotent consumers.

A consumer hands each event to the handler registered for its type. The handler decides
and acts, and returns what to append; those events and the consumer's inbox row commit in
one transaction, and only then is the message acknowledged. A redelivered message whose
inbox row exists is acknowledged without running the handler again.

A message is only a notice that an event exists: the consumer reads the event itself from
the store (in the same query that checks its inbox) and acts on what the store holds. A
message naming no stored event is counted and dropped, whatever it says, so even a NATS
server without snapdeploy's permissions (see shared.natsauth) cannot be used to forge
work.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import dataclasses
import functools
import itertools
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from proto import subjects
from proto.envelope import EventEnvelope, MalformedMessage, Metadata, decode_envelope
from proto.events import Event
from shared import metrics
from shared.config import Settings
from shared.domain.abandon import abandoned
from shared.drivers.zones import Hypervisors
from shared.eventstore import (
    Append,
    ConcurrencyError,
    Group,
    RecordedEvent,
    Repository,
    Store,
)
from shared.log import correlation

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0
# How long a message handed to a consumer stays its before NATS hands it out again. A
# handler still at work says so every third of it (``Consumer._keep_alive``); a message
# whose consumer died (or whose NATS node did) is delivered again after this.
ACK_WAIT_S = 15.0
# How long a consumer's pull request waits for a message before it asks again (and checks
# whether it is stopping).
FETCH_WAIT_S = 1.0
# A handler that loses an expected-version race reruns (after a short random pause that
# grows with each loss, at most 1 s) this many times before the message goes back to NATS.
CONFLICT_RETRIES = 30


Handler = Callable[[EventEnvelope], Awaitable[Sequence[Append]]]
"""What a consumer runs for one stored event: the appends that record its outcome."""

E = TypeVar("E", bound=Event)
TypedHandler = Callable[[E, EventEnvelope], Awaitable[Sequence[Append]]]
"""A handler of one event class: the event, typed, and its envelope (stream, version, id)."""
StreamHandler = Callable[[E, EventEnvelope, Sequence[RecordedEvent]],
                         Awaitable[Sequence[Append]]]
"""A handler of one event class that decides on its event's stream: the event, its envelope
and every event of its stream as stored, oldest first (``Handlers.on_stream``)."""

Decided = Sequence[Append] | Exception
"""One event's outcome in a batch: its appends, or why it could not be decided."""

BatchHandler = Callable[[Sequence[EventEnvelope]], Awaitable[list[Decided]]]
TypedBatchHandler = Callable[[Sequence[tuple[E, EventEnvelope]]], Awaitable[list[Decided]]]
"""A handler that decides several events of one class at once, in order, each as if those
before it were committed: an outcome for each (``Handlers.on_many``)."""

MAX_BATCH = 64
"""Events decided in one batch at most (``Handlers.on_many``)."""
TURN_BATCHES = 4
"""Batches decided in a row in one turn of the lock, while more wait, before it is given
up for the other processes' turns."""


class HypervisorService:
    """What a service that acts on hypervisors holds: the store, its aggregates
    (``Repository``) and a session per hypervisor (``Hypervisors``, by zone). Its
    ``handlers()`` say which events it handles."""

    def __init__(self, store: Store, hypervisors: Hypervisors) -> None:
        self.store = store
        self.repo = Repository(store)
        self.hypervisors = hypervisors

    def handlers(self) -> Handlers:
        raise NotImplementedError


class Handlers(Mapping[str, Handler]):
    """A service's handlers, registered by event class so the type checker sees each
    handler's event type; read by event type name, as a consumer dispatches."""

    def __init__(self) -> None:
        self._by_type: dict[str, Handler] = {}
        self.serial: dict[str, str] = {}
        self.batched: dict[str, BatchHandler] = {}
        self.streamed: dict[str, Callable[[EventEnvelope, Sequence[RecordedEvent]],
                                          Awaitable[Sequence[Append]]]] = {}

    def on(self, event_type: type[E], handler: TypedHandler[E], *,
           serial: str | None = None) -> Handlers:
        """Run ``handler`` for every stored ``event_type``; returns self, to chain.

        With ``serial``, the name of a lock the handlers that must not decide at once
        share: a ``Dispatcher`` holds the store's lock of that name
        (``Store.decision_lock``) from the handler's start until its outcome is committed,
        so such decisions take turns, in one process and among its copies, instead of
        racing each other to the expected versions and running again."""
        name = event_type.__name__
        if name in self._by_type:
            raise ValueError(f"a handler for {name} is registered already")
        if serial is not None:
            self.serial[name] = serial

        async def handle(envelope: EventEnvelope) -> Sequence[Append]:
            return await handler(_typed(envelope, event_type), envelope)

        self._by_type[name] = handle
        return self

    def on_stream(self, event_type: type[E], handler: StreamHandler[E],
                  read_stream: Callable[[str], Awaitable[list[RecordedEvent]]]) -> Handlers:
        """Like ``on``, for a handler that decides on its event's stream: a ``Dispatcher``
        reads the stream with the event (``Store.stored_with_stream``), one query where
        there were two, and hands it over. Run again after a conflict, or run as a plain
        handler (``self[name]``), it gets the stream from ``read_stream``."""
        async def with_stream(event: E, envelope: EventEnvelope) -> Sequence[Append]:
            return await handler(event, envelope, await read_stream(envelope.stream_id))

        async def given(envelope: EventEnvelope,
                        stream: Sequence[RecordedEvent]) -> Sequence[Append]:
            return await handler(_typed(envelope, event_type), envelope, stream)

        self.on(event_type, with_stream)
        self.streamed[event_type.__name__] = given
        return self

    def on_many(self, event_type: type[E], handler: TypedBatchHandler[E], *,
                serial: str) -> Handlers:
        """Like ``on`` with ``serial``, for a handler that decides several events at once.

        The events of ``event_type`` that wait for the lock in one process are decided in
        one turn (up to ``MAX_BATCH``, in the order they came), each as if the ones before
        it were committed, and committed in one statement (``Store.commit_all``), each all
        or none on its own: a burst pays one read of what they share, one commit and one
        turn of the lock, not one each. An event whose commit conflicts runs again, alone
        or in a later batch, as after a handler's conflict."""
        async def handle_many(envelopes: Sequence[EventEnvelope]) -> list[Decided]:
            return await handler([(_typed(e, event_type), e) for e in envelopes])

        async def alone(event: E, envelope: EventEnvelope) -> Sequence[Append]:
            (decided,) = await handler([(event, envelope)])
            if isinstance(decided, Exception):
                raise decided
            return decided

        self.on(event_type, alone, serial=serial)
        self.batched[event_type.__name__] = handle_many
        return self

    def __getitem__(self, event_type: str) -> Handler:
        return self._by_type[event_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_type)

    def __len__(self) -> int:
        return len(self._by_type)


def _typed(envelope: EventEnvelope, event_type: type[E]) -> E:
    """The envelope's event, if it is an ``event_type``.

    Raises:
        TypeError: it is another class.
    """
    event = envelope.data
    if not isinstance(event, event_type):
        raise TypeError(f"event {envelope.id} is a {type(event).__name__}, not "
                        f"{event_type.__name__}")
    return event


def nats_servers(url: str) -> list[str]:
    """The servers a ``nats_url`` setting names: one URL, or several comma-separated (the
    nodes of a cluster)."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise ValueError("nats_url names no NATS server")
    return servers


# How often a connection PINGs its server, and how many PINGs may go unanswered before it
# counts the connection as dead and reconnects: a dead connection is found within about
# (PINGS_UNANSWERED + 1) * PING_INTERVAL_S, not nats.py's default of six minutes.
PING_INTERVAL_S = 10
PINGS_UNANSWERED = 2
# Pause between connection attempts whose handshake nats.py left half-done (open_nats).
HANDSHAKE_RETRY_S = 0.5


async def open_nats(servers: list[str], **options: object) -> NATS:
    """``nats.connect(servers, **options)``, connected for certain.

    nats.py sends CONNECT and a PING, and counts the connection made only if the next line
    the server sends is its PONG. A server slow to check the password (bcrypt, while many
    clients connect at once on a busy machine) sends its own first PING, two seconds after
    the client came, ahead of that PONG. nats.py then returns a client that stays
    "connecting" for good: its flusher has stopped, and nothing it publishes or requests
    ever leaves the process. Such a client is closed, and the connection made again.
    """
    options = {"ping_interval": PING_INTERVAL_S, "max_outstanding_pings": PINGS_UNANSWERED,
               **options}
    for attempt in itertools.count(1):
        nc = await nats.connect(servers, **options)
        if nc.is_connected:
            return nc
        url = nc.connected_url
        log.warning("NATS%s answered the handshake with its own PING before the PONG (a "
                    "busy server); nats.py leaves such a connection unusable: connecting "
                    "again (attempt %d)",
                    f" at {url.netloc.rsplit('@', 1)[-1]}" if url else "", attempt + 1)
        await nc.close()
        await asyncio.sleep(HANDSHAKE_RETRY_S)
    raise AssertionError("unreachable")


# The stream replicas each connection's settings ask for (``nats_replicas``), read by
# ensure_events_stream through the JetStream context made from the connection.
_replicas: weakref.WeakKeyDictionary[NATS, int] = weakref.WeakKeyDictionary()


async def connect(
    settings: Settings,
    name: str,
    *,
    on_state: Callable[[str | None], None] | None = None,
) -> NATS:
    """Connect to NATS, reconnecting forever; ``on_state(None)`` when up, else the reason.

    ``settings.nats_url`` may name every server of a cluster: the client connects to one
    and, when it goes away, to another (it learns of nodes added later from the servers).
    """

    connected = [False]
    client: list[NATS] = []

    def report(state: str | None) -> None:
        connected[0] = state is None
        if on_state is not None:
            on_state(state)

    async def disconnected() -> None:
        closing = bool(client) and (client[0].is_draining or client[0].is_closed)
        if connected[0] and not closing:
            log.warning("lost the connection to NATS; reconnecting")
            report("disconnected, reconnecting")

    async def reconnected() -> None:
        url = client[0].connected_url if client else None
        log.info("reconnected to NATS%s", f" at {url.netloc.rsplit('@', 1)[-1]}" if url else "")
        report(None)

    async def error(exc: Exception) -> None:
        log.warning("NATS: %s: %s", type(exc).__name__, exc)
        if not client:
            # nats.py keeps retrying the first connection by itself, once a second.
            report(f"unreachable: {type(exc).__name__}: {exc}")

    options: dict[str, object] = {}
    if settings.nats_user:
        # Replies (JetStream's included) come to this identity's own inbox prefix, the only
        # inboxes its permissions let it read (shared.natsauth).
        options.update(user=settings.nats_user, password=settings.nats_password,
                       inbox_prefix=f"_INBOX.{settings.nats_user}")
    nc = await open_nats(
        nats_servers(settings.nats_url),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        **options,
    )
    client.append(nc)
    _replicas[nc] = max(1, settings.nats_replicas)
    report(None)
    return nc


# How long ensure_events_stream waits for JetStream to answer while a cluster elects a
# leader (a node died, or the cluster is forming).
JETSTREAM_READY_TIMEOUT_S = 60.0
_NOT_READY = (ServiceUnavailableError, nats.errors.TimeoutError, nats.errors.NoRespondersError,
              nats.errors.ConnectionReconnectingError)


async def ensure_events_stream(js: JetStreamContext, replicas: int | None = None) -> None:
    """Create (or update) the JetStream stream every event is published to.

    It is kept on ``replicas`` servers (default: the ``nats_replicas`` setting the
    connection was made with, see ``connect``). An existing stream with fewer replicas is
    scaled up if JetStream allows it (a cluster of enough nodes); if it does not, the stream
    keeps what it has and the error says why. One with more is left as it is. While the
    cluster has no leader to answer (an election after a node died), it tries again, for up
    to ``JETSTREAM_READY_TIMEOUT_S``.
    """
    wanted = replicas if replicas is not None else _replicas.get(js._nc, 1)
    config = api.StreamConfig(
        name=subjects.EVENTS_STREAM,
        subjects=[subjects.ALL_EVENTS],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=max(1, wanted),
    )
    deadline = time.monotonic() + JETSTREAM_READY_TIMEOUT_S
    while True:
        try:
            await _ensure_stream(js, config)
            return
        except _NOT_READY as exc:
            if time.monotonic() > deadline:
                raise
            log.info("JetStream not answering yet (%s: %s); trying again", type(exc).__name__,
                     exc)
            await asyncio.sleep(0.5)


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    wanted = config.num_replicas or 1
    try:
        info = await js.stream_info(subjects.EVENTS_STREAM)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except ServiceUnavailableError:
            raise
        except APIError as exc:
            if wanted == 1:
                raise
            log.error("JetStream refused the %s stream with %d replicas (%s); creating it with "
                      "1: set nats_replicas to at most the cluster's size", config.name,
                      wanted, exc.description or exc)
            await js.add_stream(dataclasses.replace(config, num_replicas=1))
            return
    have = info.config.num_replicas or 1
    if have > wanted:
        log.info("the %s stream keeps its %d replicas (nats_replicas asks for %d)",
                 config.name, have, wanted)
    target = max(have, wanted)
    try:
        await js.update_stream(dataclasses.replace(config, num_replicas=target))
    except ServiceUnavailableError:
        raise
    except APIError as exc:
        if target == have:
            raise
        log.error("JetStream refused to scale the %s stream from %d to %d replicas (%s); it "
                  "keeps %d", config.name, have, target, exc.description or exc, have)
        await js.update_stream(dataclasses.replace(config, num_replicas=have))
    else:
        if target != have:
            log.info("scaled the %s stream from %d to %d replicas", config.name, have, target)


class _Route(msgspec.Struct):
    stream_id: str = ""


def _stream_of(msg: Msg) -> str:
    try:
        return msgspec.json.decode(msg.data, type=_Route).stream_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


class Outcome(StrEnum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"  # handled before: its inbox row exists
    IGNORED = "ignored"  # no handler for the stored event's type
    UNKNOWN = "unknown"  # no stored event has that id
    RETRY = "retry"  # failed, or raced other writers too often: deliver again later
    ABANDONED = "abandoned"  # failed on its last attempt, and settled as failed
    UNRECORDED = "unrecorded"  # failed on its last attempt; the give-up could not be recorded


@dataclass(frozen=True)
class Dispatched:
    outcome: Outcome
    event_type: str
    retry_after: float = 0.0


class Dispatcher:
    """Runs one consumer's handlers against the store, whatever brings the event ids: the
    NATS ``Consumer`` in a service, or a test delivering in process.

    For one delivery attempt of one event: read the stored event and whether this consumer
    handled it (a duplicate is skipped); run its handler; commit the handler's appends with
    the consumer's inbox row in one transaction (``Store.commit``), rerunning the handler
    when another writer moved one of its streams first; on the last attempt, settle the
    work as failed (``shared.domain.abandon``) instead of retrying.
    """

    def __init__(self, name: str, store: Store, handlers: Mapping[str, Handler], *,
                 max_deliver: int = 20, handler_timeout: float = 900.0) -> None:
        self.name = name
        self.store = store
        self.handlers = handlers
        self.max_deliver = max_deliver
        self.handler_timeout = handler_timeout
        self._batches: dict[str, _Batches] = {}

    async def dispatch(self, event_id: str, attempt: int,
                       claimed_type: str | None = None) -> Dispatched:
        """Handle the stored event ``event_id``, on its ``attempt``-th delivery (from 1).
        A message that says it is of a type whose handler decides on its stream
        (``Handlers.on_stream``) has that stream read with the event; what the store holds
        decides which handler runs either way."""
        streamed = self.handlers.streamed if isinstance(self.handlers, Handlers) else {}
        stream: list[RecordedEvent] | None = None
        if claimed_type in streamed:
            stored, seen, stream = await self.store.stored_with_stream(event_id, self.name)
        else:
            stored, seen = await self.store.stored(event_id, self.name)
        if stored is None:
            log.error("dropped a message naming no stored event (%s)", event_id[:64])
            return Dispatched(Outcome.UNKNOWN, "")
        envelope = stored.envelope()
        handler = self.handlers.get(envelope.type)
        with correlation(envelope.metadata.correlation_id):
            if handler is None:
                return Dispatched(Outcome.IGNORED, envelope.type)
            if seen:
                return Dispatched(Outcome.DUPLICATE, envelope.type)
            given = streamed.get(envelope.type)
            first = None if given is None or stream is None else \
                functools.partial(given, envelope, stream)
            try:
                done = await self._handle(handler, envelope, first)
            except ConcurrencyError as exc:
                if attempt >= self.max_deliver:
                    return await self._give_up(envelope, exc, attempt)
                # Others kept moving the stream on: run again later against the new state.
                log.info("handler for %s %s raced other writers: %s", envelope.type,
                         envelope.id, exc)
                return Dispatched(Outcome.RETRY, envelope.type, random.uniform(0.05, 0.5))
            except Exception as exc:
                metrics.HANDLER_FAILURES.labels(self.name, envelope.type).inc()
                if attempt >= self.max_deliver:
                    return await self._give_up(envelope, exc, attempt)
                log.exception("handler for %s %s failed (attempt %s of %s)", envelope.type,
                              envelope.id, attempt, self.max_deliver)
                return Dispatched(Outcome.RETRY, envelope.type,
                                  min(30.0, 0.5 * 2 ** min(attempt, 6)))
        return Dispatched(Outcome.HANDLED if done else Outcome.DUPLICATE, envelope.type)

    async def _handle(self, handler: Handler, envelope: EventEnvelope,
                      first: Callable[[], Awaitable[Sequence[Append]]] | None = None) -> bool:
        """Run the handler and commit, rerunning it when another writer got there first;
        both under the handler's lock if it has one (``Handlers.on``, ``serial``), with the
        other events waiting for it if it decides several at once (``Handlers.on_many``).
        ``first``, if given, is the first run (the handler with what was read with the
        event: ``Handlers.on_stream``); a rerun reads anew."""
        handlers = self.handlers if isinstance(self.handlers, Handlers) else None
        lock = handlers.serial.get(envelope.type) if handlers else None
        many = handlers.batched.get(envelope.type) if handlers else None
        for conflicts in itertools.count(1):
            try:
                if many is not None and lock is not None:
                    batches = self._batches.get(envelope.type)
                    if batches is None:
                        batches = self._batches[envelope.type] = _Batches(self, many, lock)
                    return await batches.decide(envelope)
                async with self.store.decision_lock(lock) if lock else contextlib.nullcontext():
                    async with asyncio.timeout(self.handler_timeout):  # not wait_for: see follow()
                        appends = await (first() if first is not None and conflicts == 1
                                         else handler(envelope))
                    return await self._commit(envelope, appends)
            except ConcurrencyError:
                if conflicts >= CONFLICT_RETRIES:
                    raise
                await asyncio.sleep(random.uniform(0, min(1.0, 0.01 * 2 ** conflicts)))
        raise AssertionError("unreachable")

    async def _give_up(self, envelope: EventEnvelope, exc: Exception,
                       attempt: int) -> Dispatched:
        """The last attempt failed: settle the work as failed, or leave it to the log."""
        reason = f"gave up after {attempt} attempts: {type(exc).__name__}: {exc}"
        log.error("handler for %s %s failed on its last attempt; %s", envelope.type,
                  envelope.id, reason, exc_info=exc)
        try:
            history = [e.event() for e in await self.store.read_stream(envelope.stream_id)]
            events = abandoned(history, envelope.data, reason)
            await self._commit(envelope, [Append(envelope.stream_id, events)] if events else [])
        except Exception:
            log.exception("could not record the failure of %s %s; leaving it to redelivery",
                          envelope.type, envelope.id)
            return Dispatched(Outcome.UNRECORDED, envelope.type, 30.0)
        return Dispatched(Outcome.ABANDONED, envelope.type)

    async def _commit(self, cause: EventEnvelope, appends: Sequence[Append]) -> bool:
        """Record the handled event and append its results; False if already recorded."""
        group = self.group(cause, appends)
        return await self.store.commit(group.appends, group.metadata,
                                       inbox=group.inbox) is not None

    def group(self, cause: EventEnvelope, appends: Sequence[Append]) -> Group:
        """The commit that records the handled event ``cause`` and appends its results."""
        metadata = Metadata(
            correlation_id=cause.metadata.correlation_id,
            causation_id=cause.id,
            actor=self.name,
            account_id=cause.metadata.account_id,
        )
        return Group(appends, metadata, (self.name, cause.id))


class _Batches:
    """The events of one type, decided several at once (``Handlers.on_many``), waiting in
    this process for their lock: one task takes the lock, decides those waiting (up to
    ``MAX_BATCH``) and commits them, then the next ones, while any wait."""

    def __init__(self, dispatcher: Dispatcher, handler: BatchHandler, lock: str) -> None:
        self.dispatcher = dispatcher
        self.handler = handler
        self.lock = lock
        self._waiting: list[tuple[EventEnvelope, asyncio.Future[bool]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def decide(self, envelope: EventEnvelope) -> bool:
        """Decide and commit ``envelope``'s event with the others waiting; False if its
        inbox row existed.

        Raises:
            ConcurrencyError: its commit met a stream moved on (it alone is undone).
            Exception: what deciding it raised.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((envelope, future))
        if self._runner is None or self._runner.done():
            # Its own task (a waiter cancelled, its message handed back, leaves the rest
            # be), in a context of its own (not the first waiter's correlation id).
            self._runner = asyncio.create_task(self._run(), context=contextvars.Context())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            try:
                async with self.dispatcher.store.decision_lock(self.lock):
                    # Those that came while a batch was decided are the next batch, in
                    # the same turn (the lock kept, up to TURN_BATCHES in a row).
                    for _ in range(TURN_BATCHES):
                        batch = [w for w in self._waiting[:MAX_BATCH] if not w[1].done()]
                        del self._waiting[:MAX_BATCH]
                        if batch:
                            await self._decide(batch)
                        if not self._waiting:
                            break
            except BaseException as exc:
                # The lock was not to be had: every waiter sees why (and tries again).
                waiting, self._waiting = self._waiting, []
                for _, future in waiting:
                    _settle(future, exc)
                if not isinstance(exc, Exception):
                    raise

    async def _decide(self, batch: list[tuple[EventEnvelope, asyncio.Future[bool]]]) -> None:
        dispatcher = self.dispatcher
        futures: list[asyncio.Future[bool]] = []
        try:
            async with asyncio.timeout(dispatcher.handler_timeout):
                decided = await self.handler([envelope for envelope, _ in batch])
            groups = []
            for (envelope, future), outcome in zip(batch, decided, strict=True):
                if isinstance(outcome, Exception):
                    _settle(future, outcome)
                else:
                    groups.append(dispatcher.group(envelope, outcome))
                    futures.append(future)
            committed = await dispatcher.store.commit_all(groups) if groups else []
        except BaseException as exc:
            for _, future in batch:
                _settle(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result in zip(futures, committed, strict=True):
            _settle(future, result if isinstance(result, BaseException) else result is not None)


def _settle(future: asyncio.Future[bool], outcome: bool | BaseException) -> None:
    """Give a waiter its outcome, unless it stopped waiting; an error shared by several
    waiters (the batch's) as a copy of its own for each, caused by it, so that raising it
    in one does not add to the others' tracebacks."""
    if future.done():
        return
    if isinstance(outcome, asyncio.CancelledError):
        future.cancel()
    elif isinstance(outcome, BaseException):
        future.set_exception(_own(outcome))
    else:
        future.set_result(outcome)


def _own(error: BaseException) -> BaseException:
    try:
        mine = copy.copy(error)
    except Exception:
        return error
    mine.__cause__ = error
    return mine


class Consumer:
    """A durable pull consumer that runs one handler per event type, exactly once in effect.

    Each message is handed to a ``Dispatcher`` with its delivery count: a handler that
    fails is retried with backoff; on the last delivery attempt the work is settled as
    failed, so no VM or job waits forever. While a handler runs, the message is kept from
    redelivery; a handler running past ``handler_timeout`` counts as failed. Once
    ``stopping`` is set the consumer takes no new messages and ``run`` returns when those
    in hand are done; if it is cancelled first, the messages in hand are handed back to
    NATS for redelivery at once.
    """

    def __init__(
        self,
        name: str,
        js: JetStreamContext,
        store: Store,
        handlers: Mapping[str, Handler],
        *,
        ack_wait: float = ACK_WAIT_S,
        max_deliver: int = 20,
        batch: int = 64,
        handler_timeout: float = 900.0,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.js = js
        self.store = store
        self.handlers = handlers
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.batch = batch
        self.dispatcher = Dispatcher(name, store, handlers, max_deliver=max_deliver,
                                     handler_timeout=handler_timeout)
        self.stopping = stopping or asyncio.Event()

    def config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.name,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            # JetStream never drops a message: the consumer gives up by itself after
            # max_deliver attempts (and if even that cannot be recorded, tries again later).
            max_deliver=-1,
            filter_subjects=[subjects.event_filter("*", t) for t in sorted(self.handlers)],
        )

    async def run(self) -> None:
        """Fetch and handle messages until ``stopping`` is set (or cancelled)."""
        # The relay creates the stream (a service's NATS identity may not): wait for it.
        waiting = False
        while True:
            try:
                await self.js.stream_info(subjects.EVENTS_STREAM)
                break
            except NotFoundError:
                if not waiting:
                    log.info("consumer %s waiting for the relay to create the %s stream",
                             self.name, subjects.EVENTS_STREAM)
                    waiting = True
                if self.stopping.is_set():
                    return
                await asyncio.sleep(0.5)
        # add_consumer creates the durable or updates it to the current handler set.
        await self.js.add_consumer(subjects.EVENTS_STREAM, self.config())
        sub = await self.js.pull_subscribe_bind(self.name, stream=subjects.EVENTS_STREAM)
        log.info("consumer %s handling %s", self.name, ", ".join(sorted(self.handlers)))
        this = asyncio.current_task()
        # Up to ``batch`` messages in hand at once; more are fetched as soon as any is
        # done, not when a whole fetched batch is (one slow clone must not hold the rest).
        # One message per pull request: nats.py's fetch of several waits, once one has come,
        # until the rest come or its timeout passes, so a lone message would wait up to
        # FETCH_WAIT_S before its handler starts.
        in_hand: set[asyncio.Task[None]] = set()
        last_of: dict[str, asyncio.Task[None]] = {}  # per stream, the message taken last
        try:
            while not self.stopping.is_set():
                if this is not None and this.cancelling():
                    # Cancelled, but a library call (nats.py's fetch waits with wait_for)
                    # swallowed the CancelledError: stop anyway.
                    raise asyncio.CancelledError
                if len(in_hand) >= self.batch:
                    await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await sub.fetch(1, timeout=FETCH_WAIT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                # Messages of different streams run concurrently (their writes meet only
                # through expected versions); those of one stream in the order they came,
                # each once the one before it is done.
                for msg in messages:
                    stream = _stream_of(msg)
                    task = asyncio.ensure_future(self._after(last_of.get(stream), msg))
                    last_of[stream] = task
                    in_hand.add(task)
                    task.add_done_callback(functools.partial(_done, in_hand, last_of, stream))
            if in_hand:
                await asyncio.wait(in_hand)  # stopping: finish what is in hand
        except BaseException:
            # Cancelled (or failing): what is in hand goes back to NATS at once, once this
            # subscription is gone (NATS hands a message back to a pull request still open,
            # and drops one whose subscriber is gone).
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            for task in in_hand:
                task.cancel()
            await asyncio.gather(*in_hand, return_exceptions=True)
            raise
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        log.info("consumer %s stopped taking messages", self.name)

    async def _after(self, previous: asyncio.Task[None] | None, msg: Msg) -> None:
        """Handle ``msg`` once ``previous`` (its stream's message before it) is done;
        handed back to NATS if cancelled first."""
        try:
            if previous is not None:
                await asyncio.wait({previous})
            await self.process(msg)
        except asyncio.CancelledError:
            await asyncio.shield(_hand_back([msg]))
            raise

    async def process(self, msg: Msg) -> None:
        """Handle one message: skip it if seen, else run the handler and commit."""
        started = time.monotonic()
        try:
            envelope = decode_envelope(msg.data)
        except MalformedMessage as exc:
            metrics.MALFORMED_MESSAGES.labels(self.name).inc()
            log.error("rejected a malformed message on %s: %s", msg.subject, exc)
            await msg.term()
            return
        if envelope.type not in self.handlers:
            await msg.ack()
            metrics.MESSAGES_HANDLED.labels(self.name, envelope.type, "ignored").inc()
            return
        attempt = msg.metadata.num_delivered if msg.metadata else 1
        result = await self._keep_alive(msg, self.dispatcher.dispatch(envelope.id, attempt,
                                                                      envelope.type))
        event_type = result.event_type or envelope.type
        match result.outcome:
            case Outcome.UNKNOWN | Outcome.ABANDONED:
                await msg.term()
            case Outcome.RETRY | Outcome.UNRECORDED:
                await msg.nak(delay=result.retry_after)
                return
            case _:
                await msg.ack()
        metrics.MESSAGES_HANDLED.labels(self.name, event_type, result.outcome.value).inc()
        if result.outcome is Outcome.HANDLED:
            metrics.HANDLE_SECONDS.labels(self.name, event_type).observe(
                time.monotonic() - started)

    async def _keep_alive(self, msg: Msg, work: Awaitable[Dispatched]) -> Dispatched:
        """Await ``work``, telling NATS it is in progress so it is not redelivered meanwhile."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.ack_wait / 3)
                if done:
                    return task.result()
                with contextlib.suppress(Exception):
                    await msg.in_progress()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _done(in_hand: set[asyncio.Task[None]], last_of: dict[str, asyncio.Task[None]],
          stream: str, task: asyncio.Task[None]) -> None:
    in_hand.discard(task)
    if last_of.get(stream) is task:
        del last_of[stream]
    if not task.cancelled() and task.exception() is not None:
        # process() settles its own failures; this is NATS failing under it (an ack lost
        # with the connection): the message comes back after the ack wait.
        log.warning("a message was left unsettled: %s: %s", type(task.exception()).__name__,
                    task.exception())


async def _hand_back(messages: list[Msg]) -> None:
    """Return messages not yet done to NATS for immediate redelivery (on shutdown)."""
    for msg in messages:
        with contextlib.suppress(Exception):
            await msg.nak()


async def close(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await nc.drain()
