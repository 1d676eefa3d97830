//! Lets the vela binary and its tests find libmujoco at run time
//! without LD_LIBRARY_PATH: mujoco-rs links it dynamically but sets no rpath.
fn main() {
    println!("cargo::rerun-if-env-changed=MUJOCO_DYNAMIC_LINK_DIR");
    if let Ok(dir) = std::env::var("MUJOCO_DYNAMIC_LINK_DIR") {
        println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
