//! `escape-attempt`: hostile fixture. Models an operator trying to break out
//! of its sandbox: on every record it tries to read `/etc/passwd`, list `/`,
//! connect to `127.0.0.1:1` and read the environment, then emits (to `main`,
//! with the input's key and timestamp) one JSON record saying what happened:
//! `{"file": str, "dir": str, "socket": str, "env_vars": int}`.
//! Each string starts with `error: ` followed by the error when the attempt
//! failed, or with `opened: ` (then up to 200 bytes of the file),
//! `listed: ` (then up to 20 entry names, comma-separated) or `connected: `
//! (then the peer address) when it succeeded. `env_vars` is the number of
//! environment variables visible. A sound sandbox yields three `error: `
//! strings and `"env_vars": 0`. Settings: none.

use std::io::Read;

use serde::Serialize;
use weir_operator::{Config, Emitter, Error, Input, Operator, export};

struct EscapeAttempt;

/// What each attempt gave, in the output's field order.
#[derive(Serialize)]
struct Report {
    file: String,
    dir: String,
    socket: String,
    env_vars: usize,
}

impl Operator for EscapeAttempt {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        let report = Report {
            file: read_file(),
            dir: list_dir(),
            socket: connect(),
            env_vars: std::env::vars_os().count(),
        };
        out.emit_json(record, &report)
    }
}

fn read_file() -> String {
    let mut content = Vec::new();
    match std::fs::File::open("/etc/passwd")
        .and_then(|file| file.take(200).read_to_end(&mut content))
    {
        Ok(_) => format!("opened: {}", String::from_utf8_lossy(&content)),
        Err(e) => format!("error: {e}"),
    }
}

fn list_dir() -> String {
    match std::fs::read_dir("/") {
        Ok(entries) => {
            let names: Vec<String> = entries
                .take(20)
                .map(|entry| match entry {
                    Ok(entry) => entry.file_name().to_string_lossy().into_owned(),
                    Err(e) => format!("<{e}>"),
                })
                .collect();
            format!("listed: {}", names.join(","))
        }
        Err(e) => format!("error: {e}"),
    }
}

fn connect() -> String {
    match std::net::TcpStream::connect("127.0.0.1:1") {
        Ok(stream) => match stream.peer_addr() {
            Ok(peer) => format!("connected: {peer}"),
            Err(_) => "connected: unknown peer".to_string(),
        },
        Err(e) => format!("error: {e}"),
    }
}

fn build(_config: &Config) -> Result<EscapeAttempt, String> {
    Ok(EscapeAttempt)
}

export!(build);
