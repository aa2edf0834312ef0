//! TLS configurations from generated certificates: what loads, what fails
//! naming the setting, who a client certificate names, and a rotation
//! picked up without a restart.

use std::path::{Path, PathBuf};

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mlmesh-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A CA, a server certificate for `localhost`/127.0.0.1 and a client
/// certificate for `gateway.test`, written into `d`.
fn pki(d: &Path) -> (String, (String, String), (String, String)) {
    let ca = pki::Ca::new("mlmesh test CA").expect("CA");
    std::fs::write(d.join("ca.crt"), ca.pem()).expect("write");
    let server = ca
        .issue(&["localhost", "127.0.0.1"])
        .expect("issue")
        .write(d, "server")
        .expect("write");
    let client = ca
        .issue(&["gateway.test"])
        .expect("issue")
        .write(d, "client")
        .expect("write");
    (
        s(&d.join("ca.crt")),
        (s(&server.0), s(&server.1)),
        (s(&client.0), s(&client.1)),
    )
}

fn server_settings(ca: &str, (cert, key): &(String, String)) -> ServerTlsSettings {
    ServerTlsSettings {
        cert_file: cert.clone(),
        key_file: key.clone(),
        client_ca_file: ca.to_owned(),
        reload_secs: 1,
        ..ServerTlsSettings::default()
    }
}

fn client_settings(ca: &str, own: Option<&(String, String)>) -> ClientTlsSettings {
    ClientTlsSettings {
        ca_file: ca.to_owned(),
        cert_file: own.map(|o| o.0.clone()).unwrap_or_default(),
        key_file: own.map(|o| o.1.clone()).unwrap_or_default(),
        reload_secs: 1,
    }
}

#[test]
fn bad_files_fail_naming_the_setting() {
    let d = dir("bad");
    let (ca, server, _) = pki(&d);
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let cases = [
        (
            ServerTlsSettings {
                cert_file: s(&junk),
                ..server_settings(&ca, &server)
            },
            "server.tls.cert_file",
        ),
        (
            ServerTlsSettings {
                key_file: String::new(),
                ..server_settings(&ca, &server)
            },
            "server.tls.key_file",
        ),
        (
            ServerTlsSettings {
                client_ca_file: s(&d.join("missing.crt")),
                ..server_settings(&ca, &server)
            },
            "server.tls.client_ca_file",
        ),
        (
            // A key that is not the certificate's.
            ServerTlsSettings {
                key_file: s(&d.join("client.key")),
                ..server_settings(&ca, &server)
            },
            "server.tls.cert_file",
        ),
    ];
    for (settings, key) in cases {
        let e = ServerTls::from_settings(&settings, "server.tls")
            .expect_err("refused")
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
    let big = d.join("big.pem");
    std::fs::write(&big, vec![b'A'; (MAX_PEM_BYTES + 1) as usize]).expect("write");
    let e = ClientTls::from_settings(&client_settings(&s(&big), None), "downstream.tls")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("downstream.tls.ca_file") && e.contains("at most"),
        "{e}"
    );
    assert!(
        ServerTls::from_settings(&ServerTlsSettings::default(), "server.tls")
            .expect("plaintext")
            .is_none()
    );
}

#[test]
fn admin_identities_come_as_a_list_or_a_comma_separated_string() {
    let from_env: ServerTlsSettings =
        serde_json::from_str(r#"{"admin_identities": " gw.mesh , ci.mesh ,"}"#).expect("string");
    assert_eq!(from_env.admin_identities, ["gw.mesh", "ci.mesh"]);
    let from_file: ServerTlsSettings =
        serde_json::from_str(r#"{"admin_identities": ["gw.mesh"]}"#).expect("list");
    assert_eq!(from_file.admin_identities, ["gw.mesh"]);
    let e = parse_names(&["not a name!".into()], "server.tls.admin_identities")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("server.tls.admin_identities"), "{e}");
}

/// One handshake over loopback: the server's view of the client.
async fn handshake(
    server: &ServerTls,
    client: &ClientTls,
    name: &str,
) -> Result<Option<PeerCert>, String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let server = server.clone();
    let accepted = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.map_err(|e| e.to_string())?;
        server
            .accept(tcp)
            .await
            .map(|(_, peer)| peer)
            .map_err(|e| e.to_string())
    });
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connected = client.connect(server_name(name)?, tcp).await;
    let peer = accepted.await.map_err(|e| e.to_string())?;
    // TLS 1.3: the server checks the client's certificate after the
    // client has finished, so the server's side tells.
    let _ = connected.map_err(|e| e.to_string())?;
    peer
}

