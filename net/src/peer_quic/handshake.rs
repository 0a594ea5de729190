//! TLS and QUIC settings of peer connections, the proofs of the cluster secret, and both sides
//! of the handshake (see the module docs of `peer_quic` for why it is sound).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{close, Shared, EXPORTER_LABEL, PEER_IDLE_TIMEOUT, PEER_UNI_STREAMS_MAX};
use crate::peer::{AuthFrame, PeerDecodeError, Role, AUTH_PAYLOAD_BYTES, PEER_ALPN, PROOF_BYTES};
use crate::quic::{read_frame, ReadFrameError, SetupError, SOCKET_BUFFER_BYTES};

pub(super) fn derive_key(secret: &[u8]) -> hmac::Key {
    // Its own key, so a proof is never a valid tag for another use of the secret (discovery).
    let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let k = hmac::sign(&root, b"quiver peer authentication key v1");
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

/// The bytes a proof signs: protocol, role, both ids, the sender's incarnation, the session.
fn proof_input(role: Role, from: u64, to: u64, incarnation: u64, exported: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(PEER_ALPN.len() + 1 + 24 + 32);
    m.extend_from_slice(PEER_ALPN);
    m.push(role.byte());
    m.extend_from_slice(&from.to_le_bytes());
    m.extend_from_slice(&to.to_le_bytes());
    m.extend_from_slice(&incarnation.to_le_bytes());
    m.extend_from_slice(exported);
    m
}

/// `role`'s proof for a connection from `from` to `to` in the session that exported `e`.
fn prove(
    key: &hmac::Key,
    role: Role,
    from: u64,
    to: u64,
    incarnation: u64,
    e: &[u8; 32],
) -> [u8; 32] {
    let tag = hmac::sign(key, &proof_input(role, from, to, incarnation, e));
    let mut p = [0u8; PROOF_BYTES];
    p.copy_from_slice(tag.as_ref());
    p
}

/// Whether `a` carries a valid proof for the session that exported `e`, compared in constant
/// time (`ring::hmac::verify`).
fn check(key: &hmac::Key, a: &AuthFrame, e: &[u8; 32]) -> bool {
    let input = proof_input(a.role, a.from, a.to, a.incarnation, e);
    hmac::verify(key, &input, &a.proof).is_ok()
}

fn exported(conn: &quinn::Connection) -> Result<[u8; 32], Refusal> {
    let mut e = [0u8; 32];
    conn.export_keying_material(&mut e, EXPORTER_LABEL, b"")
        .map_err(|_| Refusal::protocol("no exported keying material"))?;
    Ok(e)
}

pub(super) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random generator works");
    u64::from_le_bytes(b)
}

/// Why a handshake failed, and how to close the connection for it.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) code: u32,
    pub(super) reason: String,
}

impl Refusal {
    fn protocol(reason: impl Into<String>) -> Refusal {
        Refusal {
            code: close::PROTOCOL,
            reason: reason.into(),
        }
    }
    pub(super) fn close(&self, conn: &quinn::Connection) {
        conn.close(self.code.into(), self.reason.as_bytes());
    }
}

impl From<ReadFrameError> for Refusal {
    fn from(e: ReadFrameError) -> Refusal {
        Refusal::protocol(format!("reading the handshake: {e}"))
    }
}

impl From<PeerDecodeError> for Refusal {
    fn from(e: PeerDecodeError) -> Refusal {
        Refusal::protocol(format!("handshake frame: {e}"))
    }
}

