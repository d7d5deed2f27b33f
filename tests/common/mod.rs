//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// True if `tool` runs; otherwise prints why the calling test skips.
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: `{tool}` is not installed");
    }
    ok
}

/// Runs a shell command, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        o.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled sample card image, unpacked into `dir`.
pub fn unpack_sample(dir: &Path) -> PathBuf {
    let xz = std::fs::read(repo().join("samples/card.img.xz")).expect("sample");
    let mut dec = liblzma::read::XzDecoder::new(&xz[..]);
    let out = dir.join("card.img");
    let mut f = std::fs::File::create(&out).unwrap();
    std::io::copy(&mut dec, &mut f).unwrap();
    out
}

/// `blkid -p -o udev` of a file, as key/value pairs.
pub fn blkid(path: &Path, offset: Option<u64>) -> Vec<(String, String)> {
    let off = offset.map(|o| format!("-O {o}")).unwrap_or_default();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("blkid -p -o udev {off} '{}'", path.display()))
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Value of `key` in blkid output.
pub fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}
