//! Bad input gets a clear failure (DESIGN §7, §8): exit code 1, one short line on stderr saying what is
//! wrong, never a panic, never a partly restored program; usage errors exit 2.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use rewind_tests::*;

/// Words a message may use to say that no program is there to talk to.
const NOTHING_RUNNING: &[&str] = &[
    "not running",
    "no program",
    "no launch",
    "exited",
    "running",
    "no such",
    "not found",
    "connect",
];

/// How long a restart of a bad image may take to give up.
const REFUSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A real image of loop_heap, checkpointed a few lines in.
fn loop_heap_image(scratch: &Scratch) -> PathBuf {
    let mut launched = launch(
        &fixture("loop_heap"),
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("launch.out")),
    );
    launched.wait_for(Wait::Lines(3));
    let image = launched.checkpoint_and_kill();
    launched.wait_timeout(KILL_TIMEOUT);
    image
}

/// `rewind restart` of `image` that must be refused: returns how it ended, after checking that the
/// program printed nothing (it was not restored, not even partly).
fn refused_restart(scratch: &Scratch, image: &Path) -> Finished {
    let done = restart(
        image,
        &scratch.dir("ckpt-restart"),
        &[],
        Redirect::to(scratch.join("restart.out")),
    )
    .wait_timeout(REFUSAL_TIMEOUT);
    assert!(
        done.stdout.is_empty(),
        "a partly restored program ran:\n{}",
        done.describe()
    );
    done
}

fn copy_with(image: &Path, dest: &Path, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = fs::read(image).unwrap();
    change(&mut bytes);
    fs::write(dest, bytes).unwrap();
    dest.to_owned()
}

#[test]
fn launch_missing_program_fails_clearly() {
    let scratch = Scratch::new("launch_missing_program_fails_clearly");
    let missing = scratch.join("no_such_program");
    let ckpt = scratch.dir("ckpt");
    let done = rewind_in(
        scratch.path(),
        [
            "launch".as_ref(),
            "--ckpt-dir".as_ref(),
            ckpt.as_os_str(),
            "--".as_ref(),
            missing.as_os_str(),
        ],
    );
    assert_fails_clearly(&done, &["no_such_program"]);
}

#[test]
fn checkpoint_after_exit_fails_clearly() {
    let scratch = Scratch::new("checkpoint_after_exit_fails_clearly");
    let launched = launch(
        &fixture("exit_early"),
        &scratch.dir("ckpt"),
        Redirect::to(scratch.join("launch.out")),
    );
    let ckpt = launched.ckpt_dir().to_owned();
    let exited = launched.wait();
    exited.assert_success();
    assert_eq!(exited.stdout, "exit_early: bye\n");

    let done = rewind_in(
        &ckpt,
        [
            "command".as_ref(),
            "--ckpt-dir".as_ref(),
            ckpt.as_os_str(),
            "--checkpoint".as_ref(),
        ],
    );
    assert_fails_clearly(&done, NOTHING_RUNNING);
}

#[test]
fn restart_corrupt_image_fails_clearly() {
    let scratch = Scratch::new("restart_corrupt_image_fails_clearly");
    let image = loop_heap_image(&scratch);
    let corrupt = copy_with(&image, &scratch.join("corrupt.rwd"), |bytes| {
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 64] {
            *b ^= 0xff;
        }
    });
    let done = refused_restart(&scratch, &corrupt);
    assert_fails_clearly(
        &done,
        &["corrupt", "checksum", "invalid", "damaged", "mismatch"],
    );
}

#[test]
fn restart_truncated_image_fails_clearly() {
    let scratch = Scratch::new("restart_truncated_image_fails_clearly");
    let image = loop_heap_image(&scratch);
    let truncated = copy_with(&image, &scratch.join("truncated.rwd"), |bytes| {
        bytes.truncate(bytes.len() / 2)
    });
    let done = refused_restart(&scratch, &truncated);
    assert_fails_clearly(
        &done,
        &[
            "truncated",
            "short",
            "incomplete",
            "unexpected end",
            "eof",
            "end of file",
        ],
    );
}

