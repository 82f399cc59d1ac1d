//! AMX (Advanced Matrix Extensions, Sapphire Rapids and later Xeons) tile registers: whether this process
//! may use them, the tile configuration, and the few tile instructions the quantized matmul needs.
//!
//! Rust has no stable AMX intrinsics or feature detection yet (rust-lang/rust#126622), so detection reads
//! CPUID and XCR0 directly and the instructions are inline assembly with the tile registers named in the
//! template (the compiler never allocates them, so their contents live from one `asm!` to the next).
//! Linux gives a process the large tile state only after `arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`; without it the first tile instruction is a SIGILL. The request is process-wide
//! and made once, before any kernel runs.

use std::arch::asm;
use std::arch::x86_64::{__cpuid, __cpuid_count};
use std::sync::OnceLock;

/// Whether this CPU has AMX-TILE and AMX-INT8, the OS saves tile state (XCR0 bits 17 and 18) and Linux
/// granted this process the tile data permission (asked on the first call).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let ok = cpu_has_amx_int8() && os_saves_tiles() && request_permission();
        tracing::debug!("AMX-INT8 tiles available: {ok}");
        ok
    })
}

fn cpu_has_amx_int8() -> bool {
    let max_leaf = __cpuid(0).eax;
    if max_leaf < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    const AMX_TILE: u32 = 1 << 24;
    const AMX_INT8: u32 = 1 << 25;
    edx & AMX_TILE != 0 && edx & AMX_INT8 != 0
}

fn os_saves_tiles() -> bool {
    let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
    if !osxsave {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV is allowed once the OS set CR4.OSXSAVE (CPUID.1:ECX bit 27, checked above).
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi, options(nomem, nostack, preserves_flags));
    }
    const XTILE: u32 = (1 << 17) | (1 << 18);
    lo & XTILE == XTILE
}

fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request only changes which xsave features the process may use.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "arch_prctl(ARCH_REQ_XCOMP_PERM) refused: {}",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}

/// The 64-byte operand of `ldtilecfg`: palette 1, then bytes per row and rows of each of the 8 tiles
/// (a tile left at 0 rows must not be used).
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    pub fn new() -> Self {
        TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        }
    }

    /// The palette (1 for a configuration in use, 0 for none).
    pub fn palette(&self) -> u8 {
        self.palette
    }

    /// Shapes tile `tile` (0..8) as `rows` (1..=16) rows of `bytes` (1..=64) bytes; `ldtilecfg` faults
    /// on a tile with rows but no bytes or the reverse.
    pub fn shape(&mut self, tile: u8, rows: usize, bytes: usize) {
        assert!(
            tile < 8 && (1..=16).contains(&rows) && (1..=64).contains(&bytes),
            "no tile {tile} of {rows} x {bytes} B"
        );
        self.rows[tile as usize] = rows as u8;
        self.bytes_per_row[tile as usize] = bytes as u16;
    }

    /// The calling thread's configuration (palette 0 and no shapes when it has none).
    ///
    /// # Safety
    /// [`available`] must have returned true.
    pub unsafe fn current() -> TileConfig {
        let mut cfg = TileConfig::new();
        asm!("sttilecfg [{}]", in(reg) &mut cfg as *mut Self, options(nostack, preserves_flags));
        cfg
    }

    /// Loads this configuration for the calling thread until the returned guard drops, which puts back
    /// the thread's previous one (or returns the tiles to their initial state if it had none). Other AMX
    /// users configure a thread once and count on it staying (candle's Q4_K kernel does: a kernel that
    /// released the tiles made its next product a SIGILL), so a kernel must leave the configuration as it
    /// found it. Loading zeroes every tile.
    ///
    /// # Safety
    /// [`available`] must have returned true.
    #[inline]
    pub unsafe fn load(&self) -> ConfigGuard {
        let previous = TileConfig::current();
        asm!("ldtilecfg [{}]", in(reg) self as *const Self, options(nostack, readonly, preserves_flags));
        ConfigGuard { previous }
    }
}

impl Default for TileConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps a thread's previous tile configuration to restore on drop (see [`TileConfig::load`]).
#[must_use = "the configuration lasts as long as the guard"]
pub struct ConfigGuard {
    previous: TileConfig,
}

impl Drop for ConfigGuard {
    fn drop(&mut self) {
        // SAFETY: a guard exists only after a configuration was loaded, so tiles are available;
        // `sttilecfg` wrote a valid configuration or, with none loaded, zeros (palette 0).
        unsafe {
            if self.previous.palette == 0 {
                asm!("tilerelease", options(nostack, nomem, preserves_flags));
            } else {
                asm!("ldtilecfg [{}]", in(reg) &self.previous as *const TileConfig,
                     options(nostack, readonly, preserves_flags));
            }
        }
    }
}

/// Tile `T` := its configured rows read from `p`, `stride` bytes apart.
///
/// # Safety
/// A configuration shaping tile `T` is loaded, and every row lies in readable memory.
#[inline(always)]
pub unsafe fn load<const T: u8>(p: *const u8, stride: usize) {
    asm!("tileloadd tmm{t}, [{p} + {s} * 1]", t = const T, p = in(reg) p, s = in(reg) stride,
         options(nostack, readonly, preserves_flags));
}

/// Stores tile `T`'s rows at `p`, `stride` bytes apart.
///
/// # Safety
/// A configuration shaping tile `T` is loaded, and every row lies in writable memory.
#[inline(always)]
pub unsafe fn store<const T: u8>(p: *mut u8, stride: usize) {
    asm!("tilestored [{p} + {s} * 1], tmm{t}", t = const T, p = in(reg) p, s = in(reg) stride,
         options(nostack, preserves_flags));
}

/// Tile `T` := 0.
///
/// # Safety
/// A configuration shaping tile `T` is loaded.
#[inline(always)]
pub unsafe fn zero<const T: u8>() {
    asm!("tilezero tmm{t}", t = const T, options(nostack, nomem, preserves_flags));
}

/// `C[m][n] += Σ_k A[m][k] · B[k/4][4 n + k % 4]` over i8 × i8 (`tdpbssd`) when `UNSIGNED_B` is false,
/// i8 × u8 (`tdpbsud`) when true; i32 accumulation, exact.
///
/// # Safety
/// A configuration shaping the three tiles compatibly is loaded.
#[inline(always)]
pub unsafe fn dot<const C: u8, const A: u8, const B: u8, const UNSIGNED_B: bool>() {
    if UNSIGNED_B {
        asm!("tdpbsud tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
             options(nostack, nomem, preserves_flags));
    } else {
        asm!("tdpbssd tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
             options(nostack, nomem, preserves_flags));
    }
}
