//! Mutual TLS in one place: every rustls server and client config of Strongroom is built here.
//!
//! TLS 1.3 only (downgrade attacks and weak suites are not negotiable inside the constellation);
//! internal ports require a client certificate chaining to the configured CA; a peer's identity is
//! the single URI SAN `spiffe://strongroom/<name>` of its certificate. Certificate, key and CA are
//! re-read when their files change, so rotation needs no restart. Never logs key material.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// URI prefix of every Strongroom workload identity.
pub const SPIFFE_PREFIX: &str = "spiffe://strongroom/";

/// A workload identity: the `<name>` of `spiffe://strongroom/<name>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(String);

impl Identity {
    pub const AUTH: &'static str = "auth";
    pub const VAULT: &'static str = "vault";
    pub const AUDIT: &'static str = "audit";
    pub const LEDGER: &'static str = "ledger";
    pub const GATEWAY: &'static str = "gateway";
    /// The operator's CLI.
    pub const OPERATOR: &'static str = "operator";

    /// A name of 1–63 characters from `[a-z0-9-]`.
    pub fn new(name: &str) -> Result<Self, TlsError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok { Ok(Self(name.to_owned())) } else { Err(TlsError::BadIdentity(name.to_owned())) }
    }

    /// Parses `spiffe://strongroom/<name>`.
    pub fn from_uri(uri: &str) -> Result<Self, TlsError> {
        let name = uri.strip_prefix(SPIFFE_PREFIX).ok_or_else(|| TlsError::BadIdentity(uri.to_owned()))?;
        Self::new(name)
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    pub fn uri(&self) -> String {
        format!("{SPIFFE_PREFIX}{}", self.0)
    }

    /// The identity of a certificate: its single URI SAN. Zero or several URI SANs is no identity.
    pub fn of_certificate(der: &[u8]) -> Result<Self, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| TlsError::NoIdentity)?;
        let san = cert.subject_alternative_name().map_err(|_| TlsError::NoIdentity)?.ok_or(TlsError::NoIdentity)?;
        let uris: Vec<&str> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [one] => Self::from_uri(one),
            _ => Err(TlsError::NoIdentity),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uri())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uri())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0:?} is not a strongroom identity")]
    BadIdentity(String),
    #[error("certificate carries no single spiffe://strongroom/ URI SAN")]
    NoIdentity,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls verifier: {0}")]
    Verifier(String),
}

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The schemes [`CertStore::sign`] signs with, in order of preference.
const SIGNING_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

/// A signature by a workload's certificate key: the certificate chain (leaf first, DER), the TLS
/// signature scheme (its IANA number) and the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    pub chain: Vec<Vec<u8>>,
    pub scheme: u16,
    pub value: Vec<u8>,
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed").field("scheme", &SignatureScheme::from(self.scheme)).finish_non_exhaustive()
    }
}

/// Verifies that `signed` signs `message` with the key of a certificate that chained to one of
/// `ca_pem`'s CAs, for client authentication, at `at` (when the signature was made), and returns
/// that certificate's identity. Built from rustls's own verifier (webpki) and its algorithms.
pub fn verify_signed(ca_pem: &[u8], message: &[u8], signed: &Signed, at: UnixTime) -> Result<Identity, TlsError> {
    let anchors: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Verifier(format!("CA: {e}")))?;
    let anchors: Vec<rustls_pki_types::TrustAnchor<'_>> = anchors
        .iter()
        .map(|der| webpki::anchor_from_trusted_cert(der).map_err(|e| TlsError::Verifier(format!("CA: {e}"))))
        .collect::<Result<_, _>>()?;
    if anchors.is_empty() {
        return Err(TlsError::Verifier("no CA certificate".into()));
    }
    let (leaf, intermediates) =
        signed.chain.split_first().ok_or_else(|| TlsError::Verifier("no certificate".into()))?;
    let leaf = CertificateDer::from(leaf.as_slice());
    let intermediates: Vec<CertificateDer<'_>> =
        intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let cert = webpki::EndEntityCert::try_from(&leaf).map_err(|e| TlsError::Verifier(format!("certificate: {e}")))?;
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    cert.verify_for_usage(algorithms.all, &anchors, &intermediates, at, webpki::KeyUsage::client_auth(), None, None)
        .map_err(|e| TlsError::Verifier(format!("certificate: {e}")))?;
    let scheme = SignatureScheme::from(signed.scheme);
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .ok_or_else(|| TlsError::Verifier(format!("unsupported signature scheme {scheme:?}")))?;
    if !candidates.iter().any(|alg| cert.verify_signature(*alg, message, &signed.value).is_ok()) {
        return Err(TlsError::Verifier("bad signature".into()));
    }
    Identity::of_certificate(&leaf)
}

/// One consistent generation of certificate, key and trust anchors.
struct Materials {
    fingerprint: [u8; 32],
    certified_key: Arc<CertifiedKey>,
    identity: Option<Identity>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
    expiry: Expiry,
}

/// Certificate, key and CA read from files and swapped atomically when the files change.
#[derive(Clone)]
pub struct CertStore {
    paths: Arc<TlsPaths>,
    current: Arc<ArcSwap<Materials>>,
}

