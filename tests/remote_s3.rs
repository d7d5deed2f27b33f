//! Backups and conversions straight into a bucket, against a local S3 server (moto, started by
//! each test: tests/common/s3.rs): the object equals the local archive byte for byte and its
//! bmap is bmaptool's; an interrupted backup leaves no object, no bmap and no pending
//! multipart upload; an existing object is refused without --force; anonymous requests reach
//! public objects; wrong keys are a clear error that never shows the secret; a part that fails
//! aborts the upload (a proxy injects the failure); and a card backed up to the bucket flashes
//! back from it and passes the restore proof.
//!
//! Signatures are checked by the server (moto recomputes them with botocore) in every test
//! that uses keys, so a signing mistake fails the request.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::*;
use s3::Moto;

const MIB: u64 = 1 << 20;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "blockwise failed ({:?}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
    stderr(o)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&o.stdout), stderr(o)))
}

fn p(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The sample card, with its two partitions' (start, size) in bytes.
struct Card {
    dir: tempfile::TempDir,
    img: PathBuf,
    parts: [(u64, u64); 2],
}

/// Unpacks the sample; `None` (after a skip) without root or the restore proof's tools.
fn card() -> Option<Card> {
    if !(is_root() && have_all(&["mcopy", "fsck.vfat", "e2fsck", "losetup", "sfdisk"])) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let parts = common::first_two_partitions(&img);
    Some(Card { dir, img, parts })
}

impl Card {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn a_card_backed_up_to_a_bucket_is_the_local_backup_and_bmaptool_takes_it() {
    let Some(c) = card() else { return };
    if !have("bmaptool") {
        return;
    }
    let Some(mut moto) = Moto::start() else {
        return;
    };
    let (id, secret) = moto.require_signatures();
    moto.create_bucket("cards");
    // The card in a reader: a read-only loop device.
    let Some(reader) = Loop::attach_read_only(&c.img) else {
        return;
    };
    let local = c.path("local.img.zst");
    ok(&blockwise()
        .args(["backup", &reader.dev, p(&local)])
        .output()
        .unwrap());
    let o = moto
        .blockwise(Some((&id, &secret)))
        .args([
            "backup",
            &reader.dev,
            "s3://cards/pi/card.img.zst",
            "--json",
        ])
        .output()
        .unwrap();
    ok(&o);
    drop(reader);
    let j = json(&o);
    let archive = moto
        .get("cards", "pi/card.img.zst")
        .expect("the archive object");
    let bmap = moto
        .get("cards", "pi/card.img.zst.bmap")
        .expect("its bmap object");
    assert!(
        archive == std::fs::read(&local).unwrap(),
        "the object differs from the local backup"
    );
    assert_eq!(
        bmap,
        std::fs::read(c.path("local.img.zst.bmap")).unwrap(),
        "the bmap object differs from the local backup's"
    );
    assert_eq!(j["archive"], "s3://cards/pi/card.img.zst");
    assert_eq!(j["bmap"], "s3://cards/pi/card.img.zst.bmap");
    assert_eq!(j["archive_bytes"], archive.len() as u64);
    let u = &j["upload"];
    assert_eq!(u["url"], "s3://cards/pi/card.img.zst");
    assert_eq!(u["object_size"], archive.len() as u64);
    assert_eq!(u["uploaded_bytes"], (archive.len() + bmap.len()) as u64);
    assert_eq!(u["spooled"], false);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&secret));
    assert!(moto.pending_uploads("cards").is_empty());

    // bmaptool takes the downloaded pair as it takes a local one: it finds the bmap beside the
    // archive, checks its checksum and writes the mapped blocks onto a dirty card.
    let got = c.path("got.img.zst");
    std::fs::write(&got, &archive).unwrap();
    std::fs::write(c.path("got.img.zst.bmap"), &bmap).unwrap();
    let target = c.path("target.img");
    random_file(&target, std::fs::metadata(&c.img).unwrap().len(), 0xb3a9);
    let Some(lp) = Loop::attach(&target) else {
        return;
    };
    sh(&format!("bmaptool copy '{}' {}", p(&got), lp.dev));
    drop(lp);
    assert_card_equivalent(&c.img, &target, &c.parts);
}

