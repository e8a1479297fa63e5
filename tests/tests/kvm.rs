//! The KVM plugin (issue 8): a tiny VMM (tests/targets/kvm_vmm.c) runs 64-bit guests that compute
//! checksums over guest memory and report through port I/O. Checkpointed mid-run under `rewind
//! launch --plugin kvm`, killed and restarted, it must print exactly what an uninterrupted run
//! prints: every report's checksum depends on the guest's registers and on all of its memory.

use std::process::Command;

use rewind_tests::*;

/// Skip (loudly) where the kernel offers no KVM.
fn have_kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: /dev/kvm cannot be opened on this machine");
    }
    ok
}

fn vmm(args: &[&str]) -> Command {
    let mut c = fixture("kvm_vmm");
    c.args(args);
    c
}

/// Lines of one vCPU, in order.
fn of_vcpu(text: &str, id: u32) -> Vec<String> {
    let prefix = format!("vcpu {id} ");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn kvm_guest_continues_after_restart() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_guest_continues_after_restart");
    let program = vmm(&[]);
    let uninterrupted = run_uninterrupted(&program);
    let chain = checkpoint_chain_with(
        &["--plugin", "kvm"],
        &scratch,
        &program,
        &[Wait::LineContaining("report 6 ")],
    );
    chain.assert_matches(&uninterrupted);
}

/// A VM with an in-kernel interrupt controller and PIT (their creation is replayed, their state
/// and the local APIC's are read and set).
#[test]
fn kvm_vm_with_irqchip_continues_after_restart() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_vm_with_irqchip_continues_after_restart");
    let mut program = vmm(&["60000", "16"]);
    program.env("KVM_VMM_IRQCHIP", "1");
    let uninterrupted = run_uninterrupted(&program);
    let chain = checkpoint_chain_with(
        &["--plugin", "kvm"],
        &scratch,
        &program,
        &[Wait::LineContaining("report 5 ")],
    );
    chain.assert_matches(&uninterrupted);
}

#[test]
fn kvm_restarts_twice_in_a_row() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_restarts_twice_in_a_row");
    let program = vmm(&["100000", "16"]);
    let uninterrupted = run_uninterrupted(&program);
    // The restarted program is checkpointed again: the plugin's log of the VM's configuration
    // travels in the image.
    let chain = checkpoint_chain_with(
        &["--plugin", "kvm"],
        &scratch,
        &program,
        &[
            Wait::LineContaining("report 5 "),
            Wait::LineContaining("report 14 "),
        ],
    );
    chain.assert_matches(&uninterrupted);
}

#[test]
fn kvm_two_vcpus_each_continue() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_two_vcpus_each_continue");
    let program = vmm(&["60000", "32", "2"]);
    let uninterrupted = run_uninterrupted(&program);
    let expected = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    let chain = checkpoint_chain_with(
        &["--plugin", "kvm"],
        &scratch,
        &program,
        &[Wait::LineContaining("report 5 ")],
    );
    chain.last.assert_success();
    // The two vCPU threads print in whatever order they run: compare each vCPU's own lines.
    let got: String = chain.outputs.concat();
    for id in 0..2 {
        let want = of_vcpu(&expected, id);
        assert!(want.len() > 10, "vcpu {id} printed too little:\n{expected}");
        assert_eq!(
            of_vcpu(&got, id),
            want,
            "vcpu {id}'s lines differ from the uninterrupted run\n--- before:\n{}\n--- after:\n{}",
            chain.outputs[0],
            chain.outputs[1]
        );
    }
    assert!(
        chain.outputs.iter().all(|o| !o.is_empty()),
        "the checkpoint came too late or too early: {:?}",
        chain.outputs
    );
}

