#!/usr/bin/env python3
"""rewind benchmarks, measured side by side in one run: checkpoint time, image
size and restart time (peer: criu, when it runs on this kernel); record and
replay slowdowns against native runs (peer: gdb's record full); reverse
execution latencies in `rewind debug` (reverse-continue against the forward
continue over the same span, reverse-stepi against stepi) and the pause and
memory of an in-memory snapshot; `rewind coordinator`'s barrier round trip
and coordinated checkpoints and restarts of N processes; checkpoint and restart
of a tun device program (`--plugin tun`) with packets queued in its device and
of a KVM VMM (`--plugin kvm`); gdb's reverse commands through `rewind gdbserver`;
a producer and a consumer sharing 64 MiB (and 256 MiB) of memory, checkpointed
and restarted together;
checkpoint and restart of a TCP token ring (a process tree, and three programs
under a coordinator) with data in flight; checkpoint and restart of programs
that made pseudo-terminals (bytes in flight, a shell and its job).

Prints a table and writes bench-results.json: a list of
{name, value, unit, peer, peer_value, ratio, note}. Run through scripts/bench.sh.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REWIND = os.path.join(ROOT, "target", "release", "rewind")


def wait_for(path, pattern, timeout=120.0):
    """Wait until the file at `path` matches `pattern`; return the match."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                m = rx.search(f.read())
            if m:
                return m
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"{path}: no {pattern!r} after {timeout} s")


def rewind(*args, check=True):
    return subprocess.run([REWIND, *args], capture_output=True, text=True, check=check, timeout=600)


class Case:
    def __init__(self, name, mib, mode):
        self.name, self.mib, self.mode = name, mib, mode


def checkpoint_and_restart(launch_args, ready, d, d2):
    """`rewind launch ARGS` into `d`, wait for `ready` in its output, checkpoint
    (time until the image is durable and time the program was stopped, as the
    session measured them; wall time of the command; image size), kill,
    `rewind restart` into `d2` (restore time), kill. Both directories are
    removed after."""
    os.makedirs(d)
    os.makedirs(d2)
    out = os.path.join(d, "out")
    launch = subprocess.Popen([REWIND, "launch", "--ckpt-dir", d] + launch_args,
                              stdout=open(out, "w"), stderr=subprocess.DEVNULL, start_new_session=True)
    restart = None
    try:
        wait_for(out, ready)
        t = time.monotonic()
        image = rewind("command", "--ckpt-dir", d, "--checkpoint").stdout.strip()
        wall = (time.monotonic() - t) * 1e3
        st = json.loads(rewind("command", "--ckpt-dir", d, "--status", "--json").stdout)
        image = os.path.join(d, os.path.basename(image))
        size = os.path.getsize(image)
        rewind("command", "--ckpt-dir", d, "--kill")
        launch.wait(timeout=60)
        err = os.path.join(d2, "err")
        restart = subprocess.Popen([REWIND, "-v", "restart", "--ckpt-dir", d2, image],
                                   stdout=subprocess.DEVNULL, stderr=open(err, "w"), start_new_session=True)
        m = wait_for(err, r"restored .* in ([0-9.]+) ms")
        rewind("command", "--ckpt-dir", d2, "--kill")
        restart.wait(timeout=60)
        return {"ckpt_ms": st["status"]["last_durable_ms"], "pause_ms": st["status"]["last_checkpoint_ms"],
                "ckpt_wall_ms": wall, "image_bytes": size, "restart_ms": float(m.group(1))}
    finally:
        for p in (launch, restart):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(d2, ignore_errors=True)


