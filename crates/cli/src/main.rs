//! The `upsession` binary.

fn main() {
    eprintln!("upsession: no subcommands are available yet.");
    std::process::exit(2);
}
