//! Running the `weir` CLI as a person would: the built binary, the test environment's
//! kubeconfig, the test's namespace, no colours.

use std::path::Path;
use std::process::{Command, Output};
use weir_testenv::TestNamespace;

/// `weir <args> -n <namespace>` with the test environment's kubeconfig.
pub fn weir(ns: &TestNamespace, args: &[&str]) -> Output {
    weir_as(ns.kubeconfig(), ns, args)
}

pub fn weir_as(kubeconfig: &Path, ns: &TestNamespace, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["-n", ns.name()])
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .output()
        .expect("running weir")
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stdout of a `weir` that must have exited with `code`.
pub fn expect_code(out: &Output, code: i32) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "weir exited {}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// Stdout of a `weir` that must have succeeded.
pub fn stdout_ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "weir failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
