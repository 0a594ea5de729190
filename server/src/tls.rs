//! TLS material. QUIC is always TLS: on first start with no certificate configured, the
//! server generates a private CA and a server certificate signed by it into
//! `DATA_DIR/tls/`, so that a CLI or client on the same machine can trust `ca.pem` with no
//! flags. Real certificates are passed as PEM files instead.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA certificate a generated server certificate chains to.
pub const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "server.pem";
const KEY_FILE: &str = "server.key";

/// Where generated TLS files live in a data directory.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The server's certificate chain and key: from `cert`/`key` when given, else generated
/// (once) under `data_dir/tls`.
pub fn load_or_generate(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        (None, None) => {
            let dir = tls_dir(data_dir);
            if !dir.join(KEY_FILE).exists() {
                generate(&dir)?;
            }
            (dir.join(CERT_FILE), dir.join(KEY_FILE))
        }
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let chain = read_certs(&cert)?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| anyhow::anyhow!("reading the private key {}: {e}", key.display()))?;
    Ok((chain, key))
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading certificates from {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// Generates a CA and a server certificate for `localhost`, `127.0.0.1` and `::1`. The key
/// is written owner-only; the files appear whole (temporary name, then rename).
fn generate(dir: &Path) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Quiver local CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let params = CertificateParams::new(names)?;
    let cert = params.signed_by(&key, &issuer)?;
    write_atomically(&dir.join(CA_FILE), ca.pem().as_bytes(), 0o644)?;
    write_atomically(&dir.join(CERT_FILE), cert.pem().as_bytes(), 0o644)?;
    write_atomically(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
    tracing::info!(dir = %dir.display(), "generated a local CA and server certificate");
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}