struct TlsPaths {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("cert", &self.paths.cert).field("identity", &self.identity()).finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn pem_err(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Pem { path: path.to_owned(), reason: reason.into() }
}

impl TlsPaths {
    fn load(&self) -> Result<Materials, TlsError> {
        let (ca, cert, key) = (read(&self.ca)?, read(&self.cert)?, read(&self.key)?);
        let mut hasher = Sha256::new();
        for part in [&ca, &cert, &key] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let fingerprint: [u8; 32] = hasher.finalize().into();

        let mut roots = RootCertStore::empty();
        let mut ca_expiry: Option<i64> = None;
        for der in CertificateDer::pem_slice_iter(&ca) {
            let der = der.map_err(|e| pem_err(&self.ca, e.to_string()))?;
            ca_expiry = [ca_expiry, not_after(&der)].into_iter().flatten().min();
            roots.add(der).map_err(|e| pem_err(&self.ca, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(pem_err(&self.ca, "no CA certificate"));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(&self.cert, e.to_string()))?;
        let leaf = chain.first().ok_or_else(|| pem_err(&self.cert, "no certificate"))?;
        let identity = Identity::of_certificate(leaf).ok();
        let expiry = Expiry { own: not_after(leaf), ca: ca_expiry };
        let key_der = PrivateKeyDer::from_pem_slice(&key).map_err(|_| pem_err(&self.key, "no private key"))?;
        let provider = provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|_| pem_err(&self.key, "unsupported private key"))?;
        let certified_key = Arc::new(CertifiedKey::new(chain, signing_key));
        certified_key.keys_match().map_err(|_| pem_err(&self.key, "key does not match certificate"))?;

        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(Materials { fingerprint, certified_key, identity, client_verifier, server_verifier, expiry })
    }
}

/// When the certificates of one generation expire (Unix seconds): the own one's, the soonest CA's.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    own: Option<i64>,
    ca: Option<i64>,
}

impl Expiry {
    /// Publishes the expiry as `strongroom_certificate_expiry_timestamp_seconds`.
    fn publish(self) {
        let metrics = crate::metrics::Metrics::global();
        for (which, at) in [("own", self.own), ("ca", self.ca)] {
            if let Some(at) = at {
                metrics.certificate_expires(which, at);
            }
        }
    }
}

/// The end of a certificate's validity (Unix seconds), if it parses.
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl CertStore {
    /// Reads the files once; fails when they are unusable.
    pub fn load(cfg: &TlsConfig) -> Result<Self, TlsError> {
        let paths = Arc::new(TlsPaths { ca: cfg.ca.clone(), cert: cfg.cert.clone(), key: cfg.key.clone() });
        let materials = paths.load()?;
        materials.expiry.publish();
        Ok(Self { paths, current: Arc::new(ArcSwap::from_pointee(materials)) })
    }

    /// The identity of our own certificate, if it has one.
    pub fn identity(&self) -> Option<Identity> {
        self.current.load().identity.clone()
    }

    /// Re-reads the files; swaps in the new generation when they changed and are valid.
    /// Returns whether a new generation is now in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let fresh = self.paths.load()?;
        if fresh.fingerprint == self.current.load().fingerprint {
            return Ok(false);
        }
        fresh.expiry.publish();
        self.current.store(Arc::new(fresh));
        Ok(true)
    }

    /// Polls the files every `interval` until the returned task is aborted or the process ends.
    /// An unreadable or invalid generation is logged and the previous one stays in use.
    pub fn spawn_reloader(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.reload()).await {
                    Ok(Ok(true)) => tracing::info!(cert = %store.paths.cert.display(), "tls material reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "tls material not reloaded; keeping the previous one"),
                    Err(e) => tracing::warn!(error = %e, "tls reload task failed"),
                }
            }
        })
    }

    /// Signs `message` with our own certificate's key (as in a TLS 1.3 CertificateVerify, the
    /// scheme chosen for the key): what a workload attests outside a connection, e.g. an entry of
    /// the erasure journal. [`verify_signed`] checks it against a CA.
    pub fn sign(&self, message: &[u8]) -> Result<Signed, TlsError> {
        let materials = self.current.load();
        let key = &materials.certified_key;
        let signer = key.key.choose_scheme(SIGNING_SCHEMES).ok_or_else(|| {
            pem_err(&self.paths.key, format!("no signature scheme for a {:?} key", key.key.algorithm()))
        })?;
        let value = signer.sign(message)?;
        Ok(Signed { chain: key.cert.iter().map(|c| c.to_vec()).collect(), scheme: signer.scheme().into(), value })
    }

    /// Server config for an internal (mTLS) port: TLS 1.3, client certificate required.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(ReloadingClientVerifier(self.clone())))
            .with_cert_resolver(Arc::new(ReloadingCert(self.clone())));
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    /// Server config for a browser-facing port: TLS 1.3, no client certificate.
    pub fn public_server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(ReloadingCert(self.clone())));
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    /// Client config: TLS 1.3, presents our certificate, trusts only the CA, and (when given)
    /// insists that the server's certificate carries `expected` as its identity.
    pub fn client_config(&self, expected: Option<Identity>, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(IdentityServerVerifier { store: self.clone(), expected }))
            .with_client_cert_resolver(Arc::new(ReloadingCert(self.clone())));
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    /// Client config that trusts the CA but presents no certificate (for browser-like callers).
    pub fn anonymous_client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(IdentityServerVerifier { store: self.clone(), expected: None }))
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

