//! Link options for the static x86_64 musl binary (`make static`, the container image),
//! which must stay under 2 MiB like the others. It is a static PIE: its relocations are
//! applied by the binary itself at start, and musl (1.2.4+) reads them packed as DT_RELR
//! (~1 KB instead of ~60 KB). Linked by lld where the Rust toolchain ships it (rustup's
//! `gcc-ld`), identical functions are folded (`--icf=all`, ~30 KB; Rust makes no promise
//! that two functions have distinct addresses). Without lld, GNU ld leaves out the
//! `.eh_frame_hdr` lookup table instead (~20 KB): with `panic = "abort"` nothing unwinds,
//! and only a RUST_BACKTRACE report after a panic would lose its frames. Other targets are
//! linked as Cargo links them.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-musl" {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    match rust_lld_dir() {
        Some(dir) => {
            println!("cargo:rustc-link-arg-bins=-B{}", dir.display());
            println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
            println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
        }
        None => {
            println!("cargo:rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
            println!("cargo:rustc-link-arg-bins=-Wl,-z,noseparate-code");
        }
    }
}

/// The toolchain's `gcc-ld` directory, whose `ld.lld` runs its rust-lld for `cc -fuse-ld=lld`.
fn rust_lld_dir() -> Option<PathBuf> {
    let rustc = std::env::var("RUSTC").ok()?;
    let host = std::env::var("HOST").ok()?;
    let output = Command::new(rustc).args(["--print", "sysroot"]).output().ok()?;
    let sysroot = String::from_utf8(output.stdout).ok()?;
    let dir = PathBuf::from(sysroot.trim()).join("lib/rustlib").join(host).join("bin/gcc-ld");
    dir.join("ld.lld").is_file().then_some(dir)
}
