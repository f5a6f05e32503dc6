//! The tiny example's greeter, compiled as a static executable by `build.sh` (the image holds
//! no libc and no shell). It prints the greeting kept in another store path of the closure,
//! so it only works when the image holds the references of the path it lives in.

use std::io::Write;
use std::process::ExitCode;

const MESSAGE: &str =
    "/nix/store/wq0v784vzy6lpyjfd9d96s8c6s0wmvcd-greeting-data-1.0/share/greeting/message.txt";

fn main() -> ExitCode {
    match std::fs::read(MESSAGE) {
        Ok(message) if std::io::stdout().write_all(&message).is_ok() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("hello: {MESSAGE}: {err}");
            ExitCode::FAILURE
        }
    }
}
