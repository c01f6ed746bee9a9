//! HTTPS to a CMS: the client's trust (the system's roots, `SSL_CERT_FILE`/`SSL_CERT_DIR`, plus
//! a connection's own CA) and what a failed handshake means to a person.

use rustls::{CertificateError, Error as TlsError};

/// The rustls error behind a failed call, if the call failed in the TLS handshake.
fn tls_error(e: &reqwest::Error) -> Option<&TlsError> {
    std::error::Error::source(e).and_then(find_tls)
}

/// Looks through an error, the `io::Error`s it wraps (their own `source` skips the error they
/// wrap) and its sources for a rustls error.
fn find_tls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsError> {
    if let Some(t) = err.downcast_ref::<TlsError>() {
        return Some(t);
    }
    let wrapped = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| find_tls(inner));
    wrapped.or_else(|| err.source().and_then(find_tls))
}

/// What went wrong in the TLS handshake with `endpoint`, for a person, or `None` when the call
/// failed otherwise. Never contains a credential: it speaks of certificates only.
pub fn failure(e: &reqwest::Error, endpoint: &str) -> Option<String> {
    let tls = tls_error(e)?;
    let host = reqwest::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| endpoint.to_owned());
    Some(match tls {
        TlsError::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "certificate verify failed: unknown issuer for {host}; pass --ca-file (or KEYWARD_CMS_CA_FILE, or the connection's spec.tls.caSecretRef) with the CA that signed it"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate verify failed: the certificate is not valid for {host}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("certificate verify failed: the certificate of {host} has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("certificate verify failed: the certificate of {host} is not valid yet")
            }
            other => format!("certificate verify failed for {host}: {other:?}"),
        },
        other => format!("TLS handshake with {host} failed: {other}"),
    })
}
