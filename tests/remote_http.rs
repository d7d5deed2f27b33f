//! Remote images over HTTP (issue 13), against a real nginx started by the test on 127.0.0.1
//! (tests/common/web.rs) whose access log counts every byte sent, and through a fault-injecting
//! proxy in front of it (tests/common/proxy.rs).
//!
//! What is checked, against the CLI contract (every command takes `http://` URLs; `inspect`
//! prints `Downloaded:`; `--json` carries `remote`):
//! - a 4 GiB card (sparse, ~10% used): `inspect` of its `.img.zst` downloads < 2% of it,
//!   `flash` of the archive downloads <= 1.1 x the compressed size of the frames holding mapped
//!   blocks (from the seek table and the bmap, computed here), `flash` of the raw `.img` <= 1.1 x
//!   the mapped bytes, both pass the restore proof; the counts blockwise reports agree with
//!   the access log;
//! - a `.img.gz` URL is sent once; a multi-block `.img.xz` URL reads only the blocks it needs;
//! - faults through the proxy: resets, 503s, truncated bodies, a slow server -> the flash
//!   succeeds and the card passes the proof; the object replaced mid-read -> exit 1 saying it
//!   changed; Range ignored -> the streaming fallback (and a good card) or a clear error;
//!   `verify` catches a corrupted card, a corrupt remote archive is never a success;
//! - security: a presigned URL's query never appears in any output (but is sent to the
//!   server); a redirect to another host is followed without an Authorization header.
//!
//! Images are small (the bundled 128 MiB sample, a 512 MiB card) except where the issue asks
//! for 4 GiB; that card is a sparse file with ~480 MiB of data.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::proxy::{Fault, Proxy, Rule};
use common::web::{body_bytes, bytes_sent, describe, Logged, Nginx, Ranges};
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

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A card image in the directory nginx serves (`www/card.img`), with its two partitions'
/// (start, size) in bytes.
struct Card {
    dir: tempfile::TempDir,
    img: PathBuf,
    parts: [(u64, u64); 2],
}

/// What every card test needs: root, loop devices, the restore proof's tools.
fn can_test_cards() -> bool {
    is_root() && have_all(&["mcopy", "fsck.vfat", "e2fsck", "losetup", "sfdisk", "mount"])
}

/// The bundled sample card (128 MiB, FAT + ext4, deleted data in free space).
fn sample_card() -> Option<Card> {
    if !can_test_cards() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let img = unpack_sample(&www);
    Some(Card::new(dir, img))
}

/// A Pi-like card built by benches/make-card.sh as image builders make them (`FRESH=1`: a
/// sparse file, FAT32 boot of 256 MiB, ext4 root, `used_mb` MB of files, half of them real
/// files of this machine, half incompressible).
fn built_card(size: &str, used_mb: u32) -> Option<Card> {
    if !(can_test_cards() && have_all(&["mkfs.vfat", "mkfs.ext4", "tar"])) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let img = www.join("card.img");
    sh(&format!(
        "FRESH=1 bash '{}' '{}' {size} {used_mb} 2>&1",
        repo().join("benches/make-card.sh").display(),
        img.display()
    ));
    Some(Card::new(dir, img))
}

impl Card {
    fn new(dir: tempfile::TempDir, img: PathBuf) -> Card {
        let parts = common::first_two_partitions(&img);
        Card { dir, img, parts }
    }

    /// The directory nginx serves.
    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    fn size(&self) -> u64 {
        std::fs::metadata(&self.img).unwrap().len()
    }

    /// `blockwise backup` of the card to `www/name` (its bmap beside it, `name.bmap`).
    fn backup(&self, name: &str) -> PathBuf {
        let out = self.www().join(name);
        let o = bw(&["backup".as_ref(), self.img.as_os_str(), out.as_os_str()]);
        assert!(o.status.success(), "backup: {}", stderr(&o));
        out
    }

    /// `cmd` (`gzip -c`, `xz -T2 -c`...) of the card into `www/name`.
    fn compress(&self, cmd: &str, name: &str) -> PathBuf {
        let out = self.www().join(name);
        sh(&format!(
            "{cmd} '{}' > '{}'",
            self.img.display(),
            out.display()
        ));
        out
    }

    /// The restore proof of `target` (a loop device's backing file, detached).
    fn assert_restored(&self, target: &Path) {
        assert_card_equivalent(&self.img, target, &self.parts);
        common::assert_same_table(&self.img, target);
    }
}

/// A reused card: a loop device over a file of seeded random bytes the card's size.
struct Target {
    _dir: tempfile::TempDir,
    file: PathBuf,
    lp: Option<Loop>,
}

impl Target {
    fn new(size: u64, seed: u64) -> Option<Target> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sd.bin");
        random_file(&file, size, seed);
        let lp = Loop::attach(&file)?;
        Some(Target {
            _dir: dir,
            file,
            lp: Some(lp),
        })
    }

    fn dev(&self) -> String {
        self.lp.as_ref().expect("attached").dev.clone()
    }

    /// Detaches the loop device; returns the backing file for the proof.
    fn detach(&mut self) -> &Path {
        self.lp.take();
        &self.file
    }

    /// True when the first MiB is all zeros (what a failed flash leaves: no partition table).
    fn head_zeroed(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut b = vec![0u8; MIB as usize];
        std::fs::File::open(&self.file)
            .unwrap()
            .read_exact_at(&mut b, 0)
            .unwrap();
        b.iter().all(|&x| x == 0)
    }
}

/// blockwise with `args`, stdin closed, killed after 10 minutes (a hang is a failure, not a
/// stuck test run).
fn bw(args: &[&std::ffi::OsStr]) -> Output {
    bw_env(args, &[])
}

