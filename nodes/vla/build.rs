//! With the `cuda` feature, compiles src/kernels/fused.cu to PTX (sm_90: H100/H200) with the
//! nvcc that scripts/build-cuda.sh puts on PATH; CPU builds skip it.

fn main() {
    println!("cargo::rerun-if-changed=src/kernels/fused.cu");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("fused.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|h| std::path::PathBuf::from(h).join("bin/nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "nvcc".into());
    let status = std::process::Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=sm_{cap}"), "-o"])
        .arg(&out)
        .arg("src/kernels/fused.cu")
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e} (build CUDA through scripts/build-cuda.sh)", nvcc.display()));
    assert!(status.success(), "nvcc failed on src/kernels/fused.cu");
}
