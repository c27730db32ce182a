//! What every HTTP source shares, and the plain-HTTP client scrapes use.
//!
//! A scraper keeps one connection per target alive between scrapes. A general-purpose client
//! keeps per-connection read and write buffers sized by the largest body it has read (hyper's
//! grow to 64-128 KiB on a 20-100 KB exposition), which is most of the memory per target at
//! thousands of targets. [`PlainClient`] reads a `http://` exposition straight into the caller's
//! (pooled) buffer and keeps only the idle socket between scrapes. Everything else (`https://`,
//! credentials in the URL, redirects) goes through reqwest.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `User-Agent` redbridge sends to targets and Prometheus-compatible servers.
pub const USER_AGENT: &str = concat!("redbridge/", env!("CARGO_PKG_VERSION"));

/// The `Accept` header of a scrape: the text format, whatever else the server offers.
pub const SCRAPE_ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// reqwest's top-level message hides the cause ("error sending request"); show the chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Idle connections unused for this long are closed (a target that left, or scrapes that
/// stopped).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Response headers larger than this fail the scrape.
const MAX_HEADER_BYTES: usize = 64 << 10;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 << 10;
/// Idle connections are swept for [`IDLE_TIMEOUT`] once per this many returns.
const SWEEP_EVERY: u64 = 4096;

/// A `http://host[:port]/path` URL, split for a request; `None` for anything the plain client
/// leaves to reqwest (another scheme, credentials in the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainUrl<'a> {
    /// `host[:port]` as written: the `Host` header.
    pub authority: &'a str,
    /// From the first `/` or `?`, without a fragment; may lack the leading `/`.
    pub target: &'a str,
}

impl<'a> PlainUrl<'a> {
    pub fn parse(url: &'a str) -> Option<PlainUrl<'a>> {
        let scheme = url.get(..7)?;
        if !scheme.eq_ignore_ascii_case("http://") {
            return None;
        }
        let rest = &url[7..];
        let rest = rest.split('#').next().unwrap_or(rest);
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return None;
        }
        Some(PlainUrl { authority, target })
    }

    /// Where to connect: the authority with port 80 when it names none.
    fn connect_to(&self) -> String {
        let has_port = match self.authority.rfind(']') {
            // `[v6]` or `[v6]:port`
            Some(close) => self.authority[close..].contains(':'),
            None => self.authority.contains(':'),
        };
        if has_port {
            self.authority.to_string()
        } else {
            format!("{}:80", self.authority)
        }
    }

    fn request(&self) -> Vec<u8> {
        let slash = if self.target.starts_with('/') {
            ""
        } else {
            "/"
        };
        format!(
            "GET {slash}{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nAccept: {SCRAPE_ACCEPT}\r\nAccept-Encoding: gzip\r\n\r\n",
            self.target, self.authority
        )
        .into_bytes()
    }
}

/// Why a plain fetch failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlainError {
    #[error("tcp connect error: {0}")]
    Connect(String),
    #[error("connection error: {0}")]
    Io(String),
    #[error("invalid HTTP response: {0}")]
    Protocol(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("an HTML page (Content-Type text/html)")]
    Html,
    /// A redirect: the caller follows it with a general-purpose client.
    #[error("redirected")]
    Redirect,
}

/// Idle keep-alive connections of one authority, each with when it was last returned.
type Idle = Vec<(TcpStream, Instant)>;

/// Idle keep-alive connections by authority, shared by every target of a scraper.
#[derive(Debug, Default)]
pub struct PlainClient {
    idle: Mutex<HashMap<Box<str>, Idle>>,
    returns: std::sync::atomic::AtomicU64,
}

/// What a response said about its body and connection.
struct Head {
    status: u16,
    keep_alive: bool,
    gzip: bool,
    html: bool,
    framing: Framing,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

impl PlainClient {
    /// GETs `url` into `buf` (cleared first), decompressing gzip, failing past `limit` bytes.
    /// A reused connection the server closed meanwhile is retried once on a new one.
    pub async fn get(
        &self,
        url: &PlainUrl<'_>,
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), PlainError> {
        let result = self.get_once_or_twice(url, buf, limit).await;
        if result.is_err() {
            // What was read of a refused response (a read may overshoot the cap) is no body.
            buf.clear();
        }
        result
    }

