//! The HTTP transport under [`super::SdkS3`]: the SDK's default client, watched.
//!
//! Two bounds the SDK's own timeouts cannot express:
//!
//! - **An endpoint that never answered** (wrong port, a listener that is not S3, a blackhole):
//!   until the first HTTP response of the run arrives, every request ends at a shared deadline
//!   ([`NEVER_ANSWERED`] after the first request, or after the last byte of a request body the
//!   connection took, so a slow first PutObject that is still moving is not cut) and is not
//!   retried; a refused connection, an
//!   unknown host or a failed TLS handshake ends at once. Once anything answered, the normal
//!   retry budget applies.
//! - **A reply that stalls after the body was sent**: the attempt timeout has to allow for the
//!   body's transfer (`--timeout` plus the body at 64 KiB/s: ~28 minutes for 100 MiB), so the
//!   wait for the reply gets a bound of its own: `--timeout` from the moment the transport took
//!   the body's last byte (the socket's buffers are small next to that). A slow but moving body
//!   is never cut by it; the SDK's stalled-stream protection covers a body that stops moving.
//!
//! Every failure is reported as a [`NetFailure`] naming the endpoint (scheme, host and port only)
//! and the cause, which `errors` turns into one line.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use tokio::time::Instant;

use crate::s3::NetworkCause;

/// How long tally waits for the first answer of an endpoint before it gives up: documented in the
/// README (Under faults).
pub(crate) const NEVER_ANSWERED: Duration = Duration::from_secs(30);

/// A request that got no answer: where to, why, and whether retrying can help.
#[derive(Debug)]
pub(crate) struct NetFailure {
    /// `scheme://host:port` of the request.
    pub(crate) endpoint: String,
    /// Why.
    pub(crate) cause: NetworkCause,
    /// How long tally waited, for the causes that are a wait.
    pub(crate) waited: Duration,
    /// Whether the endpoint had never answered (nothing to retry for).
    pub(crate) fatal: bool,
}

impl std::fmt::Display for NetFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} from {}", self.cause, self.endpoint)
    }
}

impl std::error::Error for NetFailure {}

/// What the transport knows of the endpoint, shared by every request of a client.
#[derive(Debug)]
pub(crate) struct Watch {
    answered: AtomicBool,
    first_request: OnceLock<Instant>,
    /// Milliseconds after `first_request` at which a request body last moved.
    last_progress_ms: AtomicU64,
    never_answered: Duration,
    reply_timeout: Duration,
}

impl Watch {
    pub(crate) fn new(never_answered: Duration, reply_timeout: Duration) -> Arc<Watch> {
        Arc::new(Watch {
            answered: AtomicBool::new(false),
            first_request: OnceLock::new(),
            last_progress_ms: AtomicU64::new(0),
            never_answered,
            reply_timeout,
        })
    }

    fn answered(&self) -> bool {
        self.answered.load(Ordering::SeqCst)
    }

    fn start(&self) -> Instant {
        *self.first_request.get_or_init(Instant::now)
    }

    /// Notes that a request body moved.
    fn progress(&self) {
        let ms = self.start().elapsed().as_millis() as u64;
        self.last_progress_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// When an endpoint that has never answered is given up.
    fn deadline(&self) -> Instant {
        self.start()
            + Duration::from_millis(self.last_progress_ms.load(Ordering::SeqCst))
            + self.never_answered
    }
}

/// The SDK's default HTTPS client (rustls with aws-lc, proxy settings from the environment).
pub(crate) fn default_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::{Builder, ConnectorBuilder, tls};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut b = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.set_proxy_config(Some(ProxyConfig::from_env()));
        b.build()
    })
}

/// An [`HttpClient`] whose connectors are watched (see the module docs).
#[derive(Debug)]
pub(crate) struct WatchedClient {
    pub(crate) inner: SharedHttpClient,
    pub(crate) watch: Arc<Watch>,
}

impl HttpClient for WatchedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(WatchedConnector {
            inner: self.inner.http_connector(settings, components),
            watch: self.watch.clone(),
        })
    }
}

#[derive(Debug)]
pub(crate) struct WatchedConnector {
    pub(crate) inner: SharedHttpConnector,
    pub(crate) watch: Arc<Watch>,
}

/// `scheme://host[:port]` of a request URI: no path, query or user info.
fn endpoint_of(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("https", uri));
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    format!("{scheme}://{authority}")
}

/// Whether the last byte of a request body was taken, and a way to wait for it.
#[derive(Debug, Default)]
struct BodySent {
    done: AtomicBool,
    notify: tokio::sync::Notify,
}