#[tokio::test]
async fn mutual_tls_names_the_client_and_refuses_strangers() {
    let d = dir("mutual");
    let (ca, server, client) = pki(&d);
    let tls = ServerTls::from_settings(&server_settings(&ca, &server), "server.tls")
        .expect("loads")
        .expect("on");
    assert!(tls.is_mutual());
    let good = ClientTls::from_settings(&client_settings(&ca, Some(&client)), "t")
        .expect("loads")
        .expect("on");
    let peer = handshake(&tls, &good, "localhost")
        .await
        .expect("handshake")
        .expect("a client certificate");
    let names = parse_names(&["other.test".into(), "gateway.test".into()], "k").expect("names");
    assert_eq!(
        peer.named(&names).map(|n| n.to_str().into_owned()),
        Some("gateway.test".to_owned())
    );
    assert!(peer.named(&names[..1]).is_none());

    // No certificate: refused.
    let anonymous = ClientTls::from_settings(&client_settings(&ca, None), "t")
        .expect("loads")
        .expect("on");
    assert!(handshake(&tls, &anonymous, "localhost").await.is_err());
    // A certificate from another CA: refused.
    let other = dir("other");
    let (_, _, stranger) = pki(&other);
    let forged = ClientTls::from_settings(&client_settings(&ca, Some(&stranger)), "t")
        .expect("loads")
        .expect("on");
    assert!(handshake(&tls, &forged, "localhost").await.is_err());
    // The server's certificate must name what the client dialled.
    assert!(handshake(&tls, &good, "elsewhere.test").await.is_err());
    assert!(
        handshake(&tls, &good.for_name("127.0.0.1").expect("ip"), "127.0.0.1")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_used_without_a_restart_and_a_bad_one_is_not() {
    let d = dir("rotate");
    let (ca, server, client) = pki(&d);
    let tls = ServerTls::from_settings(&server_settings(&ca, &server), "server.tls")
        .expect("loads")
        .expect("on");
    let good = ClientTls::from_settings(&client_settings(&ca, Some(&client)), "t")
        .expect("loads")
        .expect("on");
    assert!(handshake(&tls, &good, "localhost").await.is_ok());

    // A half-written rotation (junk) keeps the old certificate serving.
    std::fs::write(&server.0, "-----BEGIN CERTIFICATE-----\ntruncated").expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(handshake(&tls, &good, "localhost").await.is_ok());

    // Rotated to a certificate for another name: the next handshake uses
    // it (the old name no longer verifies, the new one does).
    let issued = reissue(&d, &ca, &["rotated.test"]);
    std::fs::write(&server.0, issued.0).expect("write");
    std::fs::write(&server.1, issued.1).expect("write");
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if handshake(&tls, &good, "rotated.test").await.is_ok() {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the rotated certificate was never used");
    assert!(handshake(&tls, &good, "localhost").await.is_err());
}

/// A certificate for `names` from a new CA that replaces `ca` on disk (the
/// client trusts the file it was given, re-read on change too).
fn reissue(d: &Path, ca_file: &str, names: &[&str]) -> (String, String) {
    let ca = pki::Ca::new("mlmesh rotated CA").expect("CA");
    let mut bundle = std::fs::read_to_string(ca_file).expect("ca");
    bundle.push_str(&ca.pem());
    std::fs::write(d.join("ca.crt"), bundle).expect("write");
    let i = ca.issue(names).expect("issue");
    (i.cert_pem, i.key_pem)
}