    async fn get_once_or_twice(
        &self,
        url: &PlainUrl<'_>,
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), PlainError> {
        let request = url.request();
        if let Some(stream) = self.take(url.authority) {
            match exchange(stream, &request, buf, limit).await {
                Ok(Some(stream)) => {
                    self.give(url.authority, stream);
                    return Ok(());
                }
                Ok(None) => return Ok(()),
                Err(Retry::Stale) => {}
                Err(Retry::Failed(e)) => return Err(e),
            }
        }
        let stream = TcpStream::connect(url.connect_to())
            .await
            .map_err(|e| PlainError::Connect(e.to_string()))?;
        // Scrape requests are one small write each: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        match exchange(stream, &request, buf, limit).await {
            Ok(Some(stream)) => {
                self.give(url.authority, stream);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(Retry::Stale) => Err(PlainError::Io("connection closed before a response".into())),
            Err(Retry::Failed(e)) => Err(e),
        }
    }

    fn take(&self, authority: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.get_mut(authority)?;
        while let Some((stream, since)) = conns.pop() {
            if since.elapsed() < IDLE_TIMEOUT {
                return Some(stream);
            }
        }
        None
    }

    fn give(&self, authority: &str, stream: TcpStream) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.get_mut(authority) {
            Some(conns) => conns.push((stream, now)),
            None => {
                idle.insert(authority.into(), vec![(stream, now)]);
            }
        }
        let n = self
            .returns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            idle.retain(|_, conns| {
                conns.retain(|(_, since)| since.elapsed() < IDLE_TIMEOUT);
                !conns.is_empty()
            });
        }
    }

    /// Idle connections held, over every authority.
    pub fn idle_connections(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }
}

enum Retry {
    /// A reused connection answered nothing (the server closed it while idle): try a new one.
    Stale,
    Failed(PlainError),
}

fn io_error(e: std::io::Error) -> Retry {
    Retry::Failed(PlainError::Io(e.to_string()))
}

/// One request and its response on `stream`; the stream back when it can be reused.
async fn exchange(
    mut stream: TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<Option<TcpStream>, Retry> {
    buf.clear();
    if let Err(e) = stream.write_all(request).await {
        return Err(if is_reset(&e) {
            Retry::Stale
        } else {
            io_error(e)
        });
    }
    // Headers, and whatever of the body came with them.
    let head_len = loop {
        if buf.len() >= MAX_HEADER_BYTES {
            return Err(Retry::Failed(PlainError::Protocol(format!(
                "response headers larger than {MAX_HEADER_BYTES} bytes"
            ))));
        }
        match read_some(&mut stream, buf).await {
            Ok(0) if buf.is_empty() => return Err(Retry::Stale),
            Ok(0) => {
                return Err(Retry::Failed(PlainError::Protocol(
                    "connection closed inside the response headers".into(),
                )))
            }
            Ok(_) => {}
            Err(e) if buf.is_empty() && is_reset(&e) => return Err(Retry::Stale),
            Err(e) => return Err(io_error(e)),
        }
        if let Some(n) = parse_head(buf).map_err(Retry::Failed)? {
            break n;
        }
    };
    let head = head_of(&buf[..head_len]).map_err(Retry::Failed)?;
    if (300..400).contains(&head.status) {
        return Err(Retry::Failed(PlainError::Redirect));
    }
    if !(200..300).contains(&head.status) {
        return Err(Retry::Failed(PlainError::Status(head.status)));
    }
    if head.html {
        return Err(Retry::Failed(PlainError::Html));
    }
    buf.drain(..head_len);
    let too_large = || Retry::Failed(PlainError::TooLarge { limit });
    let reusable = match head.framing {
        Framing::Length(n) => {
            if n > limit {
                return Err(too_large());
            }
            buf.reserve(n.saturating_sub(buf.len()));
            while buf.len() < n {
                if read_some(&mut stream, buf).await.map_err(io_error)? == 0 {
                    return Err(Retry::Failed(PlainError::Io(format!(
                        "connection closed after {} of {n} body bytes",
                        buf.len()
                    ))));
                }
            }
            // Bytes past the length would belong to no request we sent.
            buf.len() == n
        }
        Framing::Chunked => {
            let mut raw = std::mem::take(buf);
            let mut decoder = Chunked::default();
            let mut fed = 0;
            loop {
                fed += decoder.feed(&raw[fed..], buf).map_err(Retry::Failed)?;
                if buf.len() > limit {
                    return Err(too_large());
                }
                if decoder.done() {
                    break;
                }
                if fed == raw.len() {
                    raw.clear();
                    fed = 0;
                }
                if read_some(&mut stream, &mut raw).await.map_err(io_error)? == 0 {
                    return Err(Retry::Failed(PlainError::Io(
                        "connection closed inside a chunked body".into(),
                    )));
                }
            }
            fed == raw.len()
        }
        Framing::Close => {
            while read_some(&mut stream, buf).await.map_err(io_error)? > 0 {
                if buf.len() > limit {
                    return Err(too_large());
                }
            }
            false
        }
    };
    if buf.len() > limit {
        return Err(too_large());
    }
    if head.gzip {
        gunzip(buf, limit).map_err(Retry::Failed)?;
    }
    Ok((reusable && head.keep_alive).then_some(stream))
}

/// Appends one read of at most [`READ_CHUNK`] bytes to `buf`.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await
}

fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
}

/// The length of the response head once `buf` holds all of it.
fn parse_head(buf: &[u8]) -> Result<Option<usize>, PlainError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(PlainError::Protocol(e.to_string())),
    }
}

fn head_of(head: &[u8]) -> Result<Head, PlainError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head)
        .map_err(|e| PlainError::Protocol(e.to_string()))?;
    let status = resp.code.unwrap_or(0);
    let mut out = Head {
        status,
        // HTTP/1.0 closes unless told otherwise; the plain client never asks it to.
        keep_alive: resp.version == Some(1),
        gzip: false,
        html: false,
        framing: Framing::Close,
    };
    let mut length = None;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| PlainError::Protocol(format!("Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(PlainError::Protocol("conflicting Content-Length".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().ends_with("chunked") {
                out.framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                out.keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            match value.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => out.gzip = true,
                "" | "identity" => {}
                other => {
                    return Err(PlainError::Protocol(format!(
                        "Content-Encoding {other:?} was not asked for"
                    )))
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            out.html = value.to_ascii_lowercase().starts_with("text/html");
        }
    }
    // Chunked wins over a length (RFC 9112 6.3).
    if out.framing != Framing::Chunked {
        if let Some(n) = length {
            out.framing = Framing::Length(n);
        }
    }
    Ok(out)
}

/// Replaces a gzip body in `buf` by its content, failing past `limit` inflated bytes.
fn gunzip(buf: &mut Vec<u8>, limit: usize) -> Result<(), PlainError> {
    let compressed = std::mem::take(buf);
    let mut decoder =
        flate2::read::MultiGzDecoder::new(compressed.as_slice()).take(limit as u64 + 1);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    decoder
        .read_to_end(&mut out)
        .map_err(|e| PlainError::Protocol(format!("gzip: {e}")))?;
    if out.len() > limit {
        return Err(PlainError::TooLarge { limit });
    }
    *buf = out;
    Ok(())
}

/// Decodes `Transfer-Encoding: chunked` as bytes arrive.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    size: usize,
    /// Length of the current trailer line, to tell the empty line that ends the body.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    /// A chunk extension, up to the end of the size line.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    Done,
}

