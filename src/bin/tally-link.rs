//! `tally-link`: a link emulator, the project's stand-in for a real S3 link (docs/link.md).
//!
//! A TCP proxy on 127.0.0.1 in front of an upstream (a local S3 server). Every connection is paced
//! to a rate in each direction separately, its first byte is delayed by an RTT and every later
//! turn of the conversation by half of one, and a chosen share of the connections are stragglers
//! (a much lower rate) or stall. It counts what it forwards: bytes per direction, the peak number
//! of connections moving bytes at once (bytes within the last 100 ms), and the peak rate over a
//! sliding window. It prints its address (`http://127.0.0.1:PORT`) as the first line of stdout and
//! writes its counts as JSON to `--stats FILE` on SIGUSR1 and on exit (SIGTERM, SIGINT, or stdin
//! closed with `--until-stdin-closes`).
//!
//! Self-contained: tokio only, nothing of the tally library, so that what it measures does not
//! depend on the code it measures.

#![allow(missing_docs)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "\
usage: tally-link --upstream HOST:PORT|URL [options]

  --listen ADDR            where to listen (default 127.0.0.1:0, a free port)
  --rate RATE              each connection's rate, each direction (default inf)
  --up-rate RATE           client -> server rate (default --rate)
  --down-rate RATE         server -> client rate (default --rate)
  --rtt DUR                first byte of a connection delayed by DUR, each later turn by DUR/2
                           (default 0)
  --straggle-every N       every Nth connection (N, 2N, ...) is a straggler
  --straggle-fraction F    a share F (0..1) of connections, chosen from --seed, are stragglers
  --straggle-rate RATE     a straggler's rate, both directions (default: rate / 20)
  --stall-every N          every Nth connection stalls (counted apart from stragglers)
  --stall-fraction F       a share F of connections, chosen from --seed, stall
  --stall-after BYTES      a stalled connection goes silent after this many bytes each way
                           (default 65536)
  --seed N                 seed for the shares above (default 1)
  --idle DUR               a connection quiet this long starts its pacing afresh (default 50ms)
  --window DUR             window of the peak-rate counts (default 2s)
  --rcvbuf BYTES           receive buffer of each client connection (default 262144; 0: the
                           kernel's autotuning): what a client can push ahead of the link
  --sndbuf BYTES           send buffer of each client connection (default: autotuning): what
                           is counted as sent to a client before it read it
  --stats FILE             write the counts here as JSON on SIGUSR1 and on exit
  --until-stdin-closes     exit (writing the counts) when stdin closes

RATE: 6MB/s, 300KB/s, 2Gbit/s, 400MiB/s, inf. DUR: 20ms, 1.5s. Prints http://ADDR first.";

/// A byte rate; `f64::INFINITY` means unpaced.
fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("unlimited") {
        return Ok(f64::INFINITY);
    }
    let body = t.strip_suffix("/s").unwrap_or(t);
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, unit) = body.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (e.g. 6MB/s, 2Gbit/s, inf)"))?;
    let mul = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "bit" => 1.0 / 8.0,
        "Kbit" | "kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (B, KB, MB, GB, KiB, MiB, GiB, Mbit, Gbit)"
            ));
        }
    };
    let r = n * mul;
    if r > 0.0 {
        Ok(r)
    } else {
        Err(format!("{s:?}: a rate must be above zero"))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 20ms, 1.5s)"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" | "" => n,
        "us" => n / 1e6,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (us, ms, s)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Paces one direction of one connection to `rate` bytes per second.
///
/// Bytes are released when the link would have finished sending them: a chunk of `n` bytes after
/// `sent` bytes since the clock started goes at `start + (sent + n) / rate`. A connection that was
/// quiet for longer than `idle` past its schedule starts a fresh clock, so that a keep-alive
/// connection idle between requests does not bank credit and then burst.
#[derive(Debug, Clone)]
struct Pacer {
    rate: f64,
    idle: Duration,
    start: Option<Instant>,
    sent: u64,
}

impl Pacer {
    fn new(rate: f64, idle: Duration) -> Pacer {
        Pacer {
            rate,
            idle,
            start: None,
            sent: 0,
        }
    }

