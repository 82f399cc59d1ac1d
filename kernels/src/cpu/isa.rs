//! Which instruction set the CPU kernels use, detected once at run time (no `-C target-cpu` needed).

use std::sync::OnceLock;

/// A kernel family. Every process uses one for all its calls (see [`Isa::detect`]), which keeps results
/// reproducible within a run; tests may pick any [`Isa::available`] one explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, any CPU.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// [`Isa::Avx2`] plus AVX-512 VNNI and VL (Ice Lake and later Xeons, Zen 4 and later EPYC/Ryzen):
    /// the quantized matmuls' integer dots take one `vpdpbusd` each; every other kernel is the AVX2 one.
    /// Offered only where AVX2 + FMA + F16C are too.
    Avx512Vnni,
    /// AArch64 NEON with the dot-product instructions (`sdot`, ARMv8.2+: Graviton 2+, Ampere, Apple M);
    /// the quantized and f32 matmuls use it, the other kernels run their portable code there.
    Neon,
}

impl Isa {
    /// The best family this CPU supports; `EMBER_CPU_ISA=scalar` forces the portable one.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            if std::env::var("EMBER_CPU_ISA").is_ok_and(|v| v.eq_ignore_ascii_case("scalar")) {
                return Isa::Scalar;
            }
            *Isa::available().last().unwrap_or(&Isa::Scalar)
        })
    }

    /// Every family this CPU can run, portable first.
    pub fn available() -> Vec<Isa> {
        let mut isas = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            isas.push(Isa::Avx2);
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                isas.push(Isa::Avx512Vnni);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            isas.push(Isa::Neon);
        }
        isas
    }

    /// Whether this CPU can run the family.
    pub fn is_available(self) -> bool {
        Isa::available().contains(&self)
    }
}
