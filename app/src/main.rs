fn main() {
    println!("vmdesk: the desktop app is not built yet");
}
