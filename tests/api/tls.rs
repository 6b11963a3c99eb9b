//! Native TLS (`--tls-cert`/`--tls-key`): the real binary serving HTTPS with a certificate made
//! at test time by a test CA; signed S3 requests over it; SIGHUP reloading renewed files while
//! open connections go on; public URLs in `https`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SerialNumber};
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::helpers::*;

/// A test CA that issues `localhost`/127.0.0.1 server certificates.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "postgate test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// Writes a server certificate with this serial and its key to `cert`/`key`; returns its DER.
    fn issue(&self, serial: u64, cert: &Path, key: &Path) -> CertificateDer<'static> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let leaf_key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
        leaf.der().clone()
    }

    fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}

/// The server binary, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `postgate serve --tls-cert --tls-key` and waits until it answers over https.
async fn spawn_tls(dir: &Path, host: &str, ca: &Ca, extra: &[&str]) -> Proc {
    let log = dir.join("server.log");
    let child = Command::new(env!("CARGO_BIN_EXE_postgate"))
        .args(["serve", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--addr", host, "--tls-cert"])
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .args(extra)
        .env("POSTGATE_ACCESS_KEY", ADMIN_AK)
        .env("POSTGATE_SECRET_KEY", ADMIN_SK)
        .env("POSTGATE_LOG", "info")
        .env_remove("POSTGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("server.err")).unwrap())
        .spawn()
        .unwrap();
    let proc = Proc { child, log };
    let deadline = Instant::now() + Duration::from_secs(20);
    while try_connect(ca, host).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not start: {}",
            std::fs::read_to_string(dir.join("server.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proc
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A new TLS connection to `addr` for `localhost`, verified against the test CA only.
async fn try_connect(ca: &Ca, addr: &str) -> Option<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    TlsConnector::from(Arc::new(ca.client_config()))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()
}

async fn connect(ca: &Ca, addr: &str) -> Tls {
    try_connect(ca, addr).await.expect("TLS connection")
}

fn peer_leaf(conn: &Tls) -> CertificateDer<'static> {
    conn.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One keep-alive `GET /-/health` on an open connection; true if it answered `ok`.
async fn health_on(conn: &mut Tls) -> bool {
    conn.write_all(b"GET /-/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !got.ends_with(b"\r\n\r\nok\n") {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                return false;
            }
            got.extend_from_slice(&buf[..n]);
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or(false)
}

/// Sends a prepared (signed) request over a new TLS connection that trusts only the test CA.
async fn send_https(ca: &Ca, addr: &str, p: Prepared) -> Resp {
    use http_body_util::BodyExt;
    let conn = connect(ca, addr).await;
    let (mut sender, driver) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(conn))
            .await
            .unwrap();
    tokio::spawn(driver);
    let mut req = hyper::Request::builder()
        .method(p.method)
        .uri(p.target)
        .body(http_body_util::Full::new(bytes::Bytes::from(p.body)))
        .unwrap();
    *req.headers_mut() = p.headers;
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// An unsigned request with these headers, over https.
async fn call_https(
    ca: &Ca,
    addr: &str,
    method: Method,
    target: &str,
    auth: Option<&str>,
    body: &str,
) -> Resp {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("host", "localhost".parse().unwrap());
    if let Some(a) = auth {
        headers.insert("authorization", a.parse().unwrap());
    }
    let p = Prepared {
        method,
        target: target.to_owned(),
        url: String::new(),
        headers,
        body: body.as_bytes().to_vec(),
    };
    send_https(ca, addr, p).await
}

#[tokio::test]
async fn signed_put_and_get_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(1, &dir.path().join("cert.pem"), &dir.path().join("key.pem"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let host = format!("localhost:{port}");
    let _proc = spawn_tls(dir.path(), &addr, &ca, &[]).await;
    let http = reqwest::Client::new();
    let signed = |method, path: &str| req_to("", &host, &http, method, path);
    send_https(&ca, &addr, signed(Method::PUT, "/tlsb").prepare())
        .await
        .assert_status(200);
    let body = pattern(300_000, 7);
    let put = signed(Method::PUT, "/tlsb/over/tls.bin").body(body.clone());
    send_https(&ca, &addr, put.prepare())
        .await
        .assert_status(200);
    let got = send_https(
        &ca,
        &addr,
        signed(Method::GET, "/tlsb/over/tls.bin").prepare(),
    )
    .await;
    got.assert_status(200);
    assert_eq!(got.body, body);
    // What is stored is what was sent over TLS.
    assert_eq!(got.header("etag"), Some(etag_of(&body).as_str()));
    // A plain-HTTP request on the TLS port gets no HTTP answer.
    let plain = http.get(format!("http://{addr}/-/health")).send().await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ca = Ca::new();
    let first = ca.issue(1001, &cert, &key);
    let addr = format!("127.0.0.1:{}", free_port());
    let proc = spawn_tls(dir.path(), &addr, &ca, &[]).await;
    let mut old = connect(&ca, &addr).await;
    assert_eq!(peer_leaf(&old), first);
    assert!(health_on(&mut old).await);

    // Renewal: new files (another key, another serial), then SIGHUP.
    let second = ca.issue(2002, &cert, &key);
    assert_ne!(first, second);
    let pid = proc.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_leaf(&connect(&ca, &addr).await) != second {
        assert!(Instant::now() < deadline, "no reload: {}", proc.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The line follows the swap (and logging is buffered): wait for it too.
    while !proc.log().contains("reloaded the TLS certificate") {
        assert!(Instant::now() < deadline, "no reload line: {}", proc.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the reload goes on, with the session it negotiated.
    assert!(health_on(&mut old).await);
    assert_eq!(peer_leaf(&old), first);

    // A broken renewal (the key of another certificate) keeps the one in use.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    ca.issue(3003, &other.join("cert.pem"), &key);
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proc.log().contains("could not reload the TLS certificate") {
        assert!(
            Instant::now() < deadline,
            "no reload failure: {}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(peer_leaf(&connect(&ca, &addr).await), second);
    assert!(health_on(&mut old).await);
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(
        1,
        &dir.path().join("cert.pem"),
        &dir.path().join("other-key.pem"),
    );
    ca.issue(
        2,
        &dir.path().join("other-cert.pem"),
        &dir.path().join("key.pem"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_postgate"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("key.pem"))
        .env("POSTGATE_ACCESS_KEY", ADMIN_AK)
        .env("POSTGATE_SECRET_KEY", ADMIN_SK)
        .env_remove("POSTGATE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key.pem"), "{err}");
}

#[tokio::test]
async fn public_urls_are_https_when_tls_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(5, &dir.path().join("cert.pem"), &dir.path().join("key.pem"));
    let addr = format!("127.0.0.1:{}", free_port());
    let base = format!("https://{addr}");
    let _proc = spawn_tls(dir.path(), &addr, &ca, &[]).await;
    let http = reqwest::Client::new();
    send_https(
        &ca,
        &addr,
        req_to("", "localhost", &http, Method::PUT, "/urlb").prepare(),
    )
    .await
    .assert_status(200);
    let auth = format!("Bearer {ADMIN_AK}:{ADMIN_SK}");
    let policy = call_https(
        &ca,
        &addr,
        Method::POST,
        "/-/api/presign/post",
        Some(&auth),
        r#"{"bucket":"urlb","key":"k"}"#,
    )
    .await;
    policy.assert_status(200);
    let json: serde_json::Value = serde_json::from_slice(&policy.body).unwrap();
    assert_eq!(json["url"], format!("{base}/urlb"));
    let link = call_https(
        &ca,
        &addr,
        Method::POST,
        "/-/api/links",
        Some(&auth),
        r#"{"bucket":"urlb"}"#,
    )
    .await;
    link.assert_status(201);
    let json: serde_json::Value = serde_json::from_slice(&link.body).unwrap();
    let url = json["url"].as_str().unwrap();
    let page_path = url.strip_prefix(&base).unwrap_or_else(|| panic!("{url}"));
    assert!(page_path.starts_with("/-/u/"), "{url}");
    // The page's form posts to the https origin, and its redirect comes back there.
    let page = call_https(&ca, &addr, Method::GET, page_path, None, "").await;
    page.assert_status(200);
    assert!(
        page.text().contains(&format!("{base}/urlb")),
        "{}",
        page.text()
    );
    assert!(!page.text().contains("http://"), "{}", page.text());
}

/// Strangers that open TCP connections and never finish the TLS handshake (nothing sent, or a
/// ClientHello cut short) hold a connection slot for at most the header timeout: with 96 of
/// them against a cap of 16 connections, every one is closed by the server and a real client
/// that came after them is still served.
#[tokio::test]
async fn half_open_tls_handshakes_are_cut_and_cannot_starve_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(1, &dir.path().join("cert.pem"), &dir.path().join("key.pem"));
    let addr = format!("127.0.0.1:{}", free_port());
    let proc = spawn_tls(
        dir.path(),
        &addr,
        &ca,
        &["--header-timeout", "1s", "--max-connections", "16"],
    )
    .await;
    let started = Instant::now();
    let mut stallers = Vec::new();
    for i in 0..96 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            // A TLS record header announcing a 512-byte handshake message, then silence.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        stallers.push(s);
    }
    let client = tokio::spawn({
        let addr = addr.clone();
        let config = ca.client_config();
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut conn = TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            health_on(&mut conn).await
        }
    });
    // Every staller is closed by the server: its read ends (EOF or reset), none hangs.
    let closed = futures_util::future::join_all(stallers.into_iter().map(|mut s| async move {
        let mut b = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }))
    .await;
    assert!(
        closed.iter().all(|c| *c),
        "a half-open handshake was never cut"
    );
    // 96 stallers, 16 at a time, 1 s each: about 6 s; far from "never".
    assert!(
        tokio::time::timeout(Duration::from_secs(20), client)
            .await
            .expect("the real client was served")
            .unwrap(),
        "the real client got its health answer: {}",
        proc.log()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}