#[test]
fn conversions_stream_or_spool_into_a_bucket_and_equal_the_local_output() {
    let Some(mut moto) = Moto::start() else {
        return;
    };
    let (id, secret) = moto.require_signatures();
    moto.create_bucket("out");
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    // An image blockwise cannot see into: all of it is carried, so its outputs take several
    // parts.
    let blob = dir.path().join("blob.img");
    random_file(&blob, 40 * MIB, 11);
    for (src, name, spooled, multipart) in [
        // Sparse raw skips forward over holes, which become zeros in the object: streamed.
        (&img, "card.raw", false, true),
        // qcow2 patches its tables: spooled, then one PUT.
        (&img, "card.qcow2", false, false),
        // Android sparse goes back to its chunk headers: spooled, then several parts.
        (&blob, "blob.simg", true, true),
        // xz appends: streamed in parts while the next blocks compress.
        (&blob, "blob.img.xz", false, true),
    ] {
        let spooled = spooled || name.ends_with(".qcow2");
        let level: &[&str] = if name.ends_with(".xz") {
            &["--level", "0"]
        } else {
            &[]
        };
        let local = dir.path().join(name);
        ok(&blockwise()
            .args(["convert", p(src), p(&local)])
            .args(level)
            .output()
            .unwrap());
        let url = format!("s3://out/{name}");
        let o = moto
            .blockwise(Some((&id, &secret)))
            .args(["convert", p(src), &url, "--json"])
            .args(level)
            .output()
            .unwrap();
        ok(&o);
        let j = json(&o);
        let got = moto.get("out", name).expect("the object");
        assert!(
            got == std::fs::read(&local).unwrap(),
            "{name}: the object differs from the local output"
        );
        assert_eq!(j["output"], url.as_str());
        assert_eq!(j["output_bytes"], got.len() as u64, "{name}");
        assert_eq!(j["upload"]["spooled"], spooled, "{name}");
        let parts = j["upload"]["parts"].as_u64().unwrap();
        assert_eq!(parts > 1, multipart, "{name}: {parts} parts");
        assert_eq!(parts, (got.len() as u64).div_ceil(8 * MIB), "{name}");
    }
    assert!(moto.pending_uploads("out").is_empty());
    // No spool file is left behind in the temporary directory: it was never linked.
}

