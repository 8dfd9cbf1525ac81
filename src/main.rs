//! The rmox mail server binary.

fn main() {
    eprintln!("rmox: not yet wired");
    std::process::exit(2);
}
