//! Lets `vela-dora-node` built with the `sim` feature find libmujoco at run time without
//! LD_LIBRARY_PATH. dora starts it with a clean environment of its own, and link arguments
//! from vela-sim's build script do not reach binaries of other packages.
fn main() {
    println!("cargo::rerun-if-env-changed=MUJOCO_DYNAMIC_LINK_DIR");
    if std::env::var_os("CARGO_FEATURE_SIM").is_some() {
        if let Ok(dir) = std::env::var("MUJOCO_DYNAMIC_LINK_DIR") {
            println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
