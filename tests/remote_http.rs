//! Remote images over HTTP (issue 13), against a real nginx started by the test on 127.0.0.1
//! (tests/common/web.rs) whose access log counts every byte sent, and through a fault-injecting
//! proxy in front of it (tests/common/proxy.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::proxy::{Fault, Proxy, Rule};
use common::web::{body_bytes, describe, Nginx, Ranges};
use common::*;

const MIB: u64 = 1 << 20;

/// curl with its output, for the harness self-tests.
fn curl(args: &[&str]) -> Output {
    std::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "60"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// The harness itself, checked with curl: ranges are logged with their bytes, `max_ranges 0`
/// really makes nginx ignore Range, and a changed file gets a new ETag nginx enforces with
/// If-Match.
#[test]
fn harness_nginx_logs_every_byte() {
    if !have("curl") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = seeded_bytes(3 * MIB as usize + 17, 1);
    std::fs::write(root.path().join("f.bin"), &data).unwrap();
    let Some(ng) = Nginx::start(root.path()) else {
        return;
    };
    let url = ng.url("f.bin");
    let o = curl(&["-r", "1000-2999", &url]);
    assert!(o.status.success());
    assert_eq!(o.stdout, &data[1000..3000]);
    let o = curl(&[&url]);
    assert_eq!(o.stdout, data);
    let o = curl(&["-I", &url]);
    let head = String::from_utf8_lossy(&o.stdout).to_string();
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .expect("nginx sends an ETag")
        .trim()
        .to_string();
    let o = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "If-Match: \"other\"",
        "-r",
        "0-9",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "412");

    let reqs = ng.requests();
    assert_eq!(reqs.len(), 4, "{}", describe(&reqs));
    assert_eq!(reqs[0].status, 206);
    assert_eq!(reqs[0].body_bytes_sent, 2000);
    assert!(reqs[0].bytes_sent > 2000);
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=1000-2999"));
    assert_eq!(reqs[1].body_bytes_sent, data.len() as u64);
    assert_eq!(reqs[1].range, None);
    assert_eq!(
        (reqs[2].method.as_str(), reqs[2].body_bytes_sent),
        ("HEAD", 0)
    );
    assert_eq!(reqs[3].status, 412);
    assert_eq!(reqs[3].if_match.as_deref(), Some("\"other\""));
    assert_eq!(body_bytes(&reqs[..3]), 2000 + data.len() as u64);
    let mark = ng.mark();
    assert!(ng.requests_since(mark).is_empty());

    // Same size, another mtime: another ETag.
    let f = root.path().join("f.bin");
    std::fs::write(&f, seeded_bytes(data.len(), 2)).unwrap();
    let old = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(old + Duration::from_secs(1000))
        .unwrap();
    let o = curl(&["-I", &url]);
    let head = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!head.contains(&etag), "{etag} still in {head}");
    assert_eq!(ng.requests_since(mark).len(), 1);

    // A server that ignores Range.
    let Some(plain) = Nginx::start_with(root.path(), Ranges::Ignored) else {
        return;
    };
    let o = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-r",
        "0-9",
        &plain.url("f.bin"),
    ]);
    let head = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("Accept-Ranges"), "{head}");
    let reqs = plain.requests();
    assert_eq!(reqs[0].body_bytes_sent, data.len() as u64);
}

