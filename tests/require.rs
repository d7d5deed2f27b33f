//! The skip helpers cannot let a proof pass vacuously in CI: under `BLOCKWISE_REQUIRE_ORACLES=1`
//! a missing tool fails the test, under `BLOCKWISE_REQUIRE_CORPUS=1` a missing corpus file
//! does, and without them both skip. Each case runs a tiny test of this binary (the `probe_*`
//! tests below, ignored in a normal run) in a subprocess with the variables set or cleared, so
//! it goes through exactly the code the real tests use.

mod common;

use std::process::Command;

use common::{REQUIRE_CORPUS, REQUIRE_ORACLES};

/// A program no machine has.
const NO_SUCH_TOOL: &str = "blockwise-test-no-such-tool";
/// Set only by [`run_probe`]: a `--include-ignored` run of the whole suite under the require
/// variables must not fail on the probes, which fail there by design.
const IN_PROBE: &str = "BLOCKWISE_TEST_IN_PROBE";

/// Runs the ignored test `name` of this binary with `vars` set (both require variables cleared
/// first); returns whether it passed and everything it printed.
fn run_probe(name: &str, vars: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_remove(REQUIRE_ORACLES)
    .env_remove(REQUIRE_CORPUS)
    .env(IN_PROBE, "1");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    // The probe really ran (a filter typo would run nothing and pass).
    assert!(
        text.contains("running 1 test"),
        "{name} did not run:\n{text}"
    );
    (o.status.success(), text)
}

#[test]
#[ignore = "a subprocess of missing_tool_skips_or_fails_by_the_variable"]
fn probe_missing_tool() {
    if std::env::var_os(IN_PROBE).is_none() {
        return;
    }
    if !common::have(NO_SUCH_TOOL) {
        return;
    }
    panic!("{NO_SUCH_TOOL} was found");
}

#[test]
#[ignore = "a subprocess of missing_corpus_file_skips_or_fails_by_its_own_variable"]
fn probe_missing_corpus_file() {
    if std::env::var_os(IN_PROBE).is_none() {
        return;
    }
    let Some(p) = common::corpus_file("no/such/file.img.xz") else {
        return;
    };
    panic!("{} exists", p.display());
}

#[test]
fn missing_tool_skips_or_fails_by_the_variable() {
    let (ok, text) = run_probe("probe_missing_tool", &[]);
    assert!(ok, "without the variable a missing tool skips:\n{text}");
    assert!(
        text.contains(&format!("SKIP: `{NO_SUCH_TOOL}` is not installed")),
        "{text}"
    );

    let (ok, text) = run_probe("probe_missing_tool", &[(REQUIRE_ORACLES, "1")]);
    assert!(
        !ok,
        "under {REQUIRE_ORACLES}=1 a missing tool fails:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "REQUIRED, NOT SKIPPED: `{NO_SUCH_TOOL}` is not installed ({REQUIRE_ORACLES}=1"
        )),
        "the failure names the tool and the variable:\n{text}"
    );

    // "0" and empty mean unset, so a variable can be switched off without unsetting it.
    for off in ["0", ""] {
        let (ok, text) = run_probe("probe_missing_tool", &[(REQUIRE_ORACLES, off)]);
        assert!(ok, "{REQUIRE_ORACLES}={off:?} skips:\n{text}");
    }
    // The corpus variable does not require tools.
    let (ok, text) = run_probe("probe_missing_tool", &[(REQUIRE_CORPUS, "1")]);
    assert!(ok, "{text}");
}

#[test]
fn missing_corpus_file_skips_or_fails_by_its_own_variable() {
    let empty = tempfile::tempdir().unwrap();
    let at = empty.path().to_str().unwrap();
    // CI without the corpus sets only the oracle variable: corpus tests still skip.
    let (ok, text) = run_probe(
        "probe_missing_corpus_file",
        &[("BLOCKWISE_CORPUS", at), (REQUIRE_ORACLES, "1")],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("SKIP: corpus file no/such/file.img.xz is absent"),
        "{text}"
    );

    let (ok, text) = run_probe(
        "probe_missing_corpus_file",
        &[("BLOCKWISE_CORPUS", at), (REQUIRE_CORPUS, "1")],
    );
    assert!(
        !ok,
        "under {REQUIRE_CORPUS}=1 a missing file fails:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "REQUIRED, NOT SKIPPED: corpus file no/such/file.img.xz is absent (looked in {at}) ({REQUIRE_CORPUS}=1"
        )),
        "{text}"
    );
}
