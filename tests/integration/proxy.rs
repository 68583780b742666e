//! A fault-injecting HTTP/1.1 proxy for tests, between tally and the real local server.
//!
//! Driven by a seeded random plan (the seed is printed, so a failing run can be replayed): resets
//! before, during or after a request body, stalled responses, 503 SlowDown and 500 InternalError,
//! CompleteMultipartUpload answered 200 with an `<Error>` body, one bit flipped in a part's body on
//! the way to the server, GET responses cut short. Loopback only; every connection thread checks a
//! stop flag, and the proxy stops when dropped.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the proxy does to requests, as shares of all requests (0.0..=1.0) and counts.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub seed: u64,
    pub reset_before_body: f64,
    pub reset_during_body: f64,
    pub reset_after_body: f64,
    pub stall: f64,
    pub stall_for: Duration,
    pub slowdown: f64,
    pub internal_error: f64,
    /// CompleteMultipartUpload requests answered 200 with an `<Error>` body (the first N).
    pub complete_200_error: u32,
    /// UploadPart/PutObject bodies with one bit flipped (the first N with a body).
    pub flip_bits: u32,
    /// Share of GET responses cut short.
    pub cut_get: f64,
    /// Faults given, in order, to the first body-carrying PUTs (so each kind happens at least
    /// once whatever the dice say): "reset-before", "reset-during", "reset-after", "stall",
    /// "slowdown", "internal".
    pub first_puts: Vec<&'static str>,
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU32,
    pub faults: AtomicU32,
    pub flipped: AtomicU32,
    pub complete_errors: AtomicU32,
    /// CreateMultipartUpload requests that reached the server.
    pub creates: AtomicU32,
}

pub struct Proxy {
    pub url: String,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    drop_create_reply: Arc<AtomicBool>,
}

impl Proxy {
    /// Drops the reply of the next CreateMultipartUpload (POST ?uploads) after the server created
    /// the upload, as a reset connection does.
    pub fn drop_next_create_reply(&self) {
        self.drop_create_reply.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

struct Shared {
    plan: Plan,
    upstream: String,
    rng: AtomicU64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    flips_left: AtomicU32,
    complete_errors_left: AtomicU32,
    puts_seen: AtomicU32,
    drop_create_reply: Arc<AtomicBool>,
}

impl Shared {
    /// A uniform number in [0, 1) from the seeded sequence.
    fn roll(&self) -> f64 {
        let mut x = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` (http://host:port) with `plan`.
    pub fn start(upstream: &str, plan: Plan) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let drop_create_reply = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            rng: AtomicU64::new(plan.seed),
            flips_left: AtomicU32::new(plan.flip_bits),
            complete_errors_left: AtomicU32::new(plan.complete_200_error),
            puts_seen: AtomicU32::new(0),
            drop_create_reply: drop_create_reply.clone(),
            plan,
            stats: stats.clone(),
            stop: stop.clone(),
        });
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(conn, &shared));
            }
        });
        Proxy {
            url,
            stats,
            stop,
            drop_create_reply,
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn read_head(r: &mut BufReader<TcpStream>) -> Option<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Some((first.trim_end().to_owned(), headers))
}

fn error_response(status: u16, reason: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends the request upstream on a fresh connection (`Connection: close`) and returns the whole
/// response as received, framing included.
fn forward(shared: &Shared, req: &Request) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(&shared.upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("expect") {
            continue;
        }
        head += &format!("{k}: {v}\r\n");
    }
    head += "Connection: close\r\n\r\n";
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    Ok(resp)
}

fn serve(client: TcpStream, shared: &Shared) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some((first, headers)) = read_head(&mut reader) else {
            return;
        };
        let mut parts = first.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let len: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            let _ = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        shared.stats.requests.fetch_add(1, Ordering::SeqCst);
        let p = &shared.plan;
        let roll = shared.roll();
        let mut acc = 0.0;
        let mut pick = |share: f64| {
            acc += share;
            roll < acc
        };
        let forced = (method == "PUT" && len > 0)
            .then(|| shared.puts_seen.fetch_add(1, Ordering::SeqCst) as usize)
            .and_then(|i| p.first_puts.get(i).copied());
        let fault = if let Some(f) = forced {
            f
        } else if pick(p.reset_before_body) {
            "reset-before"
        } else if pick(p.reset_during_body) && len > 0 {
            "reset-during"
        } else if pick(p.reset_after_body) {
            "reset-after"
        } else if pick(p.stall) {
            "stall"
        } else if pick(p.slowdown) {
            "slowdown"
        } else if pick(p.internal_error) {
            "internal"
        } else {
            ""
        };
        if fault == "reset-before" {
            shared.stats.faults.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let mut body = vec![0u8; len];
        if fault == "reset-during" {
            shared.stats.faults.fetch_add(1, Ordering::SeqCst);
            let _ = reader.read_exact(&mut body[..len / 2]);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut req = Request {
            method,
            target,
            headers,
            body,
        };
        let is_complete = req.method == "POST" && req.target.contains("uploadId=");
        let is_part_put = req.method == "PUT" && !req.body.is_empty();
        let response = match fault {
            "slowdown" => {
                shared.stats.faults.fetch_add(1, Ordering::SeqCst);
                error_response(503, "Slow Down", "SlowDown")
            }
            "internal" => {
                shared.stats.faults.fetch_add(1, Ordering::SeqCst);
                error_response(500, "Internal Server Error", "InternalError")
            }
            "stall" => {
                shared.stats.faults.fetch_add(1, Ordering::SeqCst);
                let until = Instant::now() + p.stall_for;
                while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            _ if is_complete
                && shared
                    .complete_errors_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok() =>
            {
                shared.stats.complete_errors.fetch_add(1, Ordering::SeqCst);
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>injected: 200 with an error inside</Message></Error>";
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
            _ => {
                if is_part_put
                    && shared
                        .flips_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    shared.stats.flipped.fetch_add(1, Ordering::SeqCst);
                    let i = req.body.len() / 2;
                    req.body[i] ^= 0x10;
                }
                let Ok(resp) = forward(shared, &req) else {
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                };
                let is_create = req.method == "POST"
                    && req.target.contains("?uploads")
                    && !req.target.contains("uploadId=");
                if is_create {
                    shared.stats.creates.fetch_add(1, Ordering::SeqCst);
                }
                if is_create && shared.drop_create_reply.swap(false, Ordering::SeqCst) {
                    shared.stats.faults.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                if fault == "reset-after" {
                    // The server got (and may have acted on) the request; the client never hears.
                    shared.stats.faults.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                if req.method == "GET" && shared.roll() < p.cut_get && resp.len() > 1024 {
                    shared.stats.faults.fetch_add(1, Ordering::SeqCst);
                    let _ = client.write_all(&resp[..resp.len() / 2]);
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                resp
            }
        };
        if client.write_all(&response).is_err() {
            return;
        }
        // The upstream response may say "Connection: close": then so do we.
        let head_end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(response.len());
        let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
        if head.contains("connection: close") {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
}
