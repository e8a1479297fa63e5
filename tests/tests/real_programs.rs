//! Real programs under rewind, against their own uninterrupted runs (DESIGN §9, oracles (a) and
//! (b)): interpreters and runtimes with threads, event loops, child processes and files (python3,
//! node, perl, tclsh, a JVM, sqlite3, a bash pipeline) are checkpointed mid-run and killed, then
//! restarted (also twice in a chain, and while they run on), and recorded then replayed; what they
//! print must be exactly what the uninterrupted run prints. Each program does real work whose
//! output depends on all of it (hashes, sums). A program that is not installed is skipped with a
//! printed reason (scripts/setup.sh installs them all).
//!
//! The README's "Real programs" table lists what was tried by hand beyond these.

use std::path::PathBuf;
use std::process::Command;

use rewind_tests::*;

/// A command running `name` from PATH, or None (with the reason printed) when it is not installed.
fn installed(name: &str, test: &str) -> Option<Command> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(Command::new(path)),
        None => {
            println!("SKIPPED {test}: {name} is not installed (scripts/setup.sh installs it)");
            eprintln!("SKIPPED {test}: {name} is not installed (scripts/setup.sh installs it)");
            None
        }
    }
}

/// Threads hashing in rounds, joined each round; the sleeps hand the GIL around.
const PY_THREADS: &str = r#"
import hashlib, threading, time
lock = threading.Lock()
results = {}
def work(i):
    h = hashlib.sha256()
    for k in range(25):
        h.update(f"{i}-{k}".encode() * 500)
        time.sleep(0.004)
    with lock:
        results[i] = h.hexdigest()[:16]
for rnd in range(14):
    ts = [threading.Thread(target=work, args=(rnd * 4 + j,)) for j in range(4)]
    for t in ts: t.start()
    for t in ts: t.join()
    print(rnd, sorted(results.items())[-4:], flush=True)
print("done", len(results), flush=True)
"#;

#[test]
fn python3_threads_restart_chain_run_on_and_replay() {
    let program = {
        let mut p = python3_interpreter();
        p.arg("-c").arg(PY_THREADS);
        p
    };
    let uninterrupted = run_uninterrupted(&program);
    let scratch = Scratch::new("python3_threads_chain");
    checkpoint_chain(&scratch, &program, &[Wait::Lines(3), Wait::Lines(4)])
        .assert_matches(&uninterrupted);
    let scratch = Scratch::new("python3_threads_run_on");
    checkpoint_run_on(&scratch, &program, Wait::Lines(4)).assert_matches(&uninterrupted);
    let scratch = Scratch::new("python3_threads_replay");
    record(&scratch, &program, None).assert_replays_as_recorded(&[]);
}

/// An asyncio event loop: tasks, a queue, timers (epoll_wait with timeouts).
const PY_ASYNCIO: &str = r#"
import asyncio, hashlib
async def worker(n, q):
    acc = 0
    for i in range(24):
        await asyncio.sleep(0.015)
        acc = (acc * 31 + n * i) % 1000003
        await q.put((n, i, acc))
async def main():
    q = asyncio.Queue()
    tasks = [asyncio.create_task(worker(n, q)) for n in range(5)]
    h = hashlib.md5()
    for got in range(1, 121):
        h.update(repr(await q.get()).encode())
        if got % 8 == 0:
            print(got, h.hexdigest()[:12], flush=True)
    await asyncio.gather(*tasks)
asyncio.run(main())
"#;

#[test]
fn python3_asyncio_restart_and_replay() {
    let program = {
        let mut p = python3_interpreter();
        p.arg("-c").arg(PY_ASYNCIO);
        p
    };
    let uninterrupted = run_uninterrupted(&program);
    let scratch = Scratch::new("python3_asyncio_restart");
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(4)).assert_matches(&uninterrupted);
    let scratch = Scratch::new("python3_asyncio_replay");
    record(&scratch, &program, None).assert_replays_as_recorded(&[]);
}

