//! Loading into the local Docker Engine through its API (`docker-daemon:NAME[:TAG]`), with no
//! file on disk: the docker-archive is streamed as the chunked body of `POST /images/load` on
//! the socket `DOCKER_HOST` names (`unix://PATH`, default `/var/run/docker.sock`, or
//! `tcp://HOST:PORT`). The Engine answers with a stream of JSON messages; an `error` among
//! them is the load's failure. Layers the Engine holds already are skipped by it.
//!
//! The API needs one request and one streamed answer, so this speaks the few lines of
//! HTTP/1.1 it takes itself rather than bring in a client that cannot use a Unix socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use crate::error::{Error, ErrorKind, Result, shown};

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Most of the Engine's answer read (a few messages per image; a larger one is cut there).
const MAX_ANSWER: u64 = 1 << 20;
/// Errors of the Engine's answer shown; the others are counted.
const MAX_ERRORS: usize = 5;
/// The longest the Engine may take to read the next bytes of the image, or to send the next
/// bytes of its answer (it loads as it reads, so little is left to do at the end).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
const MAX_HEADER_LINE: u64 = 64 << 10;

/// Where the Engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(String),
    Tcp(String),
}

impl Endpoint {
    /// From `DOCKER_HOST` (unset or empty: the default socket).
    pub fn from_environment() -> Result<Self> {
        Self::parse(std::env::var("DOCKER_HOST").ok().as_deref().unwrap_or(""))
    }

    pub fn parse(host: &str) -> Result<Self> {
        if host.is_empty() {
            return Ok(Endpoint::Unix(DEFAULT_SOCKET.into()));
        }
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(path.to_string()));
        }
        if let Some(address) = host.strip_prefix("tcp://") {
            return Ok(Endpoint::Tcp(address.trim_end_matches('/').to_string()));
        }
        Err(Error::value(format!(
            "DOCKER_HOST={}: only unix:// and tcp:// Docker hosts can be loaded into",
            shown(host)
        )))
    }

    fn describe(&self) -> String {
        match self {
            Endpoint::Unix(path) => format!("the Docker daemon at unix://{path}"),
            Endpoint::Tcp(address) => format!("the Docker daemon at tcp://{address}"),
        }
    }
}

trait Connection: Read + Write + Send {
    fn split(&self) -> std::io::Result<Box<dyn Read + Send>>;
}

impl Connection for UnixStream {
    fn split(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl Connection for std::net::TcpStream {
    fn split(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// Streams what `write` writes into the Engine's image load; returns what it said it loaded
/// (`Loaded image: name:tag` lines).
pub fn load<T>(
    endpoint: &Endpoint,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<(T, Vec<String>)> {
    let failed = |doing: &str, message: String| {
        Error::new(ErrorKind::Registry {
            registry: endpoint.describe(),
            doing: doing.to_string(),
            message,
        })
    };
    let mut stream: Box<dyn Connection> = match endpoint {
        Endpoint::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(|e| {
                failed(
                    "connecting",
                    format!("{e}; is Docker running, and may this user use its socket?"),
                )
            })?;
            stream
                .set_read_timeout(Some(IDLE_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IDLE_TIMEOUT)))
                .map_err(|e| failed("connecting", e.to_string()))?;
            Box::new(stream)
        }
        Endpoint::Tcp(address) => {
            let address = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| failed("connecting", "the address does not resolve".into()))?;
            let stream = std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
                .map_err(|e| failed("connecting", e.to_string()))?;
            stream
                .set_read_timeout(Some(IDLE_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IDLE_TIMEOUT)))
                .map_err(|e| failed("connecting", e.to_string()))?;
            Box::new(stream)
        }
    };
    let answer_side = stream
        .split()
        .map_err(|e| failed("connecting", e.to_string()))?;
    let head = "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\n\
                Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream
        .write_all(head.as_bytes())
        .map_err(|e| failed("sending the image", e.to_string()))?;
    let written = {
        let mut body = std::io::BufWriter::with_capacity(1 << 20, Chunked(&mut stream));
        write(&mut body).and_then(|value| {
            body.flush()
                .map_err(|e| Error::write("the image to the Docker daemon", e))
                .map(|()| value)
        })
    };
    let ended = stream.write_all(b"0\r\n\r\n").and_then(|()| stream.flush());
    // Whatever happened on our side, the Engine's answer says more when it has one.
    let answer = read_answer(answer_side);
    match (written, answer) {
        (Err(error), Err(message)) if !message.is_empty() => {
            Err(failed("loading the image", message).context(error.to_string()))
        }
        (Err(error), _) => Err(error),
        (Ok(_), Err(message)) if message.is_empty() => Err(failed(
            "loading the image",
            "the daemon closed the connection without an answer".into(),
        )),
        (Ok(_), Err(message)) => Err(failed("loading the image", message)),
        (Ok(value), Ok(loaded)) => {
            ended.map_err(|e| failed("sending the image", e.to_string()))?;
            Ok((value, loaded))
        }
    }
}

/// Every write is one chunk of the chunked body.
struct Chunked<'a>(&'a mut Box<dyn Connection>);