#[derive(Debug)]
struct ReloadingCert(CertStore);

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().certified_key.clone())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against the current CA generation.
#[derive(Debug)]
struct ReloadingClientVerifier(CertStore);

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would borrow from a generation that may be swapped out; clients of this
        // constellation hold exactly one certificate, so no hints are needed.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.current.load().client_verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current.load().client_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current.load().client_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current.load().client_verifier.supported_verify_schemes()
    }
}

/// WebPKI verification against the current CA, plus the expected workload identity.
#[derive(Debug)]
struct IdentityServerVerifier {
    store: CertStore,
    expected: Option<Identity>,
}

impl ServerCertVerifier for IdentityServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.store.current.load().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )?;
        if let Some(expected) = &self.expected {
            // A valid certificate of another workload must not stand in for this one.
            match Identity::of_certificate(end_entity) {
                Ok(actual) if &actual == expected => {}
                _ => {
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    ));
                }
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.store.current.load().server_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.store.current.load().server_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.store.current.load().server_verifier.supported_verify_schemes()
    }
}

/// What the server knows about the peer of a connection; tonic puts it in request extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<std::net::SocketAddr>,
    /// `None` when the (CA-valid) certificate carries no single strongroom identity.
    pub identity: Option<Identity>,
}

/// An accepted, handshaken mTLS connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections and completes the mTLS handshake off the accept loop. Failed
/// handshakes (no certificate, wrong CA, TLS 1.2) are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, io::Error>> {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|leaf| Identity::of_certificate(leaf).ok());
                        let conn = TlsConn { inner: stream, info: PeerInfo { remote_addr: Some(remote), identity } };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %remote, error = %e, "tls handshake refused");
                        crate::metrics::Metrics::global().event("tls_handshake_refused");
                    }
                    Err(_) => {
                        tracing::warn!(peer = %remote, "tls handshake timed out");
                        crate::metrics::Metrics::global().event("tls_handshake_timeout");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A client config trusting only the CA in `ca_pem` and presenting no certificate: what a browser
/// or `curl --cacert` does.
pub fn ca_only_client_config(ca_pem: &[u8], alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem) {
        let der = der.map_err(|e| TlsError::Verifier(e.to_string()))?;
        roots.add(der).map_err(|e| TlsError::Verifier(e.to_string()))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// One HTTPS request over `config` (HTTP/1.1); returns status, headers and body. For health
/// probes, the CLI and tests — not a general HTTP client.
pub async fn https_request(
    config: rustls::ClientConfig,
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(http::StatusCode, http::HeaderMap, Vec<u8>), String> {
    https_request_with(config, method, url, headers, http_body_util::Full::new(bytes_from(body))).await
}

/// [`https_request`] with any body: one whose size is not known ahead is sent chunked.
pub async fn https_request_with<B>(
    config: rustls::ClientConfig,
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: B,
) -> Result<(http::StatusCode, http::HeaderMap, Vec<u8>), String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = match parsed.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(h) => h.to_string(),
        None => return Err("url has no host".into()),
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(parsed.path().to_owned() + parsed.query().map(|q| format!("?{q}")).as_deref().unwrap_or(""));
    req = req.header(http::header::HOST, parsed.host_str().unwrap_or_default());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, bytes.to_vec()))
}

fn bytes_from(v: Vec<u8>) -> hyper::body::Bytes {
    hyper::body::Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_strict() {
        assert_eq!(Identity::from_uri("spiffe://strongroom/vault").expect("valid").name(), "vault");
        assert!(Identity::from_uri("spiffe://other/vault").is_err());
        assert!(Identity::from_uri("spiffe://strongroom/Vault").is_err());
        assert!(Identity::from_uri("spiffe://strongroom/").is_err());
        assert!(Identity::from_uri("spiffe://strongroom/a/b").is_err());
    }

    #[test]
    fn loading_certificates_publishes_when_they_expire() {
        let dir = tempfile::tempdir().expect("dir");
        crate::pki::init_dir(dir.path()).expect("pki");
        let cfg = TlsConfig {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("auth.pem"),
            key: dir.path().join("auth-key.pem"),
            reload_interval_ms: 1_000,
        };
        CertStore::load(&cfg).expect("load");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
        let text = crate::metrics::Metrics::global().encode();
        for which in ["own", "ca"] {
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "strongroom_certificate_expiry_timestamp_seconds{{certificate=\"{which}\"}}"
                    ))
                })
                .unwrap_or_else(|| panic!("no {which} expiry in {text}"));
            let at: i64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
            assert!(at > now, "{which} expires in the future: {line}");
        }
    }
}