def start_coordinator(d, timeout=None):
    """A `rewind coordinator` on a free loopback port, its log in d: (process, address, log)."""
    log = os.path.join(d, "coordinator.out")
    extra = ["--timeout", str(timeout)] if timeout else []
    proc = subprocess.Popen([REWIND, "coordinator", "--listen", "127.0.0.1:0", *extra],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    addr = wait_for(log, r"listening on (\S+)").group(1)
    return proc, addr, log


def restart_under(addr, d, images):
    """`rewind restart --coordinator` of each image, its output in d/after-N: the processes."""
    return [subprocess.Popen([REWIND, "restart", "--coordinator", addr, "--ckpt-dir", d, image],
                             stdout=open(os.path.join(d, f"after-{n}"), "w"),
                             stderr=subprocess.DEVNULL, start_new_session=True)
            for n, image in enumerate(images)]


def stop(procs):
    """Kill what is left of each process's group."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def median_of(runs):
    """Field-wise medians of checkpoint_and_restart results."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def bench_rewind(case, target, work, reps):
    """Median checkpoint (engine and wall) time, image size, restart time."""
    runs = []
    for rep in range(reps):
        d = os.path.join(work, f"rw-{case.name}-{rep}")
        runs.append(checkpoint_and_restart(["--", target, str(case.mib), case.mode], r"ready", d, d + "-restart"))
    return median_of(runs)


def criu_version():
    if not shutil.which("criu"):
        return None
    r = subprocess.run(["criu", "--version"], capture_output=True, text=True)
    m = re.search(r"Version: (\S+)", r.stdout)
    return f"criu {m.group(1)}" if m else "criu"


def last_error(log):
    try:
        with open(log, errors="replace") as f:
            lines = [l.strip() for l in f if "Error" in l]
        return lines[-1] if lines else "failed (no error line in the log)"
    except FileNotFoundError:
        return "failed (no log)"


def bench_criu(case, target, work):
    """criu dump and restore of the same kind of process; errors are results too."""
    d = os.path.join(work, f"criu-{case.name}")
    os.makedirs(d)
    out = os.path.join(d, "out")
    proc = subprocess.Popen([target, str(case.mib), case.mode], stdout=open(out, "w"),
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(out, r"ready")
        imgdir = os.path.join(d, "img")
        os.makedirs(imgdir)
        t = time.monotonic()
        r = subprocess.run(["criu", "dump", "-t", str(proc.pid), "-D", imgdir, "-o", "dump.log"],
                           capture_output=True, text=True)
        dump_ms = (time.monotonic() - t) * 1e3
        if r.returncode != 0:
            return {"error": "criu dump: " + last_error(os.path.join(imgdir, "dump.log"))}
        size = sum(os.path.getsize(os.path.join(imgdir, f)) for f in os.listdir(imgdir))
        t = time.monotonic()
        r = subprocess.run(["criu", "restore", "-D", imgdir, "-d", "-o", "restore.log"],
                           capture_output=True, text=True)
        restore_ms = (time.monotonic() - t) * 1e3
        if r.returncode != 0:
            return {"ckpt_ms": dump_ms, "image_bytes": size,
                    "error": "criu restore: " + last_error(os.path.join(imgdir, "restore.log"))}
        os.kill(proc.pid, signal.SIGKILL)
        return {"ckpt_ms": dump_ms, "image_bytes": size, "restart_ms": restore_ms}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def timed(cmd, stdin=None, timeout=1800):
    """Wall time of a command in seconds (its output discarded)."""
    t = time.monotonic()
    with open(stdin) if stdin else open(os.devnull) as inp:
        r = subprocess.run(cmd, stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    if r.returncode not in (0,):
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {r.returncode}")
    return time.monotonic() - t


def bench_record_replay(work, quick, add):
    """Record and replay slowdowns against native runs of the same commands."""
    cc = lambda src, out, *flags: subprocess.run(
        ["gcc", "-O2", *flags, "-o", out, os.path.join(ROOT, "scripts", "bench", src)], check=True)
    loop, reads, threads = (os.path.join(work, n) for n in ("loop", "reads", "threads"))
    cc("loop.c", loop)
    cc("reads.c", reads)
    cc("threads.c", threads, "-pthread")
    data = os.path.join(work, "data")
    with open(data, "wb") as f:
        f.write(os.urandom(4096))
    python = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    sql = os.path.join(work, "inserts.sql")
    n_rows = 2000 if quick else 10000
    with open(sql, "w") as f:
        f.write("create table t(x integer, y text);\nbegin;\n")
        f.writelines(f"insert into t values ({i}, 'row {i}');\n" for i in range(n_rows))
        f.write("commit;\nselect count(*), sum(x) from t;\n")
    db = os.path.join(work, "bench.db")
    workloads = [
        ("compute-loop", [loop, "60000000" if quick else "300000000"], None, None),
        ("small-reads", [reads, data, "100000" if quick else "1000000"], None, None),
        ("python3-startup+compute", [python, "-c", "print(sum(i*i for i in range(2*10**6)))"], None, None),
        (f"sqlite3-{n_rows}-inserts", ["sqlite3", db], sql, db),
        ("4-threads-mutex", [threads], None, None),
    ]
    # Every workload natively, recorded with every syscall stopped
    # (`record --no-syscallbuf`), and recorded with the in-process syscall
    # buffer (the default; rows "...-syscallbuf/"), side by side; medians of 3 (1 with --quick):
    # the shortest workloads run 20-30 ms natively.
    reps = 1 if quick else 3

    def median_of(run):
        return statistics.median(run() for _ in range(reps))

    slowdowns = {"": [], "-syscallbuf": []}
    replays = {"": [], "-syscallbuf": []}
    for name, cmd, stdin, remove in workloads:
        print(f"bench: record/replay {name} ...", file=sys.stderr, flush=True)
        def run_native():
            if remove and os.path.exists(remove):
                os.remove(remove)
            return timed(cmd, stdin)
        native = median_of(run_native)
        add(f"native/{name}", native, "s")
        for suffix, flags in (("", ["--no-syscallbuf"]), ("-syscallbuf", [])):
            trace = os.path.join(work, f"trace-{name}")

            def run_record():
                if remove and os.path.exists(remove):
                    os.remove(remove)
                shutil.rmtree(trace, ignore_errors=True)
                return timed([REWIND, "record", *flags, "-o", trace, "--", *cmd], stdin)
            rec = median_of(run_record)
            rep = median_of(lambda: timed([REWIND, "replay", "--quiet", trace]))
            size = sum(os.path.getsize(os.path.join(trace, f)) for f in os.listdir(trace))
            shutil.rmtree(trace, ignore_errors=True)
            add(f"record-slowdown{suffix}/{name}", rec / native, "x")
            add(f"replay-slowdown{suffix}/{name}", rep / native, "x")
            add(f"trace-MB-per-s{suffix}/{name}", size / 1e6 / native, "MB/s")
            slowdowns[suffix].append(rec / native)
            replays[suffix].append(rep / native)
    for suffix in slowdowns:
        for what, values in (("record", slowdowns[suffix]), ("replay", replays[suffix])):
            geo = 1.0
            for x in values:
                geo *= x
            add(f"{what}-slowdown{suffix}/geometric-mean", geo ** (1 / len(values)), "x")

    # gdb's record full, on a loop small enough for it (it single-steps).
    if shutil.which("gdb"):
        n = "2000" if quick else "20000"
        gdb = ["gdb", "-batch", "-nx", "-ex", "set pagination off", "-ex", "break main", "-ex", "run",
               "-ex", "record full", "-ex", "set record full insn-number-max unlimited", "-ex", "continue",
               "--args", loop, n]
        print("bench: gdb record full ...", file=sys.stderr, flush=True)
        t_gdb = timed(gdb)
        trace = os.path.join(work, "trace-gdb-peer")
        t_rw = timed([REWIND, "record", "-o", trace, "--", loop, n])
        shutil.rmtree(trace, ignore_errors=True)
        results_peer = {"peer": "gdb record full"}
        add(f"record-time/loop-{n}-iterations", t_rw, "s", t_gdb, None, results_peer["peer"])


def tree_size(path):
    """Bytes of every file under `path` (a trace of a tree has a directory per process)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def bench_record_tree(work, quick, add):
    """Record and replay of process trees (issue 7, item 4): every process recorded in its own log,
    replayed as a tree, against native runs; medians of 3 (1 with --quick)."""
    src = os.path.join(work, "tree-make")
    os.makedirs(src, exist_ok=True)
    for i in range(4):
        with open(os.path.join(src, f"f{i}.c"), "w") as f:
            f.write(f"int f{i}(int n) {{ return n < 2 ? n : f{i}(n - 1) + f{i}(n - 2); }}\n")
    with open(os.path.join(src, "main.c"), "w") as f:
        f.write("#include <stdio.h>\n" + "".join(f"int f{i}(int);\n" for i in range(4))
                + "int main(void) { printf(\"%d\\n\", f0(20) + f1(19) + f2(18) + f3(17)); return 0; }\n")
    with open(os.path.join(src, "Makefile"), "w") as f:
        f.write("objs = main.o f0.o f1.o f2.o f3.o\nprog: $(objs)\n\tgcc -o prog $(objs)\n"
                "%.o: %.c\n\tgcc -O2 -c $<\nclean:\n\trm -f prog $(objs)\n")
    rounds = "10" if quick else "40"
    pool = ("import multiprocessing as mp\n"
            "def w(n): return sum(i * i for i in range(n))\n"
            "if __name__ == '__main__':\n"
            "    mp.set_start_method('fork')\n"
            "    with mp.Pool(2) as p: print(sum(p.map(w, [300000] * 8)))\n")
    workloads = [
        ("shell-pipelines", ["bash", "-c", f"for i in $(seq {rounds}); do seq 2000 | sort -rn | head -1; done"
                                           " | wc -l"], None),
        ("make-j2-gcc-5-files", ["make", "-s", "-j2", "-C", src], ["make", "-s", "-C", src, "clean"]),
        ("python3-multiprocessing-pool", ["python3", "-c", pool], None),
    ]
    reps = 1 if quick else 3
    for name, cmd, before in workloads:
        print(f"bench: record/replay tree {name} ...", file=sys.stderr, flush=True)
        trace = os.path.join(work, f"trace-tree-{name}")

        def prepared(run):
            def go():
                if before:
                    subprocess.run(before, check=True, stdout=subprocess.DEVNULL)
                return run()
            return go
        native = statistics.median(prepared(lambda: timed(cmd))() for _ in range(reps))

        def run_record():
            shutil.rmtree(trace, ignore_errors=True)
            return timed([REWIND, "record", "-o", trace, "--", *cmd])
        rec = statistics.median(prepared(run_record)() for _ in range(reps))
        rep = statistics.median(timed([REWIND, "replay", "--quiet", trace]) for _ in range(reps))
        procs = 1 + len([d for d in os.listdir(trace) if d.startswith("proc-")])
        size = tree_size(trace)
        shutil.rmtree(trace, ignore_errors=True)
        add(f"native/tree-{name}", native, "s")
        add(f"record-slowdown/tree-{name}", rec / native, "x")
        add(f"replay-slowdown/tree-{name}", rep / native, "x")
        add(f"processes/tree-{name}", procs, "")
        add(f"trace-MB/tree-{name}", size / 1e6, "MB")


def debug_times(trace, cmds):
    """Run `rewind debug --batch` with REWIND_TIME_COMMANDS=1: [(command, seconds)]."""
    args = [REWIND, "debug", "--trace", trace, "--batch"]
    for c in cmds:
        args += ["--ex", c]
    env = dict(os.environ, REWIND_TIME_COMMANDS="1")
    r = subprocess.run(args, capture_output=True, text=True, timeout=1800, env=env)
    times = [(m.group(2), float(m.group(1)))
             for m in re.finditer(r"rewind: time ([0-9.]+) s: (.*)", r.stderr)]
    if r.returncode != 0 or len(times) != len(cmds):
        raise RuntimeError(f"rewind debug failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return times, r.stdout


def record_spans(work, name, quick, source="spans.c"):
    """Build scripts/bench/spans.c (or `source`, which takes the same
    arguments), calibrated to this machine, and record it: (trace directory,
    scale; spans are 10 s, 1 s and 10 ms divided by scale, for spans.c)."""
    spans = os.path.join(work, name)
    calibrate = os.path.join(work, "calibrate")
    bench = os.path.join(ROOT, "scripts", "bench")
    subprocess.run(["gcc", "-O1", "-g", "-o", calibrate, os.path.join(bench, "spans.c")], check=True)
    subprocess.run(["gcc", "-O1", "-g", "-pthread", "-o", spans, os.path.join(bench, source)], check=True)
    # Calibrate: loop iterations per millisecond on this machine (that run
    # makes 100000 * (100 + 10 + 10) = 12e6 iterations).
    t = timed([calibrate, "100000", "100"])
    per_ms = max(1000, int(12e6 / (t * 1e3)))
    scale = 10 if quick else 1
    trace = os.path.join(work, f"trace-{name}")
    subprocess.run([REWIND, "record", "-o", trace, "--", spans, str(per_ms), str(scale)],
                   check=True, capture_output=True, timeout=1800)
    return trace, scale


def bench_debug(work, quick, add):
    """Reverse execution latencies and snapshot cost (DESIGN §5 targets)."""
    print("bench: debug: reverse-continue spans ...", file=sys.stderr, flush=True)
    trace, scale = record_spans(work, "spans", quick)
    cmds = ["break mark", "run", "continue", "continue", "continue",
            "reverse-continue", "reverse-continue", "reverse-continue"]
    times, out = debug_times(trace, cmds)
    fwd = [s for c, s in times[2:5]]   # mark0->1 (long), 1->2 (mid), 2->3 (short)
    back = [s for c, s in times[5:8]]  # 3->2 (short), 2->1 (mid), 1->0 (long)
    labels = [f"{10000 // scale} ms", f"{1000 // scale} ms", "10 ms"]
    for i, (label, f_s, b_s) in enumerate(zip(labels, fwd, reversed(back))):
        add(f"reverse-continue/{label.replace(' ', '')}-back", b_s * 1e3, "ms", f_s * 1e3, None,
            "forward continue over the same span")
    shutil.rmtree(trace, ignore_errors=True)
    # The same in a program of 4 threads that make an event every ~0.1 ms
    # of work (scripts/bench/thread_spans.c: spans of 2 s, 200 ms and 10 ms
    # of thread 0's work, the others running alongside): snapshots of every
    # thread, and going back from them.
    print("bench: debug: reverse-continue spans, 4 threads ...", file=sys.stderr, flush=True)
    trace, scale = record_spans(work, "thread-spans", quick, "thread_spans.c")
    times, out = debug_times(trace, cmds + ["info checkpoints"])
    fwd = [s for c, s in times[2:5]]
    back = [s for c, s in times[5:8]]
    labels = [f"{2000 // scale} ms", f"{200 // scale} ms", "10 ms"]
    for label, f_s, b_s in zip(labels, fwd, reversed(back)):
        add(f"reverse-continue-4-threads/{label.replace(' ', '')}-of-thread-0-back", b_s * 1e3, "ms",
            f_s * 1e3, None, "forward continue over the same span")
    m = re.search(r"Gone back from: (\d+) snapshots, (\d+) anchors, (\d+) trace images", out)
    if m:
        add("reverse-continue-4-threads/restores-from-snapshots", int(m.group(1)) + int(m.group(2)), "")
        add("reverse-continue-4-threads/restores-from-trace-images", int(m.group(3)), "")
    shutil.rmtree(trace, ignore_errors=True)
    # Live debugging (`rewind debug -- PROG`): running a program to its end
    # with `run` (the program recorded as it goes, replay following it) against
    # `rewind record` of it.
    print("bench: debug: live run to the end ...", file=sys.stderr, flush=True)
    reads = os.path.join(work, "reads")
    subprocess.run(["gcc", "-O2", "-o", reads, os.path.join(ROOT, "scripts", "bench", "reads.c")], check=True)
    data = os.path.join(work, "data")
    with open(data, "wb") as f:
        f.write(os.urandom(4096))
    python = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    for name, cmd in [("small-reads", [reads, data, "2000" if quick else "20000"]),
                      ("python3-startup+compute", [python, "-c", "print(sum(i*i for i in range(2*10**6)))"])]:
        trace = os.path.join(work, f"trace-live-{name}")
        t_rec = timed([REWIND, "record", "-o", trace, "--", *cmd])
        shutil.rmtree(trace, ignore_errors=True)
        t_live = timed([REWIND, "debug", "--batch", "--ex", "run", "--", *cmd])
        add(f"live-run-to-end/{name}", t_live, "s", t_rec, None, "rewind record of it")
    # reverse-stepi: 50 of them from a breakpoint in a real program
    # (python3 at its third write), each timed, against stepi.
    print("bench: debug: reverse-stepi ...", file=sys.stderr, flush=True)
    python = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    trace = os.path.join(work, "trace-py")
    subprocess.run([REWIND, "record", "-o", trace, "--", python, "-c",
                    "import sys\nfor i in range(5): sys.stdout.write(str(sum(range(i * 10**5))) + '\\n')"],
                   check=True, capture_output=True, timeout=600)
    cmds = ["break write", "run", "continue", "continue"] + ["reverse-stepi"] * 50 + ["stepi"] * 50
    times, _ = debug_times(trace, cmds)
    rsi = sorted(s for c, s in times if c == "reverse-stepi")
    si = sorted(s for c, s in times if c == "stepi")
    add("reverse-stepi/median", statistics.median(rsi) * 1e3, "ms", statistics.median(si) * 1e3, None, "stepi")
    add("reverse-stepi/max", rsi[-1] * 1e3, "ms")
    shutil.rmtree(trace, ignore_errors=True)
    # Snapshot pause and memory for a process with 1 GiB (256 MiB quick).
    mib = 256 if quick else 1024
    touch = os.path.join(work, "touch")
    subprocess.run(["gcc", "-O2", "-o", touch, os.path.join(ROOT, "scripts", "bench", "touch.c")], check=True)
    trace = os.path.join(work, "trace-touch")
    print(f"bench: debug: snapshot of {mib} MiB ...", file=sys.stderr, flush=True)
    subprocess.run([REWIND, "record", "-o", trace, "--", touch, str(mib)], check=True, capture_output=True)
    times, out = debug_times(trace, ["break printf", "run"] + ["maint snapshot"] * 5)
    pauses = [float(m.group(1)) for m in re.finditer(r"pause ([0-9.]+) ms", out)]
    ptes = [int(m.group(1)) for m in re.finditer(r"page tables (\d+) kB", out)]
    add(f"snapshot-pause/{mib}MiB", statistics.median(pauses), "ms")
    add(f"snapshot-page-tables/{mib}MiB", statistics.median(ptes) / 1024, "MiB")
    shutil.rmtree(trace, ignore_errors=True)


GDB_TIMER = """
import time
def rewind_timed(cmd):
    t = time.monotonic()
    gdb.execute(cmd, to_string=True)
    print("TIME %.6f %s" % (time.monotonic() - t, cmd))
"""


def bench_gdbserver(work, quick, add):
    """Latency of gdb's own reverse commands through `rewind gdbserver` (the `bc`
    and `bs` packets), from command to prompt as gdb's Python sees it, against
    the forward command over the same span: the spans of bench_debug."""
    if not shutil.which("gdb"):
        print("bench: gdbserver: no gdb, skipped", file=sys.stderr)
        return
    print("bench: gdbserver: bc and bs latency ...", file=sys.stderr, flush=True)
    trace, scale = record_spans(work, "spans-gdb", quick)
    script = os.path.join(work, "timer.py")
    with open(script, "w") as f:
        f.write(GDB_TIMER)
    timed_cmds = ["continue"] * 3 + ["reverse-continue"] * 3 + ["stepi"] * 20 + ["reverse-stepi"] * 20
    args = ["gdb", "-batch", "-nx", "-ex", "set pagination off", "-ex", f"source {script}",
            "-ex", f"target remote | {REWIND} gdbserver --stdio --trace {trace}",
            "-ex", "break mark", "-ex", "continue"]
    for c in timed_cmds:
        args += ["-ex", f"python rewind_timed('{c}')"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    times = [(m.group(2), float(m.group(1))) for m in re.finditer(r"TIME ([0-9.]+) (.*)", r.stdout)]
    if len(times) != len(timed_cmds):
        raise RuntimeError(f"gdb session failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    fwd = [s for _, s in times[0:3]]
    back = [s for _, s in times[3:6]]
    labels = [f"{10000 // scale}ms", f"{1000 // scale}ms", "10ms"]
    for label, f_s, b_s in zip(labels, fwd, reversed(back)):
        add(f"gdb-bc/{label}-back", b_s * 1e3, "ms", f_s * 1e3, None, "gdb continue over the same span")
    si = sorted(s for c, s in times if c == "stepi")
    rsi = sorted(s for c, s in times if c == "reverse-stepi")
    add("gdb-bs/median", statistics.median(rsi) * 1e3, "ms", statistics.median(si) * 1e3, None, "gdb stepi")
    shutil.rmtree(trace, ignore_errors=True)


def bench_bisect(work, quick, add):
    """rewind bisect on a planted overflow (tests/targets/dbg_bugs.c) in runs of
    about 1e7 and 1e9 instructions (~51 per loop iteration at -O0, as counted
    by single-stepping one interval of the loop): probes and total search time
    against the native run time."""
    bugs = os.path.join(work, "dbg_bugs")
    subprocess.run(["gcc", "-O0", "-g", "-pthread", "-o", bugs,
                    os.path.join(ROOT, "tests", "targets", "dbg_bugs.c")], check=True)
    sizes = [("1e7", 200_000)] + ([] if quick else [("1e9", 20_000_000)])
    for label, total in sizes:
        n, every = total * 7 // 10, total // 10
        args = [bugs, "overflow", str(n), str(total), str(every)]
        native = float("inf")
        for _ in range(3):  # exits 1: the bug happened
            t0 = time.time()
            subprocess.run(args, capture_output=True, timeout=600)
            native = min(native, time.time() - t0)
        trace = os.path.join(work, f"trace-bugs-{label}")
        print(f"bench: bisect: {label} instructions ...", file=sys.stderr, flush=True)
        subprocess.run([REWIND, "record", "-o", trace, "--"] + args, capture_output=True, timeout=1800)
        t0 = time.time()
        r = subprocess.run([REWIND, "bisect", "--trace", trace, "--json", "--until", "g.sentinel != 0x5eed"],
                           capture_output=True, text=True, timeout=1800)
        wall = time.time() - t0
        if r.returncode != 0:
            raise RuntimeError(f"rewind bisect failed: {r.stderr[-2000:]}")
        found = json.loads(r.stdout)
        add(f"bisect/{label}-instructions-probes", found["probes"], "n")
        add(f"bisect/{label}-instructions-time", wall, "s", native, None, "native run")
        shutil.rmtree(trace, ignore_errors=True)


def bench_kvm(work, quick, add):
    """The KVM plugin on tests/targets/kvm_vmm.c: checkpoint and restart time and
    image size with 64 MiB and 1 GiB of guest memory (all of it written by the
    VMM), and the record and replay slowdown of a short guest run. Guest code
    on this machine runs under PVM's instruction emulator (~1 us/instruction),
    which is why the runs are short."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("bench: kvm: /dev/kvm unusable here, skipped", file=sys.stderr)
        return
    vmm = os.path.join(work, "kvm_vmm")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", vmm,
                    os.path.join(ROOT, "tests", "targets", "kvm_vmm.c")], check=True)
    for mib in [64] + ([] if quick else [1024]):
        runs = []
        for rep in range(1 if quick else 3):
            d = os.path.join(work, f"kvm-{mib}-{rep}")
            argv = ["--plugin", "kvm", "--", vmm, "100000000", str(mib), "1", "10"]
            runs.append(checkpoint_and_restart(argv, r"report 2 ", d, d + "-restart"))
        m = median_of(runs)
        add(f"kvm/checkpoint-{mib}MiB-guest", m["ckpt_ms"], "ms")
        add(f"kvm/checkpoint-wall-{mib}MiB-guest", m["ckpt_wall_ms"], "ms")
        add(f"kvm/image-{mib}MiB-guest", m["image_bytes"] / 2**20, "MiB")
        add(f"kvm/restart-{mib}MiB-guest", m["restart_ms"], "ms")
    args = [vmm, "20000", "64", "1", "10"]
    native = min(timed(args) for _ in range(3))
    trace = os.path.join(work, "trace-kvm")
    rec = timed([REWIND, "record", "-o", trace, "--"] + args)
    rep = timed([REWIND, "replay", "-q", trace])
    add("kvm/record-20k-iterations", rec, "s", native, None, "native run")
    add("kvm/replay-20k-iterations", rep, "s", native, None, "native run")
    shutil.rmtree(trace, ignore_errors=True)