/// A pool of worker processes (fork), fed through pipes and guarded by POSIX semaphores in
/// /dev/shm that every process maps: the whole tree is checkpointed and restarted.
const PY_MULTIPROCESSING: &str = r#"
import hashlib, multiprocessing as mp, time
def f(x):
    time.sleep(0.03)
    return hashlib.sha1(str(x).encode()).hexdigest()[:8]
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(2) as p:
        for rnd in range(14):
            print(rnd, p.map(f, range(rnd * 4, rnd * 4 + 4)), flush=True)
"#;

#[test]
fn python3_multiprocessing_pool_restart() {
    let program = {
        let mut p = python3_interpreter();
        p.arg("-c").arg(PY_MULTIPROCESSING);
        p
    };
    let uninterrupted = run_uninterrupted(&program);
    let scratch = Scratch::new("python3_multiprocessing_restart");
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(4)).assert_matches(&uninterrupted);
}

const NODE_WORKERS: &str = r#"
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const crypto = require('crypto');
if (isMainThread) {
  let round = 0;
  const h = crypto.createHash('sha256');
  const next = () => {
    if (round === 14) return;
    const r = round++;
    Promise.all([0, 1].map(i => new Promise(res => {
      new Worker(__filename, { workerData: r * 2 + i }).on('message', res);
    }))).then(v => {
      h.update(v.join(','));
      console.log(r, v.join(' '), h.copy().digest('hex').slice(0, 12));
      setTimeout(next, 40);
    });
  };
  next();
} else {
  let x = workerData;
  for (let i = 0; i < 200000; i++) x = (x * 1103515245 + 12345) % 2147483648;
  parentPort.postMessage(x);
}
"#;

#[test]
fn node_worker_threads_restart_and_replay() {
    let Some(mut program) = installed("node", "node_worker_threads_restart_and_replay") else {
        return;
    };
    let scratch = Scratch::new("node_worker_threads");
    // A script file: worker_threads runs __filename again in each worker.
    let script = scratch.write("workers.js", NODE_WORKERS);
    program.arg(&script);
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(4)).assert_matches(&uninterrupted);
    record(&scratch, &program, None).assert_replays_as_recorded(&[]);
}

const PERL_DIGESTS: &str = r#"
use strict; use Digest::MD5 qw(md5_hex); use Time::HiRes qw(sleep);
$| = 1; my %h;
for my $i (1..16) {
  $h{"$i.$_"} = md5_hex("$i:$_") for 1..1500;
  my $x = join ",", map { substr($h{$_}, 0, 4) } (sort keys %h)[0..3];
  print "$i ", scalar(keys %h), " $x\n";
  sleep 0.05;
}
"#;

#[test]
fn perl_restart_chain_and_replay() {
    let Some(mut program) = installed("perl", "perl_restart_chain_and_replay") else {
        return;
    };
    program.arg("-e").arg(PERL_DIGESTS);
    let uninterrupted = run_uninterrupted(&program);
    let scratch = Scratch::new("perl_chain");
    checkpoint_chain(&scratch, &program, &[Wait::Lines(4), Wait::Lines(4)])
        .assert_matches(&uninterrupted);
    let scratch = Scratch::new("perl_replay");
    record(&scratch, &program, None).assert_replays_as_recorded(&[]);
}

const TCL_DICT: &str = r#"
set d [dict create]
for {set i 0} {$i < 15} {incr i} {
  for {set j 0} {$j < 2000} {incr j} { dict set d "$i.$j" [expr {($i*7919 + $j*31) % 100003}] }
  set s 0; dict for {k v} $d { incr s $v }
  puts "$i [dict size $d] $s"; flush stdout
  after 50
}
"#;

#[test]
fn tclsh_restart_and_replay() {
    let Some(mut program) = installed("tclsh", "tclsh_restart_and_replay") else {
        return;
    };
    let scratch = Scratch::new("tclsh");
    program.arg(scratch.write("dict.tcl", TCL_DICT));
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(4)).assert_matches(&uninterrupted);
    record(&scratch, &program, None).assert_replays_as_recorded(&[]);
}

