//! A fault-injecting HTTP/1.1 proxy for tests, between tally and the real local server.
//!
//! Two kinds of faults. Forced faults hit exactly the requests a test names ("the 1st
//! CreateMultipartUpload", "the 2nd UploadPart"), so every kind a test is about happens on every
//! run. Random faults come on top, from a seeded plan that replays exactly: the dice for a request
//! depend only on the seed, the request (method, path, query without the upload id, Range) and how
//! many times that same request was seen before, never on thread timing or arrival order. A random
//! fault hits any one request at most [`RANDOM_PER_REQUEST`] times, so it never exhausts a retry
//! budget by itself.
//!
//! Faults: resets before, during or after a request body; stalls (the connection is held open,
//! silent, until the proxy stops: only a client-side timeout gets out); 503 SlowDown and 500
//! InternalError; CompleteMultipartUpload answered 200 with an `<Error>` body; one bit flipped in a
//! part's body on the way to the server; GET responses cut short. Loopback only; every connection
//! thread checks a stop flag, and the proxy stops when dropped.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most times a random fault hits one request (retries of it included).
pub const RANDOM_PER_REQUEST: u32 = 2;

/// Random stalls only hit requests with a body smaller than this: for them tally's attempt
/// timeout is about `--timeout` (a part's timeout also allows for its body at 64 KiB/s).
pub const STALL_MAX_BODY: usize = 64 * 1024;

/// Kinds of S3 requests, as the proxy tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// CreateMultipartUpload (`POST ?uploads`).
    Create,
    /// UploadPart or PutObject (a `PUT` with a body).
    Part,
    /// CompleteMultipartUpload (`POST ?uploadId=`).
    Complete,
    /// ListParts (`GET ?uploadId=`).
    ListParts,
    /// GetObject (a `GET` of the object itself, ranged or not).
    Get,
    /// HeadObject.
    Head,
    /// Anything else.
    Other,
}

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ResetBefore,
    ResetDuring,
    ResetAfter,
    Stall,
    SlowDown,
    Internal,
    /// CompleteMultipartUpload forwarded, answered 200 with an `<Error>` body (not forwarded).
    Complete200Error,
    /// One bit of the body flipped on the way to the server.
    FlipBit,
    /// The response cut in the middle.
    CutGet,
    /// One bit of a GET response's body flipped on the way to the client.
    FlipGetBody,
    /// Answered 501 NotImplemented (not forwarded), as a server lacking the request does.
    NotImplemented,
}

/// A fault for the `nth` (from 1) request of kind `op` the proxy sees.
#[derive(Debug, Clone, Copy)]
pub struct Force {
    pub op: Op,
    pub nth: u32,
    pub fault: Fault,
}

/// What the proxy does to requests: random faults as shares of all requests (0.0..=1.0), and
/// forced ones.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub seed: u64,
    pub reset_before_body: f64,
    pub reset_during_body: f64,
    pub reset_after_body: f64,
    pub stall: f64,
    pub slowdown: f64,
    pub internal_error: f64,
    /// Share of GET responses cut short.
    pub cut_get: f64,
    pub forced: Vec<Force>,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub op: Op,
    pub fault: Option<Fault>,
    pub forced: bool,
    /// The request's method and target (path and query).
    pub target: String,
    /// The request's headers, as received.
    pub headers: Vec<(String, String)>,
}

impl Event {
    /// The value of header `name` (any case), if the request carried it.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU32,
    /// Faults injected (flips and 200-with-error Completes included).
    pub faults: AtomicU32,
    /// Forced faults injected.
    pub forced: AtomicU32,
    /// Responses received from the server (forwarded or not).
    pub answered: AtomicU32,
    pub log: Mutex<Vec<Event>>,
}

impl Stats {
    pub fn get(&self, n: &AtomicU32) -> u32 {
        n.load(Ordering::SeqCst)
    }

    /// The requests seen so far, in arrival order.
    pub fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }
}

