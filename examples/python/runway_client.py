#!/usr/bin/env python3
"""A runway client in Python: queue a job, follow it, cancel it, read its log.

Written from docs/PROTOCOL.md alone, with pika (AMQP 0-9-1); the comments name the sections of
that page each step follows. It is a small library (`Client`) and a command line:

    runway_client.py [--server URL] [--namespace NS] submit [--project NAME] [--runner ID | --label K=V ...]
                     [--env K=V ...] [--timeout SECONDS] [--detach] OPERATION 'SHELL COMMAND' [ARG ...]
    runway_client.py follow JOB_ID      # live to the end, exits with the job's exit code
    runway_client.py logs JOB_ID        # the stored log of a job, from the history stream
    runway_client.py cancel [--force] JOB_ID

It does not run jobs (a runway-worker does) and does not declare the topology (a runner does).
"""

import argparse
import base64
import datetime
import getpass
import json
import os
import socket
import sys
import time
import uuid

import pika

VERSION = 1
SEEK_SLACK_MS = 5_000  # "Reading a stream": seek this much before the job was created
STALL_SECONDS = 5  # a stream read that gets nothing this long appends its marker again

# Exit codes, the same as the runway CLI's.
NO_SUCH_JOB, NO_RUNNER, BROKER_UNAVAILABLE, LOST = 67, 68, 69, 75
EXIT_FOR_STATUS = {"success": 0, "cancelled": 130, "timed_out": 124, "lost": LOST, "rejected": 76}


class RunwayError(Exception):
    """A failure before the job could finish, with the exit code that says which."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def now_ms():
    return time.time_ns() // 1_000_000


def uuid7(ms):
    """A UUID v7: 48 bits of milliseconds, then version, random bits and variant ("Job")."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def uuid7_ms(job_id):
    return uuid.UUID(job_id).int >> 80


def new_job(operation, project, shell, args=(), env=None, target="any", timeout_ms=None):
    """A job body ("Job"); `target` is "any", {"runner": ID} or {"labels": {K: V}}."""
    created = now_ms()
    return {
        "v": VERSION,
        "id": uuid7(created),
        "operation": operation,
        "project": project,
        "command": {"shell": shell},
        "args": list(args),
        "env": dict(env or {}),
        "workdir": os.getcwd(),
        "timeout_ms": timeout_ms,
        "kill_grace_ms": None,
        "target": target,
        "retry_on_lost": False,
        "attempt": 1,
        "created_at_ms": created,
        "queued_by": f"{getpass.getuser()}@{socket.gethostname()}",
    }


def routing_key(target):
    """See "Names": `any`, `runner.<id>` or `labels.<k=v,...>`; an empty label set is `any`."""
    if isinstance(target, dict) and "runner" in target:
        return f"runner.{target['runner']}"
    if isinstance(target, dict) and target.get("labels"):
        return "labels." + ",".join(f"{key}={value}" for key, value in sorted(target["labels"].items()))
    return "any"


def job_queue(ns, target):
    """The queue a job for `target` waits in."""
    key = routing_key(target)
    return f"{ns}.{key}" if key.startswith("runner.") else f"{ns}.jobs.{key}"


def describe(target):
    key = routing_key(target)
    if key == "any":
        return "any runner"
    if key.startswith("runner."):
        return f"runner `{target['runner']}`"
    return key.replace("labels.", "labels ", 1)


