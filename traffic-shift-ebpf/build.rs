//! Relink when bpf-linker changes (swapping the binary does not otherwise
//! trigger a rebuild), and have LLVM expand small `memset`s and `memcpy`s
//! into stores of the widest width the alignment allows.
//!
//! bpf-linker passes `--bpf-expand-memcpy-in-order` by default, which sets
//! the BPF backend's store budget for memory intrinsics to zero: every
//! `memset`, even of a 3-byte padding field, became a call to aya-ebpf's
//! exported `memset`, a loop of one-byte stores run on every packet and
//! connection (`bpftool prog dump xlated` showed it in every program).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