/// [`bw`] with environment variables set.
fn bw_env(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
    std::process::Command::new("timeout")
        .args(["-s", "KILL", "600"])
        .arg(env!("CARGO_BIN_EXE_blockwise"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run blockwise")
}

/// blockwise with string arguments.
fn bws(args: &[&str]) -> Output {
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
    bw(&a)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {}\nstderr {}", stdout(o), stderr(o)))
}

/// `flash URL TARGET --yes --json`, which must succeed: its JSON.
fn flash_ok(url: &str, t: &Target) -> serde_json::Value {
    let o = bws(&["flash", url, &t.dev(), "--yes", "--json"]);
    assert!(
        o.status.success(),
        "flash {url}: exit {:?}: {}",
        o.status.code(),
        stderr(&o)
    );
    let j = json(&o);
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["targets"][0]["ok"], true, "{j}");
    j
}

/// The `remote` object of a JSON report, checked for the fields the contract names.
fn remote(j: &serde_json::Value) -> &serde_json::Value {
    let r = &j["remote"];
    for k in ["object_size", "downloaded_bytes", "requests"] {
        assert!(r[k].is_u64(), "remote.{k} missing: {j}");
    }
    assert!(r["url"].is_string() && r["ranges"].is_boolean(), "{j}");
    r
}

/// The bytes blockwise says it downloaded agree with what nginx says it sent: no more than
/// every byte sent (headers included), no less than the bodies minus the headers' size.
fn assert_agrees(what: &str, downloaded: u64, reqs: &[Logged]) {
    let (body, sent) = (body_bytes(reqs), bytes_sent(reqs));
    let headers = sent - body;
    assert!(
        downloaded <= sent && downloaded + headers >= body,
        "{what}: blockwise says it downloaded {downloaded} bytes; nginx sent {body} bytes of \
         bodies ({sent} with headers) in {} requests:\n{}",
        reqs.len(),
        describe(reqs)
    );
}

/// Requests for `path` (e.g. `/card.img.zst`), sidecar lookups left out.
fn for_path<'a>(reqs: &'a [Logged], path: &str) -> Vec<&'a Logged> {
    reqs.iter().filter(|r| r.path() == path).collect()
}

/// One frame of a seekable zstd archive: where it is in the file and what it decodes to.
#[derive(Clone, Copy, Debug)]
struct Frame {
    c_off: u64,
    c_len: u64,
    d_off: u64,
    d_len: u64,
}

/// The frames of a seekable zstd file, read from its seek table (the zstd seekable format:
/// a skippable frame, magic 0x184D2A5E, of `u32 compressed, u32 decompressed[, u32 checksum]`
/// entries and a footer `u32 count, u8 descriptor, u32 0x8F92EAB1`), parsed here on its own.
fn seek_table(path: &Path) -> Vec<Frame> {
    let data = std::fs::read(path).unwrap();
    let le = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as u64;
    let n = data.len();
    assert_eq!(le(n - 4), 0x8F92_EAB1, "seekable zstd footer magic");
    let count = le(n - 9) as usize;
    let desc = data[n - 5];
    let entry = if desc & 0x80 != 0 { 12 } else { 8 };
    let table = 8 + count * entry + 9;
    let start = n - table;
    assert_eq!(le(start), 0x184D_2A5E, "skippable frame magic");
    assert_eq!(le(start + 4) as usize, table - 8, "skippable frame size");
    let (mut c, mut d) = (0, 0);
    let frames: Vec<Frame> = (0..count)
        .map(|i| {
            let at = start + 8 + i * entry;
            let f = Frame {
                c_off: c,
                c_len: le(at),
                d_off: d,
                d_len: le(at + 4),
            };
            c += f.c_len;
            d += f.d_len;
            f
        })
        .collect();
    assert_eq!(
        c as usize, start,
        "the frames end where the seek table starts"
    );
    frames
}

/// The mapped byte ranges of a bmap file, [start, end).
fn bmap_ranges(path: &Path) -> Vec<(u64, u64)> {
    let b = blockwise::bmap::parse(&std::fs::read(path).unwrap()).unwrap();
    b.ranges
        .iter()
        .map(|r| {
            (
                r.first * b.block_size,
                ((r.last + 1) * b.block_size).min(b.image_size),
            )
        })
        .collect()
}

/// Whether [a, b) meets any of `ranges`.
fn meets(ranges: &[(u64, u64)], a: u64, b: u64) -> bool {
    ranges.iter().any(|&(s, e)| s < b && a < e)
}

/// The compressed size of the frames holding mapped bytes.
fn mapped_frames_size(frames: &[Frame], ranges: &[(u64, u64)]) -> u64 {
    frames
        .iter()
        .filter(|f| meets(ranges, f.d_off, f.d_off + f.d_len))
        .map(|f| f.c_len)
        .sum()
}

/// A copy of `src` at `dst` with every byte from `from` on XORed with 0x5a (same size), and
/// an mtime 1000 s later than `src`'s, so nginx gives it another ETag.
fn altered_copy(src: &Path, dst: &Path, from: u64) {
    let mut data = std::fs::read(src).unwrap();
    for b in &mut data[from as usize..] {
        *b ^= 0x5a;
    }
    std::fs::write(dst, &data).unwrap();
    let m = std::fs::metadata(src).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(dst)
        .unwrap()
        .set_modified(m + Duration::from_secs(1000))
        .unwrap();
}

