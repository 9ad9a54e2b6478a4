//! The `runloom` binary: parse arguments, run, exit with the command's code.

fn main() {
    std::process::exit(runloom::cli::run());
}