impl BodySent {
    fn mark(&self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            self.notify.notify_waiters();
        }
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.done.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// A request body that notes when its last byte was taken.
struct Noted {
    inner: SdkBody,
    sent: Arc<BodySent>,
    watch: Arc<Watch>,
}

impl http_body::Body for Noted {
    type Data = bytes::Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.watch.progress();
        }
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.sent.mark(),
            Poll::Ready(Some(Ok(_))) if http_body::Body::is_end_stream(&self.inner) => {
                self.sent.mark()
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// Classifies a failure of the inner connector.
fn cause_of(e: &ConnectorError) -> NetworkCause {
    if e.is_timeout() {
        // The inner client has a connect timeout only.
        return NetworkCause::ConnectTimeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut connecting = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return NetworkCause::Refused,
                std::io::ErrorKind::TimedOut if connecting => {
                    return NetworkCause::ConnectTimeout;
                }
                std::io::ErrorKind::InvalidData if connecting => return NetworkCause::Tls,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => return NetworkCause::Reset,
                _ => {}
            }
        }
        // hyper-util's connect errors have no kind to match: their fixed descriptions are the
        // only way to tell a DNS failure and a connect-stage failure (e.g. TLS) apart.
        let text = s.to_string();
        if text.starts_with("dns error") {
            return NetworkCause::Dns;
        }
        if text.contains("(Connect)") || text.starts_with("tcp connect error") {
            connecting = true;
        }
        source = s.source();
    }
    if connecting {
        NetworkCause::Tls
    } else if e.is_io() {
        NetworkCause::Reset
    } else {
        NetworkCause::Other
    }
}