/// A checkpoint and restart while the VMM sits in an exit handler (it sleeps there, so the
/// checkpoint lands inside); `expect` is what the verbose log of `stage` ("launch" or "restart")
/// must say about the unfinished exit. The guest mixes every reply into its state: a reply lost,
/// repeated or wrong shows in every later checksum.
fn checkpoint_inside_exit(test: &str, args: &[&str], stage: &str, expect: &str) {
    let scratch = Scratch::new(test);
    let program = vmm(args);
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch_with(
        &["-v", "--plugin", "kvm"],
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("report 3 "));
    let image = running.checkpoint_and_kill();
    let launched = running.wait_timeout(KILL_TIMEOUT);
    let after = rewind_in(
        &scratch.dir("ckpt-1"),
        ["-v".as_ref(), "restart".as_ref(), image.as_os_str()],
    );
    let log = if stage == "launch" {
        &launched.stderr
    } else {
        &after.stderr
    };
    assert!(
        log.contains(expect),
        "the {stage} log does not say {expect:?} (the checkpoint missed the exit handler?):\n{}\n{}",
        launched.describe(),
        after.describe()
    );
    assert_pieces_match(&uninterrupted, &[&launched.stdout, &after.stdout], &after);
}

/// Inside an `out` exit: the checkpoint lets KVM finish the instruction.
#[test]
fn kvm_checkpoint_inside_an_output_exit() {
    if !have_kvm() {
        return;
    }
    checkpoint_inside_exit(
        "kvm_checkpoint_inside_an_output_exit",
        &["30000", "8", "1", "12", "400000", "0"],
        "launch",
        "output exit at the checkpoint: finished it",
    );
}

/// Inside an `in` exit, before the VMM answered: restart re-creates the exit, the VMM's answer
/// then completes it.
#[test]
fn kvm_checkpoint_inside_an_input_exit() {
    if !have_kvm() {
        return;
    }
    checkpoint_inside_exit(
        "kvm_checkpoint_inside_an_input_exit",
        &["30000", "8", "1", "12", "0", "400000"],
        "restart",
        "input exit at the checkpoint: re-executed it",
    );
}

/// A checkpoint the program survives: it runs on to the same end, and the image restarts too.
#[test]
fn kvm_checkpoint_then_run_on() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_checkpoint_then_run_on");
    let program = vmm(&["60000", "16"]);
    let uninterrupted = run_uninterrupted(&program);
    let expected = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    let mut running = launch_with(
        &["--plugin", "kvm"],
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("live.out")),
    );
    running.wait_for(Wait::LineContaining("report 4 "));
    let image = running.checkpoint();
    let live = running.wait();
    live.assert_success();
    assert_eq!(live.stdout, expected, "the program did not run on unharmed");
    let restarted = rewind_in(
        &scratch.dir("ckpt-1"),
        ["restart".as_ref(), image.as_os_str()],
    );
    restarted.assert_success();
    assert!(
        expected.ends_with(&restarted.stdout) && restarted.stdout.contains("halted"),
        "the restarted image did not finish the run:\n{}",
        restarted.describe()
    );
}

/// Without KVM at restart (here /dev/kvm is a plain file in a private mount namespace), restart
/// fails with one clear line naming the device, and leaves no process behind.
#[test]
fn kvm_restart_without_kvm_fails_clearly() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_restart_without_kvm_fails_clearly");
    let mut running = launch_with(
        &["--plugin", "kvm"],
        &vmm(&["100001", "8"]),
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("report 2 "));
    let image = running.checkpoint_and_kill();
    running.wait_timeout(KILL_TIMEOUT);
    let fake = scratch.write("not-kvm", "");
    let script = format!(
        "mount --bind {} /dev/kvm && exec {} restart {}",
        fake.display(),
        rewind_bin().display(),
        image.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let done = run_command(cmd);
    assert_fails_clearly(&done, &["/dev/kvm"]);
    assert_no_process_running("kvm_vmm", "100001");
}