def bench_shm(work, quick, add):
    """Shared memory across a process tree (tests/targets/shm_ring.c): a producer
    and a consumer share a ring buffer and a block of random bytes (64 MiB, and
    256 MiB without --quick) in MAP_SHARED anonymous memory and in a POSIX shm
    object; checkpoint of the two processes (engine and wall), the images (the
    block is stored once, by the parent's image), and restart of both until
    both are restored (wall, from the start of `rewind restart`)."""
    ring = os.path.join(work, "shm_ring")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", ring,
                    os.path.join(ROOT, "tests", "targets", "shm_ring.c")], check=True)
    for mode in ["anon", "posix"]:
        for mib in [64] + ([] if quick else [256]):
            runs = []
            for rep in range(1 if quick else 3):
                d = os.path.join(work, f"shm-{mode}-{mib}-{rep}")
                d2 = d + "-restart"
                os.makedirs(d)
                os.makedirs(d2)
                name = f"rewind-bench-{os.getpid()}-{rep}"
                out = os.path.join(d, "out")
                argv = [ring, mode, "100000", str(mib), name, "5"]
                launch = subprocess.Popen([REWIND, "launch", "--ckpt-dir", d, "--"] + argv,
                                          stdout=open(out, "w"), stderr=subprocess.DEVNULL,
                                          start_new_session=True)
                restart = None
                try:
                    wait_for(out, r"item 20 ", timeout=600)
                    t = time.monotonic()
                    images = rewind("command", "--ckpt-dir", d, "--checkpoint").stdout.split()
                    wall = (time.monotonic() - t) * 1e3
                    st = json.loads(rewind("command", "--ckpt-dir", d, "--status", "--json").stdout)
                    images = [os.path.join(d, os.path.basename(i)) for i in images]
                    sizes = [os.path.getsize(i) for i in images]
                    rewind("command", "--ckpt-dir", d, "--kill")
                    launch.wait(timeout=60)
                    err = os.path.join(d2, "err")
                    t = time.monotonic()
                    restart = subprocess.Popen([REWIND, "-v", "restart", "--ckpt-dir", d2] + images,
                                               stdout=subprocess.DEVNULL, stderr=open(err, "w"),
                                               start_new_session=True)
                    wait_for(err, r"(?s)restored .* in .*restored .* in ([0-9.]+) ms", timeout=600)
                    restored = (time.monotonic() - t) * 1e3
                    rewind("command", "--ckpt-dir", d2, "--kill")
                    restart.wait(timeout=60)
                    runs.append({"ckpt_ms": st["status"]["last_checkpoint_ms"], "ckpt_wall_ms": wall,
                                 "image_mib": sum(sizes) / 2**20, "child_image_mib": min(sizes) / 2**20,
                                 "restart_wall_ms": restored})
                finally:
                    for p in (launch, restart):
                        if p is not None and p.poll() is None:
                            os.killpg(p.pid, signal.SIGKILL)
                    if os.path.exists(os.path.join("/dev/shm", name)):
                        os.remove(os.path.join("/dev/shm", name))
                    shutil.rmtree(d, ignore_errors=True)
                    shutil.rmtree(d2, ignore_errors=True)
            m = median_of(runs)
            add(f"shm/{mode}-{mib}MiB-checkpoint", m["ckpt_ms"], "ms")
            add(f"shm/{mode}-{mib}MiB-checkpoint-wall", m["ckpt_wall_ms"], "ms")
            add(f"shm/{mode}-{mib}MiB-images", m["image_mib"], "MiB")
            add(f"shm/{mode}-{mib}MiB-child-image", m["child_image_mib"], "MiB")
            add(f"shm/{mode}-{mib}MiB-restart-wall", m["restart_wall_ms"], "ms")


