//! Builds the kernel programs (`traffic-shift-ebpf`) for bpfel with aya-build;
//! the object lands in `$OUT_DIR/traffic-shift` and is embedded by
//! `lib.rs` (`EBPF_OBJECT`).
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../traffic-shift-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize()?;
    let root_dir = ebpf_dir.to_str().expect("workspace path is UTF-8");
    // aya-build watches the eBPF crate only; the kernel programs also compile
    // the shared types, and a stale object with another map layout fails to
    // load ("invalid value size"). Watch them too.
    println!(
        "cargo:rerun-if-changed={}",
        Path::new(&manifest_dir)
            .join("../traffic-shift-common")
            .canonicalize()?
            .display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "traffic-shift-ebpf",
            root_dir,
            // Build B of the upgrade test: see the eBPF crate's `build-b`.
            features: if std::env::var_os("CARGO_FEATURE_EBPF_BUILD_B").is_some() {
                &["build-b"]
            } else {
                &[]
            },
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