    /// `n` bytes arrived at `now`: when they may go on.
    fn release(&mut self, now: Instant, n: usize) -> Instant {
        if !self.rate.is_finite() {
            return now;
        }
        let start = match self.start {
            Some(s) if now <= s + self.at(self.sent) + self.idle => s,
            _ => {
                self.start = Some(now);
                self.sent = 0;
                now
            }
        };
        self.sent += n as u64;
        start + self.at(self.sent)
    }

    fn at(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.rate)
    }

    /// The most bytes to read at once: about 20 ms at this rate (so that the counts of moving
    /// connections see even a slow one move), between 1 KiB and 64 KiB.
    fn chunk(&self) -> usize {
        if self.rate.is_finite() {
            ((self.rate * 0.02) as usize).clamp(1024, 64 * 1024)
        } else {
            64 * 1024
        }
    }
}

/// A well-mixed 64-bit hash of (seed, n): the dice for connection `n`.
fn splitmix(seed: u64, n: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(n.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which connections (numbered from 1 in accept order) are picked: every Nth, or a seeded share.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pick {
    None,
    Every(u64),
    Fraction(f64),
}

impl Pick {
    fn picks(self, seed: u64, n: u64) -> bool {
        match self {
            Pick::None => false,
            Pick::Every(k) => k > 0 && n.is_multiple_of(k),
            Pick::Fraction(f) => {
                (splitmix(seed, n) >> 11) as f64 / (1u64 << 53) as f64 <= f && f > 0.0
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    listen: String,
    upstream: String,
    up_rate: f64,
    down_rate: f64,
    rtt: Duration,
    straggle: Pick,
    straggle_rate: Option<f64>,
    stall: Pick,
    stall_after: u64,
    seed: u64,
    idle: Duration,
    window: Duration,
    stats: Option<PathBuf>,
    until_stdin_closes: bool,
    rcvbuf: Option<u32>,
    sndbuf: Option<u32>,
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        upstream: String::new(),
        up_rate: f64::INFINITY,
        down_rate: f64::INFINITY,
        rtt: Duration::ZERO,
        straggle: Pick::None,
        straggle_rate: None,
        stall: Pick::None,
        stall_after: 64 * 1024,
        seed: 1,
        idle: Duration::from_millis(50),
        window: Duration::from_secs(2),
        stats: None,
        until_stdin_closes: false,
        rcvbuf: Some(256 * 1024),
        sndbuf: None,
    };
    let (mut up, mut down, mut both) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--until-stdin-closes" {
            c.until_stdin_closes = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let count = |v: &str| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("{flag} {v:?}: not a whole number"))
        };
        let share = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or_else(|| format!("{flag} {v:?}: a share between 0 and 1"))
        };
        match flag.as_str() {
            "--listen" => c.listen = v.clone(),
            "--upstream" => {
                let u = v.strip_prefix("http://").unwrap_or(v);
                c.upstream = u.trim_end_matches('/').to_owned();
            }
            "--rate" => both = Some(parse_rate(v)?),
            "--up-rate" => up = Some(parse_rate(v)?),
            "--down-rate" => down = Some(parse_rate(v)?),
            "--rtt" => c.rtt = parse_duration(v)?,
            "--straggle-every" => c.straggle = Pick::Every(count(v)?),
            "--straggle-fraction" => c.straggle = Pick::Fraction(share(v)?),
            "--straggle-rate" => c.straggle_rate = Some(parse_rate(v)?),
            "--stall-every" => c.stall = Pick::Every(count(v)?),
            "--stall-fraction" => c.stall = Pick::Fraction(share(v)?),
            "--stall-after" => c.stall_after = count(v)?,
            "--seed" => c.seed = count(v)?,
            "--idle" => c.idle = parse_duration(v)?,
            "--window" => c.window = parse_duration(v)?.max(Duration::from_millis(100)),
            "--stats" => c.stats = Some(PathBuf::from(v)),
            "--rcvbuf" => {
                let n = count(v)?;
                c.rcvbuf = (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX));
            }
            "--sndbuf" => {
                let n = count(v)?;
                c.sndbuf = (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX));
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if c.upstream.is_empty() {
        return Err(format!("--upstream is required\n{USAGE}"));
    }
    c.up_rate = up.or(both).unwrap_or(f64::INFINITY);
    c.down_rate = down.or(both).unwrap_or(f64::INFINITY);
    Ok(c)
}

/// One direction of one connection, as the counts see it.
#[derive(Debug)]
struct Flow {
    /// Milliseconds since the emulator started when bytes last went through; `u64::MAX` never.
    last_ms: AtomicU64,
}

impl Flow {
    fn new() -> Arc<Flow> {
        Arc::new(Flow {
            last_ms: AtomicU64::new(u64::MAX),
        })
    }

    fn moving(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last != u64::MAX && now_ms.saturating_sub(last) < 100
    }
}

/// Everything the emulator counts.
#[derive(Debug)]
struct Counts {
    epoch: Instant,
    connections: AtomicU64,
    stragglers: AtomicU64,
    stalled: AtomicU64,
    bytes: [AtomicU64; 2],
    /// Live connections' flows (up, down); dead ones are dropped by the sampler.
    flows: Mutex<Vec<[Arc<Flow>; 2]>>,
    peak_moving: [AtomicUsize; 2],
    peak_moving_any: AtomicUsize,
    peak_window_rate: [AtomicU64; 2],
    window: Duration,
}

const UP: usize = 0;
const DOWN: usize = 1;

impl Counts {
    /// Nothing counted yet; rates over windows of `window`.
    fn new(window: Duration) -> Counts {
        Counts {
            epoch: Instant::now(),
            connections: AtomicU64::new(0),
            stragglers: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            flows: Mutex::new(Vec::new()),
            peak_moving: [AtomicUsize::new(0), AtomicUsize::new(0)],
            peak_moving_any: AtomicUsize::new(0),
            peak_window_rate: [AtomicU64::new(0), AtomicU64::new(0)],
            window,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn json(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        let u = |a: &AtomicUsize| a.load(Ordering::SeqCst);
        format!(
            concat!(
                "{{\"connections\":{},\"stragglers\":{},\"stalled\":{},",
                "\"bytes_up\":{},\"bytes_down\":{},",
                "\"peak_moving_up\":{},\"peak_moving_down\":{},\"peak_moving\":{},",
                "\"window_s\":{},\"peak_rate_up\":{},\"peak_rate_down\":{},\"elapsed_s\":{:.3}}}\n"
            ),
            l(&self.connections),
            l(&self.stragglers),
            l(&self.stalled),
            l(&self.bytes[UP]),
            l(&self.bytes[DOWN]),
            u(&self.peak_moving[UP]),
            u(&self.peak_moving[DOWN]),
            u(&self.peak_moving_any),
            self.window.as_secs_f64(),
            l(&self.peak_window_rate[UP]),
            l(&self.peak_window_rate[DOWN]),
            self.epoch.elapsed().as_secs_f64(),
        )
    }
}

/// Bytes counted over a sliding window; the peak rate of any full window.
#[derive(Debug)]
struct Window {
    span: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl Window {
    fn new(span: Duration) -> Window {
        Window {
            span,
            samples: VecDeque::new(),
        }
    }

    /// The running total at `now`; returns the rate over the last full window, if one is full.
    fn add(&mut self, now: Instant, total: u64) -> Option<f64> {
        self.samples.push_back((now, total));
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| now.duration_since(t) >= self.span)
        {
            self.samples.pop_front();
        }
        let &(t0, b0) = self.samples.front()?;
        let dt = now.duration_since(t0);
        (dt >= self.span).then(|| (total - b0) as f64 / dt.as_secs_f64())
    }
}

fn sample(counts: &Counts, windows: &mut [Window; 2]) {
    let now_ms = counts.now_ms();
    let now = Instant::now();
    let mut flows = counts.flows.lock().expect("flows");
    flows.retain(|f| Arc::strong_count(&f[UP]) > 1 || Arc::strong_count(&f[DOWN]) > 1);
    let mut moving = [0usize; 2];
    let mut any = 0;
    for f in flows.iter() {
        let m = [f[UP].moving(now_ms), f[DOWN].moving(now_ms)];
        moving[UP] += usize::from(m[UP]);
        moving[DOWN] += usize::from(m[DOWN]);
        any += usize::from(m[UP] || m[DOWN]);
    }
    drop(flows);
    for d in [UP, DOWN] {
        counts.peak_moving[d].fetch_max(moving[d], Ordering::SeqCst);
        let total = counts.bytes[d].load(Ordering::SeqCst);
        if let Some(rate) = windows[d].add(now, total) {
            counts.peak_window_rate[d].fetch_max(rate as u64, Ordering::SeqCst);
        }
    }
    counts.peak_moving_any.fetch_max(any, Ordering::SeqCst);
}

fn write_stats(counts: &Counts, path: &Option<PathBuf>) {
    let Some(path) = path else { return };
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, counts.json()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        eprintln!("tally-link: cannot write {}: {e}", path.display());
    }
}

/// How one connection behaves.
#[derive(Debug, Clone, Copy)]
struct Shape {
    rate: [f64; 2],
    rtt: Duration,
    stall_after: Option<u64>,
    idle: Duration,
}

/// The direction that spoke last on a connection: a turn is when the other one starts.
#[derive(Debug, Default)]
struct Turns {
    last: AtomicUsize,
    started: AtomicBool,
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: usize,
    shape: Shape,
    turns: Arc<Turns>,
    flow: Arc<Flow>,
    counts: Arc<Counts>,
) -> std::io::Result<()> {
    let mut pacer = Pacer::new(shape.rate[dir], shape.idle);
    let mut buf = vec![0u8; pacer.chunk()];
    let mut moved = 0u64;
    loop {
        let want = match shape.stall_after {
            Some(limit) if moved >= limit => {
                // Stalled: silent, the connection held open until the peer gives up.
                return std::future::pending().await;
            }
            Some(limit) => buf.len().min((limit - moved) as usize),
            None => buf.len(),
        };
        let n = from.read(&mut buf[..want]).await?;
        if n == 0 {
            to.shutdown().await.ok();
            return Ok(());
        }
        // The connection's first byte waits a whole RTT (the handshake and the way there); each
        // later change of direction waits half of one (the way back of a request-reply turn).
        if !turns.started.swap(true, Ordering::SeqCst) {
            turns.last.store(dir, Ordering::SeqCst);
            tokio::time::sleep(shape.rtt).await;
        } else if turns.last.swap(dir, Ordering::SeqCst) != dir {
            tokio::time::sleep(shape.rtt / 2).await;
        }
        let at = pacer.release(Instant::now(), n);
        tokio::time::sleep_until(at.into()).await;
        to.write_all(&buf[..n]).await?;
        moved += n as u64;
        counts.bytes[dir].fetch_add(n as u64, Ordering::SeqCst);
        flow.last_ms.store(counts.now_ms(), Ordering::Relaxed);
    }
}

async fn serve(client: TcpStream, cfg: Arc<Config>, counts: Arc<Counts>) {
    let n = counts.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let stalls = cfg.stall.picks(cfg.seed ^ 0x0053_5441_4c4c, n);
    let straggles = !stalls && cfg.straggle.picks(cfg.seed, n);
    let mut rate = [cfg.up_rate, cfg.down_rate];
    if straggles {
        counts.stragglers.fetch_add(1, Ordering::SeqCst);
        let slow = cfg.straggle_rate;
        rate = rate.map(|r| slow.unwrap_or(r / 20.0));
    }
    if stalls {
        counts.stalled.fetch_add(1, Ordering::SeqCst);
    }
    let shape = Shape {
        rate,
        rtt: cfg.rtt,
        stall_after: stalls.then_some(cfg.stall_after),
        idle: cfg.idle,
    };
    let server = match TcpStream::connect(&cfg.upstream).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tally-link: cannot reach {}: {e}", cfg.upstream);
            return;
        }
    };
    client.set_nodelay(true).ok();
    server.set_nodelay(true).ok();
    let flows = [Flow::new(), Flow::new()];
    counts.flows.lock().expect("flows").push(flows.clone());
    let turns = Arc::new(Turns::default());
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let [up, down] = flows;
    let a = pump(cr, sw, UP, shape, turns.clone(), up, counts.clone());
    let b = pump(sr, cw, DOWN, shape, turns, down, counts.clone());
    // Either direction failing (a reset) ends both; an end of stream ends only its own.
    let _ = tokio::try_join!(a, b);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tally-link: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(cfg));
}