def bench_mpi(work, quick, add):
    """An MPI program under MPICH's mpirun (tests/targets/mpi_ring.c, 4 ranks: one launch
    follows mpirun, hydra_pmi_proxy and the ranks, six images): checkpoint (engine and wall,
    the computation running on), images, then checkpoint --kill and restart of every image,
    timed until rank 0 prints again (so it includes up to one iteration of the ring, ~10 ms
    of sleep plus its messages). With UCX's default transports (System V and POSIX shared
    memory, cross-memory attach) and over TCP only (UCX_TLS=tcp,self)."""
    if not shutil.which("mpicc") or not shutil.which("mpirun"):
        print("bench: mpi skipped: MPICH missing (scripts/setup.sh installs it)", file=sys.stderr)
        return
    print("bench: mpi ...", file=sys.stderr, flush=True)
    exe = os.path.join(work, "mpi_ring")
    subprocess.run(["mpicc", "-O2", "-o", exe, os.path.join(ROOT, "tests", "targets", "mpi_ring.c")],
                   check=True)
    reps = 1 if quick else 3
    med = statistics.median
    for label, tls in [("default", None), ("tcp", "tcp,self")]:
        env = dict(os.environ)
        if tls:
            env["UCX_TLS"] = tls
        ckpt, ckpt_wall, kill_wall, restart, sizes = [], [], [], [], []
        for rep in range(reps):
            d = os.path.join(work, f"mpi-{label}-{rep}")
            d2 = d + "-restart"
            os.makedirs(d)
            os.makedirs(d2)
            procs = []
            try:
                out = os.path.join(d, "before")
                launch = subprocess.Popen([REWIND, "launch", "--ckpt-dir", d, "--", "mpirun", "-n", "4",
                                           exe, "1000000", "10000"], stdout=open(out, "w"),
                                          stderr=subprocess.DEVNULL, start_new_session=True, env=env)
                procs.append(launch)
                wait_for(out, r"iteration 20:", timeout=120)
                t = time.monotonic()
                rewind("command", "--ckpt-dir", d, "--checkpoint")
                ckpt_wall.append((time.monotonic() - t) * 1e3)
                st = json.loads(rewind("command", "--ckpt-dir", d, "--status", "--json").stdout)
                ckpt.append(st["status"]["last_checkpoint_ms"])
                wait_for(out, r"iteration 40:", timeout=120)
                t = time.monotonic()
                images = rewind("command", "--ckpt-dir", d, "--checkpoint", "--kill").stdout.split()
                kill_wall.append((time.monotonic() - t) * 1e3)
                launch.wait(timeout=60)
                images = [os.path.join(d, os.path.basename(i)) for i in images]
                sizes.append(sum(os.path.getsize(i) for i in images) / 2**20)
                after = os.path.join(d2, "after")
                t = time.monotonic()
                p = subprocess.Popen([REWIND, "restart", "--ckpt-dir", d2] + images,
                                     stdout=open(after, "w"), stderr=subprocess.DEVNULL,
                                     start_new_session=True)
                procs.append(p)
                wait_for(after, r"iteration \d+:", timeout=120)
                restart.append((time.monotonic() - t) * 1e3)
                rewind("command", "--ckpt-dir", d2, "--kill")
                p.wait(timeout=60)
            finally:
                for p in procs:
                    if p.poll() is None:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
                shutil.rmtree(d, ignore_errors=True)
                shutil.rmtree(d2, ignore_errors=True)
        note = "4 ranks, 6 processes" + (f", UCX_TLS={tls}" if tls else ", UCX defaults")
        add(f"mpi/{label}-checkpoint", med(ckpt), "ms", note=note)
        add(f"mpi/{label}-checkpoint-wall", med(ckpt_wall), "ms")
        add(f"mpi/{label}-checkpoint-kill-wall", med(kill_wall), "ms")
        add(f"mpi/{label}-images", med(sizes), "MiB")
        add(f"mpi/{label}-restart-until-running", med(restart), "ms")


