//! Builds the syscall buffer's in-process code (sbuf/blob.c): freestanding,
//! linked at its fixed address, flattened to raw bytes that the recorder
//! maps into the program (src/sbuf.rs includes them).

use std::path::PathBuf;
use std::process::Command;

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (a C compiler and objcopy are needed)")
    });
    assert!(status.success(), "{cmd:?} failed");
}

fn main() {
    println!("cargo:rerun-if-changed=sbuf/blob.c");
    println!("cargo:rerun-if-changed=sbuf/sbuf.ld");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let elf = out.join("sbuf.elf");
    let bin = out.join("sbuf.bin");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    run(Command::new(cc)
        .args([
            "-O2",
            "-ffreestanding",
            "-fno-builtin",
            "-nostdlib",
            "-static",
            "-fPIC",
            "-fno-plt",
            "-mgeneral-regs-only",
            "-fno-stack-protector",
            "-fcf-protection=none",
            "-fno-asynchronous-unwind-tables",
            "-fno-jump-tables",
            "-Wall",
            "-Werror",
            "-Wl,-T,sbuf/sbuf.ld",
            "-Wl,--build-id=none",
            "-Wl,-e,sbuf_entry",
            "-o",
        ])
        .arg(&elf)
        .arg("sbuf/blob.c"));
    run(Command::new("objcopy")
        .args(["-O", "binary", "-j", ".text"])
        .arg(&elf)
        .arg(&bin));
}