/// The bytes inspect's text says it downloaded, with the rounding its display allows: the
/// line starting `Downloaded:` (or inspect's own style, `downloaded   4.0 MiB (4179796 bytes)
/// of ...`); an exact `(N bytes)` is taken as it is, else the first quantity (`1.2 MiB`,
/// `12 kB`...). None without such a line or number.
fn downloaded_in(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().map(str::trim_start).find(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.trim_end_matches(':').eq_ignore_ascii_case("downloaded"))
    })?;
    let rest = line.split_once(char::is_whitespace)?.1;
    if let Some((n, _)) = rest
        .split_once('(')
        .and_then(|(_, r)| r.split_once(" bytes)"))
    {
        if let Ok(n) = n.replace(',', "").parse::<u64>() {
            return Some((n, 0));
        }
    }
    let mut words = rest.split_whitespace();
    let num = words.next()?.replace(',', "");
    let value: f64 = num.parse().ok()?;
    let decimals = num.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
    let unit = words
        .next()
        .unwrap_or("B")
        .trim_matches(|c: char| !c.is_alphanumeric());
    let scale = match unit {
        "B" | "bytes" | "byte" => 1.0,
        "KiB" => 1024.0,
        "MiB" => MIB as f64,
        "GiB" => (1u64 << 30) as f64,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    let slack = 0.5 * 10f64.powi(-decimals) * scale;
    Some(((value * scale).round() as u64, slack.ceil() as u64 + 1))
}

// ---------------------------------------------------------------------------------------------
// The issue's figures on a 4 GiB card.

