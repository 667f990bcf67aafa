//! TLS for every client snapq has (Glance, Keystone, RabbitMQ): rustls with the ring crypto
//! provider (it builds with the C compiler alone, where aws-lc needs cmake and adds minutes to
//! a cold build), the system's roots, plus a CA file per endpoint for private CAs.

use std::path::{Path, PathBuf};
use std::sync::Once;

/// A CA file that cannot be used. Names the option it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{option} '{}': cannot read the file: {error}", .path.display())]
    Unreadable {
        option: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{option} '{}': no PEM certificate in the file", .path.display())]
    NotPem { option: &'static str, path: PathBuf },
}

/// Makes ring the process's rustls provider (once; a provider installed before is kept).
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The PEM text of the CA file named by `option`.
pub fn read_ca_pem(option: &'static str, path: &Path) -> Result<String, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|error| TlsError::Unreadable {
        option,
        path: path.to_path_buf(),
        error,
    })?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(TlsError::NotPem {
            option,
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

/// The certificates of the CA file named by `option`, for a reqwest client.
pub fn reqwest_roots(
    option: &'static str,
    path: &Path,
) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let pem = read_ca_pem(option, path)?;
    reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|_| TlsError::NotPem {
        option,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_naming_the_option() {
        let path = std::env::temp_dir().join(format!("snapq-not-pem-{}", std::process::id()));
        std::fs::write(&path, "hello").unwrap();
        let err = read_ca_pem("--glance-ca-file", &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--glance-ca-file") && err.contains("no PEM certificate"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        let err = read_ca_pem("--amqp-ca-file", Path::new("/nonexistent/ca.crt"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--amqp-ca-file") && err.contains("cannot read"),
            "{err}"
        );
    }
}
