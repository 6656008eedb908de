//! The `growthmesh` binary: parse arguments, start tracing, hand over to [`cli::run`].

fn main() -> std::process::ExitCode {
    cli::main()
}
