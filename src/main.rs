//! The `splitmx` command: a thin shell over [`splitmx::cli`].

fn main() -> std::process::ExitCode {
    splitmx::cli::main()
}
