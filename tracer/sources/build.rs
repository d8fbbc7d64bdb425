//! Embeds the kernel object built by `cargo xtask build-ebpf`, so the tracer is one file to copy.
//! Without it the binary still builds (unit tests need no BPF toolchain) and says at start-up how
//! to get a complete build.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(embedded_ebpf)");
    println!("cargo::rerun-if-env-changed=TRACER_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let object = env::var_os("TRACER_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../tracer-ebpf/target/bpfel-unknown-none/release/tracer-ebpf"));
    println!("cargo::rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("tracer.bpf.o");
    if fs::copy(&object, &out).is_ok() {
        println!("cargo::rustc-cfg=embedded_ebpf");
    } else {
        fs::write(&out, []).unwrap();
    }
}
