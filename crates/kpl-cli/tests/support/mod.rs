//! Running the `kpl` binary as a user runs it, from the tests.
#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "test helpers; each test uses a part"
)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `kpl args…` with its standard streams piped, and keys in the environment for local servers
/// (which accept any) and no instance metadata asked for.
pub(crate) fn kpl(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kpl"));
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDCLI")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `kpl args…` to its end with `stdin` as its input.
pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = kpl(args).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Written beside the wait: a command may print before it has read everything.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `frames` as `--input-format binary` reads them: each a 4-byte big-endian length and its
/// bytes.
pub(crate) fn framed(frames: &[Vec<u8>]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|frame| {
            let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
            framed.extend(frame);
            framed
        })
        .collect()
}

/// Sends `SIGINT` to a running command, as Ctrl-C does.
pub(crate) fn interrupt(child: &std::process::Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}
