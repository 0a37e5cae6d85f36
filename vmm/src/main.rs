fn main() {
    eprintln!("vmdesk-vmm: not yet");
    std::process::exit(2);
}