class Client:
    """One connection to RabbitMQ, in one runway namespace."""

    def __init__(self, url, namespace="runway"):
        self.ns = namespace
        self.parameters = pika.URLParameters(url)
        # Every publish carries the login as `user_id` (see "AMQP properties"): runners run only
        # jobs whose submitter the broker verified.
        self.user_id = self.parameters.credentials.username
        try:
            self.connection = pika.BlockingConnection(self.parameters)
        except pika.exceptions.AMQPConnectionError as err:
            raise RunwayError(f"cannot reach the broker: {err!r}", BROKER_UNAVAILABLE) from err
        self.channel = self.connection.channel()
        # Publisher confirms: basic_publish returns once the broker has the message, and raises
        # UnroutableError when a `mandatory` message came back (basic.return).
        self.channel.confirm_delivery()
        self.check_topology()

    def check_topology(self):
        """See "Checking the topology": one passive declaration says all the rest is there."""
        probe = self.connection.channel()  # a failed passive declaration closes its channel
        try:
            probe.exchange_declare(f"{self.ns}.topology.v2", passive=True)
        except pika.exceptions.ChannelClosedByBroker as err:
            raise RunwayError(
                f"namespace `{self.ns}` has no runway topology ({err.reply_text}): start a runway-worker "
                "or run any runway command in it first",
                BROKER_UNAVAILABLE,
            ) from err
        probe.close()

    def close(self):
        self.connection.close()

    # Queuing a job

    def submit(self, job):
        """Queue `job`; returns the queue its events arrive in. Raises RunwayError when no
        runner serves its target (the job came back unroutable)."""
        events = self.bind_events(job["id"])
        queued = {key: job[key] for key in ("operation", "project", "command", "args", "target")}
        queued.update(env_keys=sorted(job["env"]), timeout_ms=job["timeout_ms"],
                      retry_on_lost=job["retry_on_lost"], queued_by=job["queued_by"],
                      created_at_ms=job["created_at_ms"])
        self.publish_event(job["id"], "queued", queued)
        properties = pika.BasicProperties(
            content_type="application/json", type="job", message_id=job["id"], correlation_id=job["id"],
            timestamp=job["created_at_ms"] // 1000, delivery_mode=2, user_id=self.user_id)
        try:
            self.channel.basic_publish(f"{self.ns}.jobs", routing_key(job["target"]), json.dumps(job).encode(),
                                       properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            message = (f"no runner serves {describe(job['target'])}: no queue is bound for it, "
                       f"so job {job['id']} was not queued")
            # Recorded, so the history does not show the job queued for ever.
            self.publish_event(job["id"], "completed", {"status": "rejected", "exit_code": None, "signal": None,
                                                        "duration_ms": 0, "outputs": {}, "error": message})
            raise RunwayError(message, NO_RUNNER) from None
        return events

    def bind_events(self, job_id):
        """An exclusive queue bound to every event of one job: bind it before publishing."""
        queue = self.channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self.channel.queue_bind(queue, f"{self.ns}.events", f"job.{job_id}.#")
        return queue

    def publish_event(self, job_id, kind, data, attempt=1):
        """An event of the producer's own: `seq` 0, no runner ("Event")."""
        event = {"v": VERSION, "job": job_id, "seq": 0, "ts": now_ms(), "runner": "", "attempt": attempt,
                 "body": {"kind": kind, "data": data}}
        properties = pika.BasicProperties(
            content_type="application/json", type=kind, message_id=f"{job_id}.{attempt}.0",
            correlation_id=job_id, timestamp=event["ts"] // 1000, delivery_mode=2, user_id=self.user_id)
        self.channel.basic_publish(f"{self.ns}.events", f"job.{job_id}.{kind}", json.dumps(event).encode(),
                                   properties)

    def waiting_in(self, target):
        """See "Telling a queue nobody consumes": the job's queue and its consumer count."""
        queue = job_queue(self.ns, target)
        probe = self.connection.channel()  # a failed passive declaration closes its channel
        try:
            return queue, probe.queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return queue, 0
        finally:
            if probe.is_open:
                probe.close()

    # Cancelling

    def cancel(self, job_id, force=False):
        """See "Control": record who asked, then tell every runner."""
        by = f"{getpass.getuser()}@{socket.gethostname()}"
        self.publish_event(job_id, "cancel_requested", {"by": by, "force": force})
        control = {"v": VERSION, "body": {"kind": "cancel", "data": {"job": job_id, "force": force}}}
        properties = pika.BasicProperties(content_type="application/json", type="control", user_id=self.user_id)
        self.channel.basic_publish(f"{self.ns}.control", "cancel", json.dumps(control).encode(), properties)

    # Following a job

    def live(self, queue):
        """The events that arrive in `queue`, decoded; checks for silence every second."""
        for method, properties, body in self.channel.consume(queue, inactivity_timeout=1.0):
            if method is None:
                yield None  # a second without events
                continue
            self.channel.basic_ack(method.delivery_tag)
            yield json.loads(body)

    def history(self, job_id):
        """The stored events of one job, from NS.history up to now ("Reading a stream")."""
        stream = f"{self.ns}.history"
        # A connection of its own: pika rejects the deliveries it still holds when a consumer
        # ends, and RabbitMQ answers a reject on a stream by closing the connection (540).
        connection = pika.BlockingConnection(self.parameters)
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=64)  # a stream consumer without a prefetch is refused (406)
            start = (uuid7_ms(job_id) - SEEK_SLACK_MS) / 1000
            # A datetime is sent as an AMQP timestamp; an integer would be taken as an offset.
            offset = datetime.datetime.fromtimestamp(start, tz=datetime.timezone.utc)
            marker = self.mark(stream)
            for method, properties, body in channel.consume(stream, arguments={"x-stream-offset": offset},
                                                             inactivity_timeout=STALL_SECONDS):
                if method is None:
                    self.mark(stream, marker)  # the read stalled: append the same marker again
                    continue
                channel.basic_ack(method.delivery_tag)  # streams need manual acks to give credit back
                if properties.type == "marker":
                    if properties.message_id == marker:
                        return
                elif properties.correlation_id == job_id:
                    yield json.loads(body)
        finally:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                pass  # the 540 above: this connection was done anyway

    def mark(self, stream, marker=None):
        """Append a marker to `stream`: a reader that meets it has read all stored before."""
        marker = marker or f"marker.{uuid.uuid4()}"
        properties = pika.BasicProperties(content_type="application/json", type="marker", message_id=marker)
        self.channel.basic_publish("", stream, b"{}", properties, mandatory=True)
        return marker


class Printer:
    """Prints one job's events as the runway CLI does; keeps each runner event once."""

    def __init__(self, operation="job", status=True):
        self.operation, self.status = operation, status
        self.seen = set()  # (attempt, seq) of runner events printed: "Skipping duplicates"
        self.last_seen_ms, self.heartbeat_ms, self.accepted = 0, 5000, False

    def say(self, line):
        if self.status:
            print(f"runway: {line}", file=sys.stderr, flush=True)

    def event(self, event):
        """Print one event; returns its `completed` data when the job ended."""
        key = (event["attempt"], event["seq"])
        if event["seq"] > 0:
            if key in self.seen:
                return None
            self.seen.add(key)
            self.last_seen_ms = max(self.last_seen_ms, event["ts"])
        kind, data = event["body"]["kind"], event["body"]["data"]
        if kind == "queued":
            self.operation = data["operation"]
        elif kind == "accepted":
            self.accepted, self.heartbeat_ms = True, data["heartbeat_ms"]
            self.say(f"{self.operation} accepted by runner {event['runner']} on {data['hostname']}")
        elif kind == "started":
            self.say(f"{self.operation} started (pid {data['pid']}, attempt {event['attempt']})")
        elif kind == "log":
            for line in data["lines"]:
                text = base64.b64decode(line["l"]) if line.get("b64") else line["l"].encode()
                pipe = sys.stdout.buffer if line["s"] == "out" else sys.stderr.buffer
                pipe.write(text if line.get("p") else text + b"\n")
                pipe.flush()
        elif kind == "completed":
            self.finished(data)
            return data
        return None  # heartbeat, output (repeated in `completed`), cancel_requested, and kinds to come

    def finished(self, completed):
        took = f"{completed['duration_ms'] / 1000:.2f}s"
        status, code = completed["status"], completed.get("exit_code")
        if status == "success":
            line = f"{self.operation} succeeded in {took}"
        elif status == "failed" and code is not None:  # exit_code may be null
            line = f"{self.operation} failed with exit code {code} after {took}"
        else:
            line = f"{self.operation} ended {status} after {took}"
        if status != "success" and completed.get("error"):
            line += f": {completed['error']}"
        self.say(line)
        for key, value in sorted(completed.get("outputs", {}).items()):
            self.say(f"output {key}={value}")

    def silent(self):
        """See "The lost rule": no event from the runner for three heartbeat intervals."""
        return self.accepted and now_ms() - self.last_seen_ms > 3 * self.heartbeat_ms


def exit_code(completed):
    if completed["status"] == "failed":
        code = completed.get("exit_code")
        return code if code and 0 < code < 256 else 1
    return EXIT_FOR_STATUS[completed["status"]]


def follow(client, queue, printer, job_id, history=False):
    """Print the job's events to its end; `history` first reads what is stored already."""
    if history:
        for event in client.history(job_id):
            if (completed := printer.event(event)) is not None:
                return exit_code(completed)
    for event in client.live(queue):
        if event is None:
            if printer.silent():
                printer.say(f"job {job_id} lost: its runner went silent")
                return LOST
        elif (completed := printer.event(event)) is not None:
            return exit_code(completed)


def main(argv=None):
    parser = argparse.ArgumentParser(description="A runway client in Python (see docs/PROTOCOL.md).")
    parser.add_argument("--server", default=os.environ.get("RUNWAY_SERVER", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--namespace", default=os.environ.get("RUNWAY_NAMESPACE", "runway"))
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="queue a shell command as a job and follow it")
    submit.add_argument("operation")
    submit.add_argument("shell")
    submit.add_argument("args", nargs="*")
    submit.add_argument("--project", default=os.path.basename(os.getcwd()))
    submit.add_argument("--runner")
    submit.add_argument("--label", action="append", default=[], metavar="K=V")
    submit.add_argument("--env", action="append", default=[], metavar="K=V")
    submit.add_argument("--timeout", type=float, metavar="SECONDS")
    submit.add_argument("--detach", action="store_true", help="print the job id and exit once it is queued")
    for name, text in [("follow", "follow a job live to its end"), ("logs", "print a job's stored log")]:
        commands.add_parser(name, help=text).add_argument("job")
    cancel = commands.add_parser("cancel", help="stop a job")
    cancel.add_argument("job")
    cancel.add_argument("--force", action="store_true")
    options = parser.parse_args(argv)
    try:
        client = Client(options.server, options.namespace)
        try:
            return run(client, options)
        finally:
            client.close()
    except RunwayError as err:
        print(f"runway: {err}", file=sys.stderr)
        return err.exit_code
    except pika.exceptions.AMQPError as err:
        print(f"runway: the broker failed: {err!r}", file=sys.stderr)
        return BROKER_UNAVAILABLE


def run(client, options):
    if options.command == "submit":
        target = "any"
        if options.runner:
            target = {"runner": options.runner}
        elif options.label:
            target = {"labels": dict(pair.split("=", 1) for pair in options.label)}
        timeout_ms = None if options.timeout is None else int(options.timeout * 1000)
        job = new_job(options.operation, options.project, options.shell, options.args,
                      dict(pair.split("=", 1) for pair in options.env), target, timeout_ms)
        queue = client.submit(job)
        if options.detach:
            print(job["id"])
            return 0
        printer = Printer(job["operation"])
        printer.say(f"queued {job['operation']} as job {job['id']}")
        waiting, consumers = client.waiting_in(target)
        if consumers == 0:
            printer.say(f"no runner consumes queue `{waiting}` now (none is up, or all are busy): the job waits")
        return follow(client, queue, printer, job["id"])
    if options.command == "cancel":
        client.cancel(options.job, options.force)
        print(f"runway: cancel requested for job {options.job}", file=sys.stderr)
        return 0
    queue = client.bind_events(options.job) if options.command == "follow" else None
    printer = Printer(status=options.command == "follow")
    if options.command == "follow":
        return follow(client, queue, printer, options.job, history=True)
    events = list(client.history(options.job))
    if not events:
        raise RunwayError(f"no job {options.job} in the history", NO_SUCH_JOB)
    for event in events:
        printer.event(event)
    return 0


if __name__ == "__main__":
    sys.exit(main())