impl Chunked {
    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Feeds `input`, appending data to `out`; returns the bytes consumed (all of them unless
    /// the body ended).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, PlainError> {
        use ChunkState::*;
        let bad = |what: &str| PlainError::Protocol(format!("chunked body: {what}"));
        let mut i = 0;
        while i < input.len() && self.state != Done {
            let b = input[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0) as usize;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(digit))
                            .ok_or_else(|| bad("chunk size overflows"))?;
                    }
                    b';' | b' ' | b'\t' => self.state = Extension,
                    b'\r' => self.state = SizeLf,
                    b'\n' => self.end_size(),
                    _ => return Err(bad("invalid chunk size")),
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => self.end_size(),
                    _ => {}
                },
                SizeLf => {
                    if b != b'\n' {
                        return Err(bad("chunk size line not ended by CRLF"));
                    }
                    self.end_size();
                }
                Data => {
                    let n = self.size.min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    self.size -= n;
                    i += n;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    self.state = match b {
                        b'\r' => DataLf,
                        b'\n' => Size,
                        _ => return Err(bad("chunk not ended by CRLF")),
                    }
                }
                DataLf => {
                    if b != b'\n' {
                        return Err(bad("chunk not ended by CRLF"));
                    }
                    self.state = Size;
                }
                Trailer => match b {
                    b'\n' if self.line == 0 => self.state = Done,
                    b'\n' => self.line = 0,
                    b'\r' => {}
                    _ => self.line += 1,
                },
                Done => {}
            }
            i += 1;
        }
        Ok(i)
    }

    fn end_size(&mut self) {
        if self.size == 0 {
            self.state = ChunkState::Trailer;
            self.line = 0;
        } else {
            self.state = ChunkState::Data;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_split_and_others_are_left_to_reqwest() {
        let u = PlainUrl::parse("http://10.0.0.1:8000/metrics?x=1#frag").expect("plain");
        assert_eq!((u.authority, u.target), ("10.0.0.1:8000", "/metrics?x=1"));
        assert_eq!(u.connect_to(), "10.0.0.1:8000");
        let u = PlainUrl::parse("HTTP://pod.ns.svc?q").expect("plain");
        assert_eq!((u.authority, u.target), ("pod.ns.svc", "?q"));
        assert_eq!(u.connect_to(), "pod.ns.svc:80");
        assert!(String::from_utf8(u.request())
            .expect("ascii")
            .starts_with("GET /?q HTTP/1.1\r\nHost: pod.ns.svc\r\n"));
        assert_eq!(
            PlainUrl::parse("http://[::1]/m").map(|u| u.connect_to()),
            Some("[::1]:80".into())
        );
        assert_eq!(
            PlainUrl::parse("http://[::1]:9/m").map(|u| u.connect_to()),
            Some("[::1]:9".into())
        );
        for other in ["https://a/m", "http://user:pw@a/m", "http:///m", "ftp://a"] {
            assert_eq!(PlainUrl::parse(other), None, "{other}");
        }
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"4;ext=1\r\nabcd\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Chunked::default();
            let mut out = Vec::new();
            let n = d.feed(&wire[..split], &mut out).expect("first part");
            assert_eq!(n, split);
            let m = d.feed(&wire[split..], &mut out).expect("second part");
            assert_eq!(split + m, wire.len());
            assert!(d.done(), "split at {split}");
            assert_eq!(out, b"abcd0123456789");
        }
        let mut d = Chunked::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
        let mut d = Chunked::default();
        assert!(d.feed(b"2\r\nabX", &mut Vec::new()).is_err());
    }

    #[test]
    fn heads_give_framing_encoding_and_reuse() {
        let h = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Encoding: gzip\r\n\r\n")
            .expect("valid");
        assert_eq!(
            (h.status, h.framing, h.gzip, h.keep_alive),
            (200, Framing::Length(12), true, true)
        );
        let h = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .expect("valid");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head_of(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n").expect("valid");
        assert_eq!(
            (h.framing, h.keep_alive, h.html),
            (Framing::Close, false, true)
        );
        assert!(head_of(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n").is_err());
        assert!(
            head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err()
        );
    }
}