impl Write for Chunked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.0, "{:x}\r\n", buf.len())?;
        self.0.write_all(buf)?;
        self.0.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Reads the answer: the loaded images, or the Engine's error in its words.
fn read_answer(stream: Box<dyn Read + Send>) -> std::result::Result<Vec<String>, String> {
    let mut reader = BufReader::new(stream.take(MAX_ANSWER));
    let status_line = read_line(&mut reader)?;
    if status_line.is_empty() {
        return Err(String::new());
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {}", shown(status_line.trim())))?;
    let mut chunked = false;
    let mut length = None;
    loop {
        let line = read_line(&mut reader)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if name == "content-length" {
                length = value.parse::<u64>().ok();
            }
        }
    }
    let body = read_body(&mut reader, chunked, length)?;
    let text = String::from_utf8_lossy(&body);
    messages(status, &text)
}

fn read_line(reader: &mut impl BufRead) -> std::result::Result<String, String> {
    let mut line = String::new();
    reader
        .by_ref()
        .take(MAX_HEADER_LINE)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line)
}

fn read_body(
    reader: &mut impl BufRead,
    chunked: bool,
    length: Option<u64>,
) -> std::result::Result<Vec<u8>, String> {
    let mut body = Vec::new();
    if !chunked {
        let mut limited: Box<dyn Read> = match length {
            Some(length) => Box::new(reader.take(length)),
            None => Box::new(reader),
        };
        limited.read_to_end(&mut body).map_err(|e| e.to_string())?;
        return Ok(body);
    }
    loop {
        let size_line = read_line(reader)?;
        let size_text = size_line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| format!("a broken chunked answer: {}", shown(size_line.trim())))?;
        if size == 0 {
            return Ok(body);
        }
        let before = body.len();
        reader
            .take(size)
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
        if (body.len() - before) as u64 != size {
            return Err("the answer ended in the middle".into());
        }
        read_line(reader)?;
    }
}

/// At most `most` of `items`, joined, and how many more there were.
pub fn shortened_list(items: &[String], most: usize, separator: &str) -> String {
    let mut shown: Vec<String> = items.iter().take(most).cloned().collect();
    if items.len() > most {
        shown.push(format!("and {} more", items.len() - most));
    }
    shown.join(separator)
}

/// The Engine's JSON messages: `stream` lines say what was loaded, `error` says why not.
fn messages(status: u16, text: &str) -> std::result::Result<Vec<String>, String> {
    let mut loaded = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let mut errors = Vec::new();
    for value in stream.by_ref() {
        let Ok(value) = value else { break };
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            errors.push(shown(error.trim()));
        } else if let Some(message) = value.get("message").and_then(|e| e.as_str()) {
            if status >= 400 {
                errors.push(shown(message.trim()));
            }
        } else if let Some(line) = value.get("stream").and_then(|e| e.as_str()) {
            for line in line.lines() {
                if let Some(image) = line.strip_prefix("Loaded image: ") {
                    loaded.push(image.trim().to_string());
                } else if let Some(id) = line.strip_prefix("Loaded image ID: ") {
                    loaded.push(id.trim().to_string());
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(shortened_list(&errors, MAX_ERRORS, "; "));
    }
    if status >= 400 {
        return Err(format!("HTTP {status}: {}", shown(text.trim())));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts_are_parsed() {
        assert_eq!(
            Endpoint::parse("").unwrap(),
            Endpoint::Unix(DEFAULT_SOCKET.into())
        );
        assert_eq!(
            Endpoint::parse("unix:///run/d.sock").unwrap(),
            Endpoint::Unix("/run/d.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375").unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert!(
            Endpoint::parse("ssh://me@host")
                .unwrap_err()
                .to_string()
                .contains("unix:// and tcp://")
        );
    }

    #[test]
    fn answers_are_read_chunked_or_whole() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       27\r\n{\"stream\":\"Loaded image: my/app:1.0\\n\"}\r\n0\r\n\r\n";
        assert_eq!(
            read_answer(Box::new(std::io::Cursor::new(chunked))).unwrap(),
            ["my/app:1.0"]
        );
        let error = "HTTP/1.1 200 OK\r\nContent-Length: 62\r\n\r\n\
                     {\"errorDetail\":{\"message\":\"bad\"},\"error\":\"unexpected EOF\"}\n";
        assert_eq!(
            read_answer(Box::new(std::io::Cursor::new(error))).unwrap_err(),
            "unexpected EOF"
        );
        let refused = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 19\r\n\r\n{\"message\":\"no s\"}\n";
        assert_eq!(
            read_answer(Box::new(std::io::Cursor::new(refused))).unwrap_err(),
            "no s"
        );
        assert_eq!(
            read_answer(Box::new(std::io::Cursor::new(""))).unwrap_err(),
            ""
        );
    }
}
