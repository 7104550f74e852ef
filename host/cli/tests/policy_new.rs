//! `writ policy new` in each language, as an author would use it: the generated project's native
//! tests pass, it builds into a component with the real toolchain, and its cases pass in the
//! sandbox with `writ policy test`. Nothing is fetched: cargo and npm run offline, from the
//! caches the test set-up filled.

use std::path::{Path, PathBuf};
use std::process::Command;

const WRIT: &str = env!("CARGO_BIN_EXE_writ");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cmd`, asserts it succeeded, and returns its standard output.
fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `writ policy new refunds --lang LANG` into a fresh directory: (its parent, the project).
fn scaffold(lang: &str) -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("refunds");
    let printed = run(
        "writ policy new",
        Command::new(WRIT)
            .args(["policy", "new", "refunds", "--lang", lang, "--dir"])
            .arg(&dir),
    );
    assert!(printed.contains("writ policy test"), "{printed}");
    assert!(printed.contains("writ policy push"), "{printed}");
    (parent, dir)
}

/// The generated cases, in the sandbox: every one passes.
fn cases_pass(dir: &Path, component: &Path) {
    let table = run(
        "writ policy test",
        Command::new(WRIT)
            .args(["policy", "test", "--deadline-ms", "30000"])
            .arg(component)
            .arg(dir.join("cases.json")),
    );
    assert!(table.contains("7 passed, 0 failed"), "{table}");
}

#[test]
fn a_new_rust_policy_tests_builds_and_passes_its_cases() {
    let (_parent, dir) = scaffold("rust");
    // Shared with other runs, so the SDK and serde are compiled once.
    let target = root().join("target/scaffold");
    let cargo = || {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        cmd
    };
    let tests = run("cargo test", cargo().args(["test", "--offline"]));
    assert!(tests.contains("3 passed"), "{tests}");
    run(
        "cargo build",
        cargo().args([
            "build",
            "--offline",
            "--release",
            "--target",
            "wasm32-wasip2",
        ]),
    );
    cases_pass(&dir, &target.join("wasm32-wasip2/release/refunds.wasm"));
}

#[test]
fn a_new_python_policy_tests_builds_and_passes_its_cases() {
    let (_parent, dir) = scaffold("python");
    let venv = root().join(".venv/bin");
    let sdk = root().join("policy-sdk-python");
    let tests = run(
        "pytest",
        Command::new(venv.join("python"))
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(&dir)
            .env("PYTHONPATH", &sdk)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    assert!(tests.contains("3 passed"), "{tests}");
    run(
        "componentize-py",
        Command::new(venv.join("componentize-py"))
            .args([
                "-d",
                "wit",
                "-w",
                "policy",
                "componentize",
                "app",
                "-p",
                ".",
            ])
            .arg("-p")
            .arg(&sdk)
            .args(["-o", "refunds.wasm"])
            .current_dir(&dir)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    cases_pass(&dir, &dir.join("refunds.wasm"));
}

#[test]
fn a_new_typescript_policy_tests_builds_and_passes_its_cases() {
    let (_parent, dir) = scaffold("typescript");
    let npm = |args: &[&str]| {
        let mut cmd = Command::new("npm");
        cmd.args(args).current_dir(&dir);
        cmd
    };
    run(
        "npm install",
        &mut npm(&["install", "--offline", "--no-audit", "--no-fund"]),
    );
    let tests = run("npm test", &mut npm(&["test", "--silent"]));
    assert!(
        tests.contains("# pass 3") && tests.contains("# fail 0"),
        "{tests}"
    );
    run("npm run build", &mut npm(&["run", "build", "--silent"]));
    cases_pass(&dir, &dir.join("refunds.wasm"));
}

#[test]
fn a_bad_name_or_a_non_empty_directory_is_refused_and_nothing_is_written() {
    let parent = tempfile::tempdir().unwrap();
    let out = Command::new(WRIT)
        .args(["policy", "new", "Bad Name", "--dir"])
        .arg(parent.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!parent.path().join("x").exists());
    std::fs::write(parent.path().join("keep.txt"), "mine").unwrap();
    let out = Command::new(WRIT)
        .args(["policy", "new", "refunds", "--dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
}
