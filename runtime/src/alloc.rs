//! The memory allocator of the `runloom` binary (and of the benches, which measure it).
//!
//! mimalloc instead of glibc's malloc: every run allocates and frees many small objects on
//! many threads (tokio workers, the blocking pool, the store writer),
//! and glibc's arenas took a fifth of the CPU of a busy node (BENCHMARKS.md, third round).
//! mimalloc's defaults trade memory for speed, so the node tunes it (below) to return memory at once.

pub use mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc v3's `mi_option_t`
/// (`include/mimalloc.h` of the bundled sources); `libmimalloc-sys` names neither.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Commit arena memory only when used, and purge freed memory at once: with mimalloc's
/// defaults an idle node holds about twice the memory, and 1,000 waiting runs (a thread
/// each, when Rhai bodies ran on the blocking pool) ten times it (BENCHMARKS.md). This runs as an ELF constructor, before Rust's
/// runtime makes the allocations that create mimalloc's first arena; set in `main`, the
/// arena option came too late.
extern "C" fn tune() {
    // SAFETY: setting an option only changes a value mimalloc reads on later allocations.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static TUNE: extern "C" fn() = tune;

/// Hand memory freed after loading (compiling plugins frees well over 100 MB) back to the
/// system, whichever allocator holds it (mimalloc in the binary, glibc's malloc in test
/// binaries); an idle node would otherwise look that much bigger.
pub fn release_freed_memory() {
    // SAFETY: collecting only frees mimalloc's own unused pages; it is a no-op when mimalloc
    // holds nothing.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of the allocator's own heaps to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_has_tuned_mimalloc_before_main() {
        // SAFETY: reading an option has no side effect.
        let (eager, purge) = unsafe {
            (
                libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT),
                libmimalloc_sys::mi_option_get(PURGE_DELAY),
            )
        };
        assert_eq!((eager, purge), (0, 0));
    }
}
