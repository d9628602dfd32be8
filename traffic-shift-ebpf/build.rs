//! Relink when bpf-linker changes (swapping the binary does not otherwise
//! trigger a rebuild).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
