//! Compiles every C fixture in `targets/*.c` into `$OUT_DIR/targets/<name>` with gcc, and tells the
//! tests where they are through `REWIND_TARGETS_DIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::{env, fs};

/// Flags for every fixture.
const CFLAGS: &[&str] = &["-O1", "-g", "-pthread", "-Wall"];

/// Extra flags of the fixtures that need them.
fn extra_flags(name: &str) -> &'static [&'static str] {
    match name {
        "simd_regs" => &["-mavx2"],
        "static_loop" => &["-static"],
        // Fixtures to debug: every line has code, as gdb users expect.
        name if name.starts_with("dbg_") => &["-O0"],
        _ => &[],
    }
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let sources_dir = manifest_dir.join("targets");
    let out_dir =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("targets");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", sources_dir.display());
    fs::create_dir_all(&out_dir)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", out_dir.display())));

    let mut sources: Vec<PathBuf> = fs::read_dir(&sources_dir)
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot list the fixtures in {}: {e}",
                sources_dir.display()
            ))
        })
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    sources.sort();

    // Start every compiler at once, then collect them: a dozen small files build in the time of one.
    let compilations: Vec<(PathBuf, std::process::Child)> = sources
        .iter()
        .map(|source| {
            println!("cargo:rerun-if-changed={}", source.display());
            let name = source.file_stem().expect("a .c file has a stem").to_string_lossy().into_owned();
            let child = Command::new("gcc")
                .args(CFLAGS)
                .args(extra_flags(&name))
                .arg("-o")
                .arg(out_dir.join(&name))
                .arg(source)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    fail(&format!(
                        "cannot run gcc ({e}): the C fixtures in tests/targets need it; install gcc \
                         (scripts/setup.sh does)"
                    ))
                });
            (source.clone(), child)
        })
        .collect();

    let mut failures = Vec::new();
    for (source, child) in compilations {
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| fail(&format!("waiting for gcc on {}: {e}", source.display())));
        let diagnostics = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            failures.push(format!(
                "{} ({}):\n{}",
                rel(&source, &manifest_dir),
                output.status,
                diagnostics
            ));
        } else {
            for line in diagnostics.lines().filter(|l| !l.trim().is_empty()) {
                println!("cargo:warning={}: {line}", rel(&source, &manifest_dir));
            }
        }
    }
    if !failures.is_empty() {
        fail(&format!(
            "gcc failed to compile {} fixture(s):\n{}",
            failures.len(),
            failures.join("\n")
        ));
    }

    println!("cargo:rustc-env=REWIND_TARGETS_DIR={}", out_dir.display());
}

fn rel(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Stops the build with a message cargo shows as is (no panic backtrace noise).
fn fail(message: &str) -> ! {
    eprintln!("error: rewind-tests fixtures: {message}");
    std::process::exit(1);
}