/// The proxy, checked with curl: each fault does what it says.
#[test]
fn harness_proxy_injects_faults() {
    if !have("curl") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = seeded_bytes(2 * MIB as usize, 3);
    std::fs::write(root.path().join("f.bin"), &data).unwrap();
    let Some(ng) = Nginx::start(root.path()) else {
        return;
    };
    let px = Proxy::start(ng.addr(), vec![]);
    let url = px.url("f.bin");
    let code = |o: &Output| o.status.code().unwrap_or(-1);

    // Plain forwarding, a range and a whole body.
    let o = curl(&["-r", "10-19", &url]);
    assert_eq!(o.stdout, &data[10..20]);
    assert_eq!(curl(&[&url]).stdout, data);

    // A reset before the headers: curl sees the connection reset (56), not an empty reply (52).
    px.set_rules(vec![Rule::new(Fault::ResetBeforeHeaders).times(1)]);
    let o = curl(&[&url]);
    assert_eq!(code(&o), 56, "{o:?}");
    assert!(o.stdout.is_empty());
    // Only once: the next request goes through.
    assert_eq!(curl(&[&url]).stdout, data);

    // A reset after the headers: a transfer error, never the whole body.
    px.set_rules(vec![Rule::new(Fault::ResetAfterHeaders).times(1)]);
    let o = curl(&["-D", "-", &url]);
    assert_eq!(code(&o), 56, "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("HTTP/1.1 200"));

    // 503 twice: curl's own retry gets through on the third attempt.
    px.set_rules(vec![Rule::new(Fault::Status(503)).times(2)]);
    let o = curl(&["-w", "%{http_code}", "-o", "/dev/null", &url]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "503");
    let o = curl(&["--retry", "3", "--retry-delay", "0", &url]);
    assert_eq!(o.stdout, data);

    // A truncated body: curl knows the length and says the transfer is partial (18).
    px.set_rules(vec![Rule::new(Fault::Truncate(1000)).times(1)]);
    let o = curl(&[&url]);
    assert_eq!(code(&o), 18, "{o:?}");
    assert_eq!(o.stdout, &data[..1000]);

    // Slow: 2 MiB in 256 KiB pieces with 50 ms pauses takes at least 0.35 s.
    px.set_rules(vec![Rule::new(Fault::Slow {
        chunk: 256 << 10,
        pause: Duration::from_millis(50),
    })
    .times(1)]);
    let t = std::time::Instant::now();
    assert_eq!(curl(&[&url]).stdout, data);
    assert!(t.elapsed() >= Duration::from_millis(350));

    // Range stripped: the server sends everything with 200.
    px.set_rules(vec![Rule::new(Fault::IgnoreRange).times(1)]);
    let o = curl(&["-r", "0-9", &url]);
    assert_eq!(o.stdout, data);

    // ranged_only: a request without Range does not count.
    px.set_rules(vec![Rule::new(Fault::Status(503)).ranged_only().times(1)]);
    assert_eq!(curl(&[&url]).stdout, data);
    let o = curl(&["-w", "%{http_code}", "-o", "/dev/null", "-r", "0-9", &url]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "503");

    // The object replaced before the second request: another ETag and other bytes.
    let alt = root.path().join("alt.tmp");
    let other = seeded_bytes(data.len(), 4);
    std::fs::write(&alt, &other).unwrap();
    let f = root.path().join("f.bin");
    let m = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&alt)
        .unwrap()
        .set_modified(m + Duration::from_secs(1000))
        .unwrap();
    px.set_rules(vec![Rule::new(Fault::Replace {
        path: f.clone(),
        with: alt.clone(),
    })
    .from(1)
    .times(1)]);
    assert_eq!(curl(&[&url]).stdout, data);
    assert_eq!(curl(&[&url]).stdout, other);
    assert!(!alt.exists());

    // A redirect to another host (127.0.0.2), followed by curl -L.
    let second = Proxy::start_on("127.0.0.2", ng.addr(), vec![]);
    let first = Proxy::start(
        ng.addr(),
        vec![Rule::new(Fault::Redirect(format!(
            "http://{}",
            second.addr
        )))],
    );
    let o = curl(&["-L", "-H", "X-Test: 1", &first.url("f.bin")]);
    assert_eq!(o.stdout, other);
    assert_eq!(first.seen()[0].status, 302);
    let s = second.seen();
    assert_eq!((s.len(), s[0].status), (1, 200));
    assert_eq!(s[0].header("x-test"), Some("1"));

    let inj = px.injected_all();
    for k in [
        "reset-before-headers",
        "reset-after-headers",
        "truncate",
        "slow",
        "ignore-range",
        "replace",
    ] {
        assert_eq!(inj.get(k), Some(&1), "{k}: {inj:?}");
    }
    assert_eq!(px.injected("status"), 3);
    let seen = px.seen();
    assert_eq!(seen.len() as u64, px.requests());
    assert!(seen.iter().all(|s| s.method == "GET"));
    // Every request answered by nginx is in its log (resets before headers and injected
    // statuses never reached it; the reset after the headers did; so did the redirected one).
    let reached = seen
        .iter()
        .filter(|s| !matches!(s.fault, Some("reset-before-headers" | "status")))
        .count();
    let logged = ng.requests();
    assert_eq!(logged.len(), reached + 1, "{}", describe(&logged));
}