/// A 4 GiB card, ~10% used: `inspect` of its archive's URL downloads < 2% of the archive and
/// says how much (the log agrees); `flash` of the archive's URL downloads <= 1.1 x the frames
/// holding mapped blocks, `flash` of the raw image's URL <= 1.1 x the mapped bytes, and both
/// cards pass the restore proof.
#[test]
fn four_gib_card_reads_only_what_matters() {
    let Some(card) = built_card("4G", 400) else {
        return;
    };
    let Some(ng) = Nginx::start(&card.www()) else {
        return;
    };
    let zst = card.backup("card.img.zst");
    let zst_len = std::fs::metadata(&zst).unwrap().len();
    let bmap = card.www().join("card.img.zst.bmap");
    let frames = seek_table(&zst);
    let ranges = bmap_ranges(&bmap);
    let mapped: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    let mapped_c = mapped_frames_size(&frames, &ranges);
    eprintln!(
        "card {} B, mapped {mapped} B; archive {zst_len} B in {} frames, {mapped_c} B of them \
         hold mapped blocks",
        card.size(),
        frames.len()
    );
    let url = ng.url("card.img.zst");

    // inspect, text: under 2% of the archive, and the Downloaded line tells the truth.
    let m = ng.mark();
    let o = bws(&["inspect", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = ng.requests_since(m);
    let sent = body_bytes(&reqs);
    eprintln!(
        "inspect: nginx sent {sent} B ({:.2}% of the archive) in {} requests",
        sent as f64 * 100.0 / zst_len as f64,
        reqs.len()
    );
    assert!(
        sent * 50 < zst_len,
        "inspect downloaded {sent} of {zst_len} bytes (>= 2%):\n{}",
        describe(&reqs)
    );
    let text = stdout(&o) + &stderr(&o);
    let (said, slack) = downloaded_in(&text)
        .unwrap_or_else(|| panic!("no `Downloaded:` line in inspect's output:\n{text}"));
    assert!(
        said + slack + (bytes_sent(&reqs) - sent) >= sent && said <= bytes_sent(&reqs) + slack,
        "inspect says `Downloaded: {said}` (+-{slack}); nginx sent {sent} B of bodies:\n{}",
        describe(&reqs)
    );

    // inspect --json: the same, exactly.
    let m = ng.mark();
    let o = bws(&["inspect", &url, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    let reqs = ng.requests_since(m);
    let r = remote(&j);
    assert_eq!(r["object_size"], zst_len, "{r}");
    assert_eq!(r["ranges"], true, "{r}");
    assert_eq!(r["url"], url.as_str(), "{r}");
    assert_agrees(
        "inspect --json",
        r["downloaded_bytes"].as_u64().unwrap(),
        &reqs,
    );
    assert!(body_bytes(&reqs) * 50 < zst_len);
    assert_eq!(
        r["requests"].as_u64().unwrap() as usize,
        for_path(&reqs, "/card.img.zst").len(),
        "remote.requests against the log:\n{}",
        describe(&reqs)
    );

    // flash of the archive: only the frames holding mapped blocks (and the bmap beside it).
    let Some(mut t) = Target::new(card.size(), 41) else {
        return;
    };
    let m = ng.mark();
    let j = flash_ok(&url, &t);
    let reqs = ng.requests_since(m);
    let sent = body_bytes(&reqs);
    eprintln!(
        "flash .img.zst: nginx sent {sent} B in {} requests ({:.3} x the mapped frames)",
        reqs.len(),
        sent as f64 / mapped_c as f64
    );
    assert_eq!(
        j["map_source"], "bmap",
        "the bmap beside the URL is used: {j}"
    );
    assert!(
        sent * 10 <= mapped_c * 11,
        "flash of the archive downloaded {sent} B, more than 1.1 x {mapped_c} B (the frames \
         holding mapped blocks):\n{}",
        describe(&reqs)
    );
    let r = remote(&j);
    assert_eq!(r["object_size"], zst_len);
    assert_agrees(
        "flash .img.zst",
        r["downloaded_bytes"].as_u64().unwrap(),
        &reqs,
    );
    assert_eq!(
        r["requests"].as_u64().unwrap() as usize,
        for_path(&reqs, "/card.img.zst").len(),
        "remote.requests against the log"
    );
    assert!(
        reqs.iter()
            .any(|q| q.path() == "/card.img.zst.bmap" && q.status == 200),
        "the bmap was fetched:\n{}",
        describe(&reqs)
    );
    card.assert_restored(t.detach());
    drop(t);

    // flash of the raw image (no bmap beside it: mapped from its own metadata, read remotely).
    let Some(mut t) = Target::new(card.size(), 42) else {
        return;
    };
    let m = ng.mark();
    let j = flash_ok(&ng.url("card.img"), &t);
    let reqs = ng.requests_since(m);
    let sent = body_bytes(&reqs);
    let mapped_bytes = j["mapped_bytes"].as_u64().unwrap();
    eprintln!(
        "flash .img: nginx sent {sent} B in {} requests ({:.3} x the {mapped_bytes} mapped bytes)",
        reqs.len(),
        sent as f64 / mapped_bytes as f64
    );
    assert_eq!(j["map_source"], "scan", "{j}");
    // The scan's map is the archive's (the same card, the same rule), give or take alignment.
    assert!(
        mapped_bytes <= mapped + 2 * MIB,
        "{mapped_bytes} vs {mapped}"
    );
    assert!(
        sent * 10 <= mapped_bytes * 11,
        "flash of the raw image downloaded {sent} B, more than 1.1 x its {mapped_bytes} mapped \
         bytes:\n{}",
        describe(&reqs)
    );
    let r = remote(&j);
    assert_eq!(r["object_size"], card.size());
    assert_eq!(
        r["requests"].as_u64().unwrap() as usize,
        for_path(&reqs, "/card.img").len(),
        "remote.requests against the log"
    );
    assert_agrees("flash .img", r["downloaded_bytes"].as_u64().unwrap(), &reqs);
    card.assert_restored(t.detach());
}

// ---------------------------------------------------------------------------------------------
// Streams and xz.

/// A `.img.gz` URL (no random access) is sent once, and the card is good.
#[test]
fn a_gz_url_is_streamed_once() {
    let Some(card) = sample_card() else { return };
    if !have("gzip") {
        return;
    }
    let gz = card.compress("gzip -c", "card.img.gz");
    let gz_len = std::fs::metadata(&gz).unwrap().len();
    let Some(ng) = Nginx::start(&card.www()) else {
        return;
    };
    let Some(mut t) = Target::new(card.size(), 51) else {
        return;
    };
    let j = flash_ok(&ng.url("card.img.gz"), &t);
    let reqs = for_path(&ng.requests(), "/card.img.gz")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let sent = body_bytes(&reqs);
    eprintln!(
        "flash .img.gz ({gz_len} B): nginx sent {sent} B:\n{}",
        describe(&reqs)
    );
    // Every byte of it sent exactly once: one stream, or blocks read ahead in order, but
    // no second decoder's download and no block fetched twice.
    let mut got: Vec<(u64, u64)> = reqs
        .iter()
        .map(|r| {
            let range = r.range.as_deref().unwrap_or("bytes=0-");
            let (a, b) = range
                .trim_start_matches("bytes=")
                .split_once('-')
                .unwrap_or_else(|| panic!("range {range}"));
            let a: u64 = a.parse().unwrap();
            let end = b.parse::<u64>().map_or(gz_len, |b| b + 1);
            assert!(
                r.body_bytes_sent == end.min(gz_len) - a || r.status != 206,
                "a short answer: {}",
                describe(&reqs)
            );
            (a, a + r.body_bytes_sent)
        })
        .collect();
    got.sort();
    let mut at = 0;
    for (a, b) in &got {
        assert_eq!(
            *a,
            at,
            "a gap or an overlap at byte {at}:\n{}",
            describe(&reqs)
        );
        at = *b;
    }
    assert_eq!(
        (at, sent),
        (gz_len, gz_len),
        "the .gz was not sent exactly once:\n{}",
        describe(&reqs)
    );
    assert_agrees(
        "flash .img.gz",
        remote(&j)["downloaded_bytes"].as_u64().unwrap(),
        &ng.requests(),
    );
    card.assert_restored(t.detach());
}

/// The xz blocks of a file, from `xz --robot --list -vv`: (compressed offset, compressed
/// size, uncompressed offset, uncompressed size).
fn xz_blocks(path: &Path) -> Vec<Frame> {
    sh(&format!("xz --robot --list -vv '{}'", path.display()))
        .lines()
        .filter(|l| l.starts_with("block\t"))
        .map(|l| {
            let f: Vec<u64> = l
                .split('\t')
                .skip(1)
                .take(7)
                .map(|x| x.parse().unwrap())
                .collect();
            // stream, block in stream, block in file, c_off, d_off, c_len, d_len
            Frame {
                c_off: f[3],
                d_off: f[4],
                c_len: f[5],
                d_len: f[6],
            }
        })
        .collect()
}

/// A multi-block `.img.xz` made by `xz -T2` is read through its index: only the blocks
/// holding mapped bytes are downloaded (<= 1.1 x their size), and the card is good.
#[test]
fn an_xz_url_reads_only_the_blocks_it_needs() {
    if !have("xz") {
        return;
    }
    let Some(card) = built_card("512M", 40) else {
        return;
    };
    // 2 MiB blocks (256 of them) and the fastest level: the card holds 40 MB of incompressible
    // files, which xz's defaults take minutes over on two cores.
    let xz = card.compress("xz -T2 -0 --block-size=2MiB -c", "card.img.xz");
    let blocks = xz_blocks(&xz);
    assert!(blocks.len() > 100, "{} blocks", blocks.len());
    // The map, from a local bmap of the same image (not served: blockwise maps it remotely).
    let local = card.dir.path().join("card.bmap");
    let o = bw(&[
        "bmap".as_ref(),
        card.img.as_os_str(),
        "-o".as_ref(),
        local.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ranges = bmap_ranges(&local);
    let needed = mapped_frames_size(&blocks, &ranges);
    let Some(ng) = Nginx::start(&card.www()) else {
        return;
    };
    let Some(mut t) = Target::new(card.size(), 52) else {
        return;
    };
    let j = flash_ok(&ng.url("card.img.xz"), &t);
    let reqs = ng.requests();
    let sent = body_bytes(
        &for_path(&reqs, "/card.img.xz")
            .into_iter()
            .cloned()
            .collect::<Vec<_>>(),
    );
    let xz_len = std::fs::metadata(&xz).unwrap().len();
    eprintln!(
        "flash .img.xz ({xz_len} B, {} blocks, {needed} B hold mapped bytes): nginx sent {sent} B",
        blocks.len()
    );
    assert!(
        sent * 10 <= needed * 11,
        "flash of the .xz downloaded {sent} B, more than 1.1 x {needed} B (the blocks holding \
         mapped bytes):\n{}",
        describe(&reqs)
    );
    assert_agrees(
        "flash .img.xz",
        remote(&j)["downloaded_bytes"].as_u64().unwrap(),
        &reqs,
    );
    card.assert_restored(t.detach());
}

// ---------------------------------------------------------------------------------------------
// Faults injected by the proxy.

/// A 512 MiB card (80 MB of files) with its archive, served by nginx: enough fetch blocks
/// (~55 of 1 MiB) for faults to land in the middle of a flash.
fn faulty_setup() -> Option<(Card, Nginx)> {
    let card = built_card("512M", 80)?;
    card.backup("card.img.zst");
    let ng = Nginx::start(&card.www())?;
    Some((card, ng))
}

/// Resets (before and after the headers), 503s and truncated bodies, each injected several
/// times in the middle of a flash of the archive, and all of them mixed into a flash of the
/// raw image: every flash succeeds and every card passes the proof.
#[test]
fn retries_get_through_resets_503s_and_truncated_bodies() {
    let Some((card, ng)) = faulty_setup() else {
        return;
    };
    // Four times each, every fifth data request from the third on: mid-flash, and never
    // twice in a row for one request's retries.
    let with = |f: Fault| Rule::new(f).ranged_only().from(2).every(5).times(4);
    let scenarios: Vec<(&str, &str, Vec<Rule>)> = vec![
        (
            "resets before the headers",
            "card.img.zst",
            vec![with(Fault::ResetBeforeHeaders)],
        ),
        (
            "resets after the headers",
            "card.img.zst",
            vec![with(Fault::ResetAfterHeaders)],
        ),
        ("503s", "card.img.zst", vec![with(Fault::Status(503))]),
        (
            "truncated bodies",
            "card.img.zst",
            vec![with(Fault::Truncate(100_000))],
        ),
        (
            "all of them, raw image",
            "card.img",
            vec![
                Rule::new(Fault::Status(503))
                    .ranged_only()
                    .from(1)
                    .every(7)
                    .times(3),
                Rule::new(Fault::ResetBeforeHeaders)
                    .ranged_only()
                    .from(3)
                    .every(11)
                    .times(3),
                Rule::new(Fault::ResetAfterHeaders)
                    .ranged_only()
                    .from(5)
                    .every(13)
                    .times(3),
                Rule::new(Fault::Truncate(300_000))
                    .ranged_only()
                    .from(6)
                    .every(9)
                    .times(3),
            ],
        ),
    ];
    for (i, (what, name, rules)) in scenarios.into_iter().enumerate() {
        let planned: u64 = rules.iter().map(|r| r.times).sum();
        let px = Proxy::start(ng.addr(), rules);
        let Some(mut t) = Target::new(card.size(), 60 + i as u64) else {
            return;
        };
        let m = ng.mark();
        let o = bws(&["flash", &px.url(name), &t.dev(), "--yes", "--json"]);
        let reqs = ng.requests_since(m);
        assert!(
            o.status.success(),
            "{what}: exit {:?}: {}\nfaults injected: {:?}\nnginx log:\n{}",
            o.status.code(),
            stderr(&o),
            px.injected_all(),
            describe(&reqs)
        );
        let j = json(&o);
        assert_eq!(j["ok"], true, "{what}: {j}");
        let injected: u64 = px.injected_all().values().sum();
        eprintln!(
            "{what}: {injected} faults in {} requests, flash ok",
            px.requests()
        );
        assert_eq!(
            injected,
            planned,
            "{what}: the faults did not all happen ({} requests): {:?}",
            px.requests(),
            px.injected_all()
        );
        card.assert_restored(t.detach());
    }
}

/// A slow server: every body trickles in small pieces, and a few answers stall for 3 s
/// before their headers. The flash waits for it and succeeds.
#[test]
fn a_slow_server_is_waited_for() {
    let Some((card, ng)) = faulty_setup() else {
        return;
    };
    let px = Proxy::start(
        ng.addr(),
        vec![
            Rule::new(Fault::Stall(Duration::from_secs(3)))
                .ranged_only()
                .from(3)
                .every(10)
                .times(2),
            Rule::new(Fault::Slow {
                chunk: 32 << 10,
                pause: Duration::from_millis(2),
            }),
        ],
    );
    let Some(mut t) = Target::new(card.size(), 70) else {
        return;
    };
    let start = std::time::Instant::now();
    flash_ok(&px.url("card.img.zst"), &t);
    eprintln!(
        "slow server: flash took {:.1} s, faults {:?}",
        start.elapsed().as_secs_f64(),
        px.injected_all()
    );
    assert_eq!(px.injected("stall"), 2);
    card.assert_restored(t.detach());

    // Answers that stall past the timeout (shortened for the test by the variable the spec
    // gives for it): abandoned and asked again, and the flash still succeeds.
    let px = Proxy::start(
        ng.addr(),
        vec![Rule::new(Fault::Stall(Duration::from_secs(6)))
            .ranged_only()
            .from(3)
            .every(10)
            .times(2)],
    );
    let Some(mut t) = Target::new(card.size(), 71) else {
        return;
    };
    let url = px.url("card.img.zst");
    let dev = t.dev();
    let args: Vec<&std::ffi::OsStr> = ["flash", url.as_str(), dev.as_str(), "--yes", "--json"]
        .into_iter()
        .map(|s| s.as_ref())
        .collect();
    let start = std::time::Instant::now();
    let o = bw_env(&args, &[("BLOCKWISE_HTTP_TIMEOUT", "2")]);
    assert!(
        o.status.success(),
        "stalled answers past the timeout: exit {:?}: {}",
        o.status.code(),
        stderr(&o)
    );
    assert_eq!(json(&o)["ok"], true);
    assert_eq!(px.injected("stall"), 2);
    // Each stalled request was given up after ~2 s, not waited out for 6.
    let took = start.elapsed();
    eprintln!(
        "stalled past the timeout: flash took {:.1} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(12), "{took:?}");
    card.assert_restored(t.detach());
}

/// The object replaced by another of the same size (another ETag) in the middle of a flash,
/// the archive and the raw image (whose mixed read nothing else would catch: no bmap, no
/// frame checksums): exit 1 saying the object changed, never a success, and the card left
/// without a partition table.
#[test]
fn an_object_replaced_mid_read_is_an_error() {
    let Some((card, ng)) = faulty_setup() else {
        return;
    };
    for (i, name) in ["card.img.zst", "card.img"].into_iter().enumerate() {
        let served = card.www().join(name);
        // A clean run through the proxy counts the data requests, to replace half-way.
        let px = Proxy::start(ng.addr(), vec![]);
        let Some(t) = Target::new(card.size(), 80 + i as u64) else {
            return;
        };
        flash_ok(&px.url(name), &t);
        let ranged = px
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.header("range").is_some())
            .count() as u64;
        assert!(ranged >= 4, "{name}: only {ranged} range requests");
        drop(t);

        let alt = card.dir.path().join("replacement");
        let len = std::fs::metadata(&served).unwrap().len();
        altered_copy(&served, &alt, len / 2);
        let original = card.dir.path().join("original");
        std::fs::copy(&served, &original).unwrap();
        let px = Proxy::start(
            ng.addr(),
            vec![Rule::new(Fault::Replace {
                path: served.clone(),
                with: alt.clone(),
            })
            .ranged_only()
            .from(ranged / 2)
            .times(1)],
        );
        let Some(t) = Target::new(card.size(), 90 + i as u64) else {
            return;
        };
        let m = ng.mark();
        let o = bws(&["flash", &px.url(name), &t.dev(), "--yes", "--json"]);
        let reqs = ng.requests_since(m);
        let e = stderr(&o);
        assert_eq!(px.injected("replace"), 1, "{name}: not replaced");
        assert_eq!(
            o.status.code(),
            Some(1),
            "{name} replaced after {} of {ranged} range requests: exit {:?}, stderr: {e}\n\
             nginx log:\n{}",
            ranged / 2,
            o.status.code(),
            describe(&reqs)
        );
        assert!(
            e.to_lowercase().contains("changed"),
            "{name}: the message does not say the object changed: {e}"
        );
        assert!(!e.contains("panicked"), "{e}");
        if let Ok(j) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
            assert_eq!(j["ok"], false, "{j}");
        }
        assert!(
            t.head_zeroed(),
            "{name}: the failed card keeps a partition table"
        );
        eprintln!("{name} replaced mid-read: {}", e.trim());
        // Put the original back for the next round.
        std::fs::rename(&original, &served).unwrap();
    }
}

/// A server that ignores Range (nginx `max_ranges 0`) from the start, and one that starts
/// ignoring it in the middle of a flash (the proxy strips Range): either the streaming
/// fallback, said, with `remote.ranges` false and a good card; or a clear error. Never a
/// corrupt card reported as success.
#[test]
fn a_server_ignoring_range_streams_or_fails_clearly() {
    let Some((card, ng)) = faulty_setup() else {
        return;
    };
    let Some(plain) = Nginx::start_with(&card.www(), Ranges::Ignored) else {
        return;
    };
    let midway = Proxy::start(
        ng.addr(),
        vec![Rule::new(Fault::IgnoreRange).ranged_only().from(4)],
    );
    let runs = [
        ("never ranges, archive", plain.url("card.img.zst"), true),
        ("never ranges, raw image", plain.url("card.img"), true),
        ("stops midway, archive", midway.url("card.img.zst"), false),
    ];
    for (i, (what, url, from_start)) in runs.into_iter().enumerate() {
        let Some(mut t) = Target::new(card.size(), 100 + i as u64) else {
            return;
        };
        let m = plain.mark();
        let o = bws(&["flash", &url, &t.dev(), "--yes", "--json"]);
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{what}: {e}");
        if o.status.success() {
            let j = json(&o);
            assert_eq!(j["ok"], true, "{what}: {j}");
            if from_start {
                assert_eq!(remote(&j)["ranges"], false, "{what}: {j}");
                let name = url.rsplit('/').next().unwrap();
                let all = plain.requests_since(m);
                let reqs: Vec<Logged> = for_path(&all, &format!("/{name}"))
                    .into_iter()
                    .cloned()
                    .collect();
                let object = std::fs::metadata(card.www().join(name)).unwrap().len();
                // Streamed once: not downloaded again for every block, nor for a scan.
                assert!(
                    body_bytes(&reqs) <= object + MIB,
                    "{what}: {} B sent for a {object} B object:\n{}",
                    body_bytes(&reqs),
                    describe(&all)
                );
            }
            let said = format!("{e}{}", j["notes"]).to_lowercase();
            assert!(
                said.contains("range") && said.contains("stream"),
                "{what}: the fallback to streaming is not said: {e} {}",
                j["notes"]
            );
            eprintln!(
                "{what}: streamed ({} B sent by nginx): {} {}",
                body_bytes(&plain.requests_since(m)),
                e.trim(),
                j["notes"]
            );
            card.assert_restored(t.detach());
        } else {
            assert_eq!(o.status.code(), Some(1), "{what}: {e}");
            assert!(e.to_lowercase().contains("range"), "{what}: unclear: {e}");
            assert!(
                t.head_zeroed(),
                "{what}: the failed card keeps a partition table"
            );
            eprintln!("{what}: refused: {}", e.trim());
        }
    }
}

/// `verify` of a remote archive against its remote bmap passes; a card flashed from it
/// verifies against the bmap, and once a block of it is corrupted, `verify` says so (exit 3).
#[test]
fn verify_catches_a_corrupted_card() {
    let Some(card) = sample_card() else { return };
    card.backup("card.img.zst");
    let Some(ng) = Nginx::start(&card.www()) else {
        return;
    };
    let url = ng.url("card.img.zst");
    let o = bws(&["verify", &url]);
    assert!(o.status.success(), "verify {url}: {}", stderr(&o));

    let Some(t) = Target::new(card.size(), 110) else {
        return;
    };
    flash_ok(&url, &t);
    let bmap = card.www().join("card.img.zst.bmap");
    let bmap_s = bmap.to_str().unwrap();
    let dev = t.dev();
    let o = bws(&["verify", &dev, "--bmap", bmap_s]);
    assert!(o.status.success(), "verify the card: {}", stderr(&o));
    // Corrupt one byte in the middle of the largest mapped range past the first MiB.
    let ranges = bmap_ranges(&bmap);
    let (s, e) = ranges
        .iter()
        .filter(|r| r.0 >= MIB)
        .max_by_key(|r| r.1 - r.0)
        .copied()
        .unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .unwrap();
        let at = (s + e) / 2;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0xff;
        f.write_all_at(&b, at).unwrap();
        f.sync_all().unwrap();
    }
    let o = bws(&["verify", &dev, "--bmap", bmap_s]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "verify of a corrupted card: {}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// A remote archive with a corrupted frame inside a mapped range: the flash fails (never
/// `ok`), and the card is left without a partition table.
#[test]
fn a_corrupt_remote_archive_is_never_a_success() {
    let Some(card) = sample_card() else { return };
    let zst = card.backup("card.img.zst");
    let frames = seek_table(&zst);
    let ranges = bmap_ranges(&card.www().join("card.img.zst.bmap"));
    // The largest frame holding mapped bytes past the first MiB: 64 bytes of it flipped.
    let f = frames
        .iter()
        .filter(|f| f.d_off >= MIB && meets(&ranges, f.d_off, f.d_off + f.d_len))
        .max_by_key(|f| f.c_len)
        .copied()
        .unwrap();
    let mut data = std::fs::read(&zst).unwrap();
    let mid = (f.c_off + f.c_len / 2) as usize;
    for b in &mut data[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(card.www().join("bad.img.zst"), &data).unwrap();
    std::fs::copy(
        card.www().join("card.img.zst.bmap"),
        card.www().join("bad.img.zst.bmap"),
    )
    .unwrap();
    let Some(ng) = Nginx::start(&card.www()) else {
        return;
    };
    let Some(t) = Target::new(card.size(), 120) else {
        return;
    };
    let o = bws(&["flash", &ng.url("bad.img.zst"), &t.dev(), "--yes", "--json"]);
    let e = stderr(&o);
    assert!(
        matches!(o.status.code(), Some(1 | 3)),
        "exit {:?}: {e}",
        o.status.code()
    );
    assert!(!e.contains("panicked"), "{e}");
    if let Ok(j) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
        assert_eq!(j["ok"], false, "{j}");
    }
    assert!(t.head_zeroed(), "the failed card keeps a partition table");
}

// ---------------------------------------------------------------------------------------------
// Security.

/// The secret part of a presigned URL (its signature and credential) never appears in any
/// output, text or JSON, success or failure; but the server does receive it.
#[test]
fn a_presigned_query_is_never_shown() {
    let Some(card) = sample_card() else { return };
    card.backup("card.img.zst");
    let Some(ng) = Nginx::start(&card.www()) else {
        return;
    };
    const SIG: &str = "5ec2e7d0c0ffee5ec2e7";
    const KEY: &str = "AKIDEXAMPLEKEY42";
    let query = format!(
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={KEY}%2F20261202%2Fus-east-1%2Fs3%2F\
         aws4_request&X-Amz-Date=20261202T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&\
         X-Amz-Signature={SIG}"
    );
    let url = ng.url(&format!("card.img.zst{query}"));
    let missing = ng.url(&format!("missing.img.zst{query}"));
    let refusing = Proxy::start(ng.addr(), vec![Rule::new(Fault::Status(403))]);
    let forbidden = refusing.url(&format!("card.img.zst{query}"));
    let Some(t) = Target::new(card.size(), 130) else {
        return;
    };
    let dev = t.dev();
    let runs: Vec<(Vec<&str>, bool)> = vec![
        (vec!["inspect", &url], true),
        (vec!["inspect", &url, "--json"], true),
        (vec!["flash", &url, &dev, "--yes", "--json"], true),
        (vec!["flash", &url, &dev, "--yes"], true),
        (vec!["verify", &url], true),
        (vec!["inspect", &missing], false),
        (vec!["flash", &missing, &dev, "--yes", "--json"], false),
        (vec!["inspect", &forbidden, "--json"], false),
    ];
    for (args, ok) in runs {
        let o = bws(&args);
        let all = stdout(&o) + &stderr(&o);
        assert_eq!(
            o.status.success(),
            ok,
            "{}: exit {:?}: {all}",
            args[0],
            o.status.code()
        );
        for secret in [SIG, KEY] {
            assert!(
                !all.contains(secret),
                "`{}` shows the URL's secret {secret}:\n{all}",
                args.join(" ").replace(&query, "?<query>")
            );
        }
        if !ok {
            // The failure names the object it could not read (redacted).
            assert!(all.contains(".img.zst"), "{all}");
            assert!(!all.contains("panicked"), "{all}");
        }
        if args.contains(&"--json") && ok {
            let j = json(&o);
            let shown = remote(&j)["url"].as_str().unwrap().to_string();
            assert!(
                shown.starts_with(&ng.url("card.img.zst")),
                "remote.url: {shown}"
            );
        }
    }
    // The query went to the server: redaction is for display only.
    let reqs = ng.requests();
    let archive = for_path(&reqs, "/card.img.zst");
    assert!(!archive.is_empty());
    assert!(
        archive.iter().all(|r| r.target.contains(SIG)),
        "a request left the query out:\n{}",
        describe(&reqs)
    );
}

/// A redirect to another host (127.0.0.2, another address on loopback) is followed for the
/// GETs of a plain web server, and the other host never receives an Authorization header,
/// not even when the URL carries credentials (which are never shown either).
#[test]
fn a_redirect_to_another_host_carries_no_credentials() {
    let Some(card) = sample_card() else { return };
    card.backup("card.img.zst");
    let Some(ng) = Nginx::start(&card.www()) else {
        return;
    };
    let other = Proxy::start_on("127.0.0.2", ng.addr(), vec![]);
    let first = Proxy::start(
        ng.addr(),
        vec![Rule::new(Fault::Redirect(format!("http://{}", other.addr)))],
    );
    let url = first.url("card.img.zst");
    let o = bws(&["inspect", &url, "--json"]);
    assert!(
        o.status.success(),
        "inspect through a redirect: {}",
        stderr(&o)
    );
    let Some(mut t) = Target::new(card.size(), 140) else {
        return;
    };
    flash_ok(&url, &t);
    card.assert_restored(t.detach());
    let seen = other.seen();
    assert!(
        seen.iter().any(|s| s.method == "GET" && s.status == 206),
        "the redirect was not followed: {seen:?}"
    );
    assert!(first.seen().iter().all(|s| s.status == 302));

    // With credentials in the URL (sent as Basic authentication to the host named): the
    // redirect is followed, the other host never gets them, and they are never shown.
    let (first_before, other_before) = (first.seen().len(), other.seen().len());
    let with_user = format!("http://bwuser:hunter2pass@{}/card.img.zst", first.addr);
    let o = bws(&["inspect", &with_user, "--json"]);
    let all = stdout(&o) + &stderr(&o);
    assert!(
        !all.contains("hunter2pass"),
        "the password is shown:\n{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
    eprintln!(
        "credentials in the URL: exit {:?} {}",
        o.status.code(),
        stderr(&o).trim()
    );
    assert!(o.status.success(), "{all}");
    let to_first = &first.seen()[first_before..];
    assert!(
        to_first.iter().all(|s| s
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))),
        "the credentials were not sent to the host named in the URL: {to_first:?}"
    );
    assert!(
        other.seen().len() > other_before,
        "the redirect was not followed"
    );
    for s in other.seen() {
        assert!(
            s.header("authorization").is_none(),
            "the other host got an Authorization header: {} {} {:?}",
            s.method,
            s.target,
            s.headers
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every command.

/// `bmap`, `backup` and `convert` of a URL give what they give for the local file.
#[test]
fn every_command_takes_a_url() {
    let Some(card) = sample_card() else { return };
    let Some(ng) = Nginx::start(&card.www()) else {
        return;
    };
    let url = ng.url("card.img");
    let out = card.dir.path();
    let p = |n: &str| out.join(n).to_str().unwrap().to_string();
    let local = card.img.to_str().unwrap();
    let run = |args: &[&str]| {
        let o = bws(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    run(&["bmap", &url, "-o", &p("remote.bmap")]);
    run(&["bmap", local, "-o", &p("local.bmap")]);
    assert_eq!(
        std::fs::read(p("remote.bmap")).unwrap(),
        std::fs::read(p("local.bmap")).unwrap(),
        "bmap of the URL differs from bmap of the file"
    );
    run(&["backup", &url, &p("remote.img.zst")]);
    run(&["backup", local, &p("local.img.zst")]);
    assert_eq!(
        std::fs::read(p("remote.img.zst.bmap")).unwrap(),
        std::fs::read(p("local.img.zst.bmap")).unwrap(),
        "the backup of the URL maps other blocks"
    );
    run(&["convert", &url, &p("remote.img")]);
    run(&["convert", local, &p("local.img")]);
    sh(&format!("cmp '{}' '{}'", p("remote.img"), p("local.img")));
}
