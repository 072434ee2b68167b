//! Failpoints for crash tests: with `OSSATURE_FAILPOINT=<name>` set, the
//! process dies at that point the way SIGKILL would end it (no cleanup, no
//! handover), so a test can stop it at an exact moment. Unset, a failpoint
//! costs one lookup.

/// After a certificate's key is recorded in OpenBao, before it is signed.
pub const CERTIFICATE_KEY_RECORDED: &str = "certificate-key-recorded";
/// After an ACME order and its key are recorded in OpenBao, before the
/// order is driven to its certificate.
pub const ACME_ORDER_RECORDED: &str = "acme-order-recorded";

pub fn hit(name: &str) {
    if std::env::var("OSSATURE_FAILPOINT").is_ok_and(|f| f == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
