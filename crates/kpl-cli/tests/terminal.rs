//! On a terminal `produce` draws a progress bar (and no plain progress lines): the binary run
//! under a pseudo-terminal, its input typed into it.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{Read, Write};
use std::sync::mpsc;

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

#[test]
fn on_a_terminal_progress_is_a_bar_redrawn_in_place() {
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_kpl"));
    command.args([
        "produce",
        "--local",
        "--stream",
        "s",
        "--progress-interval",
        "10ms",
    ]);
    let mut child = pair.slave.spawn_command(command).unwrap();
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().unwrap();
    let (chunks, received) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = reader.read(&mut buffer) {
            if read == 0 || chunks.send(buffer[..read].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut writer = pair.master.take_writer().unwrap();
    for n in 0..100 {
        writeln!(writer, "record {n}").unwrap();
    }
    writer.flush().unwrap();
    // The input stays open (a person still typing): the bar shows what was delivered.
    let mut screen = String::new();
    while !screen.contains(" 100 delivered") {
        let chunk = received.recv().unwrap();
        screen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Ctrl-D ends the input; the run drains and prints its summary.
    writer.write_all(b"\x04").unwrap();
    writer.flush().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    drop(writer);
    while !screen.contains("throughput:") {
        let Ok(chunk) = received.recv() else { break };
        screen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(screen.contains("delivered:  100"), "{screen}");
    // Redrawn in place with terminal controls, not printed as lines.
    assert!(screen.contains("\x1b["), "{screen:?}");
    assert!(!screen.contains("progress "), "{screen}");
}
