//! mTLS gRPC client channels. Every call to another service goes through a [`Channel`] built here:
//! TLS 1.3 with our certificate, the server must present the expected identity, each call has a
//! deadline, and trace context travels with it.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::telemetry::{GrpcClientLayer, GrpcClientTelemetry};
use crate::tls::{CertStore, Identity, TlsError};

/// A lazily connecting, traced mTLS channel; a unary call's whole response is bounded by the
/// channel's timeout ([`Deadline`]).
pub type Channel = GrpcClientTelemetry<Deadline<tonic::transport::Channel>>;

/// The receive window of each call. One connection carries every call to a service, and a
/// response its caller does not read (an export whose HTTP client stopped reading) holds its
/// window until it is read or dropped. hyper's defaults (2 MiB per call, 5 MiB per connection)
/// let three such calls stop every other call on the connection; now each holds at most this much,
/// and the connection's window is the largest HTTP/2 allows.
const CALL_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} is not an https://host:port URL")]
    BadUrl(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A channel to `url` (`https://host:port`) whose server must be `expected`.
pub fn channel(store: &CertStore, url: &str, expected: &Identity, timeout: Duration) -> Result<Channel, ClientError> {
    let config = store.client_config(Some(expected.clone()), &[b"h2"])?;
    channel_with_config(config, url, timeout)
}

/// A channel over an explicit rustls client config (tests use it to play hostile clients).
pub fn channel_with_config(config: rustls::ClientConfig, url: &str, timeout: Duration) -> Result<Channel, ClientError> {
    let parsed = url::Url::parse(url).map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    let host = match parsed.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(h) => h.to_string(),
        None => return Err(ClientError::BadUrl(url.to_owned())),
    };
    let port = parsed.port().unwrap_or(443);
    if parsed.scheme() != "https" {
        return Err(ClientError::BadUrl(url.to_owned()));
    }
    let server_name = ServerName::try_from(host.clone()).map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    let connector = TlsConnector::from(Arc::new(config));
    // TLS is done by our connector, so tonic sees a plain URI.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", authority(&host, port)))
        .map_err(|_| ClientError::BadUrl(url.to_owned()))?
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .initial_stream_window_size(CALL_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let connect = tower::service_fn(move |_uri: http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let host = host.clone();
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = Deadline { inner: endpoint.connect_with_connector_lazy(connect), limit: timeout };
    Ok(tower::Layer::layer(&GrpcClientLayer, channel))
}

/// Bounds a unary call's whole response, its message and trailers included, by `limit` from the
/// call. tonic's own timeout (`Endpoint::timeout`, kept) ends when the response headers arrive,
/// so a call whose message never came (its connection's window held by unread calls, a server
/// that stalls mid-response) waited forever. Server-streaming calls last as long as their caller
/// reads: only their headers are bounded.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

/// The paths (`/package.Service/Method`) of every server-streaming method, from the descriptors
/// the servers publish for reflection, so a new streaming method cannot be missed here.
fn streaming(path: &str) -> bool {
    static PATHS: std::sync::LazyLock<std::collections::HashSet<String>> = std::sync::LazyLock::new(|| {
        let set = <prost_types::FileDescriptorSet as prost::Message>::decode(proto::FILE_DESCRIPTOR_SET)
            .expect("proto's descriptor set decodes");
        let mut paths = std::collections::HashSet::new();
        for file in &set.file {
            for service in &file.service {
                for method in service.method.iter().filter(|m| m.server_streaming()) {
                    paths.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        paths
    });
    PATHS.contains(path)
}

impl<S, B, R> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<DeadlineBody<R>>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let until = (!streaming(req.uri().path())).then(|| Box::pin(tokio::time::sleep(self.limit)));
        let call = self.inner.call(req);
        Box::pin(async move { Ok(call.await?.map(|inner| DeadlineBody { inner, until, expired: false })) })
    }
}

/// A response body that fails with `DEADLINE_EXCEEDED` once its deadline passes.
#[derive(Debug)]
pub struct DeadlineBody<R> {
    inner: R,
    until: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    expired: bool,
}

impl<R> http_body::Body for DeadlineBody<R>
where
    R: http_body::Body + Unpin,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = R::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.until.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                this.expired = true;
                let status = tonic::Status::deadline_exceeded("the service did not answer in time");
                Poll::Ready(Some(Err(Box::new(status))))
            }
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Adds the tenant, request id and (optionally) the caller's bearer token to an outgoing request.
pub fn with_context<T>(
    mut req: tonic::Request<T>,
    tenant: Option<&str>,
    request_id: Option<&str>,
    bearer: Option<&str>,
) -> tonic::Request<T> {
    let md = req.metadata_mut();
    if let Some(t) = tenant.and_then(|t| t.parse().ok()) {
        md.insert(crate::access::TENANT_HEADER, t);
    }
    if let Some(r) = request_id.and_then(|r| r.parse().ok()) {
        md.insert(crate::access::REQUEST_ID_HEADER, r);
    }
    if let Some(b) = bearer.and_then(|b| format!("Bearer {b}").parse().ok()) {
        md.insert("authorization", b);
    }
    req
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_server_streaming_methods_outlive_the_call_timeout() {
        assert!(super::streaming("/strongroom.audit.v1.AuditLogService/ExportEntries"));
        assert!(super::streaming("/strongroom.audit.v1.AuditLogService/StreamEntries"));
        assert!(!super::streaming("/strongroom.audit.v1.AuditLogService/ListEntries"));
        assert!(!super::streaming("/strongroom.audit.v1.AuditIngestService/AppendBatch"));
        assert!(!super::streaming("/strongroom.ledger.v1.LedgerService/CreateTransfers"));
    }

    /// A response whose message never comes: a unary call fails at its deadline, a streaming
    /// one waits for as long as its caller does.
    #[tokio::test]
    async fn a_unary_response_that_never_completes_fails_at_the_deadline() {
        use http_body_util::BodyExt;
        use tower::{Service, ServiceExt};
        let never = tower::service_fn(|_req: http::Request<()>| async {
            let body = http_body_util::StreamBody::new(futures::stream::pending::<
                Result<http_body::Frame<hyper::body::Bytes>, std::convert::Infallible>,
            >());
            Ok::<_, std::convert::Infallible>(http::Response::new(body))
        });
        let mut svc = super::Deadline { inner: never, limit: std::time::Duration::from_millis(100) };
        let call = |path: &str| http::Request::builder().uri(path).body(()).expect("request");
        let unary = svc.ready().await.expect("ready").call(call("/strongroom.audit.v1.AuditLogService/ListEntries"));
        let err = unary.await.expect("headers").into_body().frame().await.expect("a frame").expect_err("deadline");
        let status = err.downcast::<tonic::Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let stream = svc.ready().await.expect("ready").call(call("/strongroom.audit.v1.AuditLogService/StreamEntries"));
        let mut body = stream.await.expect("headers").into_body();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(1), body.frame()).await;
        assert!(waited.is_err(), "a stream is not cut by the call timeout");
    }
}
