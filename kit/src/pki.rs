//! A development certificate authority: one CA, one certificate per workload identity. Used by
//! `strongroom pki init` and by the test harness. Production deployments bring their own CA
//! (e.g. SPIFFE/SPIRE or cert-manager); the services only need PEM files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::tls::Identity;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Every identity `strongroom pki init` issues a certificate for.
pub const DEV_IDENTITIES: [&str; 6] = ["auth", "vault", "audit", "ledger", "gateway", "operator"];

/// A PEM certificate and its PEM private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// A CA able to issue workload certificates.
pub struct Ca {
    pub cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A fresh self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Strongroom development");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// Loads a CA written by [`Ca::write`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned(), issuer })
    }

    /// A certificate for `identity`, valid for a year, usable as TLS server and client. Its SANs:
    /// the identity URI, DNS `<name>`, `<name>-svc`, `localhost`, and the loopback addresses.
    pub fn issue(&self, identity: &Identity) -> Result<Issued, PkiError> {
        let name = identity.name();
        let sans = vec![
            SanType::URI(identity.uri().try_into()?),
            SanType::DnsName(name.try_into()?),
            SanType::DnsName(format!("{name}-svc").try_into()?),
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        self.issue_with_sans(name, sans)
    }

    /// A certificate with exactly the given SANs (tests use it for certificates without, or with
    /// several, identities).
    pub fn issue_with_sans(&self, common_name: &str, sans: Vec<SanType>) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `ca.pem` and `ca-key.pem` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.pem"), &self.cert_pem)?;
        write_private(&dir.join("ca-key.pem"), &self.key_pem)?;
        Ok(())
    }
}

/// Writes a private file, readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), std::io::Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Writes `<name>.pem` and `<name>-key.pem` into `dir`.
pub fn write_issued(dir: &Path, name: &str, issued: &Issued) -> Result<(), PkiError> {
    let cert_tmp = dir.join(format!("{name}.pem.tmp"));
    std::fs::write(&cert_tmp, &issued.cert_pem)?;
    write_private(&dir.join(format!("{name}-key.pem")), &issued.key_pem)?;
    std::fs::rename(cert_tmp, dir.join(format!("{name}.pem")))?;
    Ok(())
}

/// `strongroom pki init`: a CA plus one certificate per identity in [`DEV_IDENTITIES`]. An existing
/// CA in `dir` is reused, so re-running only re-issues the workload certificates.
pub fn init_dir(dir: &Path) -> Result<Ca, PkiError> {
    std::fs::create_dir_all(dir)?;
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let ca = if ca_cert.exists() && ca_key.exists() {
        Ca::from_pem(&std::fs::read_to_string(ca_cert)?, &std::fs::read_to_string(ca_key)?)?
    } else {
        let ca = Ca::generate("Strongroom development CA")?;
        ca.write(dir)?;
        ca
    };
    for name in DEV_IDENTITIES {
        let identity = Identity::new(name).map_err(|e| PkiError::Io(std::io::Error::other(e.to_string())))?;
        write_issued(dir, name, &ca.issue(&identity)?)?;
    }
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_identity() {
        let ca = Ca::generate("test").expect("ca");
        let id = Identity::new("vault").expect("id");
        let issued = ca.issue(&id).expect("issued");
        let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem");
        assert_eq!(Identity::of_certificate(&der).expect("identity"), id);
    }

    #[test]
    fn a_reloaded_ca_still_issues() {
        let ca = Ca::generate("test").expect("ca");
        let again = Ca::from_pem(&ca.cert_pem, &ca.key_pem).expect("reload");
        again.issue(&Identity::new("audit").expect("id")).expect("issued");
    }

    use rustls_pki_types::pem::PemObject;
}
