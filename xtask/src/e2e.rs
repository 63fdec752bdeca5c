//! `e2e`: the local Kinesis servers (installed from npm, started on loopback, stopped whatever
//! happens) and the end-to-end suites run against them.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util::{Result, Tally, cargo, free_port, root, run, run_tests};

/// The Kinesis-compatible server of the end-to-end tests; its version and every dependency's
/// are pinned by `xtask/npm/kinesalite/package-lock.json`.
pub(crate) const KINESALITE: &str = "kinesalite";

/// The server of the StreamARN end-to-end tests (kinesalite refuses ARNs); pinned by
/// `xtask/npm/kinesis-local/package-lock.json`.
pub(crate) const KINESIS_LOCAL: &str = "kinesis-local";

/// Only the end-to-end tests, `--repeat N` times in a row (each run with servers of its own),
/// to show that they pass every time and not by luck.
pub(crate) fn e2e(repeat: u32) -> Result {
    let mut tally = Tally::default();
    let mut failed_runs = Vec::new();
    for run in 1..=repeat {
        if repeat > 1 {
            eprintln!("\n==> end-to-end run {run} of {repeat}");
        }
        if let Err(error) = e2e_tests(&mut tally) {
            eprintln!("run {run}: {error}");
            failed_runs.push(run);
        }
    }
    println!(
        "\nsummary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    if repeat > 1 {
        println!(
            "end-to-end runs: {} of {repeat} passed",
            repeat - failed_runs.len() as u32
        );
    }
    if failed_runs.is_empty() {
        Ok(())
    } else {
        Err(format!("end-to-end runs {failed_runs:?} failed"))
    }
}

/// The end-to-end tests, each server started before and stopped after its tests.
pub(crate) fn e2e_tests(tally: &mut Tally) -> Result {
    type Start = fn() -> Result<LocalServer>;
    // (step, server, package, test target, variable carrying the endpoint)
    let suites: [(&str, Start, &str, &str, &str); 3] = [
        (
            "end-to-end tests through the producer against kinesalite",
            LocalServer::kinesalite,
            "kpl",
            "e2e_kinesalite",
            "KPL_KINESALITE_ENDPOINT",
        ),
        (
            "StreamARN end-to-end tests against kinesis-local",
            LocalServer::kinesis_local,
            "kpl",
            "e2e_kinesis_local",
            "KPL_KINESIS_LOCAL_ENDPOINT",
        ),
        (
            "the kpl command line against kinesalite",
            LocalServer::kinesalite,
            "kpl-cli",
            "e2e_kinesalite",
            "KPL_KINESALITE_ENDPOINT",
        ),
    ];
    for (step, start, package, target, variable) in suites {
        let server = start()?;
        run_tests(
            step,
            cargo()
                .args(["test", "--locked", "-p", package, "--features", "e2e"])
                .args(["--test", target])
                .env(variable, server.endpoint()),
            tally,
        )?;
    }
    Ok(())
}

/// A local Kinesis-compatible server (kinesalite, or kinesis-local), installed from npm into
/// `.tools/` on first use, running on a free port until dropped (whatever the tests' outcome).
/// kinesalite is bound to 127.0.0.1; kinesis-local has no host option.
pub(crate) struct LocalServer {
    child: std::process::Child,
    port: u16,
    name: &'static str,
}

/// Installs the npm package `package` into `.tools/<package>` unless it is there, exactly as
/// `xtask/npm/<package>/package-lock.json` pins it (`npm ci`); returns the folder.
pub(crate) fn npm_install(package: &str) -> Result<PathBuf> {
    let dir = root().join(".tools").join(package);
    let pinned = root().join("xtask").join("npm").join(package);
    let installed = dir.join("node_modules").join(package).join("package.json");
    let lock = dir.join("package-lock.json");
    let same_lock =
        std::fs::read(&lock).ok() == std::fs::read(pinned.join("package-lock.json")).ok();
    if !(installed.exists() && same_lock) {
        for tool in ["node", "npm"] {
            if Command::new(tool).arg("--version").output().is_err() {
                return Err(format!(
                    "the end-to-end tests need Node.js and npm to install {package}, and `{tool}` is not on PATH"
                ));
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(pinned.join(file), dir.join(file))
                .map_err(|e| format!("{}: {e}", pinned.join(file).display()))?;
        }
        run(
            &format!("npm ci ({package}, as pinned by xtask/npm/{package})"),
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
        )?;
    }
    Ok(dir)
}

impl LocalServer {
    fn kinesalite() -> Result<Self> {
        let dir = npm_install(KINESALITE)?;
        // The CLI binds every interface and has no host option; this wrapper binds loopback,
        // with short stream-state delays and a shard limit above what the tests create.
        let script = dir.join("start.js");
        std::fs::write(
            &script,
            "const port = Number(process.argv[2]);\n\
             require('kinesalite')({createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 1000})\n\
               .listen(port, '127.0.0.1', () => console.log('kinesalite listening on ' + port));\n",
        )
        .map_err(|e| format!("{}: {e}", script.display()))?;
        let port = free_port()?;
        let mut command = Command::new("node");
        command.arg(&script).arg(port.to_string()).current_dir(&dir);
        Self::launch("kinesalite", port, command)
    }

    /// kinesis-local must start from its own package folder (it reads `server.json` there).
    fn kinesis_local() -> Result<Self> {
        let dir = npm_install(KINESIS_LOCAL)?;
        let port = free_port()?;
        let mut command = Command::new("node");
        command
            .arg("main.js")
            .current_dir(dir.join("node_modules/kinesis-local"))
            .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
            .env("KINESIS_MOCK_TLS_PORT", free_port()?.to_string())
            .env("CREATE_STREAM_DURATION", "50ms")
            .env("DELETE_STREAM_DURATION", "50ms")
            .env("UPDATE_STREAM_DURATION", "50ms")
            .stderr(Stdio::null());
        Self::launch("kinesis-local", port, command)
    }

    fn launch(name: &'static str, port: u16, mut command: Command) -> Result<Self> {
        eprintln!("\n==> start {name} on port {port}");
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start node for {name}: {e}"))?;
        let server = Self { child, port, name };
        server.wait_for_port()?;
        Ok(server)
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "waiting for an external server to listen"
    )]
    fn wait_for_port(&self) -> Result {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_millis(200))
                .is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(format!(
            "{} did not listen on {address} within 30 s",
            self.name
        ))
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
