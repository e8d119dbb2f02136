#!/usr/bin/env python3
"""Where an SMTP reply waits: splitmx's reply latencies from a `perf trace` of the gateway.

    perf trace -e recvfrom,sendto,fdatasync -o trace.txt -p PID -- sleep 1
    benches/reply-latency.py trace.txt

Run it while `benches/e2e-vs-postfix.sh` (or any load) drives the gateway. For each client
connection (a socket that received more than 3,000 bytes at once: message data), it
measures the time from the read that ended a command to the write of its reply: the final
dot to its `250` apart from the other commands. For each connection to a next hop (a
socket that sent more than 3,000 bytes) the time from a write to the next reply read, and
for the spool the time each `fdatasync` took. Prints median, 90th percentile and mean.

Tracing slows the gateway by about a fifth; compare figures taken the same way.
"""

import collections
import re
import statistics
import sys

# A whole call: "1.234 ( 0.056 ms): comm/TID sendto(fd: 25, ...) = 37". A call that another
# thread's event interrupted is printed in two: "... sendto(fd: 25, ...   ..." then
# "1.234 ( 0.056 ms): comm/TID  ... [continued]: sendto()) = 37".
WHOLE = re.compile(
    r"^\s*([\d.]+) \(\s*([\d.]+) ms\): \S+?/(\d+) (recvfrom|sendto|fdatasync)\(fd: (\d+).*\)\s+= (-?\d+)"
)
BEGUN = re.compile(r"^.*\): \S+?/(\d+) (recvfrom|sendto|fdatasync)\(fd: (\d+).*\.\.\.\s*$")
ENDED = re.compile(
    r"^\s*([\d.]+) \(\s*([\d.]+) ms\): \S+?/(\d+)\s+\.\.\. \[continued\]: (recvfrom|sendto|fdatasync)\(\)\)\s+= (-?\d+)"
)
BIG = 3000


def summary(values):
    if not values:
        return "n=0"
    v = sorted(values)
    n = len(v)
    return f"n={n} p50={v[n // 2]:.3f} p90={v[n * 9 // 10]:.3f} mean={statistics.mean(v):.3f} ms"


def main(path):
    calls = collections.defaultdict(list)
    syncs = []
    with open(path, encoding="utf-8", errors="replace") as f:
        begun = {}
        for line in f:
            m = WHOLE.match(line)
            if m:
                start, took, _, call, fd, ret = m.groups()
            elif m := BEGUN.match(line):
                tid, call, fd = m.groups()
                begun[tid] = (call, fd)
                continue
            elif m := ENDED.match(line):
                start, took, tid, call, ret = m.groups()
                if begun.get(tid, ("", ""))[0] != call:
                    continue
                fd = begun.pop(tid)[1]
            else:
                continue
            start, took, ret = float(start), float(took), int(ret)
            if call == "fdatasync":
                syncs.append(took)
            else:
                calls[int(fd)].append((start, took, call, ret))

    clients = {fd for fd, cs in calls.items() if any(c == "recvfrom" and r > BIG for _, _, c, r in cs)}
    next_hops = {fd for fd, cs in calls.items() if any(c == "sendto" and r > BIG for _, _, c, r in cs)}

    replies = collections.defaultdict(list)
    for fd in clients:
        received, read_end = 0, None
        for start, took, call, ret in calls[fd]:
            if call == "recvfrom":
                if ret > 0:
                    received += ret
                    read_end = start + took
            else:
                if read_end is not None:
                    kind = "final dot -> 250" if received > BIG else "other command -> reply"
                    replies[kind].append(start - read_end)
                received, read_end = 0, None

    answers = []
    for fd in next_hops:
        sent_end = None
        for start, took, call, ret in calls[fd]:
            if call == "sendto":
                sent_end = start + took
            elif ret > 0 and sent_end is not None:
                answers.append(start - sent_end)
                sent_end = None

    for kind in ("other command -> reply", "final dot -> 250"):
        print(f"client {kind}: {summary(replies[kind])}")
    print(f"next hop, write -> its reply read: {summary(answers)}")
    print(f"spool fdatasync: {summary(syncs)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
