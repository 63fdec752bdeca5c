//! What every task uses: the workspace root, cargo, running steps and counting tests, tools
//! installed into `.tools/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(crate) type Result<T = ()> = std::result::Result<T, String>;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

pub(crate) fn run(step: &str, command: &mut Command) -> Result {
    eprintln!("\n==> {step}");
    let status = command
        .status()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

/// Test counts summed over every `test result:` line a cargo test run prints.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

/// Runs a cargo test command, echoing its output and adding its results to `tally`.
pub(crate) fn run_tests(step: &str, command: &mut Command, tally: &mut Tally) -> Result {
    eprintln!("\n==> {step}");
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("{step}: reading output: {e}"))?;
        println!("{line}");
        if let Some(rest) = line.trim().strip_prefix("test result: ") {
            let count = |label: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(label)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            tally.passed += count(" passed");
            tally.failed += count(" failed");
            tally.ignored += count(" ignored");
        }
    }
    let status = child.wait().map_err(|e| format!("{step}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

/// The cargo tools `cargo xtask ci` installs from crates.io into `.tools/cargo` when missing:
/// (crate, version).
pub(crate) const CARGO_DENY: (&str, &str) = ("cargo-deny", "0.20.2");

pub(crate) const CARGO_MACHETE: (&str, &str) = ("cargo-machete", "0.9.2");

/// The path of a cargo tool's binary, installed first if it is missing or another version.
pub(crate) fn cargo_tool((name, version): (&str, &str)) -> Result<PathBuf> {
    let tools = root().join(".tools/cargo");
    let binary = tools.join("bin").join(name);
    let installed = Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(version));
    if !installed {
        run(
            &format!("install {name} {version}"),
            cargo()
                .args(["install", "--locked", "--version", version, name, "--root"])
                .arg(&tools),
        )?;
    }
    Ok(binary)
}

pub(crate) fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}
