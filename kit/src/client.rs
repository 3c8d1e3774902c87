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

/// A lazily connecting, traced mTLS channel.
pub type Channel = GrpcClientTelemetry<tonic::transport::Channel>;

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
    let channel = endpoint.connect_with_connector_lazy(connect);
    Ok(tower::Layer::layer(&GrpcClientLayer, channel))
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