/// Accepts any certificate: peers authenticate with the cluster secret over the exporter
/// (module docs). The handshake signature is still checked against the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::General(
            "TLS 1.2 is not used between peers".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1u8.into()); // the handshake
    t.max_concurrent_uni_streams(PEER_UNI_STREAMS_MAX.into());
    t.max_idle_timeout(Some(
        PEER_IDLE_TIMEOUT.try_into().expect("a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(PEER_IDLE_TIMEOUT / 4));
    Arc::new(t)
}

pub(super) fn tls_configs(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    server.alpn_protocols = vec![PEER_ALPN.to_vec()];
    server.max_early_data_size = 0;
    let server = QuicServerConfig::try_from(server).map_err(|e| SetupError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport());

    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    client.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let client = QuicClientConfig::try_from(client).map_err(|e| SetupError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport());
    Ok((server, client))
}

/// The key of the node's QUIC stateless resets. quinn draws it at random per endpoint by
/// default (and connection ids that embed a random key, which a new process does not
/// recognize), so a node that restarted could not reset the connections its previous process
/// had: their peers would keep writing into them until the idle timeout. Derived from the
/// secret and the node id, with connection ids it does not need to recognize
/// ([`RandomCid`]), the restarted process answers a packet of an old connection with a reset
/// the peer accepts, and the peer dials again at once. Only holders of the secret can forge
/// one, and they are trusted with far more.
pub(super) fn reset_key(secret: &[u8], id: u64) -> hmac::Key {
    let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut label = b"quiver peer stateless reset key v1".to_vec();
    label.extend_from_slice(&id.to_le_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, &label).as_ref())
}

/// Random 8-byte connection ids, all of which `validate` accepts (the trait's default): an
/// endpoint answers a packet for any connection it does not know with a stateless reset
/// (rate-limited and smaller than the packet, by quinn), not only for ids it issued itself.
struct RandomCid;

impl quinn::ConnectionIdGenerator for RandomCid {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut b = [0u8; 8];
        SystemRandom::new()
            .fill(&mut b)
            .expect("the OS random generator works");
        quinn::ConnectionId::new(&b)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

pub(super) fn bind(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    reset_key: hmac::Key,
) -> Result<quinn::Endpoint, SetupError> {
    let err = |source| SetupError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(err)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort, as for the client endpoint.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(|| Box::new(RandomCid));
    quinn::Endpoint::new(config, Some(server), socket, runtime).map_err(err)
}

impl Shared {
    fn proof(&self, role: Role, from: u64, to: u64, incarnation: u64, e: &[u8; 32]) -> [u8; 32] {
        prove(&self.key, role, from, to, incarnation, e)
    }

    fn verify(&self, a: &AuthFrame, e: &[u8; 32]) -> bool {
        check(&self.key, a, e)
    }

    /// The dialer's side of the handshake on a fresh connection to node `to`: prove, then
    /// check the acceptor's proof. Returns the acceptor's incarnation.
    pub(super) async fn authenticate_to(
        &self,
        conn: &quinn::Connection,
        to: u64,
    ) -> Result<u64, Refusal> {
        let e = exported(conn)?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Refusal::protocol(format!("opening the handshake stream: {e}")))?;
        let mine = AuthFrame {
            role: Role::Dialer,
            from: self.id,
            to,
            incarnation: self.incarnation,
            proof: self.proof(Role::Dialer, self.id, to, self.incarnation, &e),
        };
        let mut out = BytesMut::new();
        mine.encode(&mut out);
        send.write_all(&out)
            .await
            .map_err(|e| Refusal::protocol(format!("sending the proof: {e}")))?;
        let _ = send.finish();
        let mut buf = BytesMut::new();
        let f = read_frame(&mut recv, &mut buf, AUTH_PAYLOAD_BYTES)
            .await?
            .ok_or_else(|| Refusal::protocol("the acceptor sent no proof"))?;
        let theirs = AuthFrame::decode(&f, Role::Acceptor)?;
        if !self.verify(&theirs, &e) {
            return Err(Refusal {
                code: close::AUTH_FAILED,
                reason: "the acceptor did not prove the cluster secret".into(),
            });
        }
        if theirs.from != to || theirs.to != self.id {
            return Err(Refusal {
                code: close::WRONG_NODE,
                reason: format!(
                    "expected node {to}, reached node {} (which expected {})",
                    theirs.from, theirs.to
                ),
            });
        }
        Ok(theirs.incarnation)
    }

    /// The acceptor's side: check the dialer's proof, then prove. Returns the dialer's frame.
    pub(super) async fn authenticate_from(
        &self,
        conn: &quinn::Connection,
    ) -> Result<AuthFrame, Refusal> {
        let e = exported(conn)?;
        let (mut send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| Refusal::protocol(format!("waiting for the handshake stream: {e}")))?;
        let mut buf = BytesMut::new();
        let f = read_frame(&mut recv, &mut buf, AUTH_PAYLOAD_BYTES)
            .await?
            .ok_or_else(|| Refusal::protocol("the dialer sent no proof"))?;
        let theirs = AuthFrame::decode(&f, Role::Dialer)?;
        if !self.verify(&theirs, &e) {
            return Err(Refusal {
                code: close::AUTH_FAILED,
                reason: "the dialer did not prove the cluster secret".into(),
            });
        }
        // Checked after the proof, so an unauthenticated dialer learns nothing of our id.
        if theirs.to != self.id || theirs.from == 0 {
            return Err(Refusal {
                code: close::WRONG_NODE,
                reason: format!("this is node {}, not node {}", self.id, theirs.to),
            });
        }
        let mine = AuthFrame {
            role: Role::Acceptor,
            from: self.id,
            to: theirs.from,
            incarnation: self.incarnation,
            proof: self.proof(Role::Acceptor, self.id, theirs.from, self.incarnation, &e),
        };
        let mut out = BytesMut::new();
        mine.encode(&mut out);
        send.write_all(&out)
            .await
            .map_err(|e| Refusal::protocol(format!("sending the proof: {e}")))?;
        let _ = send.finish();
        Ok(theirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key: &hmac::Key, role: Role, from: u64, to: u64, e: &[u8; 32]) -> AuthFrame {
        AuthFrame {
            role,
            from,
            to,
            incarnation: 9,
            proof: prove(key, role, from, to, 9, e),
        }
    }

    /// Each input of the proof matters: a proof is good for one session, one direction, one
    /// pair of nodes, one incarnation, and one secret.
    #[test]
    fn a_proof_holds_only_for_its_session_role_ids_and_secret() {
        let key = derive_key(b"the cluster secret, 32 bytes....");
        let (e1, e2) = ([1u8; 32], [2u8; 32]);
        let good = frame(&key, Role::Dialer, 1, 2, &e1);
        assert!(check(&key, &good, &e1));
        // Relayed into another TLS session (a machine in the middle).
        assert!(!check(&key, &good, &e2));
        // Reflected back to its sender as the acceptor's answer.
        assert!(!check(
            &key,
            &AuthFrame {
                role: Role::Acceptor,
                from: 2,
                to: 1,
                ..good.clone()
            },
            &e1
        ));
        assert!(!check(
            &key,
            &AuthFrame {
                role: Role::Acceptor,
                ..good.clone()
            },
            &e1
        ));
        // Claimed for other nodes, or another incarnation.
        assert!(!check(
            &key,
            &AuthFrame {
                from: 3,
                ..good.clone()
            },
            &e1
        ));
        assert!(!check(
            &key,
            &AuthFrame {
                to: 3,
                ..good.clone()
            },
            &e1
        ));
        assert!(!check(
            &key,
            &AuthFrame {
                incarnation: 10,
                ..good.clone()
            },
            &e1
        ));
        // Another secret.
        let other = derive_key(b"another cluster secret, 32 bytes");
        assert!(!check(&other, &good, &e1));
        // The derived key is not the secret itself: a tag made with the raw secret fails.
        let raw = hmac::Key::new(hmac::HMAC_SHA256, b"the cluster secret, 32 bytes....");
        assert!(!check(&key, &frame(&raw, Role::Dialer, 1, 2, &e1), &e1));
    }
}
