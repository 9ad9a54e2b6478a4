//! The `runloom` binary: parse arguments, run, exit with the command's code.

/// See [`runloom::alloc`].
#[global_allocator]
static ALLOCATOR: runloom::alloc::MiMalloc = runloom::alloc::MiMalloc;

fn main() {
    std::process::exit(runloom::cli::run());
}