#[test]
fn restart_foreign_file_fails_clearly() {
    let scratch = Scratch::new("restart_foreign_file_fails_clearly");
    let empty = scratch.write("empty.rwd", "");
    for foreign in [Path::new("/bin/sh"), empty.as_path()] {
        let done = refused_restart(&scratch, foreign);
        assert_fails_clearly(
            &done,
            &[
                "not a rewind image",
                "not an image",
                "magic",
                "foreign",
                "unrecognized",
            ],
        );
    }
}

#[test]
fn restart_newer_version_image_fails_clearly() {
    let scratch = Scratch::new("restart_newer_version_image_fails_clearly");
    let image = loop_heap_image(&scratch);
    // DESIGN §8: the header holds the format version, a u32 little-endian at byte offset 8.
    let newer = copy_with(&image, &scratch.join("newer.rwd"), |bytes| {
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        bytes[8..12].copy_from_slice(&(version + 1).to_le_bytes());
    });
    let done = refused_restart(&scratch, &newer);
    assert_fails_clearly(&done, &["version"]);
}

#[test]
fn restart_missing_open_file_names_it() {
    let scratch = Scratch::new("restart_missing_open_file_names_it");
    let held = scratch.write("held_by_the_image.txt", "hello, image\n");
    let mut program = fixture("open_file");
    program.arg(&held);
    let mut launched = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("launch.out")),
    );
    launched.wait_for(Wait::Lines(3));
    let image = launched.checkpoint_and_kill();
    launched.wait_timeout(KILL_TIMEOUT);

    fs::remove_file(&held).unwrap();
    let done = refused_restart(&scratch, &image);
    assert_fails_clearly(&done, &["held_by_the_image.txt"]);
}

#[test]
fn command_without_launch_fails_clearly() {
    let scratch = Scratch::new("command_without_launch_fails_clearly");
    let ckpt = scratch.dir("ckpt");
    for flags in [
        &["--checkpoint"][..],
        &["--status", "--json"],
        &["--kill"],
        &["--checkpoint", "--kill"],
    ] {
        let mut args = vec!["command".as_ref(), "--ckpt-dir".as_ref(), ckpt.as_os_str()];
        args.extend(flags.iter().map(OsStr::new));
        let done = rewind_in(&ckpt, args);
        assert_fails_clearly(&done, NOTHING_RUNNING);
    }
}

#[test]
fn usage_errors_exit_2() {
    let scratch = Scratch::new("usage_errors_exit_2");
    for args in [
        &["launch"][..],
        &["restart"],
        &["no-such-subcommand"],
        &["launch", "--no-such-flag", "--", "/bin/true"],
    ] {
        let done = rewind_in(scratch.path(), args);
        assert!(
            done.status.code() == Some(2)
                && !done.stderr.trim().is_empty()
                && !done.stderr.contains("panicked"),
            "expected a usage error (exit code 2, a message on stderr):\n{}",
            done.describe()
        );
    }
}

/// A copy of `image` whose process state was changed by `change`, memory
/// carried over page run by page run (written by the engine's own writer).
fn rewrite_state(
    image: &Path,
    dest: &Path,
    change: impl FnOnce(&mut rewind_ckpt::image::format::ProcessState),
) -> PathBuf {
    use rewind_ckpt::image::{ImageReader, ImageWriter};
    let mut reader = ImageReader::open(image).unwrap();
    let mut state = reader.state.clone();
    change(&mut state);
    let mut writer = ImageWriter::create(dest, &reader.header, &state).unwrap();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        for (run, data) in chunk.pages() {
            writer.add_pages(run.addr, data).unwrap();
        }
    }
    writer.finish().unwrap();
    dest.to_owned()
}

#[test]
fn restart_address_conflict_names_region() {
    use rewind_ckpt::image::format::{Region, RegionKind};
    let scratch = Scratch::new("restart_address_conflict_names_region");
    let image = loop_heap_image(&scratch);
    let bad = rewrite_state(&image, &scratch.join("conflict.rwd"), |state| {
        // A region laid over the middle of the first one.
        let first = state.regions[0].clone();
        state.regions.push(Region {
            start: first.start,
            end: first.start + 0x1000,
            prot: 3,
            shared: false,
            kind: RegionKind::Anon,
            name: "[anon:intruder]".into(),
        });
    });
    let done = refused_restart(&scratch, &bad);
    assert_fails_clearly(&done, &["address conflict"]);
    assert!(
        done.stderr.contains("[anon:intruder]"),
        "the message must name the region:\n{}",
        done.describe()
    );
}