pub struct Proxy {
    pub url: String,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    disarmed: Arc<AtomicBool>,
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
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    /// Set by [`Proxy::disarm`]: no fault from then on, requests still counted.
    disarmed: Arc<AtomicBool>,
    counts: Mutex<Counts>,
    /// Every GET whose identity (method, path, query, Range) contains this gets
    /// [`Fault::FlipGetBody`].
    flip: Option<String>,
}

/// Requests seen per kind; per request identity, how often it was seen and how often a random
/// fault hit it.
#[derive(Default)]
struct Counts {
    per_op: HashMap<Op, u32>,
    per_request: HashMap<String, (u64, u32)>,
}

/// splitmix64.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The dice of one request: uniform numbers in [0, 1), one per `salt`, fixed by the seed, the
/// request's identity and its occurrence.
#[derive(Clone, Copy)]
struct Dice(u64);

impl Dice {
    fn roll(self, salt: u64) -> f64 {
        (mix(self.0 ^ mix(salt)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` (http://host:port) with `plan`.
    pub fn start(upstream: &str, plan: Plan) -> Proxy {
        Proxy::start_flipping(upstream, plan, None)
    }

    /// Like [`Proxy::start`], and every GET whose method, path, query or `Range` header contains
    /// `flip` (e.g. `partNumber=2&`, `bytes=0-99`) gets one bit of its response body flipped
    /// ([`Fault::FlipGetBody`], counted as forced).
    pub fn start_flipping(upstream: &str, plan: Plan, flip: Option<String>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let disarmed = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            counts: Mutex::new(Counts::default()),
            flip,
            plan,
            stats: stats.clone(),
            stop: stop.clone(),
            disarmed: disarmed.clone(),
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
            disarmed,
        }
    }

    /// No fault for any request from now on (forced or random); requests are still counted. For
    /// a run after the faulty one through the same endpoint (a manifest names its endpoint).
    pub fn disarm(&self) {
        self.disarmed.store(true, Ordering::SeqCst);
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

/// The kind of request and its identity (method, path, query without the upload id, Range).
fn classify(method: &str, target: &str, headers: &[(String, String)], len: usize) -> (Op, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let keys: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap_or(p))
        .collect();
    let has = |k: &str| keys.contains(&k);
    let op = match method {
        "POST" if has("uploads") => Op::Create,
        "POST" if has("uploadId") => Op::Complete,
        "PUT" if len > 0 && !has("tagging") => Op::Part,
        "GET" if has("uploadId") => Op::ListParts,
        "GET"
            if keys
                .iter()
                .all(|k| ["partNumber", "versionId", "x-id"].contains(k)) =>
        {
            Op::Get
        }
        "HEAD" => Op::Head,
        _ => Op::Other,
    };
    let query: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("uploadId="))
        .collect();
    // A range by its end only: a read that broke off goes on with a GET of the rest of the same
    // range (a later start, the same end), and it is the same request for the fault budget, so
    // that random faults hit one range at most RANDOM_PER_REQUEST times in all, as promised.
    let range =
        header(headers, "range").map_or("", |r| r.rsplit_once('-').map_or(r, |(_, end)| end));
    (op, format!("{method} {path}?{} {range}", query.join("&")))
}

/// Decides the fault for a request: a forced one if the plan names it, else the dice (unless
/// random faults already hit this request [`RANDOM_PER_REQUEST`] times), and whether it was forced.
fn decide(shared: &Shared, op: Op, id: &str, len: usize) -> (Option<Fault>, bool) {
    let p = &shared.plan;
    let mut counts = shared.counts.lock().unwrap();
    let nth = {
        let n = counts.per_op.entry(op).or_insert(0);
        *n += 1;
        *n
    };
    let (seen, random_hits) = counts.per_request.entry(id.to_owned()).or_insert((0, 0));
    *seen += 1;
    if shared.disarmed.load(Ordering::SeqCst) {
        return (None, false);
    }
    let dice = Dice(mix(p.seed) ^ mix(fnv(id)) ^ mix(*seen));
    if let Some(f) = p.forced.iter().find(|f| f.op == op && f.nth == nth) {
        return (Some(f.fault), true);
    }
    if op == Op::Get && shared.flip.as_deref().is_some_and(|m| id.contains(m)) {
        return (Some(Fault::FlipGetBody), true);
    }
    if *random_hits >= RANDOM_PER_REQUEST {
        return (None, false);
    }
    let roll = dice.roll(1);
    let mut acc = 0.0;
    let mut pick = |share: f64, applies: bool| {
        if !applies {
            return false;
        }
        acc += share;
        roll < acc
    };
    let fault = if pick(p.reset_before_body, true) {
        Some(Fault::ResetBefore)
    } else if pick(p.reset_during_body, len > 0) {
        Some(Fault::ResetDuring)
    } else if pick(p.reset_after_body, true) {
        Some(Fault::ResetAfter)
    } else if pick(p.stall, len < STALL_MAX_BODY) {
        Some(Fault::Stall)
    } else if pick(p.slowdown, true) {
        Some(Fault::SlowDown)
    } else if pick(p.internal_error, true) {
        Some(Fault::Internal)
    } else if op == Op::Get && dice.roll(2) < p.cut_get {
        Some(Fault::CutGet)
    } else {
        None
    };
    if fault.is_some() {
        *random_hits += 1;
    }
    (fault, false)
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
        let (op, id) = classify(&method, &target, &headers, len);
        let (fault, forced) = decide(shared, op, &id, len);
        let st = &shared.stats;
        st.requests.fetch_add(1, Ordering::SeqCst);
        if fault.is_some() {
            st.faults.fetch_add(1, Ordering::SeqCst);
            if forced {
                st.forced.fetch_add(1, Ordering::SeqCst);
            }
        }
        st.log.lock().unwrap().push(Event {
            at: Instant::now(),
            op,
            fault,
            forced,
            target: format!("{method} {target}"),
            headers: headers.clone(),
        });
        if fault == Some(Fault::ResetBefore) {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let mut body = vec![0u8; len];
        if fault == Some(Fault::ResetDuring) {
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
        let response = match fault {
            Some(Fault::SlowDown) => error_response(503, "Slow Down", "SlowDown"),
            Some(Fault::Internal) => error_response(500, "Internal Server Error", "InternalError"),
            Some(Fault::NotImplemented) => error_response(501, "Not Implemented", "NotImplemented"),
            Some(Fault::Stall) => {
                // Silent, with the connection open, until the proxy stops: only the client's own
                // timeout ends this request.
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Complete200Error) => {
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>injected: 200 with an error inside</Message></Error>";
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
            _ => {
                if fault == Some(Fault::FlipBit) && !req.body.is_empty() {
                    let i = req.body.len() / 2;
                    req.body[i] ^= 0x10;
                }
                let Ok(resp) = forward(shared, &req) else {
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                };
                st.answered.fetch_add(1, Ordering::SeqCst);
                if fault == Some(Fault::ResetAfter) {
                    // The server got (and may have acted on) the request; the client never hears.
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                let mut resp = resp;
                if fault == Some(Fault::FlipGetBody) {
                    flip_response_body(&mut resp);
                }
                if fault == Some(Fault::CutGet) {
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

/// Flips one bit in the middle of a response's body (Content-Length or chunked framing).
fn flip_response_body(resp: &mut [u8]) {
    let Some(head_end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let head = String::from_utf8_lossy(&resp[..head_end]).to_ascii_lowercase();
    let body = head_end + 4;
    let (start, len) = if head.contains("transfer-encoding: chunked") {
        // The first chunk: its size line, then its data.
        let Some(line_end) = resp[body..].windows(2).position(|w| w == b"\r\n") else {
            return;
        };
        let size = std::str::from_utf8(&resp[body..body + line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        (body + line_end + 2, size)
    } else {
        (body, resp.len() - body)
    };
    if len > 0 && start + len <= resp.len() {
        resp[start + len / 2] ^= 0x10;
    }
}
