//! PEM files named by the TLS options of the connectors (`ca_file=`, `cert_file=`,
//! `key_file=`, `client_ca_file=`): read and checked before anything connects or listens, with
//! errors that name the option and the file.

use std::path::Path;

/// The certificates in the PEM file `file`, given by option `option` (for errors), in order;
/// an error naming the option and the file when it cannot be read, is not PEM or holds none.
pub(crate) fn pem_certificates(
    option: &str,
    file: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = read_pem(option, file)?;
    let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{option}={}: not a PEM file ({e})", file.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{option}={}: the file holds no certificate (-----BEGIN CERTIFICATE-----)",
            file.display()
        ));
    }
    Ok(certificates)
}

/// The private key in the PEM file `file` (PKCS#8, PKCS#1 or SEC1), given by option `option`;
/// an error naming the option and the file when it cannot be read or holds none.
pub(crate) fn pem_key(
    option: &str,
    file: &Path,
) -> Result<rustls_pki_types::PrivateKeyDer<'static>, String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(&read_pem(option, file)?).map_err(|e| {
        format!(
            "{option}={}: the file holds no private key in PEM ({e})",
            file.display()
        )
    })
}

/// The bytes of the PEM file `file`, given by option `option`.
pub(crate) fn read_pem(option: &str, file: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| {
        format!(
            "{option}={}: the file cannot be read ({e}); give a readable PEM file",
            file.display()
        )
    })
}
