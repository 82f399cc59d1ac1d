//! With the `cuda` feature, compiles `cuda/*.cu` to PTX with nvcc (for `CUDA_COMPUTE_CAP`, default 89:
//! the L40S; 90 for the H100) into OUT_DIR, where `src/cuda/ptx.rs` embeds it. Without the feature it does
//! nothing, so the default build needs no CUDA toolkit.
use std::path::PathBuf;
use std::process::Command;

const KERNELS: [&str; 5] = [
    "flash_prefill",
    "paged_decode",
    "cache_write",
    "argmax",
    "fused",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ["CUDA_COMPUTE_CAP", "NVCC", "CUDA_HOME", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=cuda/common.cuh");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "89".into());
    let cap: u32 = cap
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("CUDA_COMPUTE_CAP={cap:?} is not a number like 89 or 90"));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for name in KERNELS {
        let src = format!("cuda/{name}.cu");
        println!("cargo:rerun-if-changed={src}");
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
            .arg(format!("-arch=sm_{cap}"))
            .arg(&src)
            .arg("-o")
            .arg(&ptx)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {nvcc} (put CUDA's nvcc on PATH, e.g. scripts/build-cuda.sh): {e}"
                )
            });
        assert!(status.success(), "nvcc failed on {src}");
    }
}
