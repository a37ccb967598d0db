//! The `aitbc` command (filled by the CLI issue).

fn main() {
    eprintln!("aitbc: the command line is not built yet");
    std::process::exit(2);
}