#[test]
fn an_interrupted_backup_leaves_nothing_in_the_bucket() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("cards");
    let dir = tempfile::tempdir().unwrap();
    // All "used" (blockwise cannot see into it) and slow at level 19: parts are uploaded
    // while the rest is still being compressed when the signal comes.
    let img = dir.path().join("big.img");
    random_file(&img, 160 * MIB, 5);
    let child = moto
        .blockwise(Some(("test", "test")))
        .args(["backup", p(&img), "s3://cards/big.img.zst", "--level", "19"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the multipart upload exists (its first part is full).
    let t0 = std::time::Instant::now();
    while moto.pending_uploads("cards").is_empty() {
        assert!(
            t0.elapsed().as_secs() < 120,
            "the backup never started its multipart upload"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    sh(&format!("kill -TERM {}", child.id()));
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(e.contains("interrupted"), "{e}");
    assert!(
        e.contains("nothing was written to s3://cards/big.img.zst"),
        "{e}"
    );
    assert_eq!(
        moto.keys("cards"),
        Vec::<String>::new(),
        "no object, no bmap"
    );
    assert_eq!(
        moto.pending_uploads("cards"),
        Vec::<String>::new(),
        "no multipart upload pending"
    );
}

#[test]
fn a_failed_part_aborts_the_upload_and_leaves_nothing() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("cards");
    // The third part's upload fails (a final error, not one worth retrying).
    let proxy = s3::FailingProxy::start(&moto.endpoint, "partNumber=3&");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("blob.img");
    random_file(&img, 48 * MIB, 9);
    let o = moto
        .blockwise(Some(("test", "test")))
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .args(["backup", p(&img), "s3://cards/blob.img.zst", "--level", "1"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("uploading part 3 of s3://cards/blob.img.zst"),
        "{e}"
    );
    assert!(e.contains("InvalidRequest"), "{e}");
    assert!(
        e.contains("nothing was written to s3://cards/blob.img.zst (the upload was aborted)"),
        "{e}"
    );
    assert_eq!(
        moto.keys("cards"),
        Vec::<String>::new(),
        "no object, no bmap"
    );
    assert_eq!(moto.pending_uploads("cards"), Vec::<String>::new());
}

#[test]
fn an_existing_object_is_refused_without_force() {
    let Some(mut moto) = Moto::start() else {
        return;
    };
    let (id, secret) = moto.require_signatures();
    moto.create_bucket("cards");
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let keys = Some((id.as_str(), secret.as_str()));
    moto.put("cards", "card.img.zst", b"precious", false);
    let o = moto
        .blockwise(keys)
        .args(["backup", p(&img), "s3://cards/card.img.zst"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already exists; pass --force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(moto.get("cards", "card.img.zst").unwrap(), b"precious");
    // Its bmap alone is enough to refuse.
    moto.put("cards", "other.img.zst.bmap", b"<bmap/>", false);
    let o = moto
        .blockwise(keys)
        .args(["backup", p(&img), "s3://cards/other.img.zst"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("other.img.zst.bmap"), "{}", stderr(&o));
    assert!(moto.get("cards", "other.img.zst").is_none());
    // convert too.
    let o = moto
        .blockwise(keys)
        .args(["convert", p(&img), "s3://cards/card.img.zst"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    // Never over the source itself.
    let o = moto
        .blockwise(keys)
        .args([
            "backup",
            "s3://cards/card.img.zst",
            "s3://cards/card.img.zst",
            "--force",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("source itself"), "{}", stderr(&o));
    // --force replaces both (the server named by --endpoint this time).
    ok(&moto
        .blockwise(keys)
        .env_remove("AWS_ENDPOINT_URL")
        .args(["--endpoint", &moto.endpoint])
        .args(["backup", p(&img), "s3://cards/card.img.zst", "--force"])
        .output()
        .unwrap());
    assert_ne!(moto.get("cards", "card.img.zst").unwrap(), b"precious");
    assert!(moto.get("cards", "card.img.zst.bmap").is_some());
    // A web server is never a destination: a usage error.
    let o = moto
        .blockwise(keys)
        .args([
            "backup",
            p(&img),
            "https://example.com/x.img.zst?X-Amz-Signature=abc",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("abc"), "{}", stderr(&o));
}

#[test]
fn anonymous_requests_reach_public_objects_only() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("pub");
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let zst = dir.path().join("card.img.zst");
    ok(&blockwise()
        .args(["backup", p(&img), p(&zst)])
        .output()
        .unwrap());
    moto.put("pub", "card.img.zst", &std::fs::read(&zst).unwrap(), true);
    moto.put("pub", "private.img.zst", b"secret bytes", false);
    // No keys anywhere: unsigned requests. The public object is seen (and so not replaced).
    let o = moto
        .blockwise(None)
        .args(["backup", p(&img), "s3://pub/card.img.zst"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    // The private one cannot be read: blockwise cannot tell, says why, and refuses.
    let o = moto
        .blockwise(None)
        .args(["backup", p(&img), "s3://pub/private.img.zst"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(
        e.contains("cannot tell whether s3://pub/private.img.zst exists"),
        "{e}"
    );
    assert!(e.contains("anonymous"), "{e}");
    // And the public archive is read anonymously.
    let o = moto
        .blockwise(None)
        .args(["inspect", "s3://pub/card.img.zst", "--json"])
        .output()
        .unwrap();
    ok(&o);
    let j = json(&o);
    assert_eq!(j["remote"]["url"], "s3://pub/card.img.zst");
}

#[test]
fn wrong_keys_are_a_clear_error_that_never_shows_the_secret() {
    let Some(mut moto) = Moto::start() else {
        return;
    };
    let (id, secret) = moto.require_signatures();
    moto.create_bucket("cards");
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let wrong = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGKEY";
    let o = moto
        .blockwise(Some((&id, wrong)))
        .args(["backup", p(&img), "s3://cards/card.img.zst"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("access denied to s3://cards/card.img.zst"),
        "{e}"
    );
    assert!(e.contains("SignatureDoesNotMatch"), "{e}");
    assert!(e.contains("secret access key"), "{e}");
    for s in [wrong, secret.as_str(), "Signature="] {
        assert!(!e.contains(s), "{s} shown: {e}");
    }
    let o = moto
        .blockwise(Some(("AKIAUNKNOWNKEY000000", &secret)))
        .args(["backup", p(&img), "s3://cards/card.img.zst"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("InvalidAccessKeyId"), "{e}");
    assert!(!e.contains(&secret), "{e}");
    // No bucket: said so.
    let o = moto
        .blockwise(Some((&id, &secret)))
        .args(["backup", p(&img), "s3://nobucket/card.img.zst"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("no such bucket: nobucket"), "{e}");
    assert_eq!(moto.keys("cards"), Vec::<String>::new());
}

#[test]
fn a_card_backed_up_to_a_bucket_flashes_back_from_it() {
    let Some(c) = card() else { return };
    let Some(mut moto) = Moto::start() else {
        return;
    };
    let (id, secret) = moto.require_signatures();
    moto.create_bucket("cards");
    let keys = Some((id.as_str(), secret.as_str()));
    let Some(reader) = Loop::attach_read_only(&c.img) else {
        return;
    };
    ok(&moto
        .blockwise(keys)
        .args(["backup", &reader.dev, "s3://cards/card.img.zst"])
        .output()
        .unwrap());
    drop(reader);
    let target = c.path("target.img");
    random_file(&target, 160 * MIB, 0x5eed);
    let Some(lp) = Loop::attach(&target) else {
        return;
    };
    let o = moto
        .blockwise(keys)
        .args([
            "flash",
            "s3://cards/card.img.zst",
            &lp.dev,
            "--yes",
            "--json",
        ])
        .output()
        .unwrap();
    ok(&o);
    let j = json(&o);
    assert_eq!(
        j["map_source"], "bmap",
        "the bmap object beside the archive was used"
    );
    assert_eq!(j["remote"]["url"], "s3://cards/card.img.zst");
    // Only the mapped frames (and the metadata) were downloaded: at most the archive.
    let downloaded = j["remote"]["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded <= j["remote"]["object_size"].as_u64().unwrap(),
        "{downloaded}"
    );
    drop(lp);
    assert_card_equivalent(&c.img, &target, &c.parts);
}