/// sqlite3 building and querying a database file, in rounds; each query prints its result.
fn sqlite_session(rows: u32) -> String {
    let mut sql = String::from(
        "create table t(a integer primary key, b text, c real);\ncreate index ib on t(b);\n",
    );
    for round in 1..=12 {
        sql.push_str(&format!(
            "with recursive r(x) as (select 1 union all select x+1 from r where x<{rows}) \
             insert into t(b,c) select 'v{round}-' || (x*7919 % 1009), x/{round}.0 from r;\n\
             select {round}, count(*), round(sum(c), 3), count(distinct b) from t;\n\
             select b, count(*) from t group by b order by 2 desc, 1 limit 1;\n"
        ));
    }
    sql
}

#[test]
fn sqlite3_file_database_restart_and_replay() {
    let Some(sqlite) = installed("sqlite3", "sqlite3_file_database_restart_and_replay") else {
        return;
    };
    // A database file per run, removed first by the shell: the native run, the checkpointed run
    // and the recorded run each build theirs from nothing, the restart goes on with the file as
    // the killed program left it.
    let scratch = Scratch::new("sqlite3");
    let sql = scratch.write("session.sql", sqlite_session(6000));
    let run_in = |name: &str| {
        let db = scratch.join(name);
        let mut p = Command::new("/bin/sh");
        p.arg("-c")
            .arg(format!(
                "rm -f {db} && exec {sqlite} -cmd '.timer off' {db} < {sql}",
                db = db.display(),
                sqlite = sqlite.get_program().to_string_lossy(),
                sql = sql.display()
            ))
            .current_dir(scratch.path());
        p
    };
    let uninterrupted = run_uninterrupted(&run_in("native.db"));
    assert!(
        String::from_utf8_lossy(&uninterrupted.stdout).contains("12|72000|"),
        "sqlite3 did not build the database:\n{}",
        String::from_utf8_lossy(&uninterrupted.stdout)
    );
    checkpoint_kill_restart(&scratch, &run_in("rewound.db"), Wait::Lines(6))
        .assert_matches(&uninterrupted);
    record(&scratch, &run_in("recorded.db"), None).assert_replays_as_recorded(&[]);
}

const JAVA_WORK: &str = r#"
import java.security.MessageDigest;
import java.util.*;
import java.util.concurrent.*;
public class Work {
  public static void main(String[] args) throws Exception {
    ExecutorService ex = Executors.newFixedThreadPool(4);
    Map<Integer, String> m = new ConcurrentHashMap<>();
    for (int r = 0; r < 16; r++) {
      List<Future<?>> fs = new ArrayList<>();
      for (int j = 0; j < 4; j++) {
        final int k = r * 4 + j;
        fs.add(ex.submit(() -> {
          try {
            MessageDigest d = MessageDigest.getInstance("SHA-256");
            byte[] b = new byte[0];
            for (int i = 0; i < 1500; i++) { d.update(("x" + k + i).getBytes()); b = d.digest(); d.update(b); }
            // Garbage: collections (and their safepoints) happen all along.
            List<Integer> l = new ArrayList<>();
            for (int i = 0; i < 150000; i++) l.add((i * k) % 1009);
            m.put(k, String.format("%02x%02x", b[0], b[1]) + l.size());
          } catch (Exception e) { throw new RuntimeException(e); }
        }));
      }
      for (Future<?> f : fs) f.get();
      System.out.println(r + " " + new TreeMap<>(m).lastEntry());
      Thread.sleep(60);
    }
    ex.shutdown();
  }
}
"#;

