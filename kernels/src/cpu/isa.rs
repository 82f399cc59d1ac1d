//! Which instruction set the CPU kernels use, detected once at run time (no `-C target-cpu` needed).

use std::sync::OnceLock;

/// Activation rows from which [`Isa::Amx`] runs a matmul on tiles; below, the VNNI kernels (a tile
/// product costs the same for 1 row as for 16: measured crossover 12 rows for the 32-element types, 16
/// for Q4_K, on Sapphire Rapids).
pub const AMX_MIN_ROWS: usize = 16;

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
    /// [`Isa::Avx512Vnni`] plus AMX-INT8 tiles (Sapphire Rapids and later Xeons, on Linux): matmuls of
    /// [`AMX_MIN_ROWS`] or more activation rows by the 32-element types and Q4_K take their exact integer
    /// sums per 32 weights from tile products (`tdpbssd` / `tdpbsud`: 16 activation rows × 16 weight rows
    /// × 32 per instruction); every other call (and Q6_K) is the VNNI family's. Offered only where
    /// AVX-512 F and BW and the VNNI family are too.
    Amx,
    /// AArch64 NEON with the dot-product instructions (`sdot`, ARMv8.2+: Graviton 2+, Ampere, Apple M);
    /// the quantized and f32 matmuls use it, the other kernels run their portable code there.
    Neon,
}

impl Isa {
    /// The family every kernel of this process uses: the best one this CPU supports, or the one
    /// `EMBER_CPU_ISA` names (`scalar`, `avx2`, `avx512vnni`, `amx`, `neon`; for comparing families end to end)
    /// where the CPU has it. A name the CPU lacks or that is unknown is logged and the best is used.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let requested = std::env::var("EMBER_CPU_ISA").ok();
            match Isa::choose(requested.as_deref(), &Isa::available()) {
                Ok(isa) => isa,
                Err((best, why)) => {
                    tracing::warn!("EMBER_CPU_ISA: {why}; using {best:?}");
                    best
                }
            }
        })
    }

    /// The family named by `requested` (case-insensitive) among `available` (portable first), or the
    /// last of `available` when nothing is requested; a name that is unknown or not available is an
    /// error carrying the best family and why.
    pub fn choose(requested: Option<&str>, available: &[Isa]) -> Result<Isa, (Isa, String)> {
        let best = *available.last().unwrap_or(&Isa::Scalar);
        let Some(name) = requested.map(str::trim).filter(|n| !n.is_empty()) else {
            return Ok(best);
        };
        let wanted = match name.to_ascii_lowercase().as_str() {
            "scalar" | "portable" => Isa::Scalar,
            "avx2" => Isa::Avx2,
            "avx512vnni" | "avx512_vnni" | "vnni" => Isa::Avx512Vnni,
            "amx" => Isa::Amx,
            "neon" => Isa::Neon,
            _ => {
                return Err((
                    best,
                    format!("unknown family {name:?} (scalar, avx2, avx512vnni, amx, neon)"),
                ))
            }
        };
        if available.contains(&wanted) {
            Ok(wanted)
        } else {
            Err((
                best,
                format!("this CPU cannot run {wanted:?} (it offers {available:?})"),
            ))
        }
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
                #[cfg(target_os = "linux")]
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && super::amx::available()
                {
                    isas.push(Isa::Amx);
                }
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

#[cfg(test)]
mod tests {
    use super::Isa;

    #[test]
    fn ember_cpu_isa_picks_a_family_the_cpu_has_or_explains_why_not() {
        let x86 = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];
        assert_eq!(Isa::choose(None, &x86), Ok(Isa::Avx512Vnni));
        assert_eq!(Isa::choose(Some(" "), &x86), Ok(Isa::Avx512Vnni));
        assert_eq!(Isa::choose(Some("AVX2"), &x86), Ok(Isa::Avx2));
        assert_eq!(Isa::choose(Some("scalar"), &x86), Ok(Isa::Scalar));
        assert_eq!(Isa::choose(Some("vnni"), &x86), Ok(Isa::Avx512Vnni));

        let (best, why) = Isa::choose(Some("avx512vnni"), &[Isa::Scalar, Isa::Avx2]).unwrap_err();
        assert_eq!(best, Isa::Avx2);
        assert!(why.contains("cannot run Avx512Vnni"), "{why}");
        let (best, why) = Isa::choose(Some("sse9"), &x86).unwrap_err();
        assert_eq!(best, Isa::Avx512Vnni);
        assert!(why.contains("unknown family \"sse9\""), "{why}");
        assert_eq!(Isa::choose(None, &[]), Ok(Isa::Scalar));
        let amx = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Amx];
        assert_eq!(Isa::choose(None, &amx), Ok(Isa::Amx));
        assert_eq!(Isa::choose(Some("avx512vnni"), &amx), Ok(Isa::Avx512Vnni));
        assert_eq!(Isa::choose(Some("AMX"), &amx), Ok(Isa::Amx));
        let (best, why) = Isa::choose(Some("amx"), &x86).unwrap_err();
        assert_eq!(best, Isa::Avx512Vnni);
        assert!(why.contains("cannot run Amx"), "{why}");
    }
}