def bench_coordinator(work, quick, add, target, full, only_sizes=None):
    """`rewind coordinator` on loopback: the round trip of a no-op barrier
    across 4 sessions (median of 1000, timed by the coordinator from its first
    order to the last answer), then coordinated checkpoints of N sessions of
    100 MiB of random data each (mem.c), the programs running on: how long the
    programs were stopped (the longest, each session timing its own program
    from its suspend to its resume), the suspend, drain and capture barriers as the
    coordinator timed them, the time from the first suspend order until every
    image was durable, and the wall time of `rewind command --checkpoint`;
    with forked checkpoints (the default) and with the images written while
    the programs are stopped (`--no-forked-checkpoints`, as before forked
    checkpoints). Then the restart of all N images (`rewind restart
    --coordinator IMG...`) until every one has registered again. N = 1, 4, 16
    (1, 4 with --quick; 64 too with --full: 6.4 GiB of memory and as much in
    images); medians of 3 runs of each mode, the modes taking turns (one run
    with --quick, and at N = 64), every run printed on stderr."""
    def joined(log, n, restarted=False, timeout=600):
        pat = r"joined: .*, restarted" if restarted else r"joined: "
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log) as f:
                if len(re.findall(pat, f.read())) >= n:
                    return
            time.sleep(0.002)
        raise TimeoutError(f"{n} sessions did not register with the coordinator")

    def command(addr, *flags):
        r = subprocess.run([REWIND, "command", "--coordinator", addr, *flags, "--json"],
                           capture_output=True, text=True, timeout=1800)
        report = json.loads(r.stdout) if r.stdout.strip() else {}
        if r.returncode != 0 or not report.get("ok"):
            raise RuntimeError(f"rewind command {' '.join(flags)} failed: {r.stderr[-2000:]} {report.get('error')}")
        return report

    def launch_n(d, addr, n, mib, flags=()):
        procs = []
        for i in range(n):
            out = os.path.join(d, f"mem-{i}.out")
            procs.append(subprocess.Popen(
                [REWIND, "launch", "--ckpt-dir", d, "--coordinator", addr, *flags, "--", target, str(mib), "random"],
                stdout=open(out, "w"), stderr=subprocess.DEVNULL, start_new_session=True))
        for i in range(n):
            wait_for(os.path.join(d, f"mem-{i}.out"), r"ready", timeout=600)
        return procs

    # Barrier round trip.
    d = os.path.join(work, "coord-ping")
    os.makedirs(d)
    coord, addr, log = start_coordinator(d, timeout=600)
    procs = []
    try:
        print("bench: coordinator barrier round trip ...", file=sys.stderr, flush=True)
        procs = launch_n(d, addr, 4, 0)
        joined(log, 4)
        command(addr, "--ping", "100")  # warm up
        ping = command(addr, "--ping", "1000")["ping"]
        add("coord/barrier-rtt-4-sessions-median", ping["median_us"] / 1e3, "ms")
        add("coord/barrier-rtt-4-sessions-p99", ping["p99_us"] / 1e3, "ms")
    finally:
        stop(procs + [coord])
        shutil.rmtree(d, ignore_errors=True)

    sizes = [1, 4] if quick else [1, 4, 16] + ([64] if full else [])
    if only_sizes:
        sizes = only_sizes
    reps = 1 if quick else 3
    modes = (("forked", ()), ("stopped", ("--no-forked-checkpoints",)))
    for n in sizes:
        # The two modes take turns, so that both see the same load (this machine is shared).
        got = {mode: [] for mode, _ in modes}
        for rep in range(1 if n >= 64 else reps):
            for mode, flags in modes:
                d = os.path.join(work, f"coord-{n}-{mode}-{rep}")
                os.makedirs(d)
                coord, addr, log = start_coordinator(d, timeout=600)
                procs = []
                try:
                    print(f"bench: coordinated checkpoint of {n} x 100 MiB ({mode}, run {rep + 1}) ...",
                          file=sys.stderr, flush=True)
                    procs = launch_n(d, addr, n, 100, flags)
                    joined(log, n)
                    t = time.monotonic()
                    report = command(addr, "--checkpoint")
                    wall = (time.monotonic() - t) * 1e3
                    phases = {p["name"]: p["ms"] for p in report["phases"]}
                    images = [s["image"] for s in report["sessions"]]
                    got[mode].append({"pause": report["paused_ms"],
                                      "barriers": phases["suspend"] + phases.get("drain", 0) + phases["capture"],
                                      "durable": report["durable_ms"], "wall": wall})
                    command(addr, "--kill")
                    for p in procs:
                        p.wait(timeout=120)
                    if mode != "forked" or rep > 0:
                        continue
                    d2 = os.path.join(d, "restart")
                    os.makedirs(d2)
                    t = time.monotonic()
                    procs.append(subprocess.Popen(
                        [REWIND, "restart", "--ckpt-dir", d2, "--coordinator", addr, *images],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
                    joined(log, n, restarted=True)
                    add(f"coord/restart-{n}x100MiB", (time.monotonic() - t) * 1e3, "ms")
                    command(addr, "--kill")
                    procs[-1].wait(timeout=120)
                finally:
                    stop(procs + [coord])
                    shutil.rmtree(d, ignore_errors=True)
        for mode, runs in got.items():
            for key, name in (("pause", "pause"), ("barriers", "suspend+drain+capture-barriers"),
                              ("durable", "durable"), ("wall", "checkpoint-wall")):
                values = sorted(r[key] for r in runs)
                label = f"coord/{mode}/{name}-{n}x100MiB"
                if len(values) > 1:
                    print(f"bench: {label}: " + ", ".join(f"{v:.0f}" for v in values) + " ms",
                          file=sys.stderr, flush=True)
                add(label, statistics.median(values), "ms")


def bench_tun(work, quick, add):
    """Checkpoint and restart of tests/targets/tun_echo under --plugin tun, with 0 and 400
    datagrams queued in its device, in a network namespace of its own (a worker process under
    `unshare -n`)."""
    if not os.path.exists("/dev/net/tun"):
        print("bench: tun: no /dev/net/tun here, skipped", file=sys.stderr, flush=True)
        return
    print("bench: tun ...", file=sys.stderr, flush=True)
    reps = "1" if quick else "3"
    r = subprocess.run(["unshare", "-n", sys.executable, os.path.abspath(__file__),
                        "--tun-worker", work, "--tun-reps", reps],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"tun benchmark failed: {r.stderr[-2000:]}")
    for name, value, unit in json.loads(r.stdout):
        add(name, value, unit)


def tun_worker(work, reps):
    """Runs inside a fresh network namespace; prints [name, value, unit] triples as JSON."""
    import socket
    exe = os.path.join(work, "tun_echo")
    subprocess.run(["gcc", "-O1", "-o", exe, os.path.join(ROOT, "tests", "targets", "tun_echo.c")],
                   check=True)
    results = []
    for queued in (0, 400):
        ckpt, ckpt_wall, restarts = [], [], []
        for rep in range(reps):
            d = os.path.join(work, f"tun-{queued}-{rep}")
            d2 = d + "-restart"
            os.makedirs(d)
            os.makedirs(d2)
            out = os.path.join(d, "out")
            # Answers 3 datagrams, then sleeps 10 minutes: what is sent next stays queued.
            launch = subprocess.Popen(
                [REWIND, "launch", "--plugin", "tun", "--ckpt-dir", d, "--",
                 exe, "rwtun0", "1000000", "3", "600000"],
                stdout=open(out, "w"), stderr=subprocess.DEVNULL, start_new_session=True)
            restart = None
            try:
                wait_for(out, r"ready")
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                for i in range(1, 4):
                    s.sendto(f"seq {i}".encode(), ("10.77.0.2", 7))
                wait_for(out, r"udp 3")
                for i in range(queued):
                    s.sendto(f"seq {i + 4}".encode(), ("10.77.0.2", 7))
                t = time.monotonic()
                rewind("command", "--ckpt-dir", d, "--checkpoint")
                ckpt_wall.append((time.monotonic() - t) * 1e3)
                st = json.loads(rewind("command", "--ckpt-dir", d, "--status", "--json").stdout)
                ckpt.append(st["status"]["last_checkpoint_ms"])
                image = rewind("command", "--ckpt-dir", d, "--checkpoint", "--kill").stdout.strip()
                image = os.path.join(d, os.path.basename(image))
                launch.wait(timeout=60)
                err = os.path.join(d2, "err")
                restart = subprocess.Popen(
                    [REWIND, "-v", "restart", "--plugin", "tun", "--ckpt-dir", d2, image],
                    stdout=subprocess.DEVNULL, stderr=open(err, "w"), start_new_session=True)
                m = wait_for(err, r"restored .* in ([0-9.]+) ms")
                restarts.append(float(m.group(1)))
                rewind("command", "--ckpt-dir", d2, "--kill")
                restart.wait(timeout=60)
            finally:
                for p in (launch, restart):
                    if p is not None and p.poll() is None:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
                shutil.rmtree(d, ignore_errors=True)
                shutil.rmtree(d2, ignore_errors=True)
        med = statistics.median
        results += [[f"tun/checkpoint-{queued}-queued", med(ckpt), "ms"],
                    [f"tun/checkpoint-wall-{queued}-queued", med(ckpt_wall), "ms"],
                    [f"tun/restart-{queued}-queued", med(restarts), "ms"]]
    print(json.dumps(results))


def bench_sockets(work, quick, add):
    """Checkpoint and restart of tests/targets/tcp_ring: three processes forked by one parent
    (one `rewind launch`, four images), and three programs under a coordinator, with tokens and
    acknowledgments in flight on every connection (TCP_REPAIR at the checkpoint, connections
    made again at restart). Restart is timed until the ring prints again."""
    print("bench: sockets ...", file=sys.stderr, flush=True)
    exe = os.path.join(work, "tcp_ring")
    subprocess.run(["gcc", "-O1", "-o", exe, os.path.join(ROOT, "tests", "targets", "tcp_ring.c")],
                   check=True)
    reps = 1 if quick else 3
    med = statistics.median

    def until_output(cmd, out, timeout=120):
        t = time.monotonic()
        p = subprocess.Popen(cmd, stdout=open(out, "w"), stderr=subprocess.DEVNULL,
                             start_new_session=True)
        wait_for(out, r"got token", timeout)
        return p, (time.monotonic() - t) * 1e3

    ckpt, ckpt_wall, restart, sizes = [], [], [], []
    for rep in range(reps):
        d = os.path.join(work, f"ring-{rep}")
        os.makedirs(d)
        procs = []
        try:
            out = os.path.join(d, "before")
            launch = subprocess.Popen([REWIND, "launch", "--ckpt-dir", d, "--", exe, "127.0.0.1",
                                       "1000000", "5"], stdout=open(out, "w"),
                                      stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(launch)
            wait_for(out, r"member 0 got token 20:")
            t = time.monotonic()
            rewind("command", "--ckpt-dir", d, "--checkpoint")
            ckpt_wall.append((time.monotonic() - t) * 1e3)
            st = json.loads(rewind("command", "--ckpt-dir", d, "--status", "--json").stdout)
            ckpt.append(st["status"]["last_checkpoint_ms"])
            images = rewind("command", "--ckpt-dir", d, "--checkpoint", "--kill").stdout.split()
            launch.wait(timeout=60)
            images = [os.path.join(d, os.path.basename(i)) for i in images]
            sizes.append(sum(os.path.getsize(i) for i in images) / 2**10)
            d2 = os.path.join(d, "restart")
            os.makedirs(d2)
            p, ms = until_output([REWIND, "restart", "--ckpt-dir", d2] + images,
                                 os.path.join(d, "after"))
            procs.append(p)
            restart.append(ms)
            rewind("command", "--ckpt-dir", d2, "--kill")
            p.wait(timeout=60)
        finally:
            stop(procs)
            shutil.rmtree(d, ignore_errors=True)
    add("sockets/ring-tree-checkpoint", med(ckpt), "ms", note="4 processes, 3 TCP connections")
    add("sockets/ring-tree-checkpoint-wall", med(ckpt_wall), "ms")
    add("sockets/ring-tree-images", med(sizes), "KiB")
    add("sockets/ring-tree-restart-until-running", med(restart), "ms")

    # The same ring as three programs of a coordinator.
    coord_ckpt, coord_restart = [], []
    for rep in range(reps):
        d = os.path.join(work, f"coord-ring-{rep}")
        os.makedirs(d)
        procs = []
        try:
            c, addr, _ = start_coordinator(d)
            procs.append(c)
            ports = []
            for _ in range(3):
                import socket
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
                s.close()
            outs = []
            for i in range(3):
                out = os.path.join(d, f"before-{i}")
                outs.append(out)
                procs.append(subprocess.Popen(
                    [REWIND, "launch", "--coordinator", addr, "--ckpt-dir", d, "--", exe, "member",
                     str(i), "127.0.0.1", str(ports[i]), "127.0.0.1", str(ports[(i + 1) % 3]),
                     "1000000", "5"], stdout=open(out, "w"), stderr=subprocess.DEVNULL,
                    start_new_session=True))
            wait_for(outs[0], r"member 0 got token 20:")
            t = time.monotonic()
            r = rewind("command", "--coordinator", addr, "--checkpoint", "--kill")
            coord_ckpt.append((time.monotonic() - t) * 1e3)
            images = re.findall(r": (/\S+\.rwd) \(", r.stdout)
            for p in procs[1:]:
                p.wait(timeout=60)
            t = time.monotonic()
            procs.extend(restart_under(addr, d, images))
            for n in range(len(images)):
                wait_for(os.path.join(d, f"after-{n}"), r"got token")
            coord_restart.append((time.monotonic() - t) * 1e3)
            rewind("command", "--coordinator", addr, "--kill")
        finally:
            stop(procs)
            shutil.rmtree(d, ignore_errors=True)
    add("sockets/ring-coordinated-checkpoint-kill-wall", med(coord_ckpt), "ms",
        note="3 programs, suspend+drain+capture+kill")
    add("sockets/ring-coordinated-restart-until-running", med(coord_restart), "ms")

    # Datagrams between two programs of a coordinator: tests/targets/unix_chat over datagrams, the
    # server and the client each under its own `rewind launch --coordinator`, requests queued at
    # the server and replies at the client; checkpointed (run on), then checkpointed and killed,
    # restarted (the sockets handed from one restart to the other, the datagrams sent again from
    # their senders) until the client prints a reply again.
    chat = os.path.join(work, "unix_chat")
    subprocess.run(["gcc", "-O1", "-o", chat, os.path.join(ROOT, "tests", "targets", "unix_chat.c")],
                   check=True)
    dg_ckpt, dg_kill, dg_restart = [], [], []
    for rep in range(reps):
        d = os.path.join(work, f"coord-dgram-{rep}")
        os.makedirs(d)
        procs = []
        try:
            c, addr, _ = start_coordinator(d)
            procs.append(c)
            name = os.path.join(d, "s.sock")
            for role in ("server", "client"):
                procs.append(subprocess.Popen(
                    [REWIND, "launch", "--coordinator", addr, "--ckpt-dir", d, "--", chat, "dgram",
                     name, "1000000", role], stdout=open(os.path.join(d, f"{role}.out"), "w"),
                    stderr=subprocess.DEVNULL, start_new_session=True))
            wait_for(os.path.join(d, "client.out"), r"reply 20 ")
            t = time.monotonic()
            rewind("command", "--coordinator", addr, "--checkpoint")
            dg_ckpt.append((time.monotonic() - t) * 1e3)
            wait_for(os.path.join(d, "client.out"), r"reply 40 ")
            t = time.monotonic()
            r = rewind("command", "--coordinator", addr, "--checkpoint", "--kill")
            dg_kill.append((time.monotonic() - t) * 1e3)
            images = re.findall(r": (/\S+\.rwd) \(", r.stdout)
            for p in procs[1:]:
                p.wait(timeout=60)
            before = open(os.path.join(d, "client.out")).read()
            t = time.monotonic()
            procs.extend(restart_under(addr, d, images))
            outs = [os.path.join(d, f"after-{n}") for n in range(len(images))]
            deadline = time.monotonic() + 120
            while not any("reply" in open(o).read() for o in outs if os.path.exists(o)):
                if time.monotonic() > deadline:
                    raise TimeoutError("the restarted client printed nothing")
                time.sleep(0.005)
            dg_restart.append((time.monotonic() - t) * 1e3)
            if "reply" not in before:
                raise RuntimeError("the client printed nothing before the checkpoint")
            rewind("command", "--coordinator", addr, "--kill")
        finally:
            stop(procs)
            shutil.rmtree(d, ignore_errors=True)
    add("sockets/dgram-coordinated-checkpoint-wall", med(dg_ckpt), "ms",
        note="2 programs, unix datagrams queued both ways, run on")
    add("sockets/dgram-coordinated-checkpoint-kill-wall", med(dg_kill), "ms")
    add("sockets/dgram-coordinated-restart-until-running", med(dg_restart), "ms",
        note="sockets handed over, datagrams sent again from their senders")

    # UDP: tests/targets/udp_pingpong forked by one `rewind launch` (client and server, 8 requests
    # outstanding, datagrams waiting at both sockets); checkpointed (run on), then checkpointed and
    # killed, restarted (sockets bound again, the datagrams sent again from their senders) until
    # the client prints a reply again.
    pp = os.path.join(work, "udp_pingpong")
    subprocess.run(["gcc", "-O1", "-o", pp, os.path.join(ROOT, "tests", "targets",
                                                         "udp_pingpong.c")], check=True)
    udp_ckpt, udp_wall, udp_restart = [], [], []
    for rep in range(reps):
        d = os.path.join(work, f"udp-{rep}")
        os.makedirs(d)
        procs = []
        try:
            out = os.path.join(d, "before")
            launch = subprocess.Popen([REWIND, "launch", "--ckpt-dir", d, "--", pp, "127.0.0.1",
                                       "1000000"], stdout=open(out, "w"),
                                      stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(launch)
            wait_for(out, r"reply 20:")
            t = time.monotonic()
            rewind("command", "--ckpt-dir", d, "--checkpoint")
            udp_wall.append((time.monotonic() - t) * 1e3)
            st = json.loads(rewind("command", "--ckpt-dir", d, "--status", "--json").stdout)
            udp_ckpt.append(st["status"]["last_checkpoint_ms"])
            wait_for(out, r"reply 40:")
            images = rewind("command", "--ckpt-dir", d, "--checkpoint", "--kill").stdout.split()
            launch.wait(timeout=60)
            images = [os.path.join(d, os.path.basename(i)) for i in images]
            d2 = os.path.join(d, "restart")
            os.makedirs(d2)
            after = os.path.join(d, "after")
            t = time.monotonic()
            p = subprocess.Popen([REWIND, "restart", "--ckpt-dir", d2] + images,
                                 stdout=open(after, "w"), stderr=subprocess.DEVNULL,
                                 start_new_session=True)
            procs.append(p)
            wait_for(after, r"reply \d+:")
            udp_restart.append((time.monotonic() - t) * 1e3)
            rewind("command", "--ckpt-dir", d2, "--kill")
            p.wait(timeout=60)
        finally:
            stop(procs)
            shutil.rmtree(d, ignore_errors=True)
    add("sockets/udp-tree-checkpoint", med(udp_ckpt), "ms",
        note="2 processes, 2 UDP sockets with datagrams waiting, run on")
    add("sockets/udp-tree-checkpoint-wall", med(udp_wall), "ms")
    add("sockets/udp-tree-restart-until-running", med(udp_restart), "ms",
        note="bound again, datagrams sent again from their senders")


def bench_pty(work, quick, add):
    """Checkpoint and restart of programs that made pseudo-terminals: tests/targets/pty_queues (one
    process, three ptys holding bytes both ways, read and put back at the checkpoint, made again
    and refilled at restart) and tests/targets/pty_shell (a driver, a shell and its job on one pty,
    requests and answers in flight; the shell takes its controlling terminal back at restart).
    Checkpoint: the engine's time (the pty census included); restart: until the program prints
    again."""
    print("bench: pty ...", file=sys.stderr, flush=True)
    exes = {}
    for name in ("pty_queues", "pty_shell"):
        exes[name] = os.path.join(work, name)
        subprocess.run(["gcc", "-O1", "-o", exes[name],
                        os.path.join(ROOT, "tests", "targets", name + ".c")], check=True)
    reps = 1 if quick else 5
    med = statistics.median
    cases = [
        ("queues", lambda d: [exes["pty_queues"], os.path.join(d, "go")], r"holding",
         r"going on", "1 process, 3 ptys"),
        ("shell", lambda d: [exes["pty_shell"], "400"], r"rep 20 ", r"rep \d+ ",
         "3 processes, 1 pty, controlling terminal"),
    ]
    for name, argv, ready, again, note in cases:
        ckpt, restart = [], []
        for rep in range(reps):
            d = os.path.join(work, f"pty-{name}-{rep}")
            os.makedirs(d)
            procs = []
            try:
                out = os.path.join(d, "before")
                launch = subprocess.Popen([REWIND, "launch", "--ckpt-dir", d, "--"] + argv(d),
                                          stdout=open(out, "w"), stderr=subprocess.DEVNULL,
                                          start_new_session=True)
                procs.append(launch)
                wait_for(out, ready)
                images = rewind("command", "--ckpt-dir", d, "--checkpoint").stdout.split()
                st = json.loads(rewind("command", "--ckpt-dir", d, "--status", "--json").stdout)
                ckpt.append(st["status"]["last_checkpoint_ms"])
                images = rewind("command", "--ckpt-dir", d, "--checkpoint", "--kill").stdout.split()
                launch.wait(timeout=60)
                images = [os.path.join(d, os.path.basename(i)) for i in images]
                open(os.path.join(d, "go"), "w").close()
                d2 = os.path.join(d, "restart")
                os.makedirs(d2)
                after = os.path.join(d, "after")
                t = time.monotonic()
                p = subprocess.Popen([REWIND, "restart", "--ckpt-dir", d2] + images,
                                     stdout=open(after, "w"), stderr=subprocess.DEVNULL,
                                     start_new_session=True)
                procs.append(p)
                wait_for(after, again)
                restart.append((time.monotonic() - t) * 1e3)
                rewind("command", "--ckpt-dir", d2, "--kill", check=False)
                p.wait(timeout=60)
            finally:
                for p in procs:
                    if p.poll() is None:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
                shutil.rmtree(d, ignore_errors=True)
        add(f"pty/{name}-checkpoint", med(ckpt), "ms", note=note)
        add(f"pty/{name}-restart-until-running", med(restart), "ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, one repetition (a few minutes)")
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "bench-results.json"))
    ap.add_argument("--skip-checkpoint", action="store_true", help="only the record/replay measures")
    ap.add_argument("--skip-record", action="store_true", help="only the checkpoint/restart measures")
    ap.add_argument("--skip-debug", action="store_true", help="no reverse-execution measures")
    ap.add_argument("--only-record", action="store_true",
                    help="only the record/replay slowdowns (with and without --syscallbuf)")
    ap.add_argument("--only-record-tree", action="store_true",
                    help="only the record/replay measures of process trees (shell, make, multiprocessing)")
    ap.add_argument("--only-debug", action="store_true", help="only the reverse-execution measures")
    ap.add_argument("--only-bisect", action="store_true", help="only the bisect measures")
    ap.add_argument("--only-kvm", action="store_true", help="only the KVM plugin measures")
    ap.add_argument("--only-tun", action="store_true", help="only the tun plugin measures")
    ap.add_argument("--only-shm", action="store_true",
                    help="only the shared memory measures (a process tree sharing 64/256 MiB)")
    ap.add_argument("--only-sockets", action="store_true",
                    help="only the socket measures (a TCP ring with data in flight)")
    ap.add_argument("--only-mpi", action="store_true",
                    help="only the MPI measures (4 ranks under MPICH's mpirun)")
    ap.add_argument("--only-pty", action="store_true",
                    help="only the pseudo-terminal measures (ptys with bytes in flight, a shell and its job)")
    ap.add_argument("--tun-worker", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--tun-reps", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--only-gdbserver", action="store_true", help="only gdb's bc/bs latency through rewind gdbserver")
    ap.add_argument("--only-coordinator", action="store_true",
                    help="only the coordinator measures (barrier round trip, checkpoints of N processes)")
    ap.add_argument("--full", action="store_true", help="also the slowest sizes (64 coordinated processes)")
    ap.add_argument("--coordinator-sizes", metavar="N,N...",
                    help="with --only-coordinator: only these numbers of coordinated processes (e.g. 64)")
    args = ap.parse_args()
    if args.tun_worker:
        return tun_worker(args.tun_worker, args.tun_reps)
    if not os.path.exists(REWIND):
        sys.exit(f"bench: {REWIND} missing: run scripts/bench.sh, which builds it")

    work = tempfile.mkdtemp(prefix="rewind-bench-")
    target = os.path.join(work, "mem")
    subprocess.run(["gcc", "-O2", "-o", target, os.path.join(ROOT, "scripts", "bench", "mem.c")], check=True)
    big = 256 if args.quick else 1024
    cases = [Case("trivial", 0, "random"), Case("100MiB-random", 100, "random"),
             Case(f"{big}MiB-random", big, "random"), Case(f"{big}MiB-zero", big, "zero")]
    reps = 1 if args.quick else 3
    peer = criu_version()
    results = []

    def add(name, value, unit, peer_value=None, note=None, peer_name=None):
        ratio = value / peer_value if peer_value else None
        who = peer_name or peer
        results.append({"name": name, "value": round(value, 3), "unit": unit,
                        "peer": who if peer_value is not None or note else None,
                        "peer_value": None if peer_value is None else round(peer_value, 3),
                        "ratio": None if ratio is None else round(ratio, 3), "note": note})

    try:
        if args.only_record:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_record_replay(work, args.quick, add)
        if args.only_record_tree:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_record_tree(work, args.quick, add)
        if args.only_bisect:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_bisect(work, args.quick, add)
        if args.only_gdbserver:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_gdbserver(work, args.quick, add)
        if args.only_tun:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_tun(work, args.quick, add)
        if args.only_shm:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_shm(work, args.quick, add)
        if args.only_kvm:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_kvm(work, args.quick, add)
        if args.only_sockets:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_sockets(work, args.quick, add)
        if args.only_mpi:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_mpi(work, args.quick, add)
        if args.only_pty:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            bench_pty(work, args.quick, add)
        if args.only_coordinator:
            args.skip_checkpoint = args.skip_record = args.skip_debug = True
            sizes = [int(n) for n in args.coordinator_sizes.split(",")] if args.coordinator_sizes else None
            bench_coordinator(work, args.quick, add, target, args.full, sizes)
        for case in [] if args.skip_checkpoint or args.only_debug else cases:
            print(f"bench: {case.name} ...", file=sys.stderr, flush=True)
            rw = bench_rewind(case, target, work, reps)
            cr = bench_criu(case, target, work) if peer else {"error": "criu not installed (scripts/setup.sh --bench)"}
            note = cr.get("error")
            add(f"checkpoint/{case.name}", rw["ckpt_ms"], "ms", cr.get("ckpt_ms"), note)
            add(f"checkpoint-wall/{case.name}", rw["ckpt_wall_ms"], "ms")
            add(f"checkpoint-pause/{case.name}", rw["pause_ms"], "ms")
            add(f"image-size/{case.name}", rw["image_bytes"] / 2**20, "MiB",
                cr["image_bytes"] / 2**20 if "image_bytes" in cr else None, note)
            add(f"restart/{case.name}", rw["restart_ms"], "ms", cr.get("restart_ms"), note)
            if case.mib:
                add(f"checkpoint-per-GiB/{case.name}", rw["ckpt_ms"] / 1e3 / (case.mib / 1024), "s/GiB")
                add(f"restart-per-GiB/{case.name}", rw["restart_ms"] / 1e3 / (case.mib / 1024), "s/GiB")
        if not args.skip_checkpoint and not args.only_debug:
            bench_coordinator(work, args.quick, add, target, args.full)
            bench_tun(work, args.quick, add)
            bench_shm(work, args.quick, add)
            bench_sockets(work, args.quick, add)
            bench_mpi(work, args.quick, add)
            bench_pty(work, args.quick, add)
        if not args.skip_record and not args.only_debug:
            bench_record_replay(work, args.quick, add)
            bench_record_tree(work, args.quick, add)
            bench_kvm(work, args.quick, add)
        if not args.skip_debug:
            bench_debug(work, args.quick, add)
            bench_gdbserver(work, args.quick, add)
            bench_bisect(work, args.quick, add)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    meta = {"kernel": platform.release(), "cpus": os.cpu_count(), "quick": args.quick,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "repetitions": reps, "peer": peer}
    with open(args.output, "w") as f:
        json.dump({"machine": meta, "results": results}, f, indent=2)

    print(f"{'measure':38} {'rewind':>12} {'peer':>12} {'ratio':>8}")
    for r in results:
        pv = "" if r["peer_value"] is None else f"{r['peer_value']:.2f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['name']:38} {r['value']:>9.2f} {r['unit']:<3}{pv:>12} {ratio:>8}")
    notes = sorted({r["note"] for r in results if r["note"]})
    for n in notes:
        print(f"peer: {n}")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