/// A JVM: ~20 threads, SIGSEGV-based safepoints, JIT code, gigabytes of reserved address space,
/// its perf data file mapped shared. Checkpointed, killed and restarted twice in a chain, and
/// checkpointed while it runs on (it used to lose its SIGSEGV handler there and crash at the
/// next safepoint).
#[test]
fn java_threads_restart_chain_and_run_on() {
    let test = "java_threads_restart_chain_and_run_on";
    let (Some(javac), Some(java)) = (installed("javac", test), installed("java", test)) else {
        return;
    };
    let scratch = Scratch::new("java_build");
    let source = scratch.write("Work.java", JAVA_WORK);
    let classes: PathBuf = scratch.dir("classes");
    let mut compile = javac;
    compile.arg("-d").arg(&classes).arg(&source);
    run_command(compile).assert_success();
    let mut program = java;
    program.arg("-cp").arg(&classes).arg("Work");
    let uninterrupted = run_uninterrupted(&program);

    let chain = Scratch::new("java_chain");
    checkpoint_chain(&chain, &program, &[Wait::Lines(3), Wait::Lines(3)])
        .assert_matches(&uninterrupted);
    let run_on = Scratch::new("java_run_on");
    // The restart comes after the run ended, which removed its perf data file: /tmp/hsperfdata_*
    // holds one per JVM, mapped shared. -XX:-UsePerfData leaves it out (see README, Limits).
    let mut quiet = Command::new(program.get_program());
    quiet.arg("-XX:-UsePerfData").args(program.get_args());
    let uninterrupted = run_uninterrupted(&quiet);
    checkpoint_run_on(&run_on, &quiet, Wait::Lines(4)).assert_matches(&uninterrupted);
}

/// A bash pipeline with subshells, command substitutions and coreutils: a tree of processes that
/// changes all the time, checkpointed and restarted as a whole.
const BASH_PIPELINE: &str = r#"
for i in $(seq 1 14); do
  ( seq 1 20000 | awk -v k=$i '{s+=$1*k} END {print s}' ) | tr 0 o
  echo "$i $(seq $i 100 | sort -r | head -3 | paste -sd,) $(echo $i | md5sum | cut -c1-8)"
  sleep 0.1
done
"#;

#[test]
fn bash_pipelines_restart() {
    let Some(mut program) = installed("bash", "bash_pipelines_restart") else {
        return;
    };
    program.arg("-c").arg(BASH_PIPELINE);
    let uninterrupted = run_uninterrupted(&program);
    let scratch = Scratch::new("bash_pipelines");
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(6)).assert_matches(&uninterrupted);
}

/// `make -j2` building a small C program with gcc: a tree of make, gcc drivers, cc1 and as,
/// linked by the jobserver pipe; the checkpoint lands mid-build (a driver whose cc1 has just
/// ended is common: that child comes back as a zombie the driver reaps).
const MAKE_BUILD: &str = r#"
set -e
cd "$1"
n=24
for i in $(seq 1 $n); do
  printf 'long f%d(void){ long s=0; for(long k=0;k<%d;k++) s+=k*%d%%7; return s; }\n' $i $((i*1000)) $i > f$i.c
done
{ echo '#include <stdio.h>'
  for i in $(seq 1 $n); do echo "long f$i(void);"; done
  echo 'int main(void){ long t=0;'
  for i in $(seq 1 $n); do echo "t+=f$i(); printf(\"%d %ld\\n\", $i, t);"; done
  echo 'return 0;}'; } > main.c
objs=$(for i in $(seq 1 $n); do printf 'f%d.o ' $i; done)
printf 'prog: %s main.o\n\t@$(CC) -o $@ $^\n\t@echo linked\n%%.o: %%.c\n\t@$(CC) -O2 -c $< -o $@\n\t@echo compiled $<\n' "$objs" > Makefile
echo building
make -j2 2>&1 | sort
./prog | tail -3
"#;

#[test]
fn make_j2_with_gcc_restart() {
    let test = "make_j2_with_gcc_restart";
    let (Some(_), Some(_), Some(mut program)) = (
        installed("make", test),
        installed("gcc", test),
        installed("bash", test),
    ) else {
        return;
    };
    let scratch = Scratch::new("make_j2");
    let script = scratch.write("build.sh", MAKE_BUILD);
    let (native, rewound) = (scratch.dir("native"), scratch.dir("rewound"));
    program.arg(&script);
    let mut native_run = Command::new(program.get_program());
    native_run.args(program.get_args()).arg(&native);
    let uninterrupted = run_uninterrupted(&native_run);
    program.arg(&rewound);
    let chain = checkpoint_chain(&scratch, &program, &[Wait::LineContaining("building")]);
    chain.assert_matches(&uninterrupted);
    assert!(
        chain
            .images
            .iter()
            .any(|i| i.to_string_lossy().contains("ckpt_make_")),
        "the checkpoint did not land during the build: {:?}",
        chain.images
    );
}
