//! The `alexnet` binary: parse, run the one dispatcher, print the error chain.
use alexnet::commands::{execute, Cli};

fn main() {
    match execute(Cli::parse_args().command) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {err}");
            let mut cause = err.source();
            while let Some(c) = cause {
                eprintln!("  caused by: {c}");
                cause = c.source();
            }
            std::process::exit(2);
        }
    }
}
