//! TlsSession against a real rustls client, with a certificate made by rcgen.

use super::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

fn make_cert() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn client(cert_pem: &str) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.expect("cert")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").expect("name")).expect("client")
}

/// Moves bytes both ways until neither side has anything to say; returns server plaintext.
fn pump(c: &mut ClientConnection, s: &mut TlsSession, plain: &mut Vec<u8>) {
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut to_server).expect("client write");
        }
        let mut off = 0;
        while off < to_server.len() {
            off += s.receive(&to_server[off..], plain, 1 << 20).expect("server receive");
        }
        let mut to_client = Vec::new();
        s.transmit(&mut to_client);
        if to_server.is_empty() && to_client.is_empty() {
            return;
        }
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("client read");
            c.process_new_packets().expect("client process");
        }
    }
}

#[test]
fn handshake_and_data_both_ways() {
    let (cert, key) = make_cert();
    let cfg = server_config_from_pem(cert.as_bytes(), key.as_bytes()).expect("config");
    let mut s = TlsSession::new(cfg).expect("session");
    let mut c = client(&cert);
    let mut plain = Vec::new();
    pump(&mut c, &mut s, &mut plain);
    assert!(!s.is_handshaking());
    assert!(s.describe().contains("TLS"));
    c.writer().write_all(b"USER alice\r\n").expect("client send");
    pump(&mut c, &mut s, &mut plain);
    assert_eq!(plain, b"USER alice\r\n");
    s.send(b"+OK hello\r\n").expect("send");
    pump(&mut c, &mut s, &mut plain);
    let mut got = [0u8; 64];
    let n = c.reader().read(&mut got).expect("client read plain");
    assert_eq!(&got[..n], b"+OK hello\r\n");
    c.send_close_notify();
    pump(&mut c, &mut s, &mut plain);
    assert!(s.peer_closed());
}

#[test]
fn plaintext_bound_is_respected() {
    let (cert, key) = make_cert();
    let cfg = server_config_from_pem(cert.as_bytes(), key.as_bytes()).expect("config");
    let mut s = TlsSession::new(cfg).expect("session");
    let mut c = client(&cert);
    let mut plain = Vec::new();
    pump(&mut c, &mut s, &mut plain);
    c.writer().write_all(&[b'x'; 5000]).expect("client send");
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).expect("write");
    }
    let mut small = Vec::new();
    let used = s.receive(&wire, &mut small, 100).expect("receive");
    assert_eq!(small.len(), 100);
    let mut rest = Vec::new();
    s.receive(&wire[used..], &mut rest, 1 << 20).expect("receive rest");
    assert_eq!(small.len() + rest.len(), 5000);
}

#[test]
fn garbage_is_a_protocol_error() {
    let (cert, key) = make_cert();
    let cfg = server_config_from_pem(cert.as_bytes(), key.as_bytes()).expect("config");
    let mut s = TlsSession::new(cfg).expect("session");
    let mut plain = Vec::new();
    assert!(matches!(
        s.receive(b"GET / HTTP/1.0\r\n\r\n", &mut plain, 1024),
        Err(TlsError::Protocol(_))
    ));
}

#[test]
fn bad_pem_is_refused() {
    assert!(server_config_from_pem(b"nothing", b"nothing").is_err());
    let missing = server_config(Path::new("/nonexistent/cert.pem"), Path::new("/nonexistent/key.pem"));
    assert!(matches!(missing, Err(TlsError::File { .. })));
}

#[test]
fn large_send_after_handshake_is_not_refused() {
    let (cert, key) = make_cert();
    let cfg = server_config_from_pem(cert.as_bytes(), key.as_bytes()).expect("config");
    let mut s = TlsSession::new(cfg).expect("session");
    let mut c = client(&cert);
    let mut plain = Vec::new();
    pump(&mut c, &mut s, &mut plain);
    let big = vec![b'y'; 1 << 20];
    s.send(&big).expect("a megabyte is queued");
    let mut wire = Vec::new();
    s.transmit(&mut wire);
    let mut rd = &wire[..];
    let mut got = Vec::new();
    while !rd.is_empty() {
        c.read_tls(&mut rd).expect("client read");
        c.process_new_packets().expect("client process");
        let mut buf = [0u8; 65536];
        while let Ok(n) = c.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(got.len(), big.len());
}
