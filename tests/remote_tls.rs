//! TLS is always verified: an `https://` server whose certificate no trusted authority signed
//! (here a self-signed one, served by `openssl s_server` on 127.0.0.1) is refused at once,
//! with a message that says why, and there is no option to turn verification off.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{blockwise, have, skip, Need};

/// `openssl s_server` on a free port, killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Option<TlsServer> {
    if !have("openssl") {
        skip(Need::Oracle, "openssl not installed");
        return None;
    }
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl req failed");
    std::fs::write(dir.join("card.img"), vec![0u8; 4096]).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let srv = TlsServer { child, port };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(srv)
}

#[test]
fn a_certificate_no_authority_signed_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = start(dir.path()) else { return };
    let url = format!("https://127.0.0.1:{}/card.img?token=SECRET", srv.port);
    let t0 = Instant::now();
    let out = blockwise().args(["inspect", &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("SECRET"),
        "the query string is redacted: {stderr}"
    );
    // Not retried: a certificate that does not verify will not verify on a second try.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // And nothing turns verification off.
    let out = blockwise()
        .args(["inspect", "--insecure", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
