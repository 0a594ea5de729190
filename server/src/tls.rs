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

/// Where a generated CA's key comes from.
#[derive(Clone, Copy)]
pub enum CaKey<'a> {
    /// A random key, used once and forgotten: a single node's own CA.
    Random,
    /// A key derived from the cluster secret, the same on every node of the cluster: each
    /// node's generated certificate then chains to the same CA, so that a client trusting
    /// any node's `ca.pem` can follow a redirect to any other. (Whoever holds the cluster
    /// secret can already act as a node; give real certificates to separate the two.)
    FromSecret(&'a [u8]),
}

/// The server's certificate chain and key: from `cert`/`key` when given, else generated
/// (once) under `data_dir/tls` for the names this machine answers to (see [`names`]).
pub fn load_or_generate(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: CaKey<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        (None, None) => {
            let dir = tls_dir(data_dir);
            if !dir.join(KEY_FILE).exists() {
                generate(&dir, ca)?;
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

/// The names a generated certificate is for: `localhost`, the loopback addresses, this
/// host's name, and the addresses of its interfaces (as they are when it is generated).
/// Clients check `localhost` unless told another name (`ClientConfig::server_name`).
pub fn names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_string());
        }
    }
    for i in if_addrs::get_if_addrs().unwrap_or_default() {
        if !i.is_loopback() && !i.is_link_local() {
            names.push(i.ip().to_string());
        }
    }
    names.dedup();
    names
}

/// An Ed25519 key from a 32-byte seed, as PKCS#8 (RFC 8410's private key structure, the
/// version without the public key).
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

/// The CA key of a cluster, from its secret.
fn cluster_ca_key(secret: &[u8]) -> Result<rcgen::KeyPair> {
    use ring::hmac;
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        b"quiver cluster client CA key v1",
    );
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&tag.as_ref()[..32]);
    let der = ed25519_pkcs8(&seed);
    Ok(rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &der.as_slice().into(),
        &rcgen::PKCS_ED25519,
    )?)
}

/// Generates a CA and a server certificate for [`names`]. The key is written owner-only;
/// the files appear whole (temporary name, then rename).
fn generate(dir: &Path, ca: CaKey<'_>) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_key, ca_name) = match ca {
        CaKey::Random => (KeyPair::generate()?, "Quiver local CA"),
        CaKey::FromSecret(secret) => (cluster_ca_key(secret)?, "Quiver cluster CA"),
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(names())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    /// Whether `leaf` (the first certificate of `dir`'s chain) verifies for `localhost`
    /// against the CA of `ca_dir`.
    fn verifies(ca_dir: &Path, dir: &Path) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(&ca_dir.join(CA_FILE)).unwrap() {
            roots.add(c).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let leaf = read_certs(&dir.join(CERT_FILE)).unwrap().remove(0);
        let name = ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    use std::sync::Arc;

    #[test]
    fn nodes_of_one_cluster_share_a_ca_and_others_do_not() {
        let root = tempfile::tempdir().unwrap();
        let secret = b"0123456789abcdef0123456789abcdef";
        let dirs: Vec<PathBuf> = (0..4).map(|i| root.path().join(i.to_string())).collect();
        generate(&dirs[0], CaKey::FromSecret(secret)).unwrap();
        generate(&dirs[1], CaKey::FromSecret(secret)).unwrap();
        generate(
            &dirs[2],
            CaKey::FromSecret(b"another secret, another cluster"),
        )
        .unwrap();
        generate(&dirs[3], CaKey::Random).unwrap();
        assert!(verifies(&dirs[0], &dirs[1]) && verifies(&dirs[1], &dirs[0]));
        assert!(verifies(&dirs[0], &dirs[0]));
        assert!(!verifies(&dirs[0], &dirs[2]));
        assert!(!verifies(&dirs[0], &dirs[3]) && !verifies(&dirs[3], &dirs[0]));
    }

    #[test]
    fn a_generated_certificate_names_this_host() {
        let names = names();
        assert!(names.iter().any(|n| n == "localhost"));
        if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
            let host = host.trim();
            if host != "localhost" {
                assert!(names.iter().any(|n| n == host), "{names:?}");
            }
        }
    }
}