/// The listening socket, its receive buffer (inherited by every accepted connection) set to
/// `--rcvbuf`: the bytes a client can push ahead of the paced link stay about what a real link
/// holds in flight, not the several MiB loopback's autotuning allows.
fn listen(cfg: &Config) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if let Some(size) = cfg.rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = cfg.sndbuf {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn run(cfg: Config) {
    let listener = match listen(&cfg) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tally-link: cannot listen on {}: {e}", cfg.listen);
            std::process::exit(2);
        }
    };
    let addr: SocketAddr = listener.local_addr().expect("local address");
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "http://{addr}").ok();
        out.flush().ok();
    }
    let cfg = Arc::new(cfg);
    let counts = Arc::new(Counts::new(cfg.window));
    let sampler = spawn_sampler(counts.clone());
    let accept = spawn_accept(listener, cfg.clone(), counts.clone());
    let stdin_closed = stdin_closed(cfg.until_stdin_closes);
    tokio::pin!(stdin_closed);
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = &mut stdin_closed => break,
            _ = usr1.recv() => {
                sample(&counts, &mut [Window::new(counts.window), Window::new(counts.window)]);
                write_stats(&counts, &cfg.stats);
            }
        }
    }
    accept.abort();
    sampler.abort();
    write_stats(&counts, &cfg.stats);
    eprint!("tally-link: {}", counts.json());
    std::process::exit(0);
}