impl HttpConnector for WatchedConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        let watch = self.watch.clone();
        let endpoint = endpoint_of(request.uri());
        let failure = move |cause, waited, fatal| NetFailure {
            endpoint: endpoint.clone(),
            cause,
            waited,
            fatal,
        };
        if !watch.answered() && Instant::now() >= watch.deadline() {
            let e = failure(NetworkCause::NeverAnswered, watch.never_answered, true);
            return HttpConnectorFuture::ready(Err(ConnectorError::user(Box::new(e))));
        }
        let sent = Arc::new(BodySent::default());
        let body = std::mem::replace(request.body_mut(), SdkBody::taken());
        if body.content_length() == Some(0) {
            // Nothing to send: the wait for the reply starts now.
            sent.mark();
            *request.body_mut() = body;
        } else {
            *request.body_mut() = SdkBody::from_body_1_x(Noted {
                inner: body,
                sent: sent.clone(),
                watch: watch.clone(),
            });
        }
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let reply_timeout = watch.reply_timeout;
            let stalled = async {
                sent.wait().await;
                tokio::time::sleep(reply_timeout).await;
            };
            let silent = async {
                // The deadline moves while a body moves: wait until it stops moving.
                while Instant::now() < watch.deadline() {
                    tokio::time::sleep_until(watch.deadline()).await;
                }
                if watch.answered() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                r = call => match r {
                    Ok(resp) => {
                        watch.answered.store(true, Ordering::SeqCst);
                        Ok(resp)
                    }
                    Err(e) => {
                        let cause = cause_of(&e);
                        let fatal = !watch.answered()
                            && matches!(
                                cause,
                                NetworkCause::Refused | NetworkCause::Dns | NetworkCause::Tls
                            );
                        let f = Box::new(failure(cause, Duration::ZERO, fatal));
                        Err(if fatal {
                            ConnectorError::user(f)
                        } else if e.is_timeout() {
                            ConnectorError::timeout(f)
                        } else {
                            ConnectorError::io(f)
                        })
                    }
                },
                () = stalled => {
                    let f = failure(NetworkCause::NoReply, reply_timeout, false);
                    Err(ConnectorError::timeout(Box::new(f)))
                }
                () = silent, if !watch.answered() => {
                    let f = failure(NetworkCause::NeverAnswered, watch.never_answered, true);
                    Err(ConnectorError::user(Box::new(f)))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::Response;
    use http_body_util::BodyExt as _;

    /// A server that reads the body at `rate` bytes per 100 ms, then answers after `reply_after`
    /// (never, with `None`).
    #[derive(Debug)]
    struct Server {
        rate: usize,
        reply_after: Option<Duration>,
    }

    impl HttpConnector for Server {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let (rate, reply_after) = (self.rate, self.reply_after);
            HttpConnectorFuture::new(async move {
                let mut body = request.into_body();
                while let Some(frame) = body.frame().await {
                    let n = frame
                        .ok()
                        .and_then(|f| f.into_data().ok())
                        .map_or(0, |d| d.len());
                    tokio::time::sleep(Duration::from_millis(100) * (n / rate.max(1)) as u32).await;
                }
                match reply_after {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
                Ok(Response::new(200.try_into().unwrap(), SdkBody::empty()))
            })
        }
    }

    fn connector(server: Server, watch: &Arc<Watch>) -> WatchedConnector {
        WatchedConnector {
            inner: SharedHttpConnector::new(server),
            watch: watch.clone(),
        }
    }

    fn put(len: usize) -> HttpRequest {
        let mut req = HttpRequest::new(SdkBody::from(vec![7u8; len]));
        req.set_uri("http://127.0.0.1:9/bucket/key?partNumber=1")
            .unwrap();
        req
    }

    fn failure(e: ConnectorError) -> (NetworkCause, u64, bool, String) {
        let f = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<NetFailure>())
            .expect("a NetFailure");
        (f.cause, f.waited.as_secs(), f.fatal, f.endpoint.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_reply_is_cut_after_the_reply_timeout_not_the_body_time() {
        let watch = Watch::new(NEVER_ANSWERED, Duration::from_secs(60));
        watch.answered.store(true, Ordering::SeqCst);
        // A body that takes 100 s to send (longer than the reply timeout) and a reply that never
        // comes: cut 60 s after the last byte, at 160 s.
        let c = connector(
            Server {
                rate: 1,
                reply_after: None,
            },
            &watch,
        );
        let start = Instant::now();
        let mut req = put(1000);
        *req.body_mut() = SdkBody::from_body_1_x(http_body_util::StreamBody::new(
            futures::stream::iter((0..1000).map(|_| {
                Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(b"x")))
            })),
        ));
        let e = c.call(req).await.unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
        assert_eq!(
            failure(e),
            (
                NetworkCause::NoReply,
                60,
                false,
                "http://127.0.0.1:9".to_owned()
            )
        );
        assert_eq!(
            start.elapsed().as_secs(),
            160,
            "cut 60 s after the 100 s body"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_and_a_prompt_reply_are_not_cut() {
        let watch = Watch::new(NEVER_ANSWERED, Duration::from_secs(60));
        watch.answered.store(true, Ordering::SeqCst);
        let c = connector(
            Server {
                rate: 1,
                reply_after: Some(Duration::from_secs(59)),
            },
            &watch,
        );
        let mut req = put(0);
        *req.body_mut() = SdkBody::from_body_1_x(http_body_util::StreamBody::new(
            futures::stream::iter((0..1000).map(|_| {
                Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(b"x")))
            })),
        ));
        let resp = c
            .call(req)
            .await
            .expect("a 100 s body and a reply 59 s later");
        assert_eq!(resp.status().as_u16(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_never_answers_fails_at_the_shared_deadline() {
        let watch = Watch::new(Duration::from_secs(30), Duration::from_secs(600));
        let c = connector(
            Server {
                rate: 1 << 20,
                reply_after: None,
            },
            &watch,
        );
        let start = Instant::now();
        let e = c.call(put(10)).await.unwrap_err();
        assert!(!e.is_timeout() && !e.is_io(), "not retried: {e:?}");
        let (cause, waited, fatal, _) = failure(e);
        assert_eq!(
            (cause, waited, fatal),
            (NetworkCause::NeverAnswered, 30, true)
        );
        assert_eq!(start.elapsed().as_secs(), 30);
        // Later requests fail at once: the deadline is shared.
        let e = c.call(put(10)).await.unwrap_err();
        assert_eq!(start.elapsed().as_secs(), 30);
        assert!(failure(e).2, "fatal");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_body_that_moves_is_not_cut_by_the_deadline() {
        // Nothing answered yet; the first request's body takes 100 s (past the 30 s deadline)
        // and the reply comes 20 s after it.
        let watch = Watch::new(Duration::from_secs(30), Duration::from_secs(60));
        let c = connector(
            Server {
                rate: 1,
                reply_after: Some(Duration::from_secs(20)),
            },
            &watch,
        );
        let mut req = put(0);
        *req.body_mut() = SdkBody::from_body_1_x(http_body_util::StreamBody::new(
            futures::stream::iter((0..1000).map(|_| {
                Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(b"x")))
            })),
        ));
        c.call(req)
            .await
            .expect("a moving body is not an endpoint that never answers");
    }

    #[tokio::test(start_paused = true)]
    async fn once_answered_the_deadline_no_longer_applies() {
        let watch = Watch::new(Duration::from_secs(30), Duration::from_secs(600));
        let c = connector(
            Server {
                rate: 1 << 20,
                reply_after: Some(Duration::from_secs(1)),
            },
            &watch,
        );
        c.call(put(10)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let slow = connector(
            Server {
                rate: 1 << 20,
                reply_after: Some(Duration::from_secs(100)),
            },
            &watch,
        );
        slow.call(put(10))
            .await
            .expect("an endpoint that answered is given its normal time");
    }

    #[test]
    fn transport_failures_are_classified_by_their_sources() {
        #[derive(Debug)]
        struct Dns;
        impl std::fmt::Display for Dns {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dns error")
            }
        }
        impl std::error::Error for Dns {}
        let io = |k: std::io::ErrorKind| ConnectorError::io(Box::new(std::io::Error::from(k)));
        assert_eq!(
            cause_of(&io(std::io::ErrorKind::ConnectionRefused)),
            NetworkCause::Refused
        );
        assert_eq!(
            cause_of(&io(std::io::ErrorKind::ConnectionReset)),
            NetworkCause::Reset
        );
        assert_eq!(
            cause_of(&ConnectorError::io(Box::new(Dns))),
            NetworkCause::Dns
        );
        assert_eq!(
            cause_of(&ConnectorError::timeout("connect".into())),
            NetworkCause::ConnectTimeout
        );
    }

    #[test]
    fn endpoints_keep_scheme_host_and_port_only() {
        assert_eq!(
            endpoint_of("https://bkt.s3.eu-west-1.amazonaws.com/key?uploads"),
            "https://bkt.s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint_of("http://user:pw@127.0.0.1:3900/b/k"),
            "http://127.0.0.1:3900"
        );
    }
}
