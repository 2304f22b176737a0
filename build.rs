//! Stamps the binary with its git hash, target triple and enabled cargo features for
//! `edgecam --version`, and packs its relative relocations where the C library
//! supports it.

use std::process::Command;

fn main() {
    let hash = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=EDGECAM_GIT_HASH={hash}");
    println!(
        "cargo:rustc-env=EDGECAM_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .filter(|f| f != "default")
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=EDGECAM_FEATURES={features}");
    println!(
        "cargo:rustc-env=EDGECAM_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    if pack_relocations() {
        // DT_RELR: the dynamic loader reads a bitmap of a few KB at start-up instead
        // of every 24-byte relocation of the full build's 1.6 MB `.rela.dyn` (each
        // page of which then stays resident). Needs glibc 2.36, GNU ld 2.38.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=EDGECAM_PACK_RELOCS");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}

/// Whether to link with packed relative relocations: `EDGECAM_PACK_RELOCS=1` or `0`
/// decides; otherwise only a native glibc build whose own C library is 2.36 or newer
/// (a cross build's target library is unknown here, and a binary built on a newer
/// glibc already needs that glibc's symbol versions).
fn pack_relocations() -> bool {
    match std::env::var("EDGECAM_PACK_RELOCS").as_deref() {
        Ok("1") => return true,
        Ok("0") => return false,
        _ => {}
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    let native = std::env::var("HOST").is_ok_and(|host| host == target);
    if !native || !target.ends_with("-linux-gnu") {
        return false;
    }
    // "glibc 2.36"
    Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            let (major, minor) = v.trim().strip_prefix("glibc ")?.split_once('.')?;
            Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
        })
        .is_some_and(|version| version >= (2, 36))
}
