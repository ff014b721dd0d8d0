//! The `alexnet` binary: parse, run one library function, print the error chain.
mod cli;

fn main() {
    if let Err(err) = cli::run() {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(2);
    }
}