/// Samples the flows every 10 ms, for the windowed rates.
fn spawn_sampler(counts: Arc<Counts>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut windows = [Window::new(counts.window), Window::new(counts.window)];
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sample(&counts, &mut windows);
        }
    })
}

/// Accepts connections, each served on its own task.
fn spawn_accept(
    listener: TcpListener,
    cfg: Arc<Config>,
    counts: Arc<Counts>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    tokio::spawn(serve(conn, cfg.clone(), counts.clone()));
                }
                Err(e) => eprintln!("tally-link: accept: {e}"),
            }
        }
    })
}

/// Ends when standard input closes (with `until_stdin_closes`), otherwise never.
async fn stdin_closed(until_stdin_closes: bool) {
    if until_stdin_closes {
        // A plain thread blocked on stdin, which tells the runtime when it ends.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while !matches!(stdin.read(&mut buf), Ok(0) | Err(_)) {}
            let _ = tx.send(());
        });
        let _ = rx.await;
    } else {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!(parse_rate("6MB/s").unwrap(), 6e6);
        assert_eq!(parse_rate("2Gbit/s").unwrap(), 250e6);
        assert_eq!(parse_rate("400MiB/s").unwrap(), 400.0 * 1048576.0);
        assert_eq!(parse_rate("300KB/s").unwrap(), 300e3);
        assert!(parse_rate("inf").unwrap().is_infinite());
        assert!(parse_rate("0MB/s").is_err());
        assert!(parse_rate("6 parsecs").is_err());
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn a_paced_flow_goes_at_its_rate() {
        // 1 MB/s, 10 KB chunks arriving all at once: the k-th leaves at k * 10 ms.
        let t0 = Instant::now();
        let mut p = Pacer::new(1e6, Duration::from_millis(50));
        let times: Vec<Duration> = (0..100).map(|_| p.release(t0, 10_000) - t0).collect();
        for (k, t) in times.iter().enumerate() {
            let want = Duration::from_millis(10 * (k as u64 + 1));
            assert!(t.abs_diff(want) < Duration::from_micros(10), "{k}: {t:?}");
        }
        // A sender keeping up with the schedule is never reset: one second for 1 MB.
        assert!((times[99].as_secs_f64() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_flow_arriving_on_schedule_keeps_its_clock() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1e6, Duration::from_millis(50));
        let mut now = t0;
        for _ in 0..50 {
            // Each chunk arrives exactly when the previous one left (a sender that keeps up).
            now = p.release(now, 10_000);
        }
        assert_eq!(p.start, Some(t0), "no reset while the flow keeps up");
        assert_eq!(now - t0, Duration::from_millis(500));
    }

    #[test]
    fn an_idle_gap_banks_no_credit() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1e6, Duration::from_millis(50));
        assert_eq!(p.release(t0, 10_000) - t0, Duration::from_millis(10));
        // Quiet for 5 s, then 1 MB at once: it still takes a second, not an instant burst.
        let later = t0 + Duration::from_secs(5);
        let mut last = later;
        for _ in 0..100 {
            last = p.release(later, 10_000);
        }
        let took = (last - later).as_secs_f64();
        assert!((took - 1.0).abs() < 1e-6, "took {took}");
        // A gap shorter than the idle bound keeps the clock (no reset, no credit beyond it).
        let mut q = Pacer::new(1e6, Duration::from_millis(50));
        let end = q.release(t0, 10_000);
        let resumed = end + Duration::from_millis(20);
        assert_eq!(q.release(resumed, 10_000) - t0, Duration::from_millis(20));
    }

    #[test]
    fn an_unpaced_flow_never_waits() {
        let t0 = Instant::now();
        let mut p = Pacer::new(f64::INFINITY, Duration::from_millis(50));
        assert_eq!(p.release(t0, 1 << 20), t0);
        assert_eq!(p.chunk(), 64 * 1024);
    }

    #[test]
    fn chunks_are_about_twenty_milliseconds() {
        assert_eq!(Pacer::new(300e3, Duration::ZERO).chunk(), 6000);
        assert_eq!(Pacer::new(10e3, Duration::ZERO).chunk(), 1024);
        assert_eq!(Pacer::new(6e6, Duration::ZERO).chunk(), 64 * 1024);
    }

    #[test]
    fn picks_are_deterministic_and_near_their_share() {
        let every = Pick::Every(8);
        let picked: Vec<u64> = (1..=32).filter(|&n| every.picks(7, n)).collect();
        assert_eq!(picked, vec![8, 16, 24, 32]);
        let share = Pick::Fraction(0.125);
        let a: Vec<bool> = (1..=10_000).map(|n| share.picks(42, n)).collect();
        let b: Vec<bool> = (1..=10_000).map(|n| share.picks(42, n)).collect();
        assert_eq!(a, b, "the same seed picks the same connections");
        let c: Vec<bool> = (1..=10_000).map(|n| share.picks(43, n)).collect();
        assert_ne!(a, c, "another seed picks others");
        let count = a.iter().filter(|&&p| p).count();
        assert!((1_100..1_400).contains(&count), "{count} of 10000 at 1/8");
        assert!(!(1..=1000).any(|n| Pick::Fraction(0.0).picks(1, n)));
        assert!((1..=1000).all(|n| Pick::Fraction(1.0).picks(1, n)));
        assert!(!(1..=1000).any(|n| Pick::None.picks(1, n)));
    }

    #[test]
    fn the_window_reports_full_windows_only() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(1));
        assert_eq!(w.add(t0, 0), None);
        assert_eq!(w.add(t0 + Duration::from_millis(500), 500), None);
        let r = w.add(t0 + Duration::from_secs(1), 1000).unwrap();
        assert!((r - 1000.0).abs() < 1e-9);
        // A burst of 3000 bytes in the next half second: the last full window saw 3500 in ~1 s.
        let r = w.add(t0 + Duration::from_millis(1500), 4000).unwrap();
        assert!((r - 3500.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn flags_parse() {
        let args: Vec<String> = [
            "--upstream",
            "http://127.0.0.1:3900/",
            "--rate",
            "6MB/s",
            "--down-rate",
            "50MB/s",
            "--rtt",
            "20ms",
            "--straggle-every",
            "8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = parse_args(&args).unwrap();
        assert_eq!(c.upstream, "127.0.0.1:3900");
        assert_eq!((c.up_rate, c.down_rate), (6e6, 50e6));
        assert_eq!(c.straggle, Pick::Every(8));
        assert!(parse_args(&["--rate".to_string(), "6MB/s".to_string()]).is_err());
    }
}
