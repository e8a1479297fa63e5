//! Compiles every C fixture in `targets/*.c` into `$OUT_DIR/targets/<name>` with gcc (MPI programs,
//! `targets/mpi_*.c`, with mpicc when it is installed), and tells the tests where they are through
//! `REWIND_TARGETS_DIR`.

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

    // MPI programs (`mpi_*.c`) need MPICH's mpicc; without it they are not built, and their tests
    // fail saying so (scripts/setup.sh installs mpich).
    let mpicc = find_on_path("mpicc");
    match &mpicc {
        Some(path) => println!("cargo:rerun-if-changed={}", path.display()),
        None => {
            println!("cargo:rerun-if-changed=/usr/bin");
            if sources.iter().any(|s| is_mpi(s)) {
                println!(
                    "cargo:warning=mpicc not found: the MPI fixtures (tests/targets/mpi_*.c) are not built \
                     and tests/tests/mpi.rs will fail; scripts/setup.sh installs mpich"
                );
            }
        }
    }

    // Start every compiler at once, then collect them: a dozen small files build in the time of one.
    let compilations: Vec<(PathBuf, std::process::Child)> = sources
        .iter()
        .filter(|source| mpicc.is_some() || !is_mpi(source))
        .map(|source| {
            println!("cargo:rerun-if-changed={}", source.display());
            let name = source
                .file_stem()
                .expect("a .c file has a stem")
                .to_string_lossy()
                .into_owned();
            let compiler = match &mpicc {
                Some(mpicc) if is_mpi(source) => mpicc.clone(),
                _ => PathBuf::from("gcc"),
            };
            let child = Command::new(&compiler)
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
                        "cannot run {} ({e}): the C fixtures in tests/targets need it; install gcc \
                         (scripts/setup.sh does)",
                        compiler.display()
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

/// Whether `source` is an MPI program, built with mpicc.
fn is_mpi(source: &Path) -> bool {
    source
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("mpi_"))
}

/// The first `name` on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
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
