//! Compiles the build date into the binary (`GKGW_BUILD_EPOCH`, Unix seconds): the floor below
//! which no timestamp is plausible (`clock::MIN_VALID_TS_NS`). Reproducible builds set
//! `SOURCE_DATE_EPOCH` (e.g. `git log -1 --format=%ct`); otherwise the time of this build script's
//! first run is used, and without either the clock falls back to 2020-01-01.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let from_env = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let epoch = from_env.or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    });
    if let Some(e) = epoch {
        println!("cargo:rustc-env=GKGW_BUILD_EPOCH={e}");
    }
}