/// Without the plugin, the checkpoint says what it cannot keep and how to fix it.
#[test]
fn kvm_without_plugin_warns() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_without_plugin_warns");
    let mut running = launch(
        &vmm(&["100000", "8"]),
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("report 2 "));
    let done = running.command(&["--checkpoint", "--kill"]);
    assert!(
        done.stderr.contains("--plugin kvm") || done.stdout.contains("--plugin kvm"),
        "no hint about --plugin kvm:\n{}",
        done.describe()
    );
    running.wait_timeout(KILL_TIMEOUT);
}

/// No process runs `name` with argument `arg` (unique to one test).
fn assert_no_process_running(name: &str, arg: &str) {
    let mine = |pid: &str| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        comm.trim() == name && cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes())
    };
    let left: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
                .filter(|p| mine(p))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// Record, replay and debug backwards (KVM_RUN is an event: kvm_run and dirtied guest memory)
// ---------------------------------------------------------------------------------------------

/// The checksum the live run printed for `report N` of vCPU 0.
fn live_checksum(live: &str, n: u32) -> String {
    let prefix = format!("vcpu 0 report {n} checksum ");
    live.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|c| format!("0x{}", c.trim_start_matches('0')))
        .unwrap_or_else(|| panic!("the live run printed no report {n}:\n{live}"))
}

#[test]
fn kvm_record_replays_guest_memory_and_exits() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_record_replays_guest_memory_and_exits");
    let program = vmm(&["3000", "8", "1", "8"]);
    let native = run_uninterrupted(&program);
    let rec = record(&scratch, &program, None);
    assert_eq!(
        rec.stdout,
        String::from_utf8_lossy(&native.stdout),
        "recording changed what the VMM computed"
    );
    rec.assert_replays_as_recorded(&[]);
    rec.assert_replays_as_recorded(&["--verify"]);
    // The replayed process's own memory (read by the debugger, not the log's console bytes): the
    // guest memory hash the live run printed, so every page the guest wrote was replayed.
    let live_hash = rec
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("vmm: guest memory hash "))
        .expect("a memory hash line")
        .to_string();
    let done = debug(&rec.dir, &["break done", "run", "p/x memory_hash"]);
    assert!(done.status.success(), "{}", done.describe());
    assert_eq!(
        printed_values(&done.stdout),
        vec![format!("0x{}", live_hash.trim_start_matches('0'))],
        "{}",
        done.describe()
    );
}

#[test]
fn kvm_reverse_continue_lands_on_the_previous_exit() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_reverse_continue_lands_on_the_previous_exit");
    let rec = record(&scratch, &vmm(&["3000", "8", "1", "8"]), None);
    let cmds = [
        "break say",
        "run",
        "continue 4",
        "p a",
        "p/x b",
        "reverse-continue",
        "p a",
        "p/x b",
        "reverse-continue",
        "p a",
        "p/x b",
        "continue",
        "p a",
    ];
    let done = debug(&rec.dir, &cmds);
    assert!(done.status.success(), "{}", done.describe());
    let v = printed_values(&done.stdout);
    let want: Vec<String> = vec![
        "5".into(),
        live_checksum(&rec.stdout, 5),
        "4".into(),
        live_checksum(&rec.stdout, 4),
        "3".into(),
        live_checksum(&rec.stdout, 3),
        "4".into(),
    ];
    assert_eq!(v, want, "{}", done.describe());
}

#[test]
fn kvm_record_two_vcpus_replays() {
    if !have_kvm() {
        return;
    }
    let scratch = Scratch::new("kvm_record_two_vcpus_replays");
    let program = vmm(&["3000", "8", "2", "8"]);
    let native = String::from_utf8_lossy(&run_uninterrupted(&program).stdout).into_owned();
    let rec = record(&scratch, &program, None);
    for id in 0..2 {
        assert_eq!(of_vcpu(&rec.stdout, id), of_vcpu(&native, id));
    }
    rec.assert_replays_as_recorded(&[]);
}
