//! For the unit tests that need root: they live in modules named
//! `root_tests`, call [`require_root`] first, and fail without root. They
//! never skip: a skipped test would count as passing.

/// Panics unless the tests run as root, saying what they do (`what`) that
/// needs it.
pub(crate) fn require_root(what: &str) {
    assert!(
        rustix::process::geteuid().is_root(),
        "{what}: run them as root through `cargo xtask test` (as another user, leave them out with `cargo test -p traffic-shift-datapath -- --skip root_tests`)"
    );
}
